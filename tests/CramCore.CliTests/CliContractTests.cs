using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
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

    /// <summary>The remote tier's verbs, against a redis-server they start on loopback (skipped, with the reason, where it is not installed).</summary>
    [RespStoreTheory]
    [InlineData("bench remote --size 32m --limit 16m --pool-limit 2m --samples 150 --json")]
    [InlineData("bench remote --size 32m --limit 16m --pool-limit 2m --samples 150 --fault-service faulting-thread --no-encryption --json")]
    [InlineData("demo --size 64m --limit 16m --seconds 1 --threads 1 --remote --json")]
    public void RemoteJson_IsExactlyOneDocument_AndEveryPageReadsBack(string invocation)
    {
        (int code, string stdout, string stderr) = Cram(invocation.Split(' '));
        Assert.True(code == ExitCode.Success, $"`cram {invocation}` exited {code}: {stderr}");
        using JsonDocument document = JsonDocument.Parse(stdout);
        JsonElement root = document.RootElement;
        Assert.Equal(0, root.GetProperty("mismatches").GetInt64());
        if (invocation.StartsWith("bench", StringComparison.Ordinal))
        {
            Assert.Equal(0, root.GetProperty("failover_pages_lost").GetInt64());
            Assert.True(root.GetProperty("remote_swapin_p50_us").GetDouble() > 0 && root.GetProperty("store_get_p50_us").GetDouble() > 0);
            Assert.InRange(root.GetProperty("bytes_sent_per_evicted_byte").GetDouble(), 0.01, 1.1); // compressed: less than a page a page
        }
        else
        {
            Assert.True(root.GetProperty("remote_pages").GetInt64() > 0, stdout);
        }
    }

    public static TheoryData<string> JsonInvocations() =>
    [
        "demo --size 64m --limit 16m --seconds 1 --threads 1 --json",
        $"demo --size 64m --limit 16m --seconds 1 --threads 1 --corpus {Sample("text")} --json",
        "bench faults --pages 256 --rounds 1 --json",
        "bench faults --pages 256 --rounds 1 --fault-service faulting-thread --json",
        "bench floor --samples 200 --json",
        $"bench reclaim --pages 1024 --rounds 1 --mixed --corpus {Sample("python-heap")} --json",
        "bench alloc --ops 20000 --json",
        $"bench pool --pages 256 --corpus {Sample("dotnet-heap")} --json",
        "bench writeback --pages 1024 --json",
        "bench bear --pages 1024 --seconds 0.2 --threads 1 --json",
        $"bench swap --corpus {Sample("dotnet-heap")} --size 16m --limit 4m --samples 100 --json",
        $"bench swap --corpus {Sample("dotnet-heap")} --size 16m --limit 4m --samples 100 --fault-service faulting-thread --json",
        "bench sparse --size 1g --stride 1m --limit 0 --json",
        "bench lifecycle --rounds 1 --engines 20 --json",
        $"bench memory-limit --corpus {Sample("dotnet-heap")} --size 24m --memory-limit 16m --json",
        $"bench hotcold --corpus {Sample("dotnet-heap")} --size 32m --limit 8m --hot 4m --phases 2 --reads 20000 --json",
        $"bench hotcold --corpus {Sample("dotnet-heap")} --size 32m --limit 8m --hot 4m --zipf 0.99 --phases 2 --reads 20000 --json",
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
    [InlineData("frobnicate", "cram: ")] // unknown verb
    [InlineData("bench frobnicate", "cram bench: ")]
    [InlineData("bench faults --frobnicate", "cram bench faults: ")] // unknown option
    [InlineData("bench faults --pages many", "cram bench faults: ")] // not a number
    [InlineData("demo --size 12q", "cram demo: --size")] // a size it cannot read
    [InlineData("demo --limit 1m", "cram demo: --limit")] // below the floor
    [InlineData("estimate --corpus /nonexistent.pages", "cram estimate: --corpus")] // a file that is not there
    [InlineData("analyze", "cram analyze: give exactly one")] // neither --pid nor --file
    [InlineData("bench memory-limit --data mixed", "cram bench memory-limit: --data")] // not a kind of data
    [InlineData("bench faults --fault-service kernel", "cram bench faults: --fault-service")] // not a fault service
    [InlineData("bench floor --samples 5", "cram bench floor: --samples")] // too few
    [InlineData("bench memory-limit --memory-limit 8m", "cram bench memory-limit: --memory-limit")] // below the floor
    [InlineData("demo --size 99999999999999g", "cram demo: --size")] // more than a region can be
    [InlineData("estimate --pages -1", "cram estimate: --pages")] // was taken as the default
    [InlineData("bench remote --cluster --store 127.0.0.1:1", "cram bench remote: --cluster")] // a cluster of its own, or the given store
    [InlineData("bench remote --pool-limit 100m", "cram bench remote: --pool-limit")] // more than half the limit
    [InlineData("demo --remote --backing-file /tmp/x", "cram demo: --remote and --backing-file")] // one tier below the pool
    public void UsageErrors_ExitWith2_AndSayWhy_PrefixedOnce(string invocation, string prefix)
    {
        (int code, string stdout, string stderr) = Cram(invocation.Split(' '));
        Assert.Equal(ExitCode.Usage, code);
        Assert.Equal("", stdout);
        Assert.StartsWith(prefix, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(": cram", stderr, StringComparison.Ordinal); // one prefix, not "cram: cram analyze: ..."
    }

    /// <summary>What the machine refuses (a file that exists or cannot be made, a full or unwritable device) exits 3 with one line, never a stack trace or 1.</summary>
    [Fact]
    public void EnvironmentErrors_ExitWith3_InOneLine()
    {
        string existing = Path.GetTempFileName();
        try
        {
            foreach ((string invocation, string prefix) in new[]
            {
                ($"demo --size 64m --limit 16m --seconds 1 --backing-file {existing}", "cram demo: BackingFile"),
                ("bench memory-limit --size 24m --memory-limit 16m --backing-file /nonexistent/dir/x", "cram bench memory-limit: Creating BackingFile"),
                ("bench writeback --pages 1024 --dir /proc", "cram bench writeback: Creating BackingFile"),
                ($"analyze --file {Sample("text")} --dump /dev/full", "cram analyze: --dump"),
            })
            {
                (int code, string stdout, string stderr) = Cram((invocation + " --json").Split(' '));
                Assert.True(code == ExitCode.Environment, $"`cram {invocation}` exited {code}: {stderr}");
                Assert.Equal("", stdout); // under --json: a document, or nothing when the verb cannot run
                Assert.StartsWith(prefix, stderr, StringComparison.Ordinal);
                Assert.Single(stderr.Trim().Split('\n')); // one line: no stack trace
            }
        }
        finally
        {
            File.Delete(existing);
        }
    }

    [Fact]
    public void Tables_InAPipe_HavePlainTextWordsAndUnits_OneRowPerLine()
    {
        Assert.True(Console.IsOutputRedirected, "the test host's stdout is a pipe, as `cram ... | less` would be");
        (int code, string stdout, _) = Cram("bench", "pool", "--pages", "256");
        Assert.Equal(ExitCode.Success, code);
        Assert.DoesNotContain('\u001b', stdout); // no colour or cursor codes
        string[] lines = stdout.Split('\n');
        // Words and units on one line each: "store" with nanoseconds, the density as a percentage,
        // a byte count with its unit, "yes" for a boolean; no JSON keys.
        Assert.Contains(lines, l => l.Contains("│ store ", StringComparison.Ordinal) && l.Contains(" ns ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("│ density ", StringComparison.Ordinal) && l.Contains(" %", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("│ pool ", StringComparison.Ordinal) && l.Contains("KiB", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("│ verified ", StringComparison.Ordinal) && l.Contains(" yes ", StringComparison.Ordinal));
        Assert.DoesNotContain("store_ns", stdout, StringComparison.Ordinal);
    }

    /// <summary>
    /// Every figure of every command's result says what it is (a <see cref="FigureAttribute"/>, or a
    /// unit its key ends in), and its table row shows that unit: each result is rendered from a
    /// sample and every row checked against its description.
    /// </summary>
    [Fact]
    public void EveryFigure_IsDescribed_AndItsRowShowsItsUnit()
    {
        Type[] results = [.. typeof(ExitCode).Assembly.GetTypes().Where(t => t.Name.EndsWith("Result", StringComparison.Ordinal) && t.GetMethod("<Clone>$") is not null)];
        Assert.True(results.Length >= 18, string.Join(", ", results.Select(t => t.Name)));
        var problems = new List<string>();
        int figures = 0;
        foreach (Type type in results)
        {
            object sample = System.Runtime.CompilerServices.RuntimeHelpers.GetUninitializedObject(type);
            foreach (PropertyInfo p in type.GetProperties())
            {
                Type t = Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType;
                object? value = t == typeof(double) ? 0.5 : t == typeof(float) ? 0.5f : t == typeof(long) ? 3L : t == typeof(int) ? 3 : t == typeof(bool) ? true : t == typeof(string) ? "x" : null;
                if (value is not null && p.CanWrite)
                {
                    p.SetValue(sample, value);
                }
            }
            Dictionary<string, PropertyInfo> properties = type.GetProperties().ToDictionary(ResultPrinter.KeyOf);
            List<(string Name, string Value)> rows = ResultPrinter.Rows(type, sample);
            foreach (IGrouping<string, (string Name, string Value)> same in rows.GroupBy(r => r.Name).Where(g => g.Count() > 1))
            {
                problems.Add($"{type.Name}: {same.Count()} rows read '{same.Key}'; label them apart");
            }
            foreach ((string name, string text) in rows.Zip(properties.Keys, (row, key) => (key, row.Value)))
            {
                PropertyInfo p = properties[name];
                FigureUnit? unit = ResultPrinter.Describe(p, out _, out _);
                figures++;
                if (unit is null)
                {
                    problems.Add($"{type.Name}.{p.Name} ({name}): a number nothing describes; give it [property: Figure(FigureUnit.…)] or a key that ends in its unit");
                    continue;
                }
                string expected = unit switch
                {
                    FigureUnit.Pages => " pages", FigureUnit.MiBPerSecond => " MiB/s", FigureUnit.GBPerSecond => " GB/s", FigureUnit.PerSecond => " /s",
                    FigureUnit.Nanoseconds => " ns", FigureUnit.Microseconds => " µs", FigureUnit.Milliseconds => " ms", FigureUnit.Seconds => " s",
                    FigureUnit.Times => "×", FigureUnit.Percent => " %", FigureUnit.Bytes => "B", _ => "",
                };
                if (!text.EndsWith(expected, StringComparison.Ordinal))
                {
                    problems.Add($"{type.Name}.{p.Name} ({name}) is {unit} but its row reads '{text}'");
                }
            }
        }
        Assert.True(figures >= 300, $"only {figures} figures seen");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Theory]
    [InlineData("swapin_at_limit_p50_us", "swap-in at limit p50", "38.3 µs")]
    [InlineData("seq_swapin_mib_s", "sequential swap-in", "183.5 MiB/s")]
    [InlineData("reclaim_over_lz4", "reclaim over LZ4", "1.23×")]
    [InlineData("limit_bytes", "limit", "512.0 MiB")]
    [InlineData("evictions", "evictions", "2,048")]
    [InlineData("kernel_touch_us_per_page", "kernel touch per page", "39.0 µs")]
    public void TableRows_ReadAsWordsAndUnits(string key, string name, string text)
    {
        var values = new Dictionary<string, object>
        {
            ["swapin_at_limit_p50_us"] = 38.26, ["seq_swapin_mib_s"] = 183.5, ["reclaim_over_lz4"] = 1.234, ["limit_bytes"] = 536870912L,
            ["evictions"] = 2048L, ["kernel_touch_us_per_page"] = 39.04,
        };
        PropertyInfo property = typeof(RowSample).GetProperties().Single(p => ResultPrinter.KeyOf(p) == key);
        JsonNode node = values[key] is long l ? JsonValue.Create(l) : JsonValue.Create((double)values[key]);
        Assert.Equal((name, text), ResultPrinter.Row(key, node, property));
    }

    private sealed record RowSample(double SwapinAtLimitP50Us, double SeqSwapinMibS, double ReclaimOverLz4, long LimitBytes, long Evictions, double KernelTouchUsPerPage);

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

    /// <summary>
    /// Every command's help, walked from the root: an option with a default shows it once, as
    /// System.CommandLine prints it from the value the code uses (<c>[default: X]</c>); its
    /// description says what a special value means, never a default of its own that could drift.
    /// </summary>
    [Fact]
    public void EveryOption_ShowsItsDefaultOnce_TheOneTheCodeUses()
    {
        var queue = new Queue<string[]>([[]]);
        var problems = new List<string>();
        int commands = 0, withDefault = 0;
        while (queue.TryDequeue(out string[]? path))
        {
            (int code, string stdout, _) = Cram([.. path, "--help"]);
            Assert.True(code == 0, $"cram {string.Join(' ', path)} --help exited {code}");
            commands++;
            string section = "";
            var entries = new List<string>();
            foreach (string line in stdout.ReplaceLineEndings("\n").Split('\n'))
            {
                if (line.Length > 0 && !char.IsWhiteSpace(line[0]))
                {
                    section = line.Trim();
                    continue;
                }
                string text = line.Trim();
                if (text.Length == 0)
                {
                    continue;
                }
                if (section == "Commands:" && line.StartsWith("  ", StringComparison.Ordinal) && !line.StartsWith("   ", StringComparison.Ordinal))
                {
                    queue.Enqueue([.. path, text.Split(' ')[0]]);
                }
                else if (section == "Options:")
                {
                    if (text.StartsWith('-'))
                    {
                        entries.Add(text);
                    }
                    else if (entries.Count > 0)
                    {
                        entries[^1] += " " + text; // a wrapped description
                    }
                }
            }
            foreach (string entry in entries)
            {
                int mentions = System.Text.RegularExpressions.Regex.Matches(entry, "default", System.Text.RegularExpressions.RegexOptions.IgnoreCase).Count;
                if (entry.Contains("[default:", StringComparison.Ordinal))
                {
                    withDefault++;
                    if (mentions > 1)
                    {
                        problems.Add($"cram {string.Join(' ', path)}: {entry}");
                    }
                }
            }
        }
        Assert.True(commands >= 18, $"only {commands} commands' help was read");
        Assert.True(withDefault >= 40, $"only {withDefault} options with a default were seen");
        Assert.True(problems.Count == 0, "options that state a default besides the one the code uses:\n" + string.Join("\n", problems));
    }
}
