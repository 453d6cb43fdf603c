using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Estimation;

/// <summary>What the estimator expects LZ4 to do with a page.</summary>
internal enum PageClass : byte
{
    /// <summary>Every byte is zero: stored as nothing.</summary>
    Zero,

    /// <summary>Every 8-byte word is the same value: stored as that value.</summary>
    SameFilled,

    /// <summary>LZ4 will compress the page to at most half a page (confident). Reported; nothing routes on it yet (a CRAM node tier would).</summary>
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
/// exactly (the <see cref="SameFilled"/> check), otherwise a compressed size from a sample, and
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
    public static PageEstimate Estimate(byte* page, int threshold) => Estimate(page, threshold, PageKernels.Best);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static PageEstimate Estimate(byte* page, int threshold, PageKernelIsa isa)
    {
        if (SameFilled.Check(page, out ulong value, isa))
        {
            return new PageEstimate(value == 0 ? PageClass.Zero : PageClass.SameFilled, 0, value, 0);
        }
        PageSample sample = PageKernels.Sample(page, isa);
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
}
