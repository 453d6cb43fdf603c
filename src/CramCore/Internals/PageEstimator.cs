using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace CramCore;

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
internal readonly record struct PageEstimate(PageClass Class, int EstimatedSize, ulong FillValue, float SampleEntropy)
{
    /// <summary>The estimator's forced yes/no: LZ4 output at most <paramref name="threshold"/> bytes.</summary>
    public bool PredictsBelow(int threshold) => Class <= PageClass.Compressible || (Class == PageClass.Uncertain && EstimatedSize <= threshold);
}

/// <summary>Byte counts over the sample of one page (one SIMD kernel per instruction set; all count the same bytes).</summary>
internal readonly record struct PageByteCounts(int Zero, int High, int Run, int Lag8)
{
    /// <summary>Bytes <see cref="Zero"/> and <see cref="High"/> are counted over.</summary>
    public const int CountedBytes = PageEstimator.SampleChunks * PageEstimator.SampleChunkBytes;

    /// <summary>Bytes <see cref="Run"/> and <see cref="Lag8"/> are counted over.</summary>
    public const int ComparedBytes = PageEstimator.SampleChunks * (PageEstimator.SampleChunkBytes - 64);
}

/// <summary>
/// Estimates, without compressing, what LZ4 will make of a 4 KiB page: zero and same-filled pages
/// exactly (the <see cref="SameFilled"/> kernels), otherwise a compressed size from sampled
/// statistics, and a <see cref="PageClass"/> that is confident only away from the threshold.
///
/// <para>Features (all cheap): one SIMD pass over the page counts zero bytes, bytes with the high
/// bit set, bytes equal to the byte before (runs) and bytes equal to the byte 8 before (8-byte
/// structure: pointers, integers); a byte histogram of 16 samples of 32 bytes, one every 256 bytes
/// (as btrfs samples), gives the Shannon entropy. The size model and its margins were fitted by
/// <c>cram estimate --calibrate</c> on the real page files of <c>shared/corpus</c>; the margins
/// keep wrong confident answers to ≤ 0.5 % (incompressible) and ≤ 1 % (compressible) of every file.
/// "Incompressible" also needs a sample entropy of at least <see cref="MinIncompressibleEntropy"/>
/// bits, so pages of a kind the calibration never saw are tried rather than kept uncompressed.</para>
///
/// <para>What it cannot see: LZ4 gains most from repeated strings anywhere in the page, and an
/// exact count of those costs about as much as LZ4 itself. So pages whose LZ4 size is within a few
/// hundred bytes of the threshold (a third of the pages of shared-library code) come back
/// <see cref="PageClass.Uncertain"/>, and the caller runs LZ4.</para>
/// </summary>
internal static unsafe class PageEstimator
{
    /// <summary>
    /// The kernel <see cref="Estimate(byte*, int)"/> uses on this machine: Vector256 wherever it is
    /// accelerated, because the sample is only 128-byte chunks and on the AMD EPYC (Zen 4) we
    /// measure on, the Vector512 kernel is slower (`cram estimate`: 6.8–7.4 GB/s against 9.1–11.3).
    /// </summary>
    public static readonly PageKernelIsa Best =
        Vector256.IsHardwareAccelerated ? PageKernelIsa.Vector256 :
        Vector512.IsHardwareAccelerated ? PageKernelIsa.Vector512 :
        Vector128.IsHardwareAccelerated ? PageKernelIsa.Vector128 : PageKernelIsa.Scalar;

    // Size model: size = C0 + C1·nr + C2·H·nr + C3·zero + C4·lag8 + C5·high, where nr is the
    // fraction of bytes not continuing a run and H the sample entropy in bits per byte.
    // Fitted by `cram estimate --calibrate` (least squares, every corpus file weighted equally).
    internal static readonly float[] Coefficients = [1403.992f, -767.412f, 390.379f, -0.09f, -0.09f, 0.247f];

    /// <summary>"Incompressible" only if the estimate is this far above the threshold (fitted, at least <see cref="MarginFloor"/>).</summary>
    internal const int IncompressibleMargin = MarginFloor;

    /// <summary>No margin is smaller than this, whatever the fit says: room for kinds of page the calibration did not see.</summary>
    internal const int MarginFloor = 250;

    /// <summary>"Compressible" only if the estimate is this far below the threshold (fitted, at least <see cref="MarginFloor"/>).</summary>
    internal const int CompressibleMargin = 900;

    /// <summary>"Incompressible" only if the sampled bytes carry at least this many bits each.</summary>
    internal const float MinIncompressibleEntropy = 6.5f;

    // The sample: 8 chunks of 128 bytes (two cache lines), one every 512 bytes — a quarter of the
    // page's lines, so the estimate reads 1 KiB of a page that reclaim fetches cold from memory.
    // Zero and high-bit bytes are counted over all of each chunk, runs and lag-8 repeats over its
    // second line (their look-back stays inside the chunk), the histogram over 16 bytes at the
    // start of each line: 256 bytes.
    internal const int SampleChunks = 8;
    internal const int SampleStride = PageTable.PageSize / SampleChunks;
    internal const int SampleChunkBytes = 128;
    internal const int HistogramRunBytes = 16;
    internal const int SampleBytes = SampleChunks * 2 * HistogramRunBytes;
    private const float Log2SampleBytes = 8f; // log2(256)

    // step[c] = (c+1)·log2(c+1) − c·log2(c), in 1/4096ths; 256 entries (native, so no bounds checks).
    private static readonly int* s_xLog2XStep = BuildXLog2XStep();

    private static int* BuildXLog2XStep()
    {
        int* table = (int*)NativeMemory.Alloc(256, sizeof(int));
        static double XLog2X(int c) => c == 0 ? 0 : c * Math.Log2(c);
        for (int c = 0; c < 256; c++)
        {
            table[c] = (int)Math.Round(4096 * (XLog2X(c + 1) - XLog2X(c)));
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
        PageByteCounts counts = Count(page, isa);
        float entropy = SampleEntropy(page);
        int size = Model(counts, entropy);
        return new PageEstimate(Classify(size, entropy, threshold), size, 0, entropy);
    }

    /// <summary>The estimated LZ4 size in bytes (not clamped to the page: above 4096 means "expands").</summary>
    internal static int Model(PageByteCounts c, float entropy)
    {
        Span<float> x = stackalloc float[FeatureCount];
        Features(c, entropy, x);
        float[] k = Coefficients;
        float size = 0;
        for (int i = 0; i < FeatureCount; i++)
        {
            size += k[i] * x[i];
        }
        return (int)Math.Clamp(size, 0f, 2f * PageTable.PageSize);
    }

    internal const int FeatureCount = 6;

    /// <summary>
    /// The model's inputs, in the order of <see cref="Coefficients"/>: 1, nr, H·nr, zero bytes,
    /// lag-8 repeats, high-bit bytes — counts scaled from the sample to the whole page.
    /// </summary>
    internal static void Features(PageByteCounts c, float entropy, Span<float> x)
    {
        const float CountedScale = (float)PageTable.PageSize / PageByteCounts.CountedBytes;
        const float ComparedScale = (float)PageTable.PageSize / PageByteCounts.ComparedBytes;
        float notRun = 1f - (float)c.Run / PageByteCounts.ComparedBytes;
        x[0] = 1f;
        x[1] = notRun;
        x[2] = entropy * notRun;
        x[3] = c.Zero * CountedScale;
        x[4] = c.Lag8 * ComparedScale;
        x[5] = c.High * CountedScale;
    }

    internal static PageClass Classify(int size, float entropy, int threshold)
    {
        if (size > threshold + IncompressibleMargin && entropy >= MinIncompressibleEntropy)
        {
            return PageClass.Incompressible;
        }
        if (size < PageTable.PageSize / 2 - CompressibleMargin)
        {
            return PageClass.VeryCompressible;
        }
        return size < threshold - CompressibleMargin ? PageClass.Compressible : PageClass.Uncertain;
    }

    /// <summary>Shannon entropy (bits per byte) of the 256 sampled bytes (see <see cref="SampleChunks"/>).</summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float SampleEntropy(byte* page)
    {
        // One histogram; Σ c·log2(c) (in 1/4096ths, as integers) grows by a table step per byte, so
        // there is no pass over the 256 counters afterwards.
        byte* counts = stackalloc byte[256]; // 256 samples: a counter wraps only when all are equal, and the step table wraps with it (step[255] closes the sum)
        new Span<byte>(counts, 256).Clear();
        int* step = s_xLog2XStep;
        int sum = 0;
        for (int chunk = 0; chunk < PageTable.PageSize; chunk += SampleStride)
        {
            for (int line = 0; line < SampleChunkBytes; line += 64)
            {
                ulong* words = (ulong*)(page + chunk + line);
                for (int j = 0; j < HistogramRunBytes / 8; j++)
                {
                    ulong w = words[j];
                    for (int shift = 0; shift < 64; shift += 8)
                    {
                        byte* counter = counts + (int)((w >> shift) & 0xFF);
                        sum += step[*counter];
                        (*counter)++;
                    }
                }
            }
        }
        return Log2SampleBytes - sum / (4096f * SampleBytes);
    }

    public static PageByteCounts Count(byte* page, PageKernelIsa isa) => isa switch
    {
        PageKernelIsa.Vector512 => Vector512Kernel(page),
        PageKernelIsa.Vector256 => Vector256Kernel(page),
        PageKernelIsa.Vector128 => Vector128Kernel(page),
        _ => ScalarKernel(page),
    };

    // Each kernel: zero and high-bit bytes over the whole page; runs and lag-8 repeats over bytes
    // [64, 4096), so that every kernel compares exactly the same positions.

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageByteCounts Vector512Kernel(byte* page)
    {
        // Per-lane byte counters (a compare gives -1 per equal lane): at most 16 steps, so no lane overflows.
        var zero = Vector512<byte>.Zero;
        var high = Vector512<byte>.Zero;
        var run = Vector512<byte>.Zero;
        var lag8 = Vector512<byte>.Zero;
        for (int chunk = 0; chunk < PageTable.PageSize; chunk += SampleStride)
        {
            for (int i = chunk; i < chunk + 64; i += 64)
            {
                var v = Vector512.Load(page + i);
                zero -= Vector512.Equals(v, Vector512<byte>.Zero);
                high -= Vector512.LessThan(v.AsSByte(), Vector512<sbyte>.Zero).AsByte();
            }
            for (int i = chunk + 64; i < chunk + SampleChunkBytes; i += 64)
            {
                var v = Vector512.Load(page + i);
                zero -= Vector512.Equals(v, Vector512<byte>.Zero);
                high -= Vector512.LessThan(v.AsSByte(), Vector512<sbyte>.Zero).AsByte();
                run -= Vector512.Equals(v, Vector512.Load(page + i - 1));
                lag8 -= Vector512.Equals(v, Vector512.Load(page + i - 8));
            }
        }
        return new PageByteCounts(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8));
    }

    private static int LaneSum(Vector512<byte> counts)
    {
        (var lo, var hi) = Vector512.Widen(counts);
        return Vector512.Sum(lo + hi);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageByteCounts Vector256Kernel(byte* page)
    {
        // Per-lane byte counters (a compare gives -1 per equal lane): at most 32 steps, so no lane overflows.
        var zero = Vector256<byte>.Zero;
        var high = Vector256<byte>.Zero;
        var run = Vector256<byte>.Zero;
        var lag8 = Vector256<byte>.Zero;
        for (int chunk = 0; chunk < PageTable.PageSize; chunk += SampleStride)
        {
            for (int i = chunk; i < chunk + 64; i += 32)
            {
                var v = Vector256.Load(page + i);
                zero -= Vector256.Equals(v, Vector256<byte>.Zero);
                high -= Vector256.LessThan(v.AsSByte(), Vector256<sbyte>.Zero).AsByte();
            }
            for (int i = chunk + 64; i < chunk + SampleChunkBytes; i += 32)
            {
                var v = Vector256.Load(page + i);
                zero -= Vector256.Equals(v, Vector256<byte>.Zero);
                high -= Vector256.LessThan(v.AsSByte(), Vector256<sbyte>.Zero).AsByte();
                run -= Vector256.Equals(v, Vector256.Load(page + i - 1));
                lag8 -= Vector256.Equals(v, Vector256.Load(page + i - 8));
            }
        }
        return new PageByteCounts(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8));
    }

    private static int LaneSum(Vector256<byte> counts)
    {
        (var lo, var hi) = Vector256.Widen(counts);
        return Vector256.Sum(lo + hi);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageByteCounts Vector128Kernel(byte* page)
    {
        // Per-lane byte counters (a compare gives -1 per equal lane): at most 64 steps, so no lane overflows.
        var zero = Vector128<byte>.Zero;
        var high = Vector128<byte>.Zero;
        var run = Vector128<byte>.Zero;
        var lag8 = Vector128<byte>.Zero;
        for (int chunk = 0; chunk < PageTable.PageSize; chunk += SampleStride)
        {
            for (int i = chunk; i < chunk + 64; i += 16)
            {
                var v = Vector128.Load(page + i);
                zero -= Vector128.Equals(v, Vector128<byte>.Zero);
                high -= Vector128.LessThan(v.AsSByte(), Vector128<sbyte>.Zero).AsByte();
            }
            for (int i = chunk + 64; i < chunk + SampleChunkBytes; i += 16)
            {
                var v = Vector128.Load(page + i);
                zero -= Vector128.Equals(v, Vector128<byte>.Zero);
                high -= Vector128.LessThan(v.AsSByte(), Vector128<sbyte>.Zero).AsByte();
                run -= Vector128.Equals(v, Vector128.Load(page + i - 1));
                lag8 -= Vector128.Equals(v, Vector128.Load(page + i - 8));
            }
        }
        return new PageByteCounts(LaneSum(zero), LaneSum(high), LaneSum(run), LaneSum(lag8));
    }

    private static int LaneSum(Vector128<byte> counts)
    {
        (var lo, var hi) = Vector128.Widen(counts);
        return Vector128.Sum(lo + hi);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static PageByteCounts ScalarKernel(byte* page)
    {
        int zero = 0, high = 0, run = 0, lag8 = 0;
        for (int chunk = 0; chunk < PageTable.PageSize; chunk += SampleStride)
        {
            for (int i = chunk; i < chunk + SampleChunkBytes; i++)
            {
                int b = page[i];
                zero += b == 0 ? 1 : 0;
                high += b >> 7;
            }
            for (int i = chunk + 64; i < chunk + SampleChunkBytes; i++)
            {
                int b = page[i];
                run += b == page[i - 1] ? 1 : 0;
                lag8 += b == page[i - 8] ? 1 : 0;
            }
        }
        return new PageByteCounts(zero, high, run, lag8);
    }
}
