using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using CramCore.Native;

namespace CramCore.Estimation;

/// <summary>
/// One instruction set's page kernels, 512-bit kernels (AVX-512 where accelerated; emulated elsewhere, so tests run them everywhere): the same-filled check and the
/// estimator's sample. Chosen by <see cref="PageKernels"/>; every one is forced in tests.
/// </summary>
internal static unsafe class Vector512PageKernels
{
    // Same-filled: four vectors per step, stopping at the first difference, so pages that are
    // not same-filled (almost all of them) cost one step.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool IsSameFilled(byte* page, ulong value)
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

    // The sample: per-lane byte counters (a compare gives −1 per equal lane; no lane counts more
    // than 32), then the nibble histogram of the lines' first 16 bytes gathered into vectors: for
    // each nibble value, one compare per vector.
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageSample Sample(byte* page)
    {
        var zero = Vector512<byte>.Zero;
        var high = Vector512<byte>.Zero;
        var run = Vector512<byte>.Zero;
        var lag8 = Vector512<byte>.Zero;
        for (int line = 0; line < SharedLayout.PageSize; line += 2 * PageEstimator.SampleStride)
        {
            // Two lines per step: each whole, then their second halves side by side.
            byte* a = page + line;
            byte* b = a + PageEstimator.SampleStride;
            var v = Vector512.Load(a);
            var w = Vector512.Load(b);
            zero -= Vector512.Equals(v, Vector512<byte>.Zero) + Vector512.Equals(w, Vector512<byte>.Zero);
            high -= Vector512.LessThan(v.AsSByte(), Vector512<sbyte>.Zero).AsByte() + Vector512.LessThan(w.AsSByte(), Vector512<sbyte>.Zero).AsByte();
            var halves = Vector512.Create(Vector256.Load(a + 32), Vector256.Load(b + 32));
            run -= Vector512.Equals(halves, Vector512.Create(Vector256.Load(a + 31), Vector256.Load(b + 31)));
            lag8 -= Vector512.Equals(halves, Vector512.Create(Vector256.Load(a + 24), Vector256.Load(b + 24)));
        }
        const int Vectors = PageEstimator.HistogramBytes / 64;
        Vector512<byte>* lows = stackalloc Vector512<byte>[Vectors];
        Vector512<byte>* highs = stackalloc Vector512<byte>[Vectors];
        var nibble = Vector512.Create((byte)0x0F);
        for (int j = 0; j < Vectors; j++)
        {
            // The first 16 bytes of four lines per vector.
            byte* a = page + 4 * j * PageEstimator.SampleStride;
            var v = Vector512.Create(
                Vector256.Create(Vector128.Load(a), Vector128.Load(a + PageEstimator.SampleStride)),
                Vector256.Create(Vector128.Load(a + 2 * PageEstimator.SampleStride), Vector128.Load(a + 3 * PageEstimator.SampleStride)));
            lows[j] = v & nibble;
            highs[j] = Vector512.ShiftRightLogical(v, 4);
        }
        int* counts = stackalloc int[32];
        for (int n = 0; n < 16; n++)
        {
            var value = Vector512.Create((byte)n);
            var highCount = Vector512<byte>.Zero;
            var lowCount = Vector512<byte>.Zero;
            for (int j = 0; j < Vectors; j++)
            {
                highCount -= Vector512.Equals(highs[j], value);
                lowCount -= Vector512.Equals(lows[j], value);
            }
            counts[n] = LaneSum(highCount);
            counts[16 + n] = LaneSum(lowCount);
        }
        return new PageSample(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8), PageEstimator.NibbleEntropy(counts));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int LaneSum(Vector512<byte> counts)
    {
        if (Avx512BW.IsSupported)
        {
            // psadbw against zero: the sum of each 8 lanes in one instruction.
            return (int)Vector512.Sum(Avx512BW.SumAbsoluteDifferences(counts, Vector512<byte>.Zero).AsUInt64());
        }
        return LaneSumPortable(counts);
    }

    /// <summary>The sum of the lanes where psadbw is missing (tested on every machine).</summary>
    internal static int LaneSumPortable(Vector512<byte> counts)
    {
        (var lo, var hi) = Vector512.Widen(counts);
        return Vector512.Sum(lo + hi);
    }
}
