namespace CramCore.Cli;

/// <summary>What a number in a command's result measures, and so how its table row reads.</summary>
internal enum FigureUnit
{
    /// <summary>A count of things (thousands separated).</summary>
    Count,
    /// <summary>A plain number with no unit (four significant digits).</summary>
    Number,
    /// <summary>Bytes, shown in B, KiB, MiB or GiB.</summary>
    Bytes,
    /// <summary>Pages of 4096 bytes.</summary>
    Pages,
    /// <summary>MiB per second.</summary>
    MiBPerSecond,
    /// <summary>Gigabytes per second.</summary>
    GBPerSecond,
    /// <summary>Operations (or events) per second.</summary>
    PerSecond,
    /// <summary>Nanoseconds.</summary>
    Nanoseconds,
    /// <summary>Microseconds.</summary>
    Microseconds,
    /// <summary>Milliseconds.</summary>
    Milliseconds,
    /// <summary>Seconds.</summary>
    Seconds,
    /// <summary>A ratio of two like quantities, shown as "1.23×".</summary>
    Times,
    /// <summary>A fraction of a whole (0 to 1), shown as a percentage.</summary>
    Percent,
    /// <summary>Text, a flag or a list: shown as it is.</summary>
    Text,
}

/// <summary>
/// The description of one figure of a command's result: its unit (and so its format), and the
/// words of its table row when the JSON key's own do not read well. Its JSON key is the property's
/// (snake_case). A figure whose key ends in a unit (<c>_us</c>, <c>_mib_s</c>, <c>_bytes</c>,
/// <c>_pages</c>, a ratio's <c>_over_</c>…) needs none; any other number must say what it is
/// (<c>CliResultTests</c> renders every result and checks).
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Parameter)]
internal sealed class FigureAttribute(FigureUnit unit) : Attribute
{
    public FigureUnit Unit { get; } = unit;

    /// <summary>The row's words instead of the key's (null: the key's).</summary>
    public string? Label { get; init; }

    /// <summary>A value that means "none" or "not measured" (e.g. -1), shown as this text.</summary>
    public string? Absent { get; init; }
}
