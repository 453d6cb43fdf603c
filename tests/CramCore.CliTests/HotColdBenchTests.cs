using System.Text.Json;
using CramCore.Cli.Commands;

namespace CramCore.Tests;

/// <summary>`cram bench hotcold`'s yardstick and its sampling: the exact LRU against a plain list, the Zipf law's shape, and a small real run.</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed class HotColdBenchTests
{
    [Fact]
    public void ExactLru_MissesWhatAPlainListWouldMiss()
    {
        var rng = new Random(5);
        const int pages = 200, capacity = 37;
        var lru = new BenchHotColdCommand.ExactLru(pages, capacity);
        var list = new List<int>(); // most recent first
        long misses = 0;
        for (int i = 0; i < 20_000; i++)
        {
            int page = rng.Next(10) < 7 ? rng.Next(30) : rng.Next(pages);
            bool miss = !list.Remove(page);
            list.Insert(0, page);
            if (list.Count > capacity)
            {
                list.RemoveAt(list.Count - 1);
            }
            misses += miss ? 1 : 0;
            Assert.Equal(miss, lru.Access(page));
        }
        Assert.Equal(misses, lru.Misses);
    }

    [Fact]
    public void Zipf_RankOneIsTwiceAsLikelyAsRankTwo()
    {
        double[] cdf = BenchHotColdCommand.ZipfCdf(1000, 1.0);
        Assert.Equal(1.0, cdf[^1], 9);
        Assert.Equal(2.0, cdf[0] / (cdf[1] - cdf[0]), 9);
        var rng = new Random(3);
        var counts = new int[1000];
        for (int i = 0; i < 200_000; i++)
        {
            counts[BenchHotColdCommand.Sample(cdf, rng.NextDouble())]++;
        }
        Assert.InRange(counts[0] / (double)counts[1], 1.85, 2.15);
    }

    [Fact]
    public void Plot_DrawsEachPhase_ForCramCoreTheLruAndTheKernel()
    {
        string sample = Path.Combine(AppContext.BaseDirectory, "Samples", "dotnet-heap.sample.pages");
        string dir = Directory.CreateTempSubdirectory("cramcore-plot-").FullName;
        try
        {
            string svg = Path.Combine(dir, "hotcold.svg"), kernel = Path.Combine(dir, "hotcold.json");
            File.WriteAllText(kernel, """{"phases":[{"phase":1,"majflt_per_read":0.2178,"hot_miss_rate":0.1482},{"phase":2,"majflt_per_read":0.0979,"hot_miss_rate":0.0137}],"refaults_per_read":0.1005}""");
            ConsoleCapture.Stdout(() => BenchHotColdCommand.Run(sample, 32L << 20, 8L << 20, 4L << 20, 0.9, 2, 20_000, 0, json: true, plot: svg, kernelJson: kernel));
            var doc = System.Xml.Linq.XDocument.Load(svg);
            System.Xml.Linq.XNamespace ns = "http://www.w3.org/2000/svg";
            var bars = doc.Descendants(ns + "rect").Select(r => r.Element(ns + "title")?.Value).OfType<string>().ToList();
            Assert.Equal(2 * 2 * 3, bars.Count); // two panels, two phases, three series
            Assert.Contains("the kernel (anchor), phase 1: 0.218", bars);
            Assert.Contains(bars, b => b.StartsWith("an exact LRU, same reads, phase 2: ", StringComparison.Ordinal));
            Assert.Contains(doc.Descendants(ns + "text"), t => t.Value == "hot-set reads that missed");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void SmallRun_ReportsPhasesAgainstTheLru_AndEveryReadChecks()
    {
        string sample = Path.Combine(AppContext.BaseDirectory, "Samples", "dotnet-heap.sample.pages");
        var stdout = new StringWriter();
        TextWriter original = Console.Out;
        Console.SetOut(stdout);
        int code;
        try
        {
            code = BenchHotColdCommand.Run(sample, 32L << 20, 8L << 20, 4L << 20, 0.9, 2, 20_000, 0, json: true);
        }
        finally
        {
            Console.SetOut(original);
        }
        Assert.Equal(0, code);
        JsonElement r = JsonDocument.Parse(stdout.ToString()).RootElement;
        Assert.Equal(0, r.GetProperty("mismatches").GetInt64());
        Assert.Equal(2, r.GetProperty("phases").GetArrayLength());
        // 8 MiB of 32 MiB resident, 90 % of reads to 4 MiB: an LRU misses most of the cold tenth.
        double lru = r.GetProperty("lru_refaults_per_read").GetDouble();
        Assert.InRange(lru, 0.05, 0.1);
        Assert.True(r.GetProperty("refaults_per_read").GetDouble() > 0);
        Assert.True(r.GetProperty("evictions").GetInt64() > 0);
    }
}
