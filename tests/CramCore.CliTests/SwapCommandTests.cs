using System.Text.Json;

namespace CramCore.Tests;

/// <summary>`cram bench swap` on a small sample: the kernel anchor's keys, real samples, every page verified.</summary>
[Trait("Category", TestCategory.Cli)]
[Collection("Console")]
public sealed class SwapCommandTests
{
    private static string Sample => Path.Combine(AppContext.BaseDirectory, "Samples", "dotnet-heap.sample.pages");

    [Fact]
    public void BenchSwap_PrintsTheKernelAnchorsKeys_AndVerifiesEveryPage()
    {
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => BenchSwapCommand.Run(Sample, 32L << 20, 8L << 20, 500, json: true))).RootElement;
        string[] anchorKeys = ["fill_mib_s", "swapin_at_limit_p50_us", "swapin_at_limit_p99_us", "swapin_p50_us", "swapin_p99_us", "seq_swapin_mib_s", "mismatches"];
        Assert.Equal(anchorKeys, r.EnumerateObject().Take(anchorKeys.Length).Select(p => p.Name));
        Assert.Equal(0, r.GetProperty("mismatches").GetInt64());
        Assert.True(r.GetProperty("samples_at_limit").GetInt32() > 0 && r.GetProperty("samples_no_limit").GetInt32() > 0);
        Assert.True(r.GetProperty("seq_pages").GetInt64() > 0);
        Assert.True(r.GetProperty("evictions").GetInt64() > 0);
        // The prefetch phase brought back every page it evicted again, and the verify pass that read
        // them all (and found them right) needed no fault.
        Assert.Equal(r.GetProperty("prefetch_evicted_pages").GetInt64(), r.GetProperty("prefetched_pages").GetInt64());
        Assert.Equal(0, r.GetProperty("refaults_after_prefetch").GetInt64());
        // Where the fill's time went: the threads that did the work used CPU, and no group more than
        // the whole process could have in the fill's time (two CPUs here).
        double elapsed = r.GetProperty("fill_elapsed_s").GetDouble();
        Assert.True(elapsed > 0);
        Assert.True(r.GetProperty("fill_cpu_reclaim_s").GetDouble() + r.GetProperty("fill_cpu_writer_s").GetDouble() +
            r.GetProperty("fill_cpu_fault_service_s").GetDouble() > 0, "no CPU time for the fill's threads");
        foreach (string group in new[] { "writer", "fault_service", "reclaim", "compress", "writeback", "other" })
        {
            double seconds = r.GetProperty($"fill_cpu_{group}_s").GetDouble();
            Assert.True(seconds >= 0 && seconds <= elapsed * Environment.ProcessorCount + 0.05, $"{group}: {seconds} s in {elapsed} s");
        }
    }

    [Fact]
    public void BenchSwap_WithTheFileTier_ReadsWindowsInOrder_AndSaysHowCompressionWasShared()
    {
        string file = Path.Combine(Path.GetTempPath(), $"cram-swap-test-{Environment.ProcessId}");
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => BenchSwapCommand.Run(Sample, 64L << 20, 16L << 20, 500, json: true,
            backingFile: file, poolLimit: 4L << 20, compressionThreads: 2, readaheadThreads: 3))).RootElement;
        Assert.False(File.Exists(file), "the backing file is unlinked");
        Assert.Equal(0, r.GetProperty("mismatches").GetInt64());
        Assert.Equal(2, r.GetProperty("compression_threads").GetInt32());
        Assert.Equal(3, r.GetProperty("readahead_threads").GetInt32());
        double share = r.GetProperty("fill_helper_compressed_share").GetDouble();
        Assert.True(share is >= 0 and < 1, $"helper share {share}");
        Assert.True(r.GetProperty("file_reads").GetInt64() > 0);
        // The sequential phase reads windows of many pages, most of them where the previous read ended.
        Assert.True(r.GetProperty("seq_pages_per_file_read").GetDouble() >= 16, r.GetProperty("seq_pages_per_file_read").ToString());
        Assert.Contains("--compression-threads", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 64L << 20, 16L << 20, 500, true,
            backingFile: file, poolLimit: 4L << 20, compressionThreads: 17)).Message);
        Assert.Contains("--readahead-threads", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 64L << 20, 16L << 20, 500, true,
            backingFile: file, poolLimit: 4L << 20, readaheadThreads: 5)).Message);
    }

    [Fact]
    public void BenchSwap_BadArguments_NameTheOption()
    {
        // No corpus (a user's clone has no ../shared): the generated mix, said in the result.
        JsonElement generated = JsonDocument.Parse(ConsoleCapture.Stdout(() => BenchSwapCommand.Run(null, 32L << 20, 8L << 20, 500, true))).RootElement;
        Assert.StartsWith("generated mix", generated.GetProperty("source").GetString());
        Assert.Equal(0, generated.GetProperty("mismatches").GetInt64());
        Assert.Contains("--limit", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 32L << 20, 64L << 20, 500, true)).Message);
    }

    [Fact]
    public void BenchSwap_Plot_DrawsEachPhase_AndTheKernelsPointsBeside()
    {
        string dir = Directory.CreateTempSubdirectory("cramcore-plot-").FullName;
        try
        {
            string svg = Path.Combine(dir, "swap.svg"), kernel = Path.Combine(dir, "zram.json");
            File.WriteAllText(kernel, """{"fill_mib_s": 310.2, "swapin_at_limit_p50_us": 5.24, "swapin_at_limit_p99_us": 484.59, "swapin_p50_us": 17.05, "swapin_p99_us": 24.68}""");
            ConsoleCapture.Stdout(() => BenchSwapCommand.Run(Sample, 32L << 20, 8L << 20, 500, true, plot: svg, kernelJson: kernel));
            var doc = System.Xml.Linq.XDocument.Load(svg);
            System.Xml.Linq.XNamespace ns = "http://www.w3.org/2000/svg";
            Assert.Equal(2, doc.Descendants(ns + "path").Count()); // one CDF a phase
            var texts = doc.Descendants(ns + "text").Select(t => t.Value).ToList();
            Assert.Contains(texts, t => t.StartsWith("A: random swap-ins at the limit", StringComparison.Ordinal));
            Assert.Contains(texts, t => t.StartsWith("B: random swap-ins, no limit", StringComparison.Ordinal));
            Assert.Contains("p99 485", texts); // the kernel's points, from its JSON
            Assert.Contains("p50 17.1", texts);
            Assert.Equal(8, doc.Descendants(ns + "circle").Count() - 1); // p50 and p99, ours and the kernel's, in two panels; and the legend's

            Assert.Contains("--kernel", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 32L << 20, 8L << 20, 500, true, kernelJson: kernel)).Message);
            File.WriteAllText(kernel, "not json");
            Assert.Contains("--kernel", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 32L << 20, 8L << 20, 500, true, plot: svg, kernelJson: kernel)).Message);
            Assert.Contains("--plot", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 32L << 20, 8L << 20, 500, true, plot: Path.Combine(dir, "swap.png"))).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void BenchSparse_TouchesOnePagePerWrite()
    {
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => BenchSparseCommand.Run(1L << 30, 1L << 20, 0, json: true))).RootElement;
        Assert.Equal(1024, r.GetProperty("touches").GetInt64());
        Assert.Equal(4096, r.GetProperty("resident_bytes_per_touched_page").GetDouble()); // one page, not a fault-around block
        Assert.True(r.GetProperty("kernel_touch_us_per_page").GetDouble() > 0);
        Assert.Contains("--stride", Assert.Throws<CliException>(() => BenchSparseCommand.Run(1L << 30, 100, 0, true)).Message);
    }
}
