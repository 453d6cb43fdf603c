using System.Text.Json;

namespace CramCore.Tests;

/// <summary>`cram bench writeback` and `cram demo --backing-file` on small inputs: real runs, figures in range, every page verified.</summary>
[Trait("Category", TestCategory.Cli)]
[Collection("Console")]
public sealed class WritebackCommandTests
{
    private static string Sample => Path.Combine(AppContext.BaseDirectory, "Samples", "dotnet-heap.sample.pages");

    [Fact]
    public void BenchWriteback_WritesCompressedBytes_AndReadsEveryPageBack()
    {
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => BenchWritebackCommand.Run(4096, Sample, null, json: true))).RootElement;
        Assert.Equal(0, r.GetProperty("mismatches").GetInt64());
        Assert.True(r.GetProperty("writeback_pages").GetInt64() > 0);
        double perCompressed = r.GetProperty("file_bytes_per_compressed_byte").GetDouble();
        Assert.InRange(perCompressed, 1.0, 1.1);
        Assert.InRange(r.GetProperty("written_over_decompressed").GetDouble(), 0.01, 0.9);
        Assert.True(r.GetProperty("file_samples").GetInt32() > 0 && r.GetProperty("pool_samples").GetInt32() > 0);
        Assert.InRange(r.GetProperty("metadata_bytes_per_slot").GetDouble(), 16, 20);
        Assert.Equal(0, r.GetProperty("checksum_failures").GetInt64());
        // The background round re-encoded LZ4 copies with zstd: fewer file bytes a page than the LZ4 half, and read back.
        Assert.True(r.GetProperty("background_writeback_pages").GetInt64() > 0);
        Assert.True(r.GetProperty("background_recompressed_pages").GetInt64() > 0);
        Assert.True(r.GetProperty("background_file_bytes_per_page").GetDouble() < r.GetProperty("file_bytes_per_page").GetDouble());
        Assert.True(r.GetProperty("file_zstd_samples").GetInt32() > 0);
    }

    [Fact]
    public void BenchWriteback_BadArguments_NameTheOption()
    {
        Assert.Contains("--pages", Assert.Throws<CliException>(() => BenchWritebackCommand.Run(10, null, null, true)).Message);
        Assert.Contains("--dir", Assert.Throws<CliException>(() => BenchWritebackCommand.Run(4096, null, "/nonexistent-dir", true)).Message);
    }

    [Fact]
    public void Demo_WithBackingFile_WritesBack_AndVerifiesEveryPage()
    {
        string dir = Directory.CreateTempSubdirectory("cramcore-demo-").FullName;
        using var cleanup = new DeleteOnDispose(dir);
        var settings = new DemoCommand.Settings(64L << 20, 16L << 20, 2, 1, Sample, Json: true, Path.Combine(dir, "swap"), 4L << 20);
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => DemoCommand.Run(settings))).RootElement;
        Assert.Equal(0, r.GetProperty("mismatches").GetInt64());
        Assert.True(r.GetProperty("writeback_pages").GetInt64() > 0, r.ToString());
        Assert.True(r.GetProperty("refaults_from_file").GetInt64() > 0, r.ToString());
        Assert.False(File.Exists(Path.Combine(dir, "swap")));
    }
}
