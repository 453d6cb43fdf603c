using System.Text;
using static CramCore.Cli.LatencyPlot;

namespace CramCore.Cli;

/// <summary>
/// An SVG of per-phase figures as grouped bars, one panel per figure (for `cram bench hotcold
/// --plot`: swap-ins per read and the hot set's miss rate of each phase, for CramCore, the exact
/// LRU of the same run and, when given, the kernel anchor's). Plain SVG 1.1, as <see cref="LatencyPlot"/>.
/// </summary>
internal static class PhaseBarsPlot
{
    /// <summary>One series: its name, colour and one value per phase (null: not measured).</summary>
    public sealed record Series(string Name, string Color, IReadOnlyList<double?> Values);

    /// <summary>One panel: its title, how a value reads, and its series.</summary>
    public sealed record Panel(string Title, Func<double, string> Format, IReadOnlyList<Series> Series);

    private const int Width = 460, Height = 300, Left = 64, Right = 16, Top = 40, Bottom = 46;

    public static string Svg(string title, IReadOnlyList<Panel> panels, int phases)
    {
        StringBuilder svg = Begin(title, Width * panels.Count, Height + 28);
        for (int i = 0; i < panels.Count; i++)
        {
            PanelSvg(svg, panels[i], phases, i * Width, 20);
        }
        int x = Left;
        foreach (Series s in panels[0].Series) // the legend, once
        {
            svg.Append(Inv($"<rect x=\"{x}\" y=\"{Height + 10}\" width=\"12\" height=\"10\" fill=\"{s.Color}\"/><text x=\"{x + 16}\" y=\"{Height + 19}\">{Escape(s.Name)}</text>\n"));
            x += 30 + (int)(s.Name.Length * 6.2);
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static void PanelSvg(StringBuilder svg, Panel panel, int phases, int x0, int y0)
    {
        int plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double max = panel.Series.SelectMany(s => s.Values).Where(v => v is not null).Select(v => v!.Value).DefaultIfEmpty(0).Max();
        double step = Nice(max <= 0 ? 0.25 : max * 1.1 / 4), top = 4 * step; // four round steps up to the tallest bar and a little more
        double Y(double v) => y0 + Top + plotH - v / top * plotH;
        svg.Append(Inv($"<text x=\"{x0 + Width / 2}\" y=\"{y0 + 24}\" text-anchor=\"middle\" font-size=\"12\">{Escape(panel.Title)}</text>\n"));
        for (int t = 0; t <= 4; t++)
        {
            double v = step * t;
            svg.Append(Inv($"<line x1=\"{x0 + Left}\" y1=\"{Y(v):F1}\" x2=\"{x0 + Left + plotW}\" y2=\"{Y(v):F1}\" stroke=\"#eee\"/>"));
            svg.Append(Inv($"<text x=\"{x0 + Left - 4}\" y=\"{Y(v) + 4:F1}\" text-anchor=\"end\">{Escape(panel.Format(v))}</text>\n"));
        }
        svg.Append(Inv($"<rect x=\"{x0 + Left}\" y=\"{y0 + Top}\" width=\"{plotW}\" height=\"{plotH}\" fill=\"none\" stroke=\"#888\"/>\n"));
        double group = (double)plotW / phases, bar = group * 0.8 / panel.Series.Count;
        for (int p = 0; p < phases; p++)
        {
            double gx = x0 + Left + p * group + group * 0.1;
            svg.Append(Inv($"<text x=\"{gx + group * 0.4:F1}\" y=\"{y0 + Top + plotH + 14}\" text-anchor=\"middle\">phase {p + 1}</text>"));
            for (int s = 0; s < panel.Series.Count; s++)
            {
                if (p < panel.Series[s].Values.Count && panel.Series[s].Values[p] is double v)
                {
                    svg.Append(Inv($"<rect x=\"{gx + s * bar:F1}\" y=\"{Y(v):F1}\" width=\"{bar - 2:F1}\" height=\"{Y(0) - Y(v):F1}\" fill=\"{panel.Series[s].Color}\"><title>{Escape($"{panel.Series[s].Name}, phase {p + 1}: {panel.Format(v)}")}</title></rect>"));
                }
            }
            svg.Append('\n');
        }
    }

    /// <summary>The round number (1, 2, 2.5 or 5 times a power of ten) at or above <paramref name="x"/>.</summary>
    private static double Nice(double x)
    {
        double e = Math.Pow(10, Math.Floor(Math.Log10(x))), f = x / e;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * e;
    }
}
