using System.Diagnostics;
using System.Text.Json.Serialization;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench lifecycle --json` prints: per region size, the median over the rounds (and the worst) of each step.</summary>
internal sealed record LifecycleBenchResult(
    [property: JsonPropertyName("dispose_ms_1g")] double DisposeMs1g,
    [property: JsonPropertyName("dispose_ms_1t")] double DisposeMs1t,
    [property: JsonPropertyName("dispose_ms_64t")] double DisposeMs64t,
    [property: JsonPropertyName("create_ms_1g")] double CreateMs1g,
    [property: JsonPropertyName("create_ms_1t")] double CreateMs1t,
    [property: JsonPropertyName("create_ms_64t")] double CreateMs64t,
    [property: JsonPropertyName("write_ms_1g")] double WriteMs1g,
    [property: JsonPropertyName("write_ms_1t")] double WriteMs1t,
    [property: JsonPropertyName("write_ms_64t")] double WriteMs64t,
    double WorstDisposeMs, int Rounds);

/// <summary>
/// `cram bench lifecycle`: what a region costs to create, write one byte into (a first touch: the
/// page and a block of the page table) and dispose, for 1 GiB, 1 TiB and 64 TiB regions (the
/// documented maximum). Tear-down walks only the page-table blocks first touch marked, so every
/// figure should be the same few milliseconds whatever the virtual size.
/// </summary>
internal static unsafe class BenchLifecycleCommand
{
    private static readonly (string Name, long Bytes)[] s_sizes = [("1g", 1L << 30), ("1t", 1L << 40), ("64t", SharedLayout.MaxRegionBytes)];

    public static int Run(int rounds, bool json)
    {
        if (rounds is < 1 or > 100)
        {
            throw new CliException($"--rounds: {rounds} must be between 1 and 100.");
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
        static double Median(List<double> values) => Math.Round(values.Order().ElementAt(values.Count / 2), 3);
        var result = new LifecycleBenchResult(
            DisposeMs1g: Median(results["1g"].Dispose), DisposeMs1t: Median(results["1t"].Dispose), DisposeMs64t: Median(results["64t"].Dispose),
            CreateMs1g: Median(results["1g"].Create), CreateMs1t: Median(results["1t"].Create), CreateMs64t: Median(results["64t"].Create),
            WriteMs1g: Median(results["1g"].Write), WriteMs1t: Median(results["1t"].Write), WriteMs64t: Median(results["64t"].Write),
            WorstDisposeMs: Math.Round(results.Values.SelectMany(r => r.Dispose).Max(), 3),
            Rounds: rounds);
        return ResultPrinter.Print(result, json, "cram bench lifecycle");
    }
}
