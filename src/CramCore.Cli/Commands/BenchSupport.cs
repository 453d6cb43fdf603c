using System.Diagnostics;

namespace CramCore.Cli.Commands;

/// <summary>The options `cram bench faults` and `cram bench reclaim` share.</summary>
internal sealed record BenchSettings(int Pages, string? Corpus, bool Json, int Rounds, bool Mixed = false, CramFaultService FaultService = CramFaultService.Auto);

/// <summary>What the `cram bench` verbs share: their pages, access timing, rates.</summary>
internal static unsafe class BenchSupport
{
    private const int P = PageSource.PageSize;

    /// <summary>The --fault-service value: service-thread, faulting-thread or auto.</summary>
    public static CramFaultService ParseFaultService(string? value) => value switch
    {
        null or "auto" => CramFaultService.Auto,
        "service-thread" => CramFaultService.ServiceThread,
        "faulting-thread" => CramFaultService.FaultingThread,
        _ => throw new CliException($"--fault-service: '{value}' is not one of service-thread, faulting-thread, auto."),
    };

    /// <summary>How a fault service is named in the JSON (<c>fault_service</c>) and on the command line.</summary>
    public static string Name(CramFaultService service) => service switch
    {
        CramFaultService.ServiceThread => "service-thread",
        CramFaultService.FaultingThread => "faulting-thread",
        _ => "auto",
    };

    public static PageSource Source(BenchSettings s) => s.Corpus is null ? PageSource.Generated() : PageSource.FromCorpus(s.Corpus);

    public static void Validate(BenchSettings s)
    {
        if (s.Pages is < 256 or > 4_000_000)
        {
            throw new CliException($"--pages: {s.Pages} must be between 256 and 4000000.");
        }
        if (s.Rounds is < 1 or > 100)
        {
            throw new CliException($"--rounds: {s.Rounds} must be between 1 and 100.");
        }
    }

    /// <summary>
    /// The pages to measure: compressible ones, or with <paramref name="mixed"/> the whole generated
    /// mix (zero, text, records, numeric, incompressible) or, for a corpus, its pages with one in
    /// four replaced by random bytes (compressed or encrypted data).
    /// </summary>
    public static byte[] Copy(PageSource source, int pages, bool mixed = false)
    {
        var data = new byte[(long)pages * P];
        for (int i = 0; i < pages; i++)
        {
            Span<byte> page = data.AsSpan(i * P, P);
            if (mixed && source.CorpusPages > 0 && i % 4 == 3)
            {
                new Random(i).NextBytes(page);
            }
            else
            {
                source.Write(page, i, compressibleOnly: !mixed);
            }
        }
        return data;
    }

    public static int[] Shuffled(int n, int seed)
    {
        var order = Enumerable.Range(0, n).ToArray();
        new Random(seed).Shuffle(order);
        return order;
    }

    /// <summary>Touches each page once (reads a word) in the given order and returns the per-access ticks.</summary>
    public static List<long> TimeFirstTouch(CramRegion region, int[] order, bool write)
    {
        var ticks = new List<long>(order.Length);
        byte* basePtr = region.Pointer;
        long sum = 0;
        foreach (int i in order)
        {
            long* w = (long*)(basePtr + (long)i * P + 64);
            long t0 = Stopwatch.GetTimestamp();
            if (write)
            {
                *w += 1;
            }
            else
            {
                sum += *w;
            }
            ticks.Add(Stopwatch.GetTimestamp() - t0);
        }
        GC.KeepAlive(sum);
        return ticks;
    }

    /// <summary>A progress line on stderr (also with --json: the JSON document is all of stdout, so a pipe still reads it whole).</summary>
    public static void Progress(string line) => Console.Error.WriteLine(line);

    public static double P50Us(List<long> ticks) => Measure.TicksToMicroseconds((long)Measure.Quantile(ticks, 0.5));
    public static double P99Us(List<long> ticks) => Measure.TicksToMicroseconds((long)Measure.Quantile(ticks, 0.99));

    /// <summary>MiB per second for <paramref name="pages"/> pages in <paramref name="ticks"/>.</summary>
    public static double MBps(long pages, long ticks) => pages * (double)P / (1 << 20) / (ticks / (double)Stopwatch.Frequency);

    /// <summary>
    /// Checks --plot and --kernel of a verb that draws: the plot an .svg in a directory that exists,
    /// the kernel's JSON (only with --plot) a file <paramref name="anchor"/> printed. Returns that JSON, or null.
    /// </summary>
    public static System.Text.Json.JsonElement? PlotArguments(string? plot, string? kernelJson, string anchor)
    {
        if (plot is not null && (!plot.EndsWith(".svg", StringComparison.OrdinalIgnoreCase) || !Directory.Exists(Path.GetDirectoryName(Path.GetFullPath(plot)))))
        {
            throw new CliException($"--plot: '{plot}' must be an .svg file in a directory that exists.");
        }
        if (kernelJson is null)
        {
            return null;
        }
        if (plot is null)
        {
            throw new CliException("--kernel: goes with --plot (the kernel's figures are drawn beside ours); add --plot FILE.svg.");
        }
        try
        {
            return System.Text.Json.JsonDocument.Parse(File.ReadAllText(kernelJson)).RootElement.Clone();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            throw new CliException($"--kernel: '{kernelJson}' is not a kernel anchor's JSON ({e.Message}); give the file {anchor} printed.");
        }
    }
}
