using System.Diagnostics;
using System.Text.Json;
using CramCore.Cli;

namespace CramCore.Tests;

/// <summary>`cram analyze` on page files and on a live process, and its errors.</summary>
[Trait("Category", TestCategory.Cli)]
[Collection("Console")]
public sealed class AnalyzeCommandTests
{
    private static JsonElement RunJson(AnalyzeCommand.Settings settings) =>
        JsonDocument.Parse(ConsoleCapture.Stdout(() => AnalyzeCommand.Run(settings))).RootElement;

    private static string Sample(string name) => Path.Combine(AppContext.BaseDirectory, "Samples", name + ".sample.pages");

    [Fact]
    public void File_CountsPagesLikeLz4Does()
    {
        string path = Path.GetTempFileName();
        try
        {
            // 2 zero pages, 1 same-filled, 2 random (incompressible), 3 text-like: counts are exact.
            var pages = new byte[8 * 4096];
            Array.Fill(pages, (byte)0x5A, 2 * 4096, 4096);
            new Random(3).NextBytes(pages.AsSpan(3 * 4096, 2 * 4096));
            byte[] text = File.ReadAllBytes(Sample("text"));
            text.AsSpan(0, 3 * 4096).CopyTo(pages.AsSpan(5 * 4096));
            File.WriteAllBytes(path, pages);
            JsonElement r = RunJson(new AnalyzeCommand.Settings(null, path, null, true));
            Assert.Equal(8, r.GetProperty("pages").GetInt64());
            Assert.Equal(2.0 / 8, r.GetProperty("zero_fraction").GetDouble(), 4);
            Assert.Equal(1.0 / 8, r.GetProperty("same_filled_fraction").GetDouble(), 4);
            Assert.Equal(2.0 / 8, r.GetProperty("incompressible_fraction").GetDouble(), 4);
            Assert.True(r.GetProperty("saved_bytes").GetInt64() > 3 * 4096, "zero and same-filled pages alone save 3 pages");
            // The estimator is exact on zero and same-filled pages and confident on random ones.
            Assert.InRange(r.GetProperty("estimator_agreement").GetDouble(), 5.0 / 8, 1.0);
            Assert.InRange(r.GetProperty("estimator_confident_fraction").GetDouble(), 5.0 / 8, 1.0);
            Assert.Equal(0, r.GetProperty("estimator_false_incompressible").GetDouble());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LiveProcess_IsReadAndDumped()
    {
        string dump = Path.GetTempFileName();
        try
        {
            JsonElement r = RunJson(new AnalyzeCommand.Settings(Environment.ProcessId, null, dump, true));
            long pages = r.GetProperty("pages").GetInt64();
            Assert.True(pages > 1000, $"pages {pages}"); // this test host's heap, stacks, runtime data
            Assert.Equal(pages * 4096, new FileInfo(dump).Length);
            JsonElement again = RunJson(new AnalyzeCommand.Settings(null, dump, null, true));
            Assert.Equal(pages, again.GetProperty("pages").GetInt64());
        }
        finally
        {
            File.Delete(dump);
        }
    }

    [Fact]
    public void BadInput_GetsAClearError()
    {
        Assert.Contains("exactly one of --pid", Assert.Throws<CliException>(() => AnalyzeCommand.Run(new(null, null, null, true))).Message);
        Assert.Contains("no process", Assert.Throws<CliException>(() => AnalyzeCommand.Run(new(int.MaxValue, null, null, true))).Message);
        string path = Path.GetTempFileName();
        File.WriteAllBytes(path, new byte[5000]);
        try
        {
            Assert.Contains("truncated", Assert.Throws<CliException>(() => AnalyzeCommand.Run(new(null, path, null, true))).Message);
        }
        finally
        {
            File.Delete(path);
        }
        Assert.Contains("does not exist", Assert.Throws<CliException>(() => AnalyzeCommand.Run(new(null, "/nonexistent.pages", null, true))).Message);
    }

    [Fact]
    public void AFileOfZeroPages_GivesValidJson_WithNoLz4Ratios()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, new byte[4 * 4096]);
            JsonElement r = RunJson(new AnalyzeCommand.Settings(null, path, null, true));
            Assert.Equal(4, r.GetProperty("pages").GetInt64());
            Assert.Equal(1.0, r.GetProperty("zero_fraction").GetDouble());
            Assert.Equal(JsonValueKind.Null, r.GetProperty("lz4_ratio_p50").ValueKind); // no page reached LZ4: null, not NaN
            Assert.Contains("no page reached LZ4", ConsoleCapture.Stdout(() => AnalyzeCommand.Run(new AnalyzeCommand.Settings(null, path, null, false))));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void DumpingOntoTheFileBeingRead_IsRefused_AndTheFileIsUntouched()
    {
        string path = Path.GetTempFileName();
        string link = path + ".link";
        try
        {
            var pages = new byte[2 * 4096];
            new Random(5).NextBytes(pages);
            File.WriteAllBytes(path, pages);
            File.CreateSymbolicLink(link, path);
            foreach (string dump in new[] { path, link, Path.Combine(Path.GetDirectoryName(path)!, ".", Path.GetFileName(path)) })
            {
                var e = Assert.Throws<CliException>(() => AnalyzeCommand.Run(new AnalyzeCommand.Settings(null, path, dump, true)));
                Assert.Contains("--dump", e.Message);
                Assert.Equal(pages, File.ReadAllBytes(path));
            }
        }
        finally
        {
            File.Delete(link);
            File.Delete(path);
        }
    }
}
