using System.Globalization;
using System.Text;
using System.Text.Json;

namespace CramCore.Cli;

/// <summary>
/// An SVG of latency distributions, one panel per phase: CramCore's measured swap-ins as an
/// empirical CDF (x: µs, logarithmic; y: share of swap-ins at or below it), with its p50 and p99
/// marked, and beside them, when given, the kernel's p50 and p99 for the same phase (the anchor
/// scripts report those two points, not a distribution). Plain SVG 1.1, no script, no external
/// font: it renders on GitHub, in a browser or an editor as it is.
/// </summary>
internal static class LatencyPlot
{
    /// <summary>One panel: its title, the samples (µs), and the kernel's p50/p99 for the same phase (null: not given).</summary>
    public sealed record Panel(string Title, IReadOnlyList<double> Microseconds, (double P50, double P99)? Kernel);

    private const int Width = 460, Height = 300, Left = 56, Right = 16, Top = 40, Bottom = 46;
    private const string CramColor = "#1f77b4", KernelColor = "#d62728";

    /// <summary>The kernel's p50/p99 of each phase from an anchor's JSON (kernel-zram.sh, kernel-swapfile.sh): phase key prefix → values.</summary>
    public static (double P50, double P99)? KernelPoint(JsonElement kernel, string prefix) =>
        kernel.TryGetProperty(prefix + "_p50_us", out JsonElement p50) && kernel.TryGetProperty(prefix + "_p99_us", out JsonElement p99) &&
        p50.ValueKind == JsonValueKind.Number && p99.ValueKind == JsonValueKind.Number
            ? (p50.GetDouble(), p99.GetDouble())
            : null;

    /// <summary>The SVG document for <paramref name="panels"/>, side by side, under <paramref name="title"/>.</summary>
    public static string Svg(string title, IReadOnlyList<Panel> panels, string cramLabel, string? kernelLabel)
    {
        StringBuilder svg = Begin(title, Width * panels.Count, Height + 28);
        for (int i = 0; i < panels.Count; i++)
        {
            PanelSvg(svg, panels[i], i * Width, 20);
        }
        // The legend, once, under the panels.
        int y = Height + 20;
        svg.Append(Inv($"<line x1=\"{Left}\" y1=\"{y - 4}\" x2=\"{Left + 24}\" y2=\"{y - 4}\" stroke=\"{CramColor}\" stroke-width=\"2\"/>"));
        string cramText = $"{cramLabel}: share of swap-ins at or below a latency";
        svg.Append(Inv($"<text x=\"{Left + 30}\" y=\"{y}\">{Escape(cramText)}</text>\n"));
        if (kernelLabel is not null)
        {
            int x = Left + 30 + (int)(cramText.Length * 6.2) + 24; // after the first entry (11 px sans-serif: ~6 px a character)
            svg.Append(Inv($"<circle cx=\"{x + 8}\" cy=\"{y - 4}\" r=\"4\" fill=\"{KernelColor}\"/>"));
            svg.Append(Inv($"<text x=\"{x + 18}\" y=\"{y}\">{Escape(kernelLabel)}: p50 and p99</text>\n"));
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static void PanelSvg(StringBuilder svg, Panel panel, int x0, int y0)
    {
        double[] sorted = [.. panel.Microseconds.Where(v => v > 0).Order()];
        double lo = Math.Max(0.5, Math.Min(sorted.FirstOrDefault(1), panel.Kernel?.P50 ?? double.MaxValue) / 1.5);
        // Up to the 99.9th percentile (a rare outlier would squeeze the rest into a corner; the curve runs off the edge), and the kernel's p99.
        double p999 = sorted.Length == 0 ? 10 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(0.999 * sorted.Length))];
        double hi = Math.Max(p999 * 1.5, (panel.Kernel?.P99 ?? 0) * 1.5);
        double decadeLo = Math.Floor(Math.Log10(lo)), decadeHi = Math.Ceiling(Math.Log10(hi));
        int plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double X(double us) => x0 + Left + (Math.Log10(Math.Clamp(us, Math.Pow(10, decadeLo), Math.Pow(10, decadeHi))) - decadeLo) / (decadeHi - decadeLo) * plotW;
        double Y(double share) => y0 + Top + (1 - share) * plotH;

        svg.Append(Inv($"<text x=\"{x0 + Width / 2}\" y=\"{y0 + 24}\" text-anchor=\"middle\" font-size=\"12\">{Escape(panel.Title)} ({sorted.Length:N0} swap-ins)</text>\n"));
        svg.Append(Inv($"<rect x=\"{x0 + Left}\" y=\"{y0 + Top}\" width=\"{plotW}\" height=\"{plotH}\" fill=\"none\" stroke=\"#888\"/>\n"));
        int[] between = decadeHi - decadeLo > 3 ? [1] : [1, 2, 5]; // decades on x, with 2× and 5× ticks when they fit
        for (double d = decadeLo; d <= decadeHi; d++)
        {
            foreach (int m in between)
            {
                double us = m * Math.Pow(10, d);
                if (d == decadeHi && m > 1)
                {
                    break;
                }
                double x = X(us);
                string text = us >= 1000 ? Inv($"{us / 1000:G3}k") : Inv($"{us:G3}");
                svg.Append(Inv($"<line x1=\"{x:F1}\" y1=\"{y0 + Top}\" x2=\"{x:F1}\" y2=\"{y0 + Top + plotH}\" stroke=\"#eee\"/>"));
                svg.Append(Inv($"<text x=\"{x:F1}\" y=\"{y0 + Top + plotH + 14}\" text-anchor=\"middle\">{text}</text>"));
            }
        }
        svg.Append(Inv($"<text x=\"{x0 + Left + plotW / 2}\" y=\"{y0 + Top + plotH + 30}\" text-anchor=\"middle\">µs</text>\n"));
        foreach (double share in new[] { 0, 0.25, 0.5, 0.75, 1 })
        {
            svg.Append(Inv($"<line x1=\"{x0 + Left}\" y1=\"{Y(share):F1}\" x2=\"{x0 + Left + plotW}\" y2=\"{Y(share):F1}\" stroke=\"#eee\"/>"));
            svg.Append(Inv($"<text x=\"{x0 + Left - 4}\" y=\"{Y(share) + 4:F1}\" text-anchor=\"end\">{share * 100:0} %</text>"));
        }
        svg.Append('\n');
        if (sorted.Length > 0)
        {
            // The empirical CDF as a step line, thinned to at most 400 points.
            var path = new StringBuilder(Inv($"M{X(sorted[0]):F1},{Y(0):F1}"));
            int step = Math.Max(1, sorted.Length / 400);
            for (int i = 0; i < sorted.Length; i += step)
            {
                path.Append(Inv($" L{X(sorted[i]):F1},{Y((i + 1.0) / sorted.Length):F1}"));
            }
            path.Append(Inv($" L{X(sorted[^1]):F1},{Y(1):F1}"));
            svg.Append(Inv($"<path d=\"{path}\" fill=\"none\" stroke=\"{CramColor}\" stroke-width=\"2\"/>\n"));
            double p50 = sorted[(int)Math.Ceiling(0.5 * sorted.Length) - 1], p99 = sorted[(int)Math.Ceiling(0.99 * sorted.Length) - 1];
            Mark(svg, X(p50), Y(0.5), CramColor, Inv($"p50 {p50:G3}"), below: true);
            Mark(svg, X(p99), Y(0.99), CramColor, Inv($"p99 {p99:G3}"), below: true);
        }
        if (panel.Kernel is { } k)
        {
            Mark(svg, X(k.P50), Y(0.5), KernelColor, Inv($"p50 {k.P50:G3}"), below: false);
            Mark(svg, X(k.P99), Y(0.99), KernelColor, Inv($"p99 {k.P99:G3}"), below: false);
        }
    }

    private static void Mark(StringBuilder svg, double x, double y, string color, string label, bool below) =>
        svg.Append(Inv($"<circle cx=\"{x:F1}\" cy=\"{y:F1}\" r=\"4\" fill=\"{color}\"/><text x=\"{x + 6:F1}\" y=\"{y + (below ? 14 : -6):F1}\" fill=\"{color}\">{Escape(label)}</text>\n"));

    /// <summary>An SVG document of <paramref name="width"/> × <paramref name="height"/> on white, its <paramref name="title"/> centred at the top (the caller appends the rest and the closing tag).</summary>
    internal static StringBuilder Begin(string title, int width, int height)
    {
        var svg = new StringBuilder();
        svg.Append(Inv($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n"));
        svg.Append(Inv($"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"));
        svg.Append(Inv($"<text x=\"{width / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{Escape(title)}</text>\n"));
        return svg;
    }

    internal static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    internal static string Escape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal);
}
