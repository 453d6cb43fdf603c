using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace CramCore.Estimation;

/// <summary>What the estimator expects LZ4 to do with a page.</summary>
internal enum PageClass : byte
{
    /// <summary>Every byte is zero: stored as nothing.</summary>
    Zero,

    /// <summary>Every 8-byte word is the same value: stored as that value.</summary>
    SameFilled,

    /// <summary>LZ4 will compress the page to at most half a page (confident): eligible for the CRAM node.</summary>
    VeryCompressible,

    /// <summary>LZ4 will compress the page below the threshold (confident).</summary>
    Compressible,

    /// <summary>Too close to the threshold to tell from a sample: try LZ4 and see.</summary>
    Uncertain,

    /// <summary>LZ4 will not get the page below the threshold (confident): do not try.</summary>
    Incompressible,
}

/// <summary>The estimator's answer for one page.</summary>
internal readonly record struct PageEstimate(PageClass Class, int EstimatedSize, ulong FillValue, float NibbleEntropy)
{
    /// <summary>The estimator's forced yes/no: LZ4 output at most <paramref name="threshold"/> bytes.</summary>
    public bool PredictsBelow(int threshold) => Class <= PageClass.Compressible || (Class == PageClass.Uncertain && EstimatedSize <= threshold);
}

/// <summary>
/// Statistics of the sample of one page, from one kernel per instruction set (all count the same
/// bytes and give equal results).
/// </summary>
/// <param name="Zero">Zero bytes among <see cref="CountedBytes"/>.</param>
/// <param name="High">Bytes with the high bit set among <see cref="CountedBytes"/>.</param>
/// <param name="Run">Bytes equal to the byte before, among <see cref="ComparedBytes"/>.</param>
/// <param name="Lag8">Bytes equal to the byte 8 before, among <see cref="ComparedBytes"/>.</param>
/// <param name="NibbleEntropy">Shannon entropy of the high nibbles plus that of the low nibbles of the
/// <see cref="PageEstimator.HistogramBytes"/> histogram bytes, in bits per byte (0–8).</param>
internal readonly record struct PageSample(int Zero, int High, int Run, int Lag8, float NibbleEntropy)
{
    /// <summary>Bytes <see cref="Zero"/> and <see cref="High"/> are counted over.</summary>
    public const int CountedBytes = PageEstimator.SampleLines * 64;

    /// <summary>Bytes <see cref="Run"/> and <see cref="Lag8"/> are counted over.</summary>
    public const int ComparedBytes = PageEstimator.SampleLines * 32;
}

/// <summary>
/// Estimates, without compressing, what LZ4 will make of a 4 KiB page: zero and same-filled pages
/// exactly (the <see cref="SameFilled"/> kernels), otherwise a compressed size from a sample, and
/// a <see cref="PageClass"/> that is confident only away from the threshold.
///
/// <para>The sample is 8 cache lines, one every 512 bytes: an eighth of the page, because reclaim
/// reads cold pages and memory, not arithmetic, is then the cost (sampling 16 lines gave the same
/// agreement on the corpora). One kernel per instruction set counts, per line, zero and high-bit
/// bytes (all 64), bytes equal to the byte before (runs) and to the byte 8 before (8-byte
/// structure: pointers, integers) over the line's second half, so the look-back stays in the
/// line, and histograms the nibbles of its first 16 bytes (128 bytes in all) with vector
/// compares; the
/// feature is the entropy of the high nibbles plus that of the low nibbles (it bounds the byte
/// entropy from above and, on the corpora, predicts LZ4 about as well, at a third of the cost of
/// a byte histogram).</para>
///
/// <para>The size model and its margins are fitted by <c>cram estimate --calibrate</c> on the real
/// page files of <c>shared/corpus</c> (every file weighted equally); the margins keep wrong
/// confident answers within 0.5 % (incompressible) and 1 % (compressible) of every file, and are
/// never below <see cref="MarginFloor"/>. "Incompressible" also needs a nibble entropy of at least
/// <see cref="MinIncompressibleEntropy"/> bits, so that pages of a kind the calibration never saw
/// are tried rather than kept uncompressed.</para>
///
/// <para>What it cannot see: LZ4 gains most from repeated strings anywhere in the page, and an
/// exact count of those costs about as much as LZ4 itself. Pages whose LZ4 size is within several
/// hundred bytes of the threshold (three quarters of the pages of shared-library code) come back
/// <see cref="PageClass.Uncertain"/>, and the caller runs LZ4.</para>
/// </summary>
internal static unsafe class PageEstimator
{
    /// <summary>
    /// The kernel <see cref="Estimate(byte*, int)"/> uses on this machine: Vector256 wherever it is
    /// accelerated, because on the AMD EPYC (Zen 4) we measure on, the Vector512 kernel is slower
    /// on these short chunks (<c>cram estimate</c> reports every path).
    /// </summary>
    public static readonly PageKernelIsa Best =
        Vector256.IsHardwareAccelerated ? PageKernelIsa.Vector256 :
        Vector512.IsHardwareAccelerated ? PageKernelIsa.Vector512 :
        Vector128.IsHardwareAccelerated ? PageKernelIsa.Vector128 : PageKernelIsa.Scalar;

    /// <summary>
    /// Size model: size = Σ Coefficients[i]·x[i] over <see cref="Features"/> (1, nr, H·nr, zero,
    /// lag-8, high), nr being the fraction of bytes not continuing a run and H the nibble entropy.
    /// Fitted by <c>cram estimate --calibrate</c>.
    /// </summary>
    internal static readonly float[] Coefficients = [1496.269f, -451.931f, 253.729f, -0.113f, -0.147f, 0.234f];

    /// <summary>No margin is smaller than this, whatever the fit says: room for kinds of page the calibration did not see.</summary>
    internal const int MarginFloor = 250;

    /// <summary>"Incompressible" only if the estimate is this far above the threshold (fitted, at least <see cref="MarginFloor"/>).</summary>
    internal const int IncompressibleMargin = 250;

    /// <summary>"Compressible" only if the estimate is this far below the threshold (fitted, at least <see cref="MarginFloor"/>).</summary>
    internal const int CompressibleMargin = 975;

    /// <summary>"Incompressible" only if the sampled nibbles carry at least this many bits per byte.</summary>
    internal const float MinIncompressibleEntropy = 6.5f;

    internal const int SampleLines = 8;
    internal const int SampleStride = SharedLayout.PageSize / SampleLines;
    internal const int HistogramLineBytes = 16;
    internal const int HistogramBytes = SampleLines * HistogramLineBytes;

    private static readonly float s_log2HistogramBytes = MathF.Log2(HistogramBytes);

    // c·log2(c) for c = 0..HistogramBytes, in 1/4096ths (native, so no bounds checks).
    private static readonly int* s_xLog2X = BuildXLog2X();

    private static int* BuildXLog2X()
    {
        int* table = (int*)NativeMemory.Alloc(HistogramBytes + 1, sizeof(int));
        table[0] = 0;
        for (int c = 1; c <= HistogramBytes; c++)
        {
            table[c] = (int)Math.Round(4096 * c * Math.Log2(c));
        }
        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageEstimate Estimate(byte* page, int threshold) => Estimate(page, threshold, Best);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageEstimate Estimate(byte* page, int threshold, PageKernelIsa isa)
    {
        if (SameFilled.Check(page, out ulong value, isa))
        {
            return new PageEstimate(value == 0 ? PageClass.Zero : PageClass.SameFilled, 0, value, 0);
        }
        PageSample sample = Sample(page, isa);
        int size = Model(sample);
        return new PageEstimate(Classify(size, sample.NibbleEntropy, threshold), size, 0, sample.NibbleEntropy);
    }

    /// <summary>The estimated LZ4 size in bytes (above 4096 means "expands").</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static int Model(PageSample sample)
    {
        Span<float> x = stackalloc float[FeatureCount];
        Features(sample, x);
        float[] k = Coefficients;
        float size = 0;
        for (int i = 0; i < FeatureCount; i++)
        {
            size += k[i] * x[i];
        }
        return (int)Math.Clamp(size, 0f, 2f * SharedLayout.PageSize);
    }

    internal const int FeatureCount = 6;

    /// <summary>The model's inputs, in the order of <see cref="Coefficients"/>; counts scaled from the sample to the page.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Features(PageSample s, Span<float> x)
    {
        const float CountedScale = (float)SharedLayout.PageSize / PageSample.CountedBytes;
        const float ComparedScale = (float)SharedLayout.PageSize / PageSample.ComparedBytes;
        float notRun = 1f - (float)s.Run / PageSample.ComparedBytes;
        x[0] = 1f;
        x[1] = notRun;
        x[2] = s.NibbleEntropy * notRun;
        x[3] = s.Zero * CountedScale;
        x[4] = s.Lag8 * ComparedScale;
        x[5] = s.High * CountedScale;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static PageClass Classify(int size, float entropy, int threshold)
    {
        if (size > threshold + IncompressibleMargin && entropy >= MinIncompressibleEntropy)
        {
            return PageClass.Incompressible;
        }
        if (size >= threshold - CompressibleMargin)
        {
            return PageClass.Uncertain;
        }
        return size < SharedLayout.PageSize / 2 - CompressibleMargin ? PageClass.VeryCompressible : PageClass.Compressible;
    }

    /// <summary>
    /// Entropy of the high nibbles plus entropy of the low nibbles, from their 16 + 16 counts over
    /// <see cref="HistogramBytes"/> bytes: log2(n) − (1/n) Σ c·log2(c) for each, in integers until the end.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float NibbleEntropy(int* counts)
    {
        int* xLog2X = s_xLog2X;
        int sum = 0;
        for (int i = 0; i < 32; i++)
        {
            sum += xLog2X[counts[i]];
        }
        return 2 * s_log2HistogramBytes - sum / (4096f * HistogramBytes);
    }

    // (Prefetching the sampled lines up front was measured slower, hot and cold.)
    // Every method on the per-page path is compiled fully optimized at once: reclaim may call
    // them only a few thousand times, too few for tiered compilation to get there.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageSample Sample(byte* page, PageKernelIsa isa) => isa switch
    {
        PageKernelIsa.Vector512 => Vector512Kernel(page),
        PageKernelIsa.Vector256 => Vector256Kernel(page),
        PageKernelIsa.Vector128 => Vector128Kernel(page),
        _ => ScalarKernel(page),
    };

    // Each kernel: per-lane byte counters (a compare gives −1 per equal lane; no lane counts more
    // than 32), then the nibble histogram of the lines' first 16 bytes gathered into vectors: for
    // each nibble value, one compare per vector.

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageSample Vector512Kernel(byte* page)
    {
        var zero = Vector512<byte>.Zero;
        var high = Vector512<byte>.Zero;
        var run = Vector512<byte>.Zero;
        var lag8 = Vector512<byte>.Zero;
        for (int line = 0; line < SharedLayout.PageSize; line += 2 * SampleStride)
        {
            // Two lines per step: each whole, then their second halves side by side.
            byte* a = page + line;
            byte* b = a + SampleStride;
            var v = Vector512.Load(a);
            var w = Vector512.Load(b);
            zero -= Vector512.Equals(v, Vector512<byte>.Zero) + Vector512.Equals(w, Vector512<byte>.Zero);
            high -= Vector512.LessThan(v.AsSByte(), Vector512<sbyte>.Zero).AsByte() + Vector512.LessThan(w.AsSByte(), Vector512<sbyte>.Zero).AsByte();
            var halves = Vector512.Create(Vector256.Load(a + 32), Vector256.Load(b + 32));
            run -= Vector512.Equals(halves, Vector512.Create(Vector256.Load(a + 31), Vector256.Load(b + 31)));
            lag8 -= Vector512.Equals(halves, Vector512.Create(Vector256.Load(a + 24), Vector256.Load(b + 24)));
        }
        const int Vectors = HistogramBytes / 64;
        Vector512<byte>* lows = stackalloc Vector512<byte>[Vectors];
        Vector512<byte>* highs = stackalloc Vector512<byte>[Vectors];
        var nibble = Vector512.Create((byte)0x0F);
        for (int j = 0; j < Vectors; j++)
        {
            // The first 16 bytes of four lines per vector.
            byte* a = page + 4 * j * SampleStride;
            var v = Vector512.Create(
                Vector256.Create(Vector128.Load(a), Vector128.Load(a + SampleStride)),
                Vector256.Create(Vector128.Load(a + 2 * SampleStride), Vector128.Load(a + 3 * SampleStride)));
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
        return new PageSample(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8), NibbleEntropy(counts));
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

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageSample Vector256Kernel(byte* page)
    {
        var zero = Vector256<byte>.Zero;
        var high = Vector256<byte>.Zero;
        var run = Vector256<byte>.Zero;
        var lag8 = Vector256<byte>.Zero;
        for (int line = 0; line < SharedLayout.PageSize; line += SampleStride)
        {
            byte* a = page + line;
            var first = Vector256.Load(a);
            var second = Vector256.Load(a + 32);
            zero -= Vector256.Equals(first, Vector256<byte>.Zero) + Vector256.Equals(second, Vector256<byte>.Zero);
            high -= Vector256.LessThan(first.AsSByte(), Vector256<sbyte>.Zero).AsByte() + Vector256.LessThan(second.AsSByte(), Vector256<sbyte>.Zero).AsByte();
            run -= Vector256.Equals(second, Vector256.Load(a + 31));
            lag8 -= Vector256.Equals(second, Vector256.Load(a + 24));
        }
        const int Vectors = HistogramBytes / 32;
        Vector256<byte>* lows = stackalloc Vector256<byte>[Vectors];
        Vector256<byte>* highs = stackalloc Vector256<byte>[Vectors];
        var nibble = Vector256.Create((byte)0x0F);
        for (int j = 0; j < Vectors; j++)
        {
            // The first 16 bytes of two lines per vector.
            byte* a = page + 2 * j * SampleStride;
            var v = Vector256.Create(Vector128.Load(a), Vector128.Load(a + SampleStride));
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
        return new PageSample(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8), NibbleEntropy(counts));
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

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageSample Vector128Kernel(byte* page)
    {
        var zero = Vector128<byte>.Zero;
        var high = Vector128<byte>.Zero;
        var run = Vector128<byte>.Zero;
        var lag8 = Vector128<byte>.Zero;
        for (int line = 0; line < SharedLayout.PageSize; line += SampleStride)
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
        const int Vectors = HistogramBytes / 16;
        Vector128<byte>* lows = stackalloc Vector128<byte>[Vectors];
        Vector128<byte>* highs = stackalloc Vector128<byte>[Vectors];
        var nibble = Vector128.Create((byte)0x0F);
        for (int j = 0; j < Vectors; j++)
        {
            // The first 16 bytes of one line per vector.
            var v = Vector128.Load(page + j * SampleStride);
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
        return new PageSample(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8), NibbleEntropy(counts));
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

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageSample ScalarKernel(byte* page)
    {
        int zero = 0, high = 0, run = 0, lag8 = 0;
        int* counts = stackalloc int[32];
        new Span<int>(counts, 32).Clear();
        for (int line = 0; line < SharedLayout.PageSize; line += SampleStride)
        {
            byte* a = page + line;
            for (int i = 0; i < 64; i++)
            {
                int b = a[i];
                zero += b == 0 ? 1 : 0;
                high += b >> 7;
                if (i < HistogramLineBytes)
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
        return new PageSample(zero, high, run, lag8, NibbleEntropy(counts));
    }
}
