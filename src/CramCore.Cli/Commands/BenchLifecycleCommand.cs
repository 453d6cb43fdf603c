using System.Diagnostics;
using System.Text.Json.Serialization;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench lifecycle --json` prints: per region size, the median over the rounds (and the worst) of each step.</summary>
internal sealed record LifecycleBenchResult(
    [property: JsonPropertyName("dispose_ms_1g")] [property: Figure(FigureUnit.Milliseconds, Label = "dispose a 1 GiB region")] double DisposeMs1g,
    [property: JsonPropertyName("dispose_ms_1t")] [property: Figure(FigureUnit.Milliseconds, Label = "dispose a 1 TiB region")] double DisposeMs1t,
    [property: JsonPropertyName("dispose_ms_64t")] [property: Figure(FigureUnit.Milliseconds, Label = "dispose a 64 TiB region")] double DisposeMs64t,
    [property: JsonPropertyName("create_ms_1g")] [property: Figure(FigureUnit.Milliseconds, Label = "create a 1 GiB region")] double CreateMs1g,
    [property: JsonPropertyName("create_ms_1t")] [property: Figure(FigureUnit.Milliseconds, Label = "create a 1 TiB region")] double CreateMs1t,
    [property: JsonPropertyName("create_ms_64t")] [property: Figure(FigureUnit.Milliseconds, Label = "create a 64 TiB region")] double CreateMs64t,
    [property: JsonPropertyName("write_ms_1g")] [property: Figure(FigureUnit.Milliseconds, Label = "first write into a 1 GiB region")] double WriteMs1g,
    [property: JsonPropertyName("write_ms_1t")] [property: Figure(FigureUnit.Milliseconds, Label = "first write into a 1 TiB region")] double WriteMs1t,
    [property: JsonPropertyName("write_ms_64t")] [property: Figure(FigureUnit.Milliseconds, Label = "first write into a 64 TiB region")] double WriteMs64t,
    double WorstDisposeMs, int Rounds,
    int Engines, double EnginesCreateS, double EnginesDisposeS, [property: Figure(FigureUnit.Number, Label = "idle engines' CPU, % of one CPU")] double IdleCpuPercent,
    long RssPerEngineBytes, long MemoryUsedPerEngineBytes);

/// <summary>
/// `cram bench lifecycle`: what a region costs to create, write one byte into (a first touch: the
/// page and a block of the page table) and dispose, for 1 GiB, 1 TiB and 64 TiB regions (the
/// documented maximum). Tear-down walks only the page-table blocks first touch marked, so every
/// figure should be the same few milliseconds whatever the virtual size.
/// </summary>
internal static unsafe class BenchLifecycleCommand
{
    private static readonly (string Name, long Bytes)[] s_sizes = [("1g", 1L << 30), ("1t", 1L << 40), ("64t", SharedLayout.MaxRegionBytes)];

    public static int Run(int rounds, int engines, bool json)
    {
        if (rounds is < 1 or > 100)
        {
            throw new CliException($"--rounds: {rounds} must be between 1 and 100.");
        }
        if (engines is < 1 or > 10_000)
        {
            throw new CliException($"--engines: {engines} must be between 1 and 10000.");
        }
        using var engine = CramEngine.Create();
        var results = new Dictionary<string, (List<double> Create, List<double> Write, List<double> Dispose)>();
        foreach ((string name, long bytes) in s_sizes)
        {
            BenchSupport.Progress($"{name}: create, write one byte, dispose, {rounds} time(s)");
            var steps = (new List<double>(), new List<double>(), new List<double>());
            for (int round = 0; round < rounds; round++)
            {
                long t0 = Stopwatch.GetTimestamp();
                CramRegion region = engine.CreateRegion(bytes);
                long t1 = Stopwatch.GetTimestamp();
                region.Pointer[bytes / 2] = 1; // the middle: a page-table block far from the start
                long t2 = Stopwatch.GetTimestamp();
                region.Dispose();
                long t3 = Stopwatch.GetTimestamp();
                steps.Item1.Add(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
                steps.Item2.Add(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
                steps.Item3.Add(Stopwatch.GetElapsedTime(t2, t3).TotalMilliseconds);
            }
            results[name] = steps;
        }
        (double createS, double disposeS, double idleCpu, long rss, long used) = ManyEngines(engines);
        static double Median(List<double> values) => Math.Round(values.Order().ElementAt(values.Count / 2), 3);
        var result = new LifecycleBenchResult(
            DisposeMs1g: Median(results["1g"].Dispose), DisposeMs1t: Median(results["1t"].Dispose), DisposeMs64t: Median(results["64t"].Dispose),
            CreateMs1g: Median(results["1g"].Create), CreateMs1t: Median(results["1t"].Create), CreateMs64t: Median(results["64t"].Create),
            WriteMs1g: Median(results["1g"].Write), WriteMs1t: Median(results["1t"].Write), WriteMs64t: Median(results["64t"].Write),
            WorstDisposeMs: Math.Round(results.Values.SelectMany(r => r.Dispose).Max(), 3),
            Rounds: rounds,
            Engines: engines, EnginesCreateS: Math.Round(createS, 3), EnginesDisposeS: Math.Round(disposeS, 3), IdleCpuPercent: Math.Round(idleCpu, 3),
            RssPerEngineBytes: rss, MemoryUsedPerEngineBytes: used);
        return ResultPrinter.Print(result, json, "cram bench lifecycle");
    }

    /// <summary>
    /// How long <paramref name="count"/> engines (each with a memory limit, so each runs its reclaim
    /// worker, and a region with one page written) take to create and to dispose, the CPU they use
    /// while idle (percent of one CPU, all of them together, over two seconds), and what each adds to
    /// the process's resident memory against what it reports as <see cref="CramStats.MemoryUsedBytes"/>.
    /// </summary>
    private static (double CreateS, double DisposeS, double IdleCpuPercent, long RssPerEngine, long UsedPerEngine) ManyEngines(int count)
    {
        BenchSupport.Progress($"{count} engines: create (a memory limit and a region each), idle 2 s, dispose");
        var engines = new List<(CramEngine Engine, CramRegion Region)>(count);
        var options = new CramOptions { MemoryLimitBytes = 64L << 20 };
        GC.Collect();
        long rss0 = Measure.ResidentSetBytes();
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            for (int i = 0; i < count; i++)
            {
                CramEngine engine = CramEngine.Create(options);
                CramRegion region = engine.CreateRegion(1L << 20);
                region.Pointer[0] = 1;
                engines.Add((engine, region));
            }
            double createS = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            GC.Collect();
            long rssPerEngine = (Measure.ResidentSetBytes() - rss0) / count;
            long usedPerEngine = engines.Sum(e => e.Engine.GetStats().MemoryUsedBytes) / count;
            using var process = Process.GetCurrentProcess();
            TimeSpan cpu0 = process.TotalProcessorTime;
            long idle0 = Stopwatch.GetTimestamp();
            Thread.Sleep(2000);
            process.Refresh();
            double idleCpu = 100 * (process.TotalProcessorTime - cpu0).TotalSeconds / Stopwatch.GetElapsedTime(idle0).TotalSeconds;
            long t1 = Stopwatch.GetTimestamp();
            foreach ((CramEngine engine, CramRegion region) in engines)
            {
                region.Dispose();
                engine.Dispose();
            }
            engines.Clear();
            return (createS, Stopwatch.GetElapsedTime(t1).TotalSeconds, idleCpu, rssPerEngine, usedPerEngine);
        }
        finally
        {
            foreach ((CramEngine engine, CramRegion region) in engines)
            {
                region.Dispose();
                engine.Dispose();
            }
        }
    }
}
