using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace CramCore.Estimation;

/// <summary>The instruction-set paths of the SIMD page kernels.</summary>
internal enum PageKernelIsa
{
    Scalar,
    Vector128,
    Vector256,
    Vector512,
}

/// <summary>
/// Detects pages whose 8-byte words are all equal (zero pages included): one kernel per
/// instruction set (Vector512, Vector256, Vector128, scalar) behind <see cref="Check(byte*, out ulong)"/>, which
/// uses the widest one the machine accelerates. Tests force every kernel: the Vector APIs run
/// (slowly, in software) even where the hardware lacks the width, so every path runs everywhere.
/// </summary>
internal static unsafe class SameFilled
{
    /// <summary>The kernel <see cref="Check(byte*, out ulong)"/> uses on this machine.</summary>
    public static readonly PageKernelIsa Best =
        Vector512.IsHardwareAccelerated ? PageKernelIsa.Vector512 :
        Vector256.IsHardwareAccelerated ? PageKernelIsa.Vector256 :
        Vector128.IsHardwareAccelerated ? PageKernelIsa.Vector128 : PageKernelIsa.Scalar;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Check(byte* page, out ulong value) => Check(page, out value, Best);

    public static bool Check(byte* page, out ulong value, PageKernelIsa isa)
    {
        value = *(ulong*)page;
        return isa switch
        {
            PageKernelIsa.Vector512 => Vector512Kernel(page, value),
            PageKernelIsa.Vector256 => Vector256Kernel(page, value),
            PageKernelIsa.Vector128 => Vector128Kernel(page, value),
            _ => ScalarKernel(page, value),
        };
    }

    // Each kernel compares four vectors per step and stops at the first difference, so pages that
    // are not same-filled (almost all of them) cost one step.

    private static bool Vector512Kernel(byte* page, ulong value)
    {
        var fill = Vector512.Create(value);
        for (int i = 0; i < SharedLayout.PageSize; i += 4 * 64)
        {
            var d = (Vector512.Load((ulong*)(page + i)) ^ fill) | (Vector512.Load((ulong*)(page + i + 64)) ^ fill)
                  | (Vector512.Load((ulong*)(page + i + 128)) ^ fill) | (Vector512.Load((ulong*)(page + i + 192)) ^ fill);
            if (d != Vector512<ulong>.Zero)
            {
                return false;
            }
        }
        return true;
    }

    private static bool Vector256Kernel(byte* page, ulong value)
    {
        var fill = Vector256.Create(value);
        for (int i = 0; i < SharedLayout.PageSize; i += 4 * 32)
        {
            var d = (Vector256.Load((ulong*)(page + i)) ^ fill) | (Vector256.Load((ulong*)(page + i + 32)) ^ fill)
                  | (Vector256.Load((ulong*)(page + i + 64)) ^ fill) | (Vector256.Load((ulong*)(page + i + 96)) ^ fill);
            if (d != Vector256<ulong>.Zero)
            {
                return false;
            }
        }
        return true;
    }

    private static bool Vector128Kernel(byte* page, ulong value)
    {
        var fill = Vector128.Create(value);
        for (int i = 0; i < SharedLayout.PageSize; i += 4 * 16)
        {
            var d = (Vector128.Load((ulong*)(page + i)) ^ fill) | (Vector128.Load((ulong*)(page + i + 16)) ^ fill)
                  | (Vector128.Load((ulong*)(page + i + 32)) ^ fill) | (Vector128.Load((ulong*)(page + i + 48)) ^ fill);
            if (d != Vector128<ulong>.Zero)
            {
                return false;
            }
        }
        return true;
    }

    private static bool ScalarKernel(byte* page, ulong value)
    {
        var words = (ulong*)page;
        for (int i = 1; i < SharedLayout.PageSize / 8; i++)
        {
            if (words[i] != value)
            {
                return false;
            }
        }
        return true;
    }
}
