using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CramCore.Native;

namespace CramCore.Estimation;

/// <summary>
/// One instruction set's page kernels, 256-bit kernels (AVX2 where accelerated): the same-filled check and the
/// estimator's sample. Chosen by <see cref="PageKernels"/>; every one is forced in tests.
/// </summary>
internal static unsafe class Vector256PageKernels
{
    // Same-filled: four vectors per step, stopping at the first difference, so pages that are
    // not same-filled (almost all of them) cost one step.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool IsSameFilled(byte* page, ulong value)
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

    // The sample: per-lane byte counters (a compare gives −1 per equal lane; no lane counts more
    // than 32), then the nibble histogram of the lines' first 16 bytes gathered into vectors: for
    // each nibble value, one compare per vector.
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageSample Sample(byte* page)
    {
        var zero = Vector256<byte>.Zero;
        var high = Vector256<byte>.Zero;
        var run = Vector256<byte>.Zero;
        var lag8 = Vector256<byte>.Zero;
        for (int line = 0; line < SharedLayout.PageSize; line += PageEstimator.SampleStride)
        {
            byte* a = page + line;
            var first = Vector256.Load(a);
            var second = Vector256.Load(a + 32);
            zero -= Vector256.Equals(first, Vector256<byte>.Zero) + Vector256.Equals(second, Vector256<byte>.Zero);
            high -= Vector256.LessThan(first.AsSByte(), Vector256<sbyte>.Zero).AsByte() + Vector256.LessThan(second.AsSByte(), Vector256<sbyte>.Zero).AsByte();
            run -= Vector256.Equals(second, Vector256.Load(a + 31));
            lag8 -= Vector256.Equals(second, Vector256.Load(a + 24));
        }
        const int Vectors = PageEstimator.HistogramBytes / 32;
        Vector256<byte>* lows = stackalloc Vector256<byte>[Vectors];
        Vector256<byte>* highs = stackalloc Vector256<byte>[Vectors];
        var nibble = Vector256.Create((byte)0x0F);
        for (int j = 0; j < Vectors; j++)
        {
            // The first 16 bytes of two lines per vector.
            byte* a = page + 2 * j * PageEstimator.SampleStride;
            var v = Vector256.Create(Vector128.Load(a), Vector128.Load(a + PageEstimator.SampleStride));
            lows[j] = v & nibble;
            highs[j] = Vector256.ShiftRightLogical(v, 4);
        }
        int* counts = stackalloc int[32];
        for (int n = 0; n < 16; n++)
        {
            var value = Vector256.Create((byte)n);
            var highCount = Vector256<byte>.Zero;
            var lowCount = Vector256<byte>.Zero;
            for (int j = 0; j < Vectors; j++)
            {
                highCount -= Vector256.Equals(highs[j], value);
                lowCount -= Vector256.Equals(lows[j], value);
            }
            counts[n] = LaneSum(highCount);
            counts[16 + n] = LaneSum(lowCount);
        }
        return new PageSample(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8), PageEstimator.NibbleEntropy(counts));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int LaneSum(Vector256<byte> counts)
    {
        if (Avx2.IsSupported)
        {
            // psadbw against zero: the sum of each 8 lanes in one instruction.
            return (int)Vector256.Sum(Avx2.SumAbsoluteDifferences(counts, Vector256<byte>.Zero).AsUInt64());
        }
        return LaneSumPortable(counts);
    }

    /// <summary>The sum of the lanes where psadbw is missing (tested on every machine).</summary>
    internal static int LaneSumPortable(Vector256<byte> counts)
    {
        (var lo, var hi) = Vector256.Widen(counts);
        return Vector256.Sum(lo + hi);
    }
}
