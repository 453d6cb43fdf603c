using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CramCore.Native;

namespace CramCore.Estimation;

/// <summary>
/// One instruction set's page kernels, 128-bit kernels (SSE2 / AdvSimd): the same-filled check and the
/// estimator's sample. Chosen by <see cref="PageKernels"/>; every one is forced in tests.
/// </summary>
internal static unsafe class Vector128PageKernels
{
    // Same-filled: four vectors per step, stopping at the first difference, so pages that are
    // not same-filled (almost all of them) cost one step.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool IsSameFilled(byte* page, ulong value)
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

    // The sample: per-lane byte counters (a compare gives −1 per equal lane; no lane counts more
    // than 32), then the nibble histogram of the lines' first 16 bytes gathered into vectors: for
    // each nibble value, one compare per vector.
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageSample Sample(byte* page)
    {
        var zero = Vector128<byte>.Zero;
        var high = Vector128<byte>.Zero;
        var run = Vector128<byte>.Zero;
        var lag8 = Vector128<byte>.Zero;
        for (int line = 0; line < SharedLayout.PageSize; line += PageEstimator.SampleStride)
        {
            byte* a = page + line;
            for (int i = 0; i < 64; i += 16)
            {
                var v = Vector128.Load(a + i);
                zero -= Vector128.Equals(v, Vector128<byte>.Zero);
                high -= Vector128.LessThan(v.AsSByte(), Vector128<sbyte>.Zero).AsByte();
                if (i >= 32)
                {
                    run -= Vector128.Equals(v, Vector128.Load(a + i - 1));
                    lag8 -= Vector128.Equals(v, Vector128.Load(a + i - 8));
                }
            }
        }
        const int Vectors = PageEstimator.HistogramBytes / 16;
        Vector128<byte>* lows = stackalloc Vector128<byte>[Vectors];
        Vector128<byte>* highs = stackalloc Vector128<byte>[Vectors];
        var nibble = Vector128.Create((byte)0x0F);
        for (int j = 0; j < Vectors; j++)
        {
            // The first 16 bytes of one line per vector.
            var v = Vector128.Load(page + j * PageEstimator.SampleStride);
            lows[j] = v & nibble;
            highs[j] = Vector128.ShiftRightLogical(v, 4);
        }
        int* counts = stackalloc int[32];
        for (int n = 0; n < 16; n++)
        {
            var value = Vector128.Create((byte)n);
            var highCount = Vector128<byte>.Zero;
            var lowCount = Vector128<byte>.Zero;
            for (int j = 0; j < Vectors; j++)
            {
                highCount -= Vector128.Equals(highs[j], value);
                lowCount -= Vector128.Equals(lows[j], value);
            }
            counts[n] = LaneSum(highCount);
            counts[16 + n] = LaneSum(lowCount);
        }
        return new PageSample(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8), PageEstimator.NibbleEntropy(counts));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int LaneSum(Vector128<byte> counts)
    {
        if (Sse2.IsSupported)
        {
            // psadbw against zero: the sum of each 8 lanes in one instruction.
            return (int)Vector128.Sum(Sse2.SumAbsoluteDifferences(counts, Vector128<byte>.Zero).AsUInt64());
        }
        return LaneSumPortable(counts);
    }

    /// <summary>The sum of the lanes where psadbw is missing (tested on every machine).</summary>
    internal static int LaneSumPortable(Vector128<byte> counts)
    {
        (var lo, var hi) = Vector128.Widen(counts);
        return Vector128.Sum(lo + hi);
    }
}
