using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Serialization;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench memory-limit --json` prints.</summary>
internal sealed record MemoryLimitBenchResult(
    string Data, long SizeBytes, long MemoryLimitBytes, bool BackingFile,
    [property: JsonPropertyName("peak_memory_used_bytes")] long PeakMemoryUsedBytes,
    [property: JsonPropertyName("peak_over_limit_bytes")] long PeakOverLimitBytes,
    long PeakResidentBytes, long PeakPoolBytes, long ThrottledFaults,
    long FinalMemoryUsedBytes, long ResidentTargetBytes, long MetadataBytes, long PoolBytes,
    [property: JsonPropertyName("process_peak_rss_bytes")] long ProcessPeakRssBytes,
    [property: JsonPropertyName("write_mib_per_s")] double WriteMibPerS,
    [property: JsonPropertyName("verify_mib_per_s")] double VerifyMibPerS,
    long Pages, long Mismatches, long UncompressedStoredPages, long IncompressiblePages, long WritebackPages, long FilePages,
    long MemoryLimitWaits, double MemoryLimitWaitMs, long ExceededEvents, long RestoredEvents, bool ExceededAtEnd,
    long PagesWrittenWhileExceeded,
    [property: JsonPropertyName("write_ms_while_exceeded")] [property: Figure(FigureUnit.Milliseconds)] double WriteMsWhileExceeded);

/// <summary>
/// `cram bench memory-limit`: does <see cref="CramOptions.MemoryLimitBytes"/> hold? Writes
/// <c>--size</c> bytes of compressible pages (a corpus, or the generated compressible mix) or of
/// random bytes into one region under the limit, with or without a backing file, sampling the
/// engine's memory use (resident + pool + metadata) every 256 pages, then reads every page back and
/// compares it. Reports the peak against the limit, the process's peak RSS (VmHWM: the runtime's
/// own memory included), how often and how long faults waited because the limit could not be held
/// (ghost mode with random bytes), and what went to the file. Run it inside a memory cgroup to see
/// the kernel agree (README, "Memory bounds").
/// </summary>
internal static unsafe class BenchMemoryLimitCommand
{
    private const int P = PageSource.PageSize;

    public sealed record Settings(string Data, string? Corpus, long Size, long MemoryLimit, string? BackingFile, double WaitMs, bool Json);

    /// <summary>--backing-file as a path: "temp" (the default) a new file in the temp directory, "none" no file (ghost mode), else the path given.</summary>
    public static string? BackingFilePath(string value) => value switch
    {
        "none" => null,
        "temp" => Path.Combine(Path.GetTempPath(), $"cramcore-memory-limit-{Environment.ProcessId}-{Guid.NewGuid():N}.swap"),
        _ => value,
    };

    public static int Run(Settings s)
    {
        if (s.Data is not ("corpus" or "random"))
        {
            throw new CliException($"--data: '{s.Data}' is not a kind of data; use corpus (compressible pages: --corpus FILE or the generated mix) or random.");
        }
        if (s.Size < 1L << 20 || s.Size > 1L << 40)
        {
            throw new CliException($"--size: {s.Size} must be between 1m and 1t.");
        }
        if (s.MemoryLimit < CramOptions.MinMemoryLimitBytes)
        {
            throw new CliException($"--memory-limit: {s.MemoryLimit} is below the smallest memory limit, 16m.");
        }
        if (s.WaitMs is < 0 or > 10_000)
        {
            throw new CliException($"--wait-ms: {s.WaitMs} must be between 0 and 10000.");
        }
        if (s.BackingFile is not null && File.Exists(s.BackingFile))
        {
            throw new CliException($"--backing-file: '{s.BackingFile}' exists; CramCore never overwrites a file: remove it or choose another path.");
        }
        PageSource source = s.Corpus is null ? PageSource.Generated() : PageSource.FromCorpus(s.Corpus);
        var events = new List<CramTierEventKind>();
        long exceededEvents = 0, restoredEvents = 0;
        var options = new CramOptions
        {
            MemoryLimitBytes = s.MemoryLimit,
            MemoryLimitWait = TimeSpan.FromMilliseconds(s.WaitMs),
            BackingFile = s.BackingFile,
        };
        using var engine = CramEngine.Create(options);
        engine.TierEvent += (_, e) =>
        {
            if (e.Kind == CramTierEventKind.MemoryLimitExceeded)
            {
                Interlocked.Increment(ref exceededEvents);
                BenchSupport.Progress($"event: {e.Message}");
            }
            else if (e.Kind == CramTierEventKind.MemoryLimitRestored)
            {
                Interlocked.Increment(ref restoredEvents);
            }
        };
        long pages = s.Size / P;
        using CramRegion region = engine.CreateRegion(pages * P);
        byte* basePtr = region.Pointer;
        var expected = new byte[P];
        long peak = 0, peakResident = 0, peakPool = 0, exceededPages = 0, exceededTicks = 0;
        long started = Stopwatch.GetTimestamp(), lastProgress = started;
        BenchSupport.Progress($"writing {Measure.Bytes(pages * P)} of {(s.Data == "random" ? "random bytes" : source.Description)} under a memory limit of {Measure.Bytes(s.MemoryLimit)}{(s.BackingFile is null ? " (ghost mode: no backing file)" : $" with a backing file at {s.BackingFile} (unlinked at once)")}");
        for (long i = 0; i < pages; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            bool exceeded = engine.Parts.Budget.Exceeded;
            Fill(expected, source, s.Data, i);
            expected.CopyTo(new Span<byte>(basePtr + i * P, P));
            if (exceeded)
            {
                exceededPages++;
                exceededTicks += Stopwatch.GetTimestamp() - t0;
            }
            if ((i & 255) == 255 || i == pages - 1)
            {
                Sample(engine, ref peak, ref peakResident, ref peakPool);
                if (Stopwatch.GetElapsedTime(lastProgress).TotalSeconds >= 2)
                {
                    lastProgress = Stopwatch.GetTimestamp();
                    BenchSupport.Progress($"  {Measure.Bytes((i + 1) * P)} written, memory used {Measure.Bytes(engine.Parts.Budget.MemoryUsedBytes)}");
                }
            }
        }
        double writeSeconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        BenchSupport.Progress("reading every page back");
        long mismatches = 0;
        long verifyStarted = Stopwatch.GetTimestamp();
        for (long i = 0; i < pages; i++)
        {
            Fill(expected, source, s.Data, i);
            if (!new ReadOnlySpan<byte>(basePtr + i * P, P).SequenceEqual(expected))
            {
                mismatches++;
            }
            if ((i & 255) == 255)
            {
                Sample(engine, ref peak, ref peakResident, ref peakPool);
            }
        }
        double verifySeconds = Stopwatch.GetElapsedTime(verifyStarted).TotalSeconds;
        CramStats stats = engine.GetStats();
        var result = new MemoryLimitBenchResult(
            Data: s.Data == "random" ? "random" : source.Description, SizeBytes: pages * P, MemoryLimitBytes: s.MemoryLimit, BackingFile: s.BackingFile is not null,
            PeakMemoryUsedBytes: peak, PeakOverLimitBytes: Math.Max(0, peak - s.MemoryLimit),
            PeakResidentBytes: peakResident, PeakPoolBytes: peakPool, ThrottledFaults: stats.ThrottledFaults,
            FinalMemoryUsedBytes: stats.MemoryUsedBytes, ResidentTargetBytes: stats.ResidentTargetBytes, MetadataBytes: stats.MetadataBytes, PoolBytes: stats.PoolBytes,
            ProcessPeakRssBytes: PeakRss(),
            WriteMibPerS: Math.Round(pages * (double)P / (1 << 20) / writeSeconds, 1),
            VerifyMibPerS: Math.Round(pages * (double)P / (1 << 20) / verifySeconds, 1),
            Pages: pages, Mismatches: mismatches, UncompressedStoredPages: stats.UncompressedStoredPages, IncompressiblePages: stats.IncompressiblePages,
            WritebackPages: stats.WritebackPages, FilePages: stats.FilePages,
            MemoryLimitWaits: stats.MemoryLimitWaits, MemoryLimitWaitMs: s.WaitMs,
            ExceededEvents: Interlocked.Read(ref exceededEvents), RestoredEvents: Interlocked.Read(ref restoredEvents), ExceededAtEnd: stats.MemoryLimitExceeded,
            PagesWrittenWhileExceeded: exceededPages,
            WriteMsWhileExceeded: Math.Round(Stopwatch.GetElapsedTime(0, exceededTicks).TotalMilliseconds, 1));
        int printed = ResultPrinter.Print(result, s.Json, "cram bench memory-limit");
        return mismatches == 0 && stats.ServiceErrors == 0 && stats.ChecksumFailures == 0 ? printed : ExitCode.IntegrityFailure;
    }

    /// <summary>Memory use now, as the budget counts it, into the peaks (the peak of the sum, and of its two largest parts on their own).</summary>
    private static void Sample(CramEngine engine, ref long peak, ref long peakResident, ref long peakPool)
    {
        peak = Math.Max(peak, engine.Parts.Budget.MemoryUsedBytes);
        peakResident = Math.Max(peakResident, (long)Volatile.Read(ref engine.Parts.Shared->Stats.ResidentPages) * P);
        peakPool = Math.Max(peakPool, engine.Parts.Pool.UsedBytes);
    }

    /// <summary>Page <paramref name="index"/>: a compressible page stamped with its index, or random bytes from a seed of it.</summary>
    private static void Fill(byte[] page, PageSource source, string data, long index)
    {
        if (data == "random")
        {
            var rng = new PageSource.Xoshiro((ulong)index * 0x9E3779B97F4A7C15UL + 1);
            Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(page.AsSpan());
            for (int w = 0; w < words.Length; w++)
            {
                words[w] = rng.Next();
            }
            return;
        }
        source.Write(page, index, version: index + 1, compressibleOnly: true);
    }

    /// <summary>The process's peak resident set (VmHWM), or 0 where /proc does not say.</summary>
    private static long PeakRss() => Measure.ProcessStatusBytes("VmHWM");
}
