using System.Reflection;
using System.Text.Json;
using CramCore.Cli;

namespace CramCore.Tests;

/// <summary>
/// `cram` as scripts use it, through its real parser: with --json every verb prints exactly one
/// JSON document on stdout (progress goes to stderr), and the exit codes say what went wrong.
/// </summary>
[Trait("Category", TestCategory.Cli)]
[Collection("Console")]
public sealed class CliContractTests
{
    private static string Sample(string name) => Path.Combine(AppContext.BaseDirectory, "Samples", name + ".sample.pages");

    /// <summary>Runs `cram args…` in-process; returns its exit code, stdout and stderr.</summary>
    private static (int Code, string Stdout, string Stderr) Cram(params string[] args)
    {
        MethodInfo main = typeof(ExitCode).Assembly.EntryPoint!;
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        TextWriter originalOut = Console.Out, originalError = Console.Error;
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int code = (int)main.Invoke(null, BindingFlags.DoNotWrapExceptions, binder: null, [args], culture: null)!;
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(originalOut);
            Console.SetError(originalError);
        }
    }

    public static TheoryData<string> JsonInvocations() =>
    [
        "demo --size 16m --limit 4m --seconds 1 --threads 1 --json",
        $"demo --size 16m --limit 4m --seconds 1 --threads 1 --corpus {Sample("text")} --json",
        "bench faults --pages 256 --rounds 1 --json",
        $"bench reclaim --pages 1024 --rounds 1 --mixed --corpus {Sample("python-heap")} --json",
        "bench alloc --ops 20000 --json",
        $"bench pool --pages 256 --corpus {Sample("dotnet-heap")} --json",
        "bench writeback --pages 1024 --json",
        "bench bear --pages 1024 --seconds 0.2 --threads 1 --json",
        $"bench swap --corpus {Sample("dotnet-heap")} --size 16m --limit 4m --samples 100 --json",
        "bench sparse --size 1g --stride 1m --limit 0 --json",
        $"analyze --file {Sample("elf-binaries")} --json",
        "estimate --pages 64 --rounds 1 --json",
        $"estimate --corpus {Sample("dotnet-heap")} --corpus {Sample("text")} --rounds 1 --json",
        $"estimate --corpus {Sample("dotnet-heap")} --corpus {Sample("python-heap")} --corpus {Sample("text")} --corpus {Sample("elf-binaries")} --calibrate --rounds 1 --json",
    ];

    [Theory]
    [MemberData(nameof(JsonInvocations))]
    public void Json_IsExactlyOneDocumentOnStdout(string invocation)
    {
        (int code, string stdout, string stderr) = Cram(invocation.Split(' '));
        Assert.True(code == ExitCode.Success, $"`cram {invocation}` exited {code}: {stderr}");
        // JsonDocument.Parse rejects anything after the first value, so this is "exactly one".
        using JsonDocument document = JsonDocument.Parse(stdout);
        Assert.True(document.RootElement.ValueKind == JsonValueKind.Object, $"`cram {invocation}` printed a {document.RootElement.ValueKind}, not an object");
    }

    [Theory]
    [InlineData("frobnicate")] // unknown verb
    [InlineData("bench frobnicate")]
    [InlineData("bench faults --frobnicate")] // unknown option
    [InlineData("bench faults --pages many")] // not a number
    [InlineData("demo --size 12q")] // a size it cannot read
    [InlineData("estimate --corpus /nonexistent.pages")] // a file that is not there
    public void UsageErrors_ExitWith2_AndSayWhy(string invocation)
    {
        (int code, string stdout, string stderr) = Cram(invocation.Split(' '));
        Assert.Equal(ExitCode.Usage, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("cram: ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Version_IsThePackageVersion()
    {
        (int code, string stdout, _) = Cram("--version");
        Assert.Equal(ExitCode.Success, code);
        string package = typeof(CramEngine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        Assert.Matches(@"^\d+\.\d+\.\d+", package);
        Assert.Equal(package, stdout.Trim());
    }

    [Fact]
    public void Help_ListsTheExitCodes()
    {
        (int code, string stdout, _) = Cram("--help");
        Assert.Equal(ExitCode.Success, code);
        Assert.Contains("Exit codes: 0 success; 1 integrity failure", stdout.ReplaceLineEndings(" "), StringComparison.Ordinal);
    }
}
