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
    }

    [Fact]
    public void BenchSwap_BadArguments_NameTheOption()
    {
        Assert.Contains("--corpus", Assert.Throws<CliException>(() => BenchSwapCommand.Run(null, 32L << 20, 8L << 20, 500, true)).Message);
        Assert.Contains("--limit", Assert.Throws<CliException>(() => BenchSwapCommand.Run(Sample, 32L << 20, 64L << 20, 500, true)).Message);
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
