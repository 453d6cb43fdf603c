using System.Text.Json;
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

    /// <summary>The result's top-level properties as (name, value text) rows; nested objects as compact JSON.</summary>
    public static List<(string Name, string Value)> Rows<T>(T result)
    {
        var rows = new List<(string, string)>();
        foreach (var (name, value) in JsonSerializer.SerializeToNode(result, Options)!.AsObject())
        {
            rows.Add((name, value is JsonValue v && v.TryGetValue(out string? text) ? text : value?.ToJsonString() ?? ""));
        }
        return rows;
    }

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
