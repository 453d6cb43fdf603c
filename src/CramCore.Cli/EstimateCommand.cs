using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text.Json;
using CramCore;

namespace CramCore.Cli;

/// <summary>
/// `cram estimate`: the compressibility estimator against real LZ4 on the same pages — speed of
/// every instruction-set path, agreement, false "incompressible" — and `--calibrate`, which fits
/// the estimator's size model and margins on page files.
/// </summary>
internal static unsafe class EstimateCommand
{
    public sealed record Settings(string[] Corpora, int Pages, int Rounds, int Threshold, bool Calibrate, bool Json);

    private const int PageSize = PageSource.PageSize;

    /// <summary>Pages of one input with what real LZ4 and the estimator make of each.</summary>
    private sealed class Input : IDisposable
    {
        public required string Name;
        public required byte* Data;
        public required int Pages;
        public int[] Lz4Sizes = [];
        public PageEstimate[] Estimates = [];
        public PageSample[] Samples = [];

        public byte* Page(int i) => Data + (long)i * PageSize;

        public void Dispose() => NativeMemory.AlignedFree(Data);
    }

    public static int Run(Settings s)
    {
        if (s.Rounds < 1)
        {
            throw new CliException($"--rounds is {s.Rounds}; give at least 1.");
        }
        if (s.Threshold is < 64 or > PageSize)
        {
            throw new CliException($"--threshold is {s.Threshold}; it must be between 64 and 4096 bytes (default 3072, as CramOptions.CompressionThreshold).");
        }
        if (s.Calibrate && s.Corpora.Length == 0)
        {
            throw new CliException("--calibrate needs page files: give one or more --corpus FILE (e.g. --corpus ../shared/corpus/elf-binaries.pages).");
        }
        var inputs = new List<Input>();
        try
        {
            if (s.Corpora.Length == 0)
            {
                inputs.Add(Load(PageSource.Generated(), s.Pages is > 0 and var n ? n : 8192));
            }
            foreach (string path in s.Corpora)
            {
                PageSource source = PageSource.FromCorpus(path);
                inputs.Add(Load(source, s.Pages is > 0 and var n ? Math.Min(n, source.CorpusPages) : source.CorpusPages));
            }
            foreach (Input input in inputs)
            {
                Measure(input, s.Threshold, withSamples: s.Calibrate);
            }
            if (s.Calibrate)
            {
                return Calibrated(inputs, s);
            }
            foreach (Input input in inputs)
            {
                Dictionary<string, object> result = Report(input, s);
                if (s.Json)
                {
                    Console.WriteLine(JsonSerializer.Serialize(result));
                }
                else
                {
                    // One row per instruction-set path instead of the nested object.
                    var paths = (Dictionary<string, object>)result["paths"];
                    result.Remove("paths");
                    foreach ((string isa, object value) in paths)
                    {
                        var path = (Dictionary<string, object>)value;
                        result[$"{isa} path: GB/s (× LZ4 trial)"] = $"{path["estimate_gb_s"]} ({path["ratio_to_lz4_trial"]}×)" + ((bool)path["accelerated"] ? "" : ", not accelerated here: runs in software");
                    }
                    BenchCommands.Print(result, json: false, $"cram estimate: {input.Name}");
                }
            }
            return 0;
        }
        finally
        {
            inputs.ForEach(i => i.Dispose());
        }
    }

    private static Input Load(PageSource source, int pages)
    {
        byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)pages * PageSize, 64);
        for (int i = 0; i < pages; i++)
        {
            source.Write(new Span<byte>(data + (long)i * PageSize, PageSize), i);
        }
        return new Input { Name = source.Description, Data = data, Pages = pages };
    }

    /// <summary>
    /// Real LZ4 sizes and the estimator's answers, page by page; for calibration also the sample
    /// statistics of the pages the model covers (not zero or same-filled ones).
    /// </summary>
    private static void Measure(Input input, int threshold, bool withSamples)
    {
        byte* scratch = (byte*)NativeMemory.Alloc(2 * PageSize);
        try
        {
            input.Lz4Sizes = new int[input.Pages];
            input.Estimates = new PageEstimate[input.Pages];
            input.Samples = new PageSample[withSamples ? input.Pages : 0];
            for (int i = 0; i < input.Pages; i++)
            {
                byte* page = input.Page(i);
                PageEstimate estimate = input.Estimates[i] = PageEstimator.Estimate(page, threshold);
                if (estimate.Class <= PageClass.SameFilled)
                {
                    continue; // exact: LZ4 size counted as 0, no sample needed
                }
                input.Lz4Sizes[i] = Interop.Lz4.CompressDefault(page, scratch, PageSize, 2 * PageSize);
                if (withSamples)
                {
                    input.Samples[i] = PageEstimator.Sample(page, PageKernels.Best);
                }
            }
        }
        finally
        {
            NativeMemory.Free(scratch);
        }
    }

    private static Dictionary<string, object> Report(Input input, Settings s)
    {
        int t = s.Threshold;
        long bytes = (long)input.Pages * PageSize;
        int n = input.Pages;
        int agree = 0, confident = 0, confidentAgree = 0, falseIncompressible = 0, falseCompressible = 0, btrfsAgree = 0, compressible = 0;
        var classes = new int[Enum.GetValues<PageClass>().Length];
        for (int i = 0; i < n; i++)
        {
            bool below = input.Lz4Sizes[i] <= t;
            PageEstimate e = input.Estimates[i];
            compressible += below ? 1 : 0;
            classes[(int)e.Class]++;
            agree += e.PredictsBelow(t) == below ? 1 : 0;
            btrfsAgree += BtrfsHeuristicCompresses(input.Page(i)) == below ? 1 : 0;
            if (e.Class != PageClass.Uncertain)
            {
                confident++;
                confidentAgree += e.PredictsBelow(t) == below ? 1 : 0;
                falseIncompressible += e.Class == PageClass.Incompressible && below ? 1 : 0;
                falseCompressible += e.Class != PageClass.Incompressible && !below ? 1 : 0;
            }
        }

        double lz4 = BestGbPerSecond(s.Rounds, bytes, () => Lz4Trial(input, t));
        var paths = new Dictionary<string, object>();
        double best = 0;
        foreach (PageKernelIsa isa in Enum.GetValues<PageKernelIsa>())
        {
            CheckSameAnswers(input, t, isa);
            double gbs = BestGbPerSecond(s.Rounds, bytes, () => EstimateAll(input, t, isa));
            paths[isa.ToString()] = new Dictionary<string, object>
            {
                ["accelerated"] = Accelerated(isa),
                ["estimate_gb_s"] = Math.Round(gbs, 2),
                ["ratio_to_lz4_trial"] = Math.Round(gbs / lz4, 1),
            };
            if (isa == PageKernels.Best)
            {
                best = gbs;
            }
        }
        var result = new Dictionary<string, object>
        {
            ["input"] = input.Name,
            ["pages"] = n,
            ["threshold"] = t,
            ["lz4_compressible"] = Math.Round((double)compressible / n, 4),
            ["estimate_gb_s"] = Math.Round(best, 2),
            ["estimate_path"] = PageKernels.Best.ToString(),
            ["lz4_trial_gb_s"] = Math.Round(lz4, 3),
            ["estimate_to_lz4_trial"] = Math.Round(best / lz4, 1),
            ["agreement"] = Math.Round((double)agree / n, 4),
            ["false_incompressible"] = Math.Round((double)falseIncompressible / n, 4),
            ["confident"] = Math.Round((double)confident / n, 4),
            ["agreement_when_confident"] = confident == 0 ? 1.0 : Math.Round((double)confidentAgree / confident, 4),
            ["false_compressible"] = Math.Round((double)falseCompressible / n, 4),
            ["btrfs_heuristic_agreement"] = Math.Round((double)btrfsAgree / n, 4),
        };
        foreach (PageClass c in Enum.GetValues<PageClass>())
        {
            result["class_" + JsonNamingPolicy.SnakeCaseLower.ConvertName(c.ToString())] = Math.Round((double)classes[(int)c] / n, 4);
        }
        result["paths"] = paths;
        return result;
    }

    private static bool Accelerated(PageKernelIsa isa) => isa switch
    {
        PageKernelIsa.Vector512 => Vector512.IsHardwareAccelerated,
        PageKernelIsa.Vector256 => Vector256.IsHardwareAccelerated,
        PageKernelIsa.Vector128 => Vector128.IsHardwareAccelerated,
        _ => true,
    };

    /// <summary>Every path must give the answers of the best one, page for page.</summary>
    private static void CheckSameAnswers(Input input, int threshold, PageKernelIsa isa)
    {
        for (int i = 0; i < input.Pages; i++)
        {
            if (PageEstimator.Estimate(input.Page(i), threshold, isa) != input.Estimates[i])
            {
                throw new InvalidOperationException($"The {isa} estimator disagrees with the {PageKernels.Best} one on page {i}: a kernel bug.");
            }
        }
    }

    private static long EstimateAll(Input input, int threshold, PageKernelIsa isa)
    {
        long sum = 0;
        for (int i = 0; i < input.Pages; i++)
        {
            sum += PageEstimator.Estimate(input.Page(i), threshold, isa).EstimatedSize;
        }
        return sum;
    }

    /// <summary>What reclaim does without the estimator: LZ4 into a buffer of the threshold's size (it stops when the output would not fit).</summary>
    private static long Lz4Trial(Input input, int threshold)
    {
        byte* scratch = stackalloc byte[PageSize];
        long sum = 0;
        for (int i = 0; i < input.Pages; i++)
        {
            sum += Interop.Lz4.CompressDefault(input.Page(i), scratch, PageSize, threshold);
        }
        return sum;
    }

    /// <summary>
    /// Best of <paramref name="rounds"/> rounds of at least 100 ms each (the work repeated), after
    /// half a second of warm-up, so that tiered compilation has finished before anything counts.
    /// </summary>
    private static double BestGbPerSecond(int rounds, long bytes, Func<long> work)
    {
        var warmUp = Stopwatch.StartNew();
        while (warmUp.ElapsedMilliseconds < 500)
        {
            work();
        }
        double best = 0;
        for (int r = 0; r < rounds; r++)
        {
            long start = Stopwatch.GetTimestamp();
            long done = 0;
            do
            {
                work();
                done += bytes;
            }
            while (Stopwatch.GetElapsedTime(start).TotalMilliseconds < 100);
            best = Math.Max(best, done / Stopwatch.GetElapsedTime(start).TotalSeconds / 1e9);
        }
        return best;
    }

    /// <summary>
    /// The reference point: the btrfs compression heuristic (fs/btrfs/compression.c,
    /// btrfs_compress_heuristic) on its 16 × 32-byte sample: compress when the sample
    /// repeats, uses under 64 byte values, or 64 values cover 90 % of it; otherwise when the
    /// Shannon entropy is under 80 % of 8 bits; never when 200 values are needed for 90 %.
    /// </summary>
    internal static bool BtrfsHeuristicCompresses(byte* page)
    {
        const int Chunks = 16, ChunkBytes = 32; // btrfs: 32 bytes every 256 bytes
        Span<byte> sample = stackalloc byte[Chunks * ChunkBytes];
        for (int c = 0; c < Chunks; c++)
        {
            new ReadOnlySpan<byte>(page + c * (PageSize / Chunks), ChunkBytes).CopyTo(sample[(c * ChunkBytes)..]);
        }
        int half = sample.Length / 2;
        if (sample[..half].SequenceEqual(sample[half..]))
        {
            return true;
        }
        Span<int> counts = stackalloc int[256];
        foreach (byte b in sample)
        {
            counts[b]++;
        }
        int distinct = 0;
        foreach (int c in counts)
        {
            distinct += c > 0 ? 1 : 0;
        }
        if (distinct < 64)
        {
            return true;
        }
        counts.Sort((a, b) => b.CompareTo(a));
        int core = 0, covered = 0;
        while (covered < sample.Length * 9 / 10)
        {
            covered += counts[core++];
        }
        if (core <= 64)
        {
            return true;
        }
        if (core >= 200)
        {
            return false;
        }
        double entropy = 0;
        foreach (int c in counts)
        {
            if (c > 0)
            {
                double p = (double)c / sample.Length;
                entropy -= p * Math.Log2(p);
            }
        }
        return entropy < 0.8 * 8;
    }

    /// <summary>Fits the size model (least squares, every file weighted equally) and the margins, and reports the fit.</summary>
    private static int Calibrated(List<Input> inputs, Settings s)
    {
        const int K = PageEstimator.FeatureCount;
        var ata = new double[K, K];
        var atb = new double[K];
        foreach (Input input in inputs)
        {
            double weight = 1.0 / input.Pages;
            for (int i = 0; i < input.Pages; i++)
            {
                if (input.Estimates[i].Class <= PageClass.SameFilled)
                {
                    continue; // exact, not modelled
                }
                double[] x = Features(input.Samples[i]);
                for (int a = 0; a < K; a++)
                {
                    atb[a] += weight * x[a] * input.Lz4Sizes[i];
                    for (int b = 0; b < K; b++)
                    {
                        ata[a, b] += weight * x[a] * x[b];
                    }
                }
            }
        }
        double[] k = Solve(ata, atb);
        int Size(Input input, int i)
        {
            double[] x = Features(input.Samples[i]);
            double size = 0;
            for (int a = 0; a < K; a++)
            {
                size += k[a] * x[a];
            }
            return (int)Math.Clamp(size, 0, 2 * PageSize);
        }
        int t = s.Threshold;
        // The smallest margins (from the floor, in steps of 25 bytes) that keep wrong confident answers within bounds in every file.
        int incompressibleMargin = SmallestMargin(m => inputs.All(input => Rate(input, i =>
            input.Estimates[i].Class > PageClass.SameFilled && Size(input, i) > t + m
            && input.Estimates[i].NibbleEntropy >= PageEstimator.MinIncompressibleEntropy && input.Lz4Sizes[i] <= t) <= 0.005));
        int compressibleMargin = SmallestMargin(m => inputs.All(input => Rate(input, i =>
            input.Estimates[i].Class > PageClass.SameFilled && Size(input, i) < t - m && input.Lz4Sizes[i] > t) <= 0.01));
        var result = new Dictionary<string, object>
        {
            ["files"] = string.Join(", ", inputs.Select(i => i.Name)),
            ["coefficients"] = "[" + string.Join(", ", k.Select(c => c.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + "f")) + "]",
            ["incompressible_margin"] = incompressibleMargin,
            ["compressible_margin"] = compressibleMargin,
        };
        foreach (Input input in inputs)
        {
            result["fit_agreement " + input.Name] = Math.Round(Rate(input, i => input.Estimates[i].Class <= PageClass.SameFilled || (Size(input, i) <= t) == (input.Lz4Sizes[i] <= t)), 4);
        }
        return BenchCommands.Print(result, s.Json, "cram estimate --calibrate (paste into PageEstimator.cs)");
    }

    private static double Rate(Input input, Func<int, bool> predicate)
    {
        int count = 0;
        for (int i = 0; i < input.Pages; i++)
        {
            count += predicate(i) ? 1 : 0;
        }
        return (double)count / input.Pages;
    }

    private static int SmallestMargin(Func<int, bool> acceptable)
    {
        for (int m = PageEstimator.MarginFloor; m <= 2 * PageSize; m += 25)
        {
            if (acceptable(m))
            {
                return m;
            }
        }
        return 2 * PageSize;
    }

    private static double[] Features(PageSample sample)
    {
        Span<float> x = stackalloc float[PageEstimator.FeatureCount];
        PageEstimator.Features(sample, x);
        double[] result = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            result[i] = x[i];
        }
        return result;
    }

    /// <summary>Gaussian elimination with partial pivoting.</summary>
    private static double[] Solve(double[,] a, double[] b)
    {
        int n = b.Length;
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < n; r++)
            {
                if (Math.Abs(a[r, col]) > Math.Abs(a[pivot, col]))
                {
                    pivot = r;
                }
            }
            for (int c = 0; c < n; c++)
            {
                (a[col, c], a[pivot, c]) = (a[pivot, c], a[col, c]);
            }
            (b[col], b[pivot]) = (b[pivot], b[col]);
            for (int r = 0; r < n; r++)
            {
                if (r != col && a[col, col] != 0)
                {
                    double f = a[r, col] / a[col, col];
                    for (int c = col; c < n; c++)
                    {
                        a[r, c] -= f * a[col, c];
                    }
                    b[r] -= f * b[col];
                }
            }
        }
        var x = new double[n];
        for (int i = 0; i < n; i++)
        {
            x[i] = a[i, i] == 0 ? 0 : b[i] / a[i, i];
        }
        return x;
    }
}
