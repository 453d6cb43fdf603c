using System.Runtime.CompilerServices;
using CramCore.Native;

namespace CramCore.Estimation;

/// <summary>
/// One instruction set's page kernels, scalar kernels: the portable fallback, and the definition the vector kernels are tested against: the same-filled check and the
/// estimator's sample. Chosen by <see cref="PageKernels"/>; every one is forced in tests.
/// </summary>
internal static unsafe class ScalarPageKernels
{
    // Same-filled: four vectors per step, stopping at the first difference, so pages that are
    // not same-filled (almost all of them) cost one step.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool IsSameFilled(byte* page, ulong value)
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

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageSample Sample(byte* page)
    {
        int zero = 0, high = 0, run = 0, lag8 = 0;
        int* counts = stackalloc int[32];
        new Span<int>(counts, 32).Clear();
        for (int line = 0; line < SharedLayout.PageSize; line += PageEstimator.SampleStride)
        {
            byte* a = page + line;
            for (int i = 0; i < 64; i++)
            {
                int b = a[i];
                zero += b == 0 ? 1 : 0;
                high += b >> 7;
                if (i < PageEstimator.HistogramLineBytes)
                {
                    counts[b >> 4]++;
                    counts[16 + (b & 0x0F)]++;
                }
                if (i >= 32)
                {
                    run += b == a[i - 1] ? 1 : 0;
                    lag8 += b == a[i - 8] ? 1 : 0;
                }
            }
        }
        return new PageSample(zero, high, run, lag8, PageEstimator.NibbleEntropy(counts));
    }
}
