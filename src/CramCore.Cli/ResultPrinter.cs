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
    /// The result's top-level properties as table rows a reader understands: the figure's words
    /// and its value in its unit (<see cref="Describe"/>); nested objects as compact JSON (callers
    /// that nest give them rows of their own).
    /// </summary>
    public static List<(string Name, string Value)> Rows<T>(T result) => Rows(typeof(T), result!);

    internal static List<(string Name, string Value)> Rows(Type type, object result)
    {
        Dictionary<string, PropertyInfo> properties = type.GetProperties().ToDictionary(KeyOf);
        var rows = new List<(string, string)>();
        foreach (var (key, value) in JsonSerializer.SerializeToNode(result, type, Options)!.AsObject())
        {
            rows.Add(Row(key, value, properties[key]));
        }
        return rows;
    }

    /// <summary>A property's JSON key: its [JsonPropertyName], else its name in snake_case.</summary>
    internal static string KeyOf(PropertyInfo p) =>
        p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name ?? Options.PropertyNamingPolicy!.ConvertName(p.Name);

    /// <summary>
    /// What a figure is: its <see cref="FigureAttribute"/>, else what its key says — a unit at its end
    /// (<c>_mib_s</c>, <c>_gb_s</c>, <c>_bytes</c>, <c>_pages</c>, <c>_us</c>, <c>_ns</c>, <c>_ms</c>,
    /// <c>_s</c>), a time per thing (<c>_us_per_page</c>), a rate (<c>_per_s</c>), a ratio
    /// (<c>_over_</c>, <c>_to_</c>, <c>ratio</c>, <c>speedup</c>), a fraction (<c>_fraction</c>, <c>_share</c>,
    /// <c>_rate</c>, <c>agreement</c>); an integer with none of these is a count,
    /// anything not a number is text. Null: nothing says what it is (a test forbids that).
    /// </summary>
    internal static FigureUnit? Describe(PropertyInfo p, out string? label, out string? absent)
    {
        FigureAttribute? figure = p.GetCustomAttribute<FigureAttribute>();
        label = figure?.Label;
        absent = figure?.Absent;
        if (figure is not null)
        {
            return figure.Unit;
        }
        string key = KeyOf(p);
        Type type = Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType;
        bool integer = type == typeof(int) || type == typeof(long) || type == typeof(uint) || type == typeof(ulong) || type == typeof(short);
        if (!integer && type != typeof(double) && type != typeof(float))
        {
            return FigureUnit.Text;
        }
        foreach ((string suffix, FigureUnit unit) in s_suffixes)
        {
            if (key.EndsWith(suffix, StringComparison.Ordinal) && !key.EndsWith("_per" + suffix, StringComparison.Ordinal))
            {
                return unit;
            }
        }
        foreach ((string time, FigureUnit unit) in new[] { ("_us_per_", FigureUnit.Microseconds), ("_ns_per_", FigureUnit.Nanoseconds), ("_ms_per_", FigureUnit.Milliseconds) })
        {
            if (key.Contains(time, StringComparison.Ordinal))
            {
                return unit;
            }
        }
        if (key.Contains("_per_s", StringComparison.Ordinal))
        {
            return FigureUnit.PerSecond;
        }
        if (key.Contains("_over_", StringComparison.Ordinal) || key.Contains("ratio", StringComparison.Ordinal) || key.Contains("_to_", StringComparison.Ordinal) ||
            key.EndsWith("speedup", StringComparison.Ordinal))
        {
            return FigureUnit.Times;
        }
        if (!integer && (key.EndsWith("_fraction", StringComparison.Ordinal) || key.EndsWith("_share", StringComparison.Ordinal) ||
            key.EndsWith("_rate", StringComparison.Ordinal) || key.EndsWith("agreement", StringComparison.Ordinal)))
        {
            return FigureUnit.Percent; // a fraction of a whole, by its name
        }
        return integer ? FigureUnit.Count : null;
    }

    // Unit suffixes of the JSON keys (snake_case, unit last), longest first.
    private static readonly (string Suffix, FigureUnit Unit)[] s_suffixes =
    [
        ("_mib_s", FigureUnit.MiBPerSecond), ("_gb_s", FigureUnit.GBPerSecond), ("_bytes", FigureUnit.Bytes), ("_pages", FigureUnit.Pages),
        ("_us", FigureUnit.Microseconds), ("_ns", FigureUnit.Nanoseconds), ("_ms", FigureUnit.Milliseconds), ("_s", FigureUnit.Seconds),
    ];

    /// <summary>How a value of each unit reads; the text every such value ends with (the unit's symbol) is what the tests check.</summary>
    internal static string Format(FigureUnit unit, double v) => unit switch
    {
        FigureUnit.Count => $"{v:N0}",
        FigureUnit.Number => $"{v:G4}",
        FigureUnit.Bytes => Measure.Bytes((long)v),
        FigureUnit.Pages => $"{v:N0} pages",
        FigureUnit.MiBPerSecond => $"{v:N1} MiB/s",
        FigureUnit.GBPerSecond => $"{v:N2} GB/s",
        FigureUnit.PerSecond => $"{v:N0} /s",
        FigureUnit.Nanoseconds => $"{v:N1} ns",
        FigureUnit.Microseconds => $"{v:N1} µs",
        FigureUnit.Milliseconds => $"{v:N1} ms",
        FigureUnit.Seconds => $"{v:N2} s",
        FigureUnit.Times => $"{v:0.00}×",
        FigureUnit.Percent => $"{v * 100:0.0} %",
        _ => v.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    // Words for the tokens of a key that are not words themselves.
    private static readonly Dictionary<string, string> s_words = new()
    {
        ["swapin"] = "swap-in", ["lz4"] = "LZ4", ["wp"] = "write-protect", ["uffd"] = "userfaultfd", ["seq"] = "sequential",
        ["nbbs"] = "NBBS", ["cram"] = "CRAM", ["gb"] = "GB", ["mib"] = "MiB", ["us"] = "µs", ["ns"] = "ns", ["ms"] = "ms",
    };

    /// <summary>One JSON property as a table row, by its description (<see cref="Describe"/>): <c>swapin_at_limit_p50_us</c> 38.2 reads "swap-in at limit p50" "38.2 µs".</summary>
    internal static (string Name, string Value) Row(string key, JsonNode? value, PropertyInfo property)
    {
        FigureUnit unit = Describe(property, out string? label, out string? absent) ?? FigureUnit.Number;
        string name = label ?? Words(WithoutUnit(key, unit));
        if (value is not JsonValue v || v.GetValueKind() != JsonValueKind.Number ||
            !double.TryParse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture, out double number))
        {
            string text = value is JsonValue s && s.TryGetValue(out string? str) ? str : value?.ToJsonString() ?? "";
            return (name, text == "true" ? "yes" : text == "false" ? "no" : text);
        }
        if (absent is not null && number < 0)
        {
            return (name, absent);
        }
        return (name, Format(unit, number));
    }

    /// <summary>The key without the unit its value now shows (<c>fill_mib_s</c> → <c>fill</c>; a time per thing keeps its "per thing").</summary>
    private static string WithoutUnit(string key, FigureUnit unit)
    {
        foreach ((string suffix, FigureUnit u) in s_suffixes)
        {
            if (u == unit && key.EndsWith(suffix, StringComparison.Ordinal))
            {
                return key[..^suffix.Length];
            }
        }
        foreach (string time in new[] { "_us_per_", "_ns_per_", "_ms_per_" })
        {
            int at = key.IndexOf(time, StringComparison.Ordinal);
            if (at > 0)
            {
                return key.Remove(at, time.Length - "_per_".Length); // swapin_us_per_page → swapin_per_page
            }
        }
        return key;
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
