using System.Diagnostics;
using System.Runtime.InteropServices;

namespace CramCore.Cli;

internal static class Measure
{
    public static double TicksToMicroseconds(long ticks) => ticks * 1_000_000.0 / Stopwatch.Frequency;

    /// <summary>The q-quantile (0..1) of <paramref name="values"/>; sorts the list.</summary>
    public static double Quantile(List<long> values, double q)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }
        var span = CollectionsMarshal.AsSpan(values);
        span.Sort();
        return span[Math.Clamp((int)Math.Round(q * (span.Length - 1)), 0, span.Length - 1)];
    }

    /// <summary>A 64-bit checksum of one page (four independent multiply-rotate lanes).</summary>
    public static unsafe ulong Checksum(byte* page)
    {
        ulong a = 0x9E3779B97F4A7C15UL, b = 0xC2B2AE3D27D4EB4FUL, c = 0x165667B19E3779F9UL, d = 0x27D4EB2F165667C5UL;
        var w = (ulong*)page;
        for (int i = 0; i < PageSource.PageSize / 8; i += 4)
        {
            a = ulong.RotateLeft(a + w[i] * 0xC2B2AE3D27D4EB4FUL, 31) * 0x9E3779B97F4A7C15UL;
            b = ulong.RotateLeft(b + w[i + 1] * 0xC2B2AE3D27D4EB4FUL, 31) * 0x9E3779B97F4A7C15UL;
            c = ulong.RotateLeft(c + w[i + 2] * 0xC2B2AE3D27D4EB4FUL, 31) * 0x9E3779B97F4A7C15UL;
            d = ulong.RotateLeft(d + w[i + 3] * 0xC2B2AE3D27D4EB4FUL, 31) * 0x9E3779B97F4A7C15UL;
        }
        ulong h = ulong.RotateLeft(a, 1) + ulong.RotateLeft(b, 7) + ulong.RotateLeft(c, 12) + ulong.RotateLeft(d, 18);
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdUL;
        return h ^ (h >> 33);
    }

    public static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };

    /// <summary>Parses sizes such as 4g, 512m, 64k or a byte count.</summary>
    public static long ParseSize(string text, string option)
    {
        string t = text.Trim().ToLowerInvariant().TrimEnd('b').TrimEnd('i');
        long unit = 1;
        if (t.Length > 0 && char.IsLetter(t[^1]))
        {
            unit = t[^1] switch
            {
                'k' => 1L << 10,
                'm' => 1L << 20,
                'g' => 1L << 30,
                't' => 1L << 40,
                _ => 0,
            };
            t = t[..^1];
        }
        if (unit == 0 || !double.TryParse(t, System.Globalization.CultureInfo.InvariantCulture, out double v) || v < 0)
        {
            throw new CliException($"{option}: '{text}' is not a size; write e.g. 4g, 512m, 64k or a byte count.");
        }
        double bytes = v * unit;
        if (bytes > SharedLayout.MaxRegionBytes)
        {
            throw new CliException($"{option}: '{text}' is more than the largest region, 64 TiB; give a smaller size.");
        }
        return (long)bytes;
    }

    /// <summary>A line of /proc/self/status in bytes (<paramref name="key"/> "VmRSS", "VmHWM"), or 0 where /proc does not say.</summary>
    public static long ProcessStatusBytes(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith(key + ":", StringComparison.Ordinal))
                {
                    return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0]) * 1024;
                }
            }
        }
        catch (IOException)
        {
        }
        return 0;
    }

    /// <summary>The process's resident set now (VmRSS).</summary>
    public static long ResidentSetBytes() => ProcessStatusBytes("VmRSS");
}
