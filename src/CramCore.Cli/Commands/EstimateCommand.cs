using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace CramCore.Cli.Commands;

/// <summary>One instruction-set path in `cram estimate --json`.</summary>
internal sealed record EstimatePathResult(bool Accelerated, double EstimateGbS, double RatioToLz4Trial);

/// <summary>What `cram estimate --json` prints, per input (the class_* fields: fraction of pages per <see cref="PageClass"/>).</summary>
/// <summary>What `cram estimate --json` prints: one result per input, in the order given.</summary>
internal sealed record EstimateResults(List<EstimateResult> Inputs);

internal sealed record EstimateResult(
    string Input, int Pages, int Threshold, [property: Figure(FigureUnit.Percent)] double Lz4Compressible, double EstimateGbS, string EstimatePath,
    double Lz4TrialGbS, double EstimateToLz4Trial, [property: Figure(FigureUnit.Percent)] double Agreement, [property: Figure(FigureUnit.Percent)] double FalseIncompressible, [property: Figure(FigureUnit.Percent)] double Confident,
    [property: Figure(FigureUnit.Percent)] double AgreementWhenConfident, [property: Figure(FigureUnit.Percent)] double FalseCompressible, double BtrfsHeuristicAgreement,
    [property: Figure(FigureUnit.Percent)] double ClassZero, [property: Figure(FigureUnit.Percent)] double ClassSameFilled, [property: Figure(FigureUnit.Percent)] double ClassVeryCompressible, [property: Figure(FigureUnit.Percent)] double ClassCompressible,
    [property: Figure(FigureUnit.Percent)] double ClassUncertain, [property: Figure(FigureUnit.Percent)] double ClassIncompressible, Dictionary<string, EstimatePathResult> Paths);

/// <summary>
/// `cram estimate`: the compressibility estimator against real LZ4 on the same pages — speed of
/// every instruction-set path, agreement, false "incompressible". With `--calibrate` it hands the
/// measured pages to <see cref="EstimatorCalibration"/> instead.
/// </summary>
internal static unsafe class EstimateCommand
{
    public sealed record Settings(string[] Corpora, int Pages, int Rounds, int Threshold, bool Calibrate, bool Json);

    private const int PageSize = PageSource.PageSize;

    /// <summary>Pages of one input with what real LZ4 and the estimator make of each.</summary>
    internal sealed class Input : IDisposable
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
            throw new CliException($"--threshold is {s.Threshold}; it must be between 64 and 4096 bytes (default 3072, as CramOptions.CompressionThresholdBytes).");
        }
        if (s.Pages < 0)
        {
            throw new CliException($"--pages is {s.Pages}; give a positive number of pages per input, or leave it out for every page of each file (8192 generated pages without --corpus).");
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
                BenchSupport.Progress($"{input.Name}: LZ4 and the estimator on {input.Pages} pages, then the speed of every instruction-set path, best of {s.Rounds}");
                Measure(input, s.Threshold, withSamples: s.Calibrate);
            }
            if (s.Calibrate)
            {
                return EstimatorCalibration.Run(inputs, s);
            }
            if (s.Json) // one document whatever the inputs: {"inputs": [one object per input, in order]}
            {
                Console.WriteLine(ResultPrinter.ToJson(new EstimateResults([.. inputs.Select(i => Report(i, s))])));
                return 0;
            }
            foreach (Input input in inputs)
            {
                EstimateResult result = Report(input, s);
                // In the table, one row per instruction-set path instead of the nested object.
                var rows = ResultPrinter.Rows(result).Where(r => r.Name != "paths").ToList();
                foreach ((string isa, EstimatePathResult path) in result.Paths)
                {
                    rows.Add(($"{isa} path: GB/s (× LZ4 trial)", $"{path.EstimateGbS} ({path.RatioToLz4Trial}×)" + (path.Accelerated ? "" : ", not accelerated here: runs in software")));
                }
                ResultPrinter.PrintTable($"cram estimate: {input.Name}", rows);
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
                    input.Samples[i] = PageKernels.Sample(page, PageKernels.Best);
                }
            }
        }
        finally
        {
            NativeMemory.Free(scratch);
        }
    }

    private static EstimateResult Report(Input input, Settings s)
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
        var paths = new Dictionary<string, EstimatePathResult>();
        double best = 0;
        foreach (PageKernelIsa isa in Enum.GetValues<PageKernelIsa>())
        {
            CheckSameAnswers(input, t, isa);
            double gbs = BestGbPerSecond(s.Rounds, bytes, () => EstimateAll(input, t, isa));
            paths[isa.ToString()] = new EstimatePathResult(Accelerated(isa), Math.Round(gbs, 2), Math.Round(gbs / lz4, 1));
            if (isa == PageKernels.Best)
            {
                best = gbs;
            }
        }
        double Share(PageClass c) => Math.Round((double)classes[(int)c] / n, 4);
        return new EstimateResult(
            Input: input.Name,
            Pages: n,
            Threshold: t,
            Lz4Compressible: Math.Round((double)compressible / n, 4),
            EstimateGbS: Math.Round(best, 2),
            EstimatePath: PageKernels.Best.ToString(),
            Lz4TrialGbS: Math.Round(lz4, 3),
            EstimateToLz4Trial: Math.Round(best / lz4, 1),
            Agreement: Math.Round((double)agree / n, 4),
            FalseIncompressible: Math.Round((double)falseIncompressible / n, 4),
            Confident: Math.Round((double)confident / n, 4),
            AgreementWhenConfident: confident == 0 ? 1.0 : Math.Round((double)confidentAgree / confident, 4),
            FalseCompressible: Math.Round((double)falseCompressible / n, 4),
            BtrfsHeuristicAgreement: Math.Round((double)btrfsAgree / n, 4),
            ClassZero: Share(PageClass.Zero),
            ClassSameFilled: Share(PageClass.SameFilled),
            ClassVeryCompressible: Share(PageClass.VeryCompressible),
            ClassCompressible: Share(PageClass.Compressible),
            ClassUncertain: Share(PageClass.Uncertain),
            ClassIncompressible: Share(PageClass.Incompressible),
            Paths: paths);
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
}
