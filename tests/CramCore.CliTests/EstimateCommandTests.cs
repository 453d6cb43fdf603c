using System.Text.Json;
using CramCore.Cli;

namespace CramCore.Tests;

/// <summary>`cram estimate` on the shipped samples: its figures, its calibration, its errors.</summary>
[Trait("Category", TestCategory.Cli)]
[Collection("Console")]
public sealed class EstimateCommandTests
{
    private static string Sample(string name) => Path.Combine(AppContext.BaseDirectory, "Samples", name + ".sample.pages");

    private static string Run(EstimateCommand.Settings settings) => ConsoleCapture.Stdout(() => EstimateCommand.Run(settings));

    [Fact]
    public void Json_ReportsEveryPathAndTheAgreementWithLz4()
    {
        string[] files = [Sample("dotnet-heap"), Sample("elf-binaries")];
        // One document (it would not parse with anything after it), one object per file in it.
        JsonElement[] results = [.. JsonDocument.Parse(Run(new EstimateCommand.Settings(files, Pages: 0, Rounds: 1, Threshold: 3072, Calibrate: false, Json: true)))
            .RootElement.GetProperty("inputs").EnumerateArray()];
        Assert.Equal(2, results.Length);
        foreach (JsonElement r in results)
        {
            Assert.Equal(32, r.GetProperty("pages").GetInt32());
            Assert.True(r.GetProperty("estimate_gb_s").GetDouble() > 0);
            Assert.True(r.GetProperty("lz4_trial_gb_s").GetDouble() > 0);
            Assert.InRange(r.GetProperty("agreement").GetDouble(), 0.5, 1.0);
            Assert.InRange(r.GetProperty("agreement_when_confident").GetDouble(), 0.9, 1.0);
            Assert.Equal(0, r.GetProperty("false_incompressible").GetDouble());
            JsonElement paths = r.GetProperty("paths");
            foreach (string isa in Enum.GetNames<PageKernelIsa>())
            {
                Assert.True(paths.GetProperty(isa).GetProperty("estimate_gb_s").GetDouble() > 0, isa);
            }
            double classes = r.EnumerateObject().Where(p => p.Name.StartsWith("class_", StringComparison.Ordinal)).Sum(p => p.Value.GetDouble());
            Assert.Equal(1.0, classes, 3);
        }
        // The heap sample: every page is below the threshold and the estimator says so.
        Assert.Equal(1.0, results[0].GetProperty("agreement").GetDouble());
    }

    [Fact]
    public void Calibrate_FitsSixCoefficientsAndMarginsNoSmallerThanTheFloor()
    {
        string[] files = [Sample("dotnet-heap"), Sample("python-heap"), Sample("text"), Sample("elf-binaries")];
        JsonElement r = JsonDocument.Parse(Run(new EstimateCommand.Settings(files, 0, 1, 3072, Calibrate: true, Json: true))).RootElement;
        Assert.Equal(PageEstimator.FeatureCount, r.GetProperty("coefficients").GetString()!.Split(',').Length);
        Assert.True(r.GetProperty("incompressible_margin").GetInt32() >= PageEstimator.MarginFloor);
        Assert.True(r.GetProperty("compressible_margin").GetInt32() >= PageEstimator.MarginFloor);
    }

    [Fact]
    public void BadArguments_SayWhatToGive()
    {
        Assert.Contains("--threshold", Assert.Throws<CliException>(() => EstimateCommand.Run(new([], 0, 1, 5, false, true))).Message);
        Assert.Contains("--rounds", Assert.Throws<CliException>(() => EstimateCommand.Run(new([], 0, 0, 3072, false, true))).Message);
        Assert.Contains("--pages is -1", Assert.Throws<CliException>(() => EstimateCommand.Run(new([], -1, 1, 3072, false, true))).Message);
        Assert.Contains("--calibrate needs page files", Assert.Throws<CliException>(() => EstimateCommand.Run(new([], 0, 1, 3072, true, true))).Message);
        Assert.Contains("does not exist", Assert.Throws<CorpusException>(() => EstimateCommand.Run(new(["/nonexistent.pages"], 0, 1, 3072, false, true))).Message);
    }

    [Fact]
    public void BtrfsHeuristic_CompressesTextAndNotRandomBytes()
    {
        byte[] page = new byte[4096];
        new Random(5).NextBytes(page);
        unsafe
        {
            fixed (byte* p = page)
            {
                Assert.False(EstimateCommand.BtrfsHeuristicCompresses(p));
                byte[] text = File.ReadAllBytes(Sample("text"));
                fixed (byte* t = text)
                {
                    Assert.True(EstimateCommand.BtrfsHeuristicCompresses(t));
                }
            }
        }
    }
}
