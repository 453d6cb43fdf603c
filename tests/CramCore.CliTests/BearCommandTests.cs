using System.Text.Json;

namespace CramCore.Tests;

/// <summary>`cram bench bear` on a small device: write control is what keeps the device from overflowing.</summary>
[Trait("Category", TestCategory.Cli)]
[Collection("Console")]
public sealed class BearCommandTests
{
    [Fact]
    public void Bear_OverflowsOnlyWithoutWriteControl_AndReadsNeverFault()
    {
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => BenchBearCommand.Run(2048, 0.3, 2, 16, json: true))).RootElement;
        JsonElement modes = r.GetProperty("modes");
        Assert.True(modes.GetProperty("no_write_control").GetProperty("overflow_bytes").GetInt64() > 0, "without write control the device overflows");
        foreach (string mode in new[] { "host_budget", "device_budget_control_plane_killed" })
        {
            JsonElement m = modes.GetProperty(mode);
            Assert.Equal(0, m.GetProperty("overflow_bytes").GetInt64());
            Assert.True(m.GetProperty("max_writable").GetInt64() <= 16);
            Assert.True(m.GetProperty("promotions").GetInt64() > 0);
        }
        foreach (JsonProperty m in modes.EnumerateObject())
        {
            Assert.Equal(0, m.Value.GetProperty("mismatches").GetInt64());
        }
        Assert.True(r.GetProperty("placed_over_resident_read").GetDouble() > 0.5); // the figure itself is measured by the bench, not here
    }

    [Fact]
    public void Bear_BadArguments_NameTheOption()
    {
        Assert.Contains("--pages", Assert.Throws<CliException>(() => BenchBearCommand.Run(10, 1, 1, 1, true)).Message);
        Assert.Contains("--budget", Assert.Throws<CliException>(() => BenchBearCommand.Run(2048, 1, 1, 0, true)).Message);
    }

    [Fact]
    public void Demo_WithCram_PlacesPages_KeepsTheDeviceWithinCapacity_AndVerifiesEveryPage()
    {
        var settings = new DemoCommand.Settings(64L << 20, 16L << 20, 2, 1, null, Json: true, Cram: true);
        JsonElement r = JsonDocument.Parse(ConsoleCapture.Stdout(() => DemoCommand.Run(settings))).RootElement;
        Assert.Equal(0, r.GetProperty("mismatches").GetInt64());
        Assert.True(r.GetProperty("cram_placed_pages").GetInt64() > 0, r.ToString());
        Assert.Equal(0, r.GetProperty("cram_overflow_bytes").GetInt64());
        Assert.True(r.GetProperty("cram_max_writable_pages").GetInt64() <= 1024);
    }
}
