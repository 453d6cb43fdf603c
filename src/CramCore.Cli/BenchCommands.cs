using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Spectre.Console;

namespace CramCore.Cli;

/// <summary>
/// `cram bench faults|reclaim`: quick ratios measured in one run on the real paths (engine,
/// userfaultfd, liblz4), printed as one JSON object with --json or as a table.
/// </summary>
internal static unsafe class BenchCommands
{
    private const int P = PageSource.PageSize;

    internal sealed record Settings(int Pages, string? Corpus, bool Json, int Rounds, bool Mixed = false);

    private static PageSource Source(Settings s) => s.Corpus is null ? PageSource.Generated() : PageSource.FromCorpus(s.Corpus);

    private static void Validate(Settings s)
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

    /// <summary>The benchmark pages: the corpus in order, or the generated compressible mix.</summary>
    /// <summary>
    /// The pages to measure: compressible ones, or with <paramref name="mixed"/> the whole generated
    /// mix (zero, text, records, numeric, incompressible) or, for a corpus, its pages with one in
    /// four replaced by random bytes (compressed or encrypted data).
    /// </summary>
    private static byte[] Copy(PageSource source, int pages, bool mixed = false)
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

    private static int[] Shuffled(int n, int seed)
    {
        var order = Enumerable.Range(0, n).ToArray();
        new Random(seed).Shuffle(order);
        return order;
    }

    /// <summary>Touches each page once (reads a word) in the given order and returns the per-access ticks.</summary>
    private static List<long> TimeFirstTouch(CramRegion region, int[] order, bool write)
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

    private static double P50Us(List<long> ticks) => Measure.TicksToMicroseconds((long)Measure.Quantile(ticks, 0.5));
    private static double P99Us(List<long> ticks) => Measure.TicksToMicroseconds((long)Measure.Quantile(ticks, 0.99));

    public static int Faults(Settings s)
    {
        Validate(s);
        PageSource source = Source(s);
        int pages = s.Pages;
        var swapin = new List<long>();
        var raw = new List<long>();
        var wp = new List<long>();
        var decompress = new List<long>();
        double hitNs = double.MaxValue;
        long stored = 0;
        byte[] copy = Copy(source, pages);
        var compressed = new byte[pages][];
        var scratch = new byte[P];
        fixed (byte* src = copy, dst = scratch)
        {
            for (int i = 0; i < pages; i++)
            {
                int n = Interop.Lz4.CompressDefault(src + (long)i * P, dst, P, P);
                compressed[i] = scratch.AsSpan(0, n).ToArray();
            }
        }
        for (int round = 0; round < s.Rounds; round++)
        {
            int[] order = Shuffled(pages, round);
            // The real path: compressed in the engine's store, decompressed by the fault service.
            using (var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 }))
            using (var region = engine.CreateRegion((long)pages * P))
            {
                copy.AsSpan().CopyTo(region.AsSpan<byte>(0, copy.Length));
                region.Reclaim(region.Length);
                stored = engine.GetStats().StoredBytes;
                swapin.AddRange(TimeFirstTouch(region, order, write: false));
                wp.AddRange(TimeFirstTouch(region, order, write: true));
                // Resident hits: the same accesses with every page mapped.
                long sum = 0;
                long t0 = Stopwatch.GetTimestamp();
                for (int rep = 0; rep < 4; rep++)
                {
                    foreach (int i in order)
                    {
                        sum += *(long*)(region.Pointer + (long)i * P + 64);
                    }
                }
                double ns = Measure.TicksToMicroseconds(Stopwatch.GetTimestamp() - t0) * 1000 / (4.0 * pages);
                hitNs = Math.Min(hitNs, ns);
                GC.KeepAlive(sum);
            }
            // The bare fault: the same pages stored uncompressed and answered with UFFDIO_COPY.
            using (var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, StoreUncompressed = true }))
            using (var region = engine.CreateRegion((long)pages * P))
            {
                copy.AsSpan().CopyTo(region.AsSpan<byte>(0, copy.Length));
                region.Reclaim(region.Length);
                raw.AddRange(TimeFirstTouch(region, order, write: false));
            }
            // LZ4 alone on the same pages.
            fixed (byte* dst = scratch)
            {
                foreach (int i in order)
                {
                    byte[] c = compressed[i];
                    if (c.Length == 0)
                    {
                        continue;
                    }
                    fixed (byte* src = c)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        Interop.Lz4.DecompressSafe(src, dst, c.Length, P);
                        decompress.Add(Stopwatch.GetTimestamp() - t0);
                    }
                }
            }
        }
        double swapP50 = P50Us(swapin), rawP50 = P50Us(raw), lz4P50 = P50Us(decompress);
        var result = new Dictionary<string, object>
        {
            ["source"] = source.Description,
            ["pages"] = pages,
            ["rounds"] = s.Rounds,
            ["swapin_p50_us"] = Math.Round(swapP50, 2),
            ["swapin_p99_us"] = Math.Round(P99Us(swapin), 2),
            ["wp_p50_us"] = Math.Round(P50Us(wp), 2),
            ["wp_p99_us"] = Math.Round(P99Us(wp), 2),
            ["raw_uffd_p50_us"] = Math.Round(rawP50, 2),
            ["raw_uffd_p99_us"] = Math.Round(P99Us(raw), 2),
            ["lz4_decompress_p50_us"] = Math.Round(lz4P50, 2),
            ["resident_hit_ns"] = Math.Round(hitNs, 2),
            ["stored_ratio"] = Math.Round((double)pages * P / Math.Max(1, stored), 3),
            ["swapin_over_raw_plus_lz4"] = Math.Round(swapP50 / (rawP50 + lz4P50), 3),
        };
        Print(result, s.Json, "cram bench faults");
        return 0;
    }

    public static int Reclaim(Settings s)
    {
        Validate(s);
        PageSource source = Source(s);
        int pages = s.Pages;
        byte[] copy = Copy(source, pages, s.Mixed);
        double reclaimBest = 0, reclaimCold = 0, zeroBest = 0, lz4Best = 0;
        long stored = 0, compressedPages = 0, incompressible = 0, estimatedIncompressible = 0;
        int threshold = new CramOptions().CompressionThreshold;
        var scratch = (byte*)NativeMemory.Alloc(P);
        // One engine for all rounds: round 0 is a cold start (fresh storage memory is faulted in);
        // later rounds rewrite every page and reclaim again, the steady state a long-running
        // process sees. reclaim_mb_s is the best steady-state round.
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using var region = engine.CreateRegion((long)pages * P);
        // The same path without the compressibility estimator (every page that is not same-filled
        // is compressed), on the same pages in the same rounds.
        using var unroutedEngine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, EstimateCompressibility = false });
        using var unroutedRegion = unroutedEngine.CreateRegion((long)pages * P);
        double unroutedBest = 0;

        // Writes the pages into the region (so they are dirty) and times reclaiming all of them.
        double TimedReclaim(CramRegion target, out long evicted)
        {
            copy.AsSpan().CopyTo(target.AsSpan<byte>(0, copy.Length));
            long start = Stopwatch.GetTimestamp();
            evicted = target.Reclaim(target.Length);
            return MBps(pages, Stopwatch.GetTimestamp() - start);
        }
        using var zeroEngine = CramEngine.Create(new CramOptions { FaultAroundPages = 16 });
        using var zeroRegion = zeroEngine.CreateRegion((long)pages * P);
        try
        {
            for (int round = 0; round <= s.Rounds; round++)
            {
                // LZ4 alone: the same pages, the same output bound as the engine's threshold.
                fixed (byte* src = copy)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    for (int i = 0; i < pages; i++)
                    {
                        Interop.Lz4.CompressDefault(src + (long)i * P, scratch, P, threshold);
                    }
                    lz4Best = Math.Max(lz4Best, MBps(pages, Stopwatch.GetTimestamp() - t0));
                }
                // The real path: write-protect, same-filled check, LZ4, store, publish, MADV_DONTNEED.
                var before = engine.GetStats();
                double mbps = TimedReclaim(region, out long evicted);
                var after = engine.GetStats();
                if (round == 0)
                {
                    reclaimCold = mbps;
                }
                else
                {
                    reclaimBest = Math.Max(reclaimBest, mbps);
                }
                double unroutedMbps = TimedReclaim(unroutedRegion, out _);
                if (round > 0)
                {
                    unroutedBest = Math.Max(unroutedBest, unroutedMbps);
                }
                stored = after.StoredBytes;
                estimatedIncompressible = after.EstimatedIncompressiblePages - before.EstimatedIncompressiblePages;
                compressedPages = after.CompressedPages - before.CompressedPages;
                incompressible = after.IncompressiblePages - before.IncompressiblePages;
                if (evicted == 0)
                {
                    throw new CliException("--corpus: no page of this corpus compresses below the threshold; nothing to reclaim.");
                }
                // Zero pages: written (so they are dirty), found same-filled, never compressed.
                for (long i = 0; i < pages; i++)
                {
                    *(long*)(zeroRegion.Pointer + i * P) = 0;
                }
                long t2 = Stopwatch.GetTimestamp();
                zeroRegion.Reclaim(zeroRegion.Length);
                if (round > 0)
                {
                    zeroBest = Math.Max(zeroBest, MBps(pages, Stopwatch.GetTimestamp() - t2));
                }
            }
        }
        finally
        {
            NativeMemory.Free(scratch);
        }
        var result = new Dictionary<string, object>
        {
            ["source"] = source.Description + (s.Mixed ? (source.CorpusPages > 0 ? ", 1 in 4 pages random" : ", mixed") : ""),
            ["pages"] = pages,
            ["rounds"] = s.Rounds,
            ["reclaim_mb_s"] = Math.Round(reclaimBest, 1),
            ["reclaim_cold_mb_s"] = Math.Round(reclaimCold, 1),
            ["lz4_compress_mb_s"] = Math.Round(lz4Best, 1),
            ["reclaim_over_lz4"] = Math.Round(reclaimBest / lz4Best, 3),
            ["stored_ratio"] = Math.Round((double)compressedPages * P / Math.Max(1, stored), 3),
            ["compressed_pages"] = compressedPages,
            ["incompressible_pages"] = incompressible,
            ["estimator_skipped_pages"] = estimatedIncompressible,
            ["reclaim_without_estimator_mb_s"] = Math.Round(unroutedBest, 1),
            ["routing_speedup"] = Math.Round(reclaimBest / unroutedBest, 3),
            ["zero_reclaim_mb_s"] = Math.Round(zeroBest, 1),
            ["zero_reclaim_over_lz4"] = Math.Round(zeroBest / lz4Best, 2),
        };
        Print(result, s.Json, "cram bench reclaim");
        return 0;
    }

    private static double MBps(long pages, long ticks) => pages * (double)P / (1 << 20) / (ticks / (double)Stopwatch.Frequency);

    public static int Print(Dictionary<string, object> result, bool json, string title)
    {
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(result));
            return 0;
        }
        var table = new Table().Title(title).Border(TableBorder.Rounded).AddColumn("metric").AddColumn(new TableColumn("value").RightAligned());
        foreach (var (k, v) in result)
        {
            table.AddRow(k, Markup.Escape(Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? ""));
        }
        AnsiConsole.Write(table);
        return 0;
    }
}
