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
/// The one selector of page kernels (as nietras/Sep's SepParserFactory): which instruction set's
/// kernels the same-filled check and the estimator use on this machine, and dispatch to a forced
/// one (tests, <c>cram estimate</c>). Vector256 wherever it is accelerated, even when Vector512 is:
/// on the AMD EPYC (Zen 4) we measure on, the estimator's Vector512 kernel is slower on its short
/// 64-byte lines, and the same-filled check stops after its first 128 bytes on almost every page
/// (<c>cram estimate</c> reports every path).
/// </summary>
internal static unsafe class PageKernels
{
    /// <summary>The kernels used on this machine.</summary>
    public static readonly PageKernelIsa Best =
        Vector256.IsHardwareAccelerated ? PageKernelIsa.Vector256 :
        Vector512.IsHardwareAccelerated ? PageKernelIsa.Vector512 :
        Vector128.IsHardwareAccelerated ? PageKernelIsa.Vector128 : PageKernelIsa.Scalar;

    /// <summary>Whether every 8-byte word of the page equals <paramref name="value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSameFilled(byte* page, ulong value, PageKernelIsa isa) => isa switch
    {
        PageKernelIsa.Vector512 => Vector512PageKernels.IsSameFilled(page, value),
        PageKernelIsa.Vector256 => Vector256PageKernels.IsSameFilled(page, value),
        PageKernelIsa.Vector128 => Vector128PageKernels.IsSameFilled(page, value),
        _ => ScalarPageKernels.IsSameFilled(page, value),
    };

    // (Prefetching the sampled lines up front was measured slower, hot and cold.)
    // Every method on the per-page path is compiled fully optimized at once: reclaim may call
    // them only a few thousand times, too few for tiered compilation to get there.

    /// <summary>The estimator's sample of a page (<see cref="PageEstimator"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageSample Sample(byte* page, PageKernelIsa isa) => isa switch
    {
        PageKernelIsa.Vector512 => Vector512PageKernels.Sample(page),
        PageKernelIsa.Vector256 => Vector256PageKernels.Sample(page),
        PageKernelIsa.Vector128 => Vector128PageKernels.Sample(page),
        _ => ScalarPageKernels.Sample(page),
    };
}
