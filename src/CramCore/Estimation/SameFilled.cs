using System.Runtime.CompilerServices;

namespace CramCore.Estimation;

/// <summary>
/// Detects pages whose 8-byte words are all equal (zero pages included), with the kernel
/// <see cref="PageKernels"/> picks (one per instruction set; tests force each one).
/// </summary>
internal static unsafe class SameFilled
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Check(byte* page, out ulong value) => Check(page, out value, PageKernels.Best);

    public static bool Check(byte* page, out ulong value, PageKernelIsa isa)
    {
        value = *(ulong*)page;
        return PageKernels.IsSameFilled(page, value, isa);
    }
}
