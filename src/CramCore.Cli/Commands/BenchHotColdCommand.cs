using System.Diagnostics;
using System.Text.Json;

namespace CramCore.Cli.Commands;

/// <summary>One phase of `cram bench hotcold`: the engine's misses and an exact LRU's on the same reads.</summary>
internal sealed record HotColdPhase(
    int Phase, long Reads, double RefaultsPerRead, double HotMissRate, double ReadsPerS,
    double LruRefaultsPerRead, double LruHotMissRate, double RefaultsOverLru);

/// <summary>What `cram bench hotcold --json` prints: per phase, and the steady state (every phase after the first).</summary>
internal sealed record HotColdBenchResult(
    [property: Figure(FigureUnit.Number)] double RefaultsPerRead, double HotMissRate, double ReadsPerS, [property: Figure(FigureUnit.Number, Label = "LRU refaults per read")] double LruRefaultsPerRead, double LruHotMissRate, double RefaultsOverLru,
    List<HotColdPhase> Phases,
    string Source, string Distribution, long SizeBytes, long LimitBytes, long HotBytes, double HotShare, [property: Figure(FigureUnit.Number)] double ZipfExponent,
    long ReadsPerPhase, double FillS, long Evictions, long Refaults, long WorkingSetActivations, long WorkingSetDemotions, long Mismatches);

/// <summary>
/// `cram bench hotcold`: does reclaim keep a hot set resident as an LRU would? SIZE of corpus pages
/// written under a resident LIMIT, then PHASES of random 8-byte reads, one thread: a HOT-SHARE of
/// them to a hot set of HOT bytes (a fixed random set of pages) and the rest to the other pages,
/// uniformly; or, with --zipf S, every page by a Zipf law of exponent S over a fixed random ranking
/// (the hot set is then the HOT bytes of highest rank). Per phase: swap-in faults per read (the
/// engine's counter), the share of hot-set reads that found their page evicted (the page table,
/// just before the read), reads per second; and, on the same sequence in the same run, what an
/// exact LRU holding as many pages as the limit would have missed (simulated: the yardstick).
/// Every read checks the 8 bytes it loads.
/// </summary>
internal static unsafe class BenchHotColdCommand
{
    private const int P = PageSource.PageSize;

    /// <param name="plot">An SVG file to draw each phase's swap-ins per read and hot-set miss rate into, beside the LRU's (null: none).</param>
    /// <param name="kernelJson">With <paramref name="plot"/>: the JSON kernel-hotcold.sh printed for the same reads; the kernel's figures go beside.</param>
    public static int Run(string? corpus, long size, long limit, long hot, double hotShare, int phases, long reads, double zipf, bool json,
        string? plot = null, string? kernelJson = null)
    {
        JsonElement? kernel = BenchSupport.PlotArguments(plot, kernelJson, "kernel-hotcold.sh");
        if (size < 16L << 20 || size > 1L << 40)
        {
            throw new CliException($"--size: {Measure.Bytes(size)} must be between 16m and 1t.");
        }
        if (limit < 4L << 20 || limit >= size)
        {
            throw new CliException($"--limit: {Measure.Bytes(limit)} must be at least 4m and below --size ({Measure.Bytes(size)}).");
        }
        if (hot < 0 || hot >= size)
        {
            throw new CliException($"--hot: {Measure.Bytes(hot)} must be at least 0 (0: uniform reads, no hot set) and below --size ({Measure.Bytes(size)}).");
        }
        if (!(hotShare is >= 0 and <= 1))
        {
            throw new CliException($"--hot-share: {hotShare} must be between 0 and 1 (0.9: nine reads in ten go to the hot set).");
        }
        if (phases is < 1 or > 100)
        {
            throw new CliException($"--phases: {phases} must be between 1 and 100.");
        }
        if (reads is < 1000 or > 1_000_000_000)
        {
            throw new CliException($"--reads: {reads} must be between 1000 and 1000000000.");
        }
        if (zipf < 0 || zipf > 5)
        {
            throw new CliException($"--zipf: {zipf} must be between 0 (off) and 5; 0.99 is the usual skew.");
        }
        PageSource source = corpus is null ? PageSource.GeneratedCorpus() : PageSource.FromCorpus(corpus);
        int pages = (int)(size / P);
        int hotPages = (int)(hot / P);
        int limitPages = (int)(limit / P);

        // The first 8 bytes of every corpus page: what each read must find.
        var scratch = new byte[P];
        var expected = new long[Math.Min(pages, source.CorpusPages)];
        for (int i = 0; i < expected.Length; i++)
        {
            source.Write(scratch, i);
            expected[i] = BitConverter.ToInt64(scratch, 0);
        }

        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = limit });
        using var region = engine.CreateRegion((long)pages * P);
        BenchSupport.Progress($"fill: {Measure.Bytes(size)} of {source.Description} under a {Measure.Bytes(limit)} resident limit");
        long t0 = Stopwatch.GetTimestamp();
        for (long i = 0; i < pages; i++)
        {
            source.Write(new Span<byte>(region.Pointer + i * P, P), i);
        }
        double fillSeconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;

        var rng = new Random(20261128);
        int[] rank = [.. Enumerable.Range(0, pages)];
        rng.Shuffle(rank); // rank[r] = the page of rank r; the hot set is ranks [0, hotPages)
        double[]? cdf = zipf > 0 ? ZipfCdf(pages, zipf) : null;
        var lru = new ExactLru(pages, limitPages);
        for (int i = 0; i < pages; i++)
        {
            lru.Access(i); // the fill, in order: the LRU starts with the last LIMIT pages, as the engine does
        }

        var results = new List<HotColdPhase>();
        long mismatches = 0;
        for (int phase = 1; phase <= phases; phase++)
        {
            BenchSupport.Progress($"phase {phase} of {phases}: {reads:N0} reads, " +
                (cdf is not null ? $"Zipf {zipf}" : hotPages > 0 ? $"{hotShare:P0} to a {Measure.Bytes(hot)} hot set" : "uniform"));
            long refaultsBefore = engine.GetStats().Refaults;
            long lruMissesBefore = lru.Misses, hotReads = 0, hotMisses = 0, lruHotMisses = 0;
            long tp = Stopwatch.GetTimestamp();
            for (long n = 0; n < reads; n++)
            {
                int r = cdf is not null ? Sample(cdf, rng.NextDouble())
                    : hotPages > 0 && rng.NextDouble() < hotShare ? rng.Next(hotPages)
                    : hotPages + rng.Next(pages - hotPages);
                int page = rank[r];
                bool isHot = r < hotPages;
                byte* p = region.Pointer + (long)page * P;
                bool evicted = region.GetPageState((long)page * P) == PageState.Evicted;
                if (Volatile.Read(ref *(long*)p) != expected[page % expected.Length])
                {
                    mismatches++;
                }
                bool lruMiss = lru.Access(page);
                if (isHot)
                {
                    hotReads++;
                    hotMisses += evicted ? 1 : 0;
                    lruHotMisses += lruMiss ? 1 : 0;
                }
            }
            double seconds = Stopwatch.GetElapsedTime(tp).TotalSeconds;
            double refaults = (engine.GetStats().Refaults - refaultsBefore) / (double)reads;
            double lruRefaults = (lru.Misses - lruMissesBefore) / (double)reads;
            results.Add(new HotColdPhase(phase, reads, Math.Round(refaults, 5), Math.Round(Rate(hotMisses, hotReads), 5), Math.Round(reads / seconds),
                Math.Round(lruRefaults, 5), Math.Round(Rate(lruHotMisses, hotReads), 5), Math.Round(refaults / lruRefaults, 3)));
        }

        // The steady state: every phase after the first (the first starts from the fill's order).
        var steady = results.Count > 1 ? results.Skip(1).ToList() : results;
        double Mean(Func<HotColdPhase, double> f) => Math.Round(steady.Average(f), 5);
        CramStats s = engine.GetStats();
        var result = new HotColdBenchResult(
            RefaultsPerRead: Mean(x => x.RefaultsPerRead),
            HotMissRate: Mean(x => x.HotMissRate),
            ReadsPerS: Math.Round(steady.Average(x => x.ReadsPerS)),
            LruRefaultsPerRead: Mean(x => x.LruRefaultsPerRead),
            LruHotMissRate: Mean(x => x.LruHotMissRate),
            RefaultsOverLru: Math.Round(steady.Average(x => x.RefaultsPerRead) / steady.Average(x => x.LruRefaultsPerRead), 3),
            Phases: results,
            Source: source.Description,
            Distribution: cdf is not null ? "zipf" : hotPages > 0 ? "hot set" : "uniform",
            SizeBytes: (long)pages * P,
            LimitBytes: limit,
            HotBytes: (long)hotPages * P,
            HotShare: cdf is not null ? Math.Round(ZipfShare(cdf, hotPages), 4) : hotPages > 0 ? hotShare : 0,
            ZipfExponent: zipf,
            ReadsPerPhase: reads,
            FillS: Math.Round(fillSeconds, 2),
            Evictions: s.Evictions,
            Refaults: s.Refaults,
            WorkingSetActivations: s.WorkingSetActivations,
            WorkingSetDemotions: s.WorkingSetDemotions,
            Mismatches: mismatches);
        if (plot is not null)
        {
            List<double?> KernelPhases(string key) => kernel is { } k && k.TryGetProperty("phases", out JsonElement list) && list.ValueKind == JsonValueKind.Array
                ? [.. list.EnumerateArray().Select(e => e.TryGetProperty(key, out JsonElement v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : (double?)null)]
                : [];
            List<PhaseBarsPlot.Series> Series(Func<HotColdPhase, double> cram, Func<HotColdPhase, double> lru, string kernelKey) =>
            [
                new("CramCore", "#1f77b4", [.. results.Select(p => (double?)cram(p))]),
                new("an exact LRU, same reads", "#7f7f7f", [.. results.Select(p => (double?)lru(p))]),
                .. kernel is null ? Array.Empty<PhaseBarsPlot.Series>() : [new PhaseBarsPlot.Series("the kernel (anchor)", "#d62728", KernelPhases(kernelKey))],
            ];
            File.WriteAllText(plot, PhaseBarsPlot.Svg(
                $"cram bench hotcold: {Measure.Bytes(result.SizeBytes)} under {Measure.Bytes(limit)}, {result.Distribution} ({Measure.Bytes(result.HotBytes)} hot, {result.HotShare:P0} of reads)",
                [
                    new PhaseBarsPlot.Panel("swap-ins per read", v => v.ToString("0.000", System.Globalization.CultureInfo.InvariantCulture),
                        Series(p => p.RefaultsPerRead, p => p.LruRefaultsPerRead, "majflt_per_read")),
                    new PhaseBarsPlot.Panel("hot-set reads that missed", v => v.ToString("0 %", System.Globalization.CultureInfo.InvariantCulture),
                        Series(p => p.HotMissRate, p => p.LruHotMissRate, "hot_miss_rate")),
                ], results.Count));
            BenchSupport.Progress($"plot: {plot}");
        }
        if (json)
        {
            Console.WriteLine(ResultPrinter.ToJson(result));
        }
        else
        {
            var rows = ResultPrinter.Rows(result).Where(r => r.Name != "phases").ToList();
            foreach (HotColdPhase phase in results)
            {
                rows.AddRange(ResultPrinter.Rows(phase).Where(r => r.Name != "phase").Select(r => ($"phase {phase.Phase}: {r.Name}", r.Value)));
            }
            ResultPrinter.PrintTable("cram bench hotcold", rows);
        }
        return mismatches == 0 ? ExitCode.Success : ExitCode.IntegrityFailure;
    }

    private static double Rate(long part, long whole) => whole == 0 ? 0 : part / (double)whole;

    /// <summary>The cumulative distribution of a Zipf law of exponent <paramref name="s"/> over ranks 0..n-1.</summary>
    internal static double[] ZipfCdf(int n, double s)
    {
        var cdf = new double[n];
        double sum = 0;
        for (int k = 0; k < n; k++)
        {
            sum += 1 / Math.Pow(k + 1, s);
            cdf[k] = sum;
        }
        for (int k = 0; k < n; k++)
        {
            cdf[k] /= sum;
        }
        return cdf;
    }

    /// <summary>The rank whose cumulative probability first reaches <paramref name="u"/>.</summary>
    internal static int Sample(double[] cdf, double u)
    {
        int i = Array.BinarySearch(cdf, u);
        return Math.Min(i >= 0 ? i : ~i, cdf.Length - 1);
    }

    /// <summary>The share of reads the top <paramref name="ranks"/> ranks get.</summary>
    private static double ZipfShare(double[] cdf, int ranks) => ranks == 0 ? 0 : cdf[ranks - 1];

    /// <summary>
    /// An exact LRU of <c>capacity</c> pages over pages 0..n-1: a doubly linked list in two arrays,
    /// O(1) per access. The yardstick the engine's policy is measured against.
    /// </summary>
    internal sealed class ExactLru(int pages, int capacity)
    {
        private readonly int[] _prev = new int[pages], _next = new int[pages];
        private readonly bool[] _resident = new bool[pages];
        private int _head = -1, _tail = -1, _count;

        /// <summary>Accesses that found their page not resident (cumulative).</summary>
        public long Misses { get; private set; }

        /// <summary>Accesses a page (it becomes the most recent); true if that was a miss.</summary>
        public bool Access(int page)
        {
            bool miss = !_resident[page];
            if (miss)
            {
                Misses++;
                _resident[page] = true;
                _count++;
            }
            else
            {
                Unlink(page);
            }
            _prev[page] = -1;
            _next[page] = _head;
            if (_head >= 0)
            {
                _prev[_head] = page;
            }
            _head = page;
            if (_tail < 0)
            {
                _tail = page;
            }
            if (_count > capacity)
            {
                int victim = _tail;
                Unlink(victim);
                _resident[victim] = false;
                _count--;
            }
            return miss;
        }

        private void Unlink(int page)
        {
            int p = _prev[page], n = _next[page];
            if (p >= 0)
            {
                _next[p] = n;
            }
            else
            {
                _head = n;
            }
            if (n >= 0)
            {
                _prev[n] = p;
            }
            else
            {
                _tail = p;
            }
        }
    }
}
