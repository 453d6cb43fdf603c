using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace CramCore.Cli;

/// <summary>
/// Prints a command's typed result: one JSON object on stdout with --json (property names in
/// snake_case, in declaration order), otherwise a table of its top-level properties.
/// </summary>
internal static class ResultPrinter
{
    public static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static string ToJson<T>(T result) => JsonSerializer.Serialize(result, Options);

    /// <summary>
    /// The result's top-level properties as table rows a reader understands: the JSON key in words,
    /// the value with its unit (<see cref="Humanize"/>); nested objects as compact JSON (callers
    /// that nest give them rows of their own).
    /// </summary>
    public static List<(string Name, string Value)> Rows<T>(T result)
    {
        // Whether a number is a fraction depends on its declared type (JSON writes 1.0 as 1).
        var floating = typeof(T).GetProperties().ToDictionary(
            p => p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name ?? Options.PropertyNamingPolicy!.ConvertName(p.Name),
            p => (Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType) is var type && (type == typeof(double) || type == typeof(float)));
        var rows = new List<(string, string)>();
        foreach (var (name, value) in JsonSerializer.SerializeToNode(result, Options)!.AsObject())
        {
            rows.Add(Humanize(name, value, floating.GetValueOrDefault(name)));
        }
        return rows;
    }

    // Unit suffixes of the JSON keys (snake_case, unit last), longest first, and how a value of each reads.
    private static readonly (string Suffix, Func<double, string> Format)[] s_units =
    [
        ("_mib_s", v => $"{v:N1} MiB/s"),
        ("_gb_s", v => $"{v:N2} GB/s"),
        ("_bytes", v => Measure.Bytes((long)v)),
        ("_pages", v => $"{v:N0} pages"),
        ("_us", v => $"{v:N1} µs"),
        ("_ns", v => $"{v:N1} ns"),
        ("_ms", v => $"{v:N1} ms"),
        ("_s", v => $"{v:N2} s"),
    ];

    // Words for the tokens of a key that are not words themselves.
    private static readonly Dictionary<string, string> s_words = new()
    {
        ["swapin"] = "swap-in", ["lz4"] = "LZ4", ["wp"] = "write-protect", ["uffd"] = "userfaultfd", ["seq"] = "sequential",
        ["1t"] = "(1 thread)", ["2t"] = "(2 threads)", ["ms"] = "ms", ["nbbs"] = "NBBS", ["cram"] = "CRAM", ["gb"] = "GB", ["mib"] = "MiB",
    };

    /// <summary>
    /// One JSON property as a table row: <c>swapin_at_limit_p50_us</c> 38.2 reads "swap-in at limit
    /// p50" "38.2 µs"; <c>reclaim_over_lz4</c> 1.234 reads "reclaim over LZ4" "1.23×"; a fraction
    /// (a number between 0 and 1 with no unit: agreement, miss rate, share) reads as a percentage;
    /// <c>*_per_s</c> counts per second. Strings and booleans stay as they are.
    /// </summary>
    internal static (string Name, string Value) Humanize(string key, JsonNode? value, bool floating)
    {
        if (value is not JsonValue v || v.GetValueKind() != JsonValueKind.Number ||
            !double.TryParse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture, out double number))
        {
            string text = value is JsonValue s && s.TryGetValue(out string? str) ? str : value?.ToJsonString() ?? "";
            return (Words(key), text == "true" ? "yes" : text == "false" ? "no" : text);
        }
        foreach ((string unit, Func<double, string> format) in s_units) // "touch_us_per_page": µs, per page
        {
            int at = key.IndexOf(unit + "_per_", StringComparison.Ordinal);
            if (at > 0 && unit is "_us" or "_ns" or "_bytes")
            {
                return (Words(key.Remove(at, unit.Length)), format(number));
            }
        }
        foreach ((string suffix, Func<double, string> format) in s_units)
        {
            if (key.EndsWith(suffix, StringComparison.Ordinal) && !key.EndsWith("_per" + suffix, StringComparison.Ordinal))
            {
                return (Words(key[..^suffix.Length]), format(number));
            }
        }
        if (key.Contains("_over_", StringComparison.Ordinal) || key.Contains("_to_", StringComparison.Ordinal) || key.EndsWith("ratio", StringComparison.Ordinal) || key.EndsWith("speedup", StringComparison.Ordinal))
        {
            return (Words(key), $"{number:0.00}×");
        }
        if (key.Contains("_per_s", StringComparison.Ordinal))
        {
            return (Words(key).Replace("per s", "per second", StringComparison.Ordinal), $"{number:N0}");
        }
        if (floating && number is >= 0 and <= 1)
        {
            return (Words(key), $"{number * 100:0.0} %");
        }
        return (Words(key), floating ? $"{number:G4}" : $"{number:N0}");
    }

    private static string Words(string key) =>
        string.Join(' ', key.Split('_', StringSplitOptions.RemoveEmptyEntries).Select(w => s_words.GetValueOrDefault(w, w)));

    /// <summary>Prints the result as JSON or as a table of its top-level properties.</summary>
    public static int Print<T>(T result, bool json, string title)
    {
        if (json)
        {
            Console.WriteLine(ToJson(result));
            return 0;
        }
        return PrintTable(title, Rows(result));
    }

    public static int PrintTable(string title, List<(string Name, string Value)> rows)
    {
        var table = new Table().Title(Markup.Escape(title)).Border(TableBorder.Rounded).AddColumn("metric").AddColumn(new TableColumn("value").RightAligned());
        foreach (var (name, value) in rows)
        {
            table.AddRow(Markup.Escape(name), Markup.Escape(value));
        }
        AnsiConsole.Write(table);
        return 0;
    }
}
