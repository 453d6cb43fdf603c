using System.Diagnostics;
using System.Runtime.InteropServices;

namespace CramCore.Cli.Commands;

/// <summary>One mode of `cram bench bear`.</summary>
internal sealed record BearModeResult(
    long OverflowBytes, long PeakPhysicalUsageBytes, long Promotions, long MadeWritable, long MaxWritable, [property: Figure(FigureUnit.Pages, Absent = "none (no write control)")] long BudgetPages,
    double WritesPerS, long Writes, long Mismatches);

/// <summary>What `cram bench bear --json` prints.</summary>
internal sealed record BearBenchResult(
    int Pages, long DeviceCapacityBytes, long PlacedPages, long LedgerBytes, int Threads, [property: Figure(FigureUnit.Seconds)] double SecondsPerMode, [property: Figure(FigureUnit.Pages, Label = "writable budget")] long BudgetPages,
    Dictionary<string, BearModeResult> Modes,
    double PlacedReadGbS, double ResidentReadGbS, double PlacedOverResidentRead);

/// <summary>
/// `cram bench bear`: the experiment behind write control (seeds 000–002). Pages that compress
/// well are placed on an emulated CRAM device whose capacity holds them only while they compress;
/// then threads write random (incompressible) bytes into them as fast as they can, and a scanner
/// computes the physical usage the device would see (its frames compressed), in three modes:
/// no write control (every device page writable), the host's budget (the risk dial), and the
/// device's budget from a control plane that dies halfway. overflow_bytes is usage beyond
/// capacity — a bus error on real hardware. Also: reads of placed pages against resident ones.
/// </summary>
internal static unsafe class BenchBearCommand
{
    private const int P = PageSource.PageSize;

    public static int Run(int pages, double seconds, int threads, long budget, bool json)
    {
        if (pages is < 1024 or > 1_000_000)
        {
            throw new CliException($"--pages: {pages} must be between 1024 and 1000000.");
        }
        if (seconds is < 0.2 or > 600)
        {
            throw new CliException($"--seconds: {seconds} must be between 0.2 and 600 (per mode).");
        }
        if (threads is < 1 or > 64)
        {
            throw new CliException($"--threads: {threads} must be between 1 and 64.");
        }
        if (budget is < 1 or > 1_000_000)
        {
            throw new CliException($"--budget: {budget} must be between 1 and 1000000 pages.");
        }
        // The device holds an eighth of the logical bytes: enough for these pages (they compress
        // about 20x) plus the budget's worst case, never enough for them once incompressible.
        long capacity = Math.Max(256L << 10, (long)pages * P / 8);
        long frames = (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)pages * 2);
        var modes = new Dictionary<string, BearModeResult>();
        long placed = 0, ledger = 0;
        double placedRead = 0, residentRead = 0;
        foreach (string mode in new[] { "no_write_control", "host_budget", "device_budget_control_plane_killed" })
        {
            BenchSupport.Progress($"{mode}: placing {pages} pages on a {capacity >> 20} MiB device, then {threads} threads write random bytes for {seconds} s");
            var plane = new KillableControlPlane(budget);
            var device = new EmulatedCramDevice(capacity, frames);
            var options = new CramOptions { CramDevice = device, FaultAroundPages = 16, ControlPlaneLease = TimeSpan.FromMilliseconds(50) };
            switch (mode)
            {
                case "no_write_control": options.CramWriteControl = false; break;
                case "host_budget": options.WritableBudgetPages = budget; break;
                default: options.WriteBudgetSource = plane; break;
            }
            using var engine = CramEngine.Create(options);
            using var region = engine.CreateRegion((long)pages * P);
            for (int i = 0; i < pages; i++)
            {
                Fill(region.Pointer + (long)i * P, i);
            }
            region.Reclaim(region.Length);
            CramStats s = engine.GetStats();
            if (s.CramPlacedPages < pages * 9L / 10)
            {
                throw new CliException($"only {s.CramPlacedPages} of {pages} pages were placed on the device; nothing to measure.");
            }
            placed = s.CramPlacedPages;
            ledger = s.CramLedgerBytes;
            if (mode == "host_budget")
            {
                (placedRead, residentRead) = ReadThroughput(engine, region, pages);
            }
            (long writes, double elapsed, long peakUsage) = Storm(engine, region, pages, seconds, threads, plane, mode != "host_budget" && mode != "no_write_control");
            engine.Maintenance.TickCramNode();
            s = engine.GetStats();
            long mismatches = Verify(region, pages);
            modes[mode] = new BearModeResult(
                OverflowBytes: s.CramOverflowBytes,
                PeakPhysicalUsageBytes: Math.Max(peakUsage, s.CramPhysicalUsageBytes),
                Promotions: s.CramPromotions,
                MadeWritable: s.CramMadeWritable,
                MaxWritable: s.CramMaxWritablePages,
                BudgetPages: mode == "no_write_control" ? -1 : budget,
                WritesPerS: Math.Round(writes / elapsed),
                Writes: writes,
                Mismatches: mismatches);
        }
        var result = new BearBenchResult(pages, capacity, placed, ledger, threads, seconds, budget, modes,
            Math.Round(placedRead, 2), Math.Round(residentRead, 2), Math.Round(placedRead / residentRead, 3));
        if (json)
        {
            Console.WriteLine(ResultPrinter.ToJson(result));
            return modes.Values.All(m => m.Mismatches == 0) ? 0 : 1;
        }
        var rows = ResultPrinter.Rows(result).Where(r => r.Name != "modes").ToList();
        foreach ((string mode, BearModeResult m) in modes)
        {
            rows.AddRange(ResultPrinter.Rows(m).Select(r => ($"{mode}: {r.Name}", r.Value)));
        }
        ResultPrinter.PrintTable("cram bench bear", rows);
        return modes.Values.All(m => m.Mismatches == 0) ? 0 : 1;
    }

    /// <summary>Sparse records (a key every 256 bytes in blank padding) that LZ4 shrinks about twentyfold, different on every page.</summary>
    private static void Fill(byte* page, long index)
    {
        new Span<byte>(page, P).Fill(0x20);
        for (int o = 0; o < P; o += 256)
        {
            *(long*)(page + o + 8) = index * 16 + o / 256;
        }
    }

    private static long Verify(CramRegion region, int pages)
    {
        // Pages written in the storm hold random bytes with their index in the first word; the others are as filled.
        long bad = 0;
        byte* expected = stackalloc byte[P];
        for (int i = 0; i < pages; i++)
        {
            byte* p = region.Pointer + (long)i * P;
            if (*(long*)p == ~(long)i)
            {
                continue; // written by the storm: its owner checked it when writing
            }
            Fill(expected, i);
            if (!new ReadOnlySpan<byte>(p, P).SequenceEqual(new ReadOnlySpan<byte>(expected, P)))
            {
                bad++;
            }
        }
        return bad;
    }

    /// <summary>Threads write random pages of random bytes; a scanner computes the device's usage. Returns writes, seconds, peak usage.</summary>
    private static (long Writes, double Seconds, long PeakUsage) Storm(CramEngine engine, CramRegion region, int pages, double seconds,
        int threads, KillableControlPlane plane, bool killHalfway)
    {
        var noise = new byte[1 << 20];
        new Random(42).NextBytes(noise);
        long writes = 0, peak = 0;
        var stopAt = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        var clock = Stopwatch.StartNew();
        var writers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            long n = 0;
            fixed (byte* src = noise)
            {
                while (Stopwatch.GetTimestamp() < stopAt)
                {
                    for (int k = 0; k < 64; k++)
                    {
                        long page = rng.Next(pages);
                        byte* p = region.Pointer + page * P;
                        Buffer.MemoryCopy(src + rng.Next(noise.Length - P), p, P, P);
                        *(long*)p = ~page; // marks it written (random otherwise)
                        n++;
                    }
                }
            }
            Interlocked.Add(ref writes, n);
        }) { Name = $"bear-writer-{t}" }).ToList();
        writers.ForEach(w => w.Start());
        bool killed = false;
        while (writers.Any(w => w.IsAlive))
        {
            peak = Math.Max(peak, engine.Maintenance.TickCramNode()); // the device's view, as often as a scan allows
            if (killHalfway && !killed && clock.Elapsed.TotalSeconds >= seconds / 2)
            {
                plane.Kill();
                killed = true;
            }
            Thread.Sleep(5);
        }
        writers.ForEach(w => w.Join());
        return (writes, clock.Elapsed.TotalSeconds, peak);
    }

    /// <summary>
    /// GB/s reading every word of the placed pages, and of the same data in ordinary resident pages
    /// of another region of the same engine (same kind of mapping: 4 KiB pages, registered with
    /// userfaultfd), best of 5 rounds taken alternately.
    /// </summary>
    private static (double Placed, double Resident) ReadThroughput(CramEngine engine, CramRegion placed, int pages)
    {
        long bytes = (long)pages * P;
        using CramRegion resident = engine.CreateRegion(bytes);
        Buffer.MemoryCopy(placed.Pointer, resident.Pointer, bytes, bytes);
        double Once(byte* from)
        {
            long t0 = Stopwatch.GetTimestamp();
            long sum = 0;
            var words = (long*)from;
            for (long i = 0; i < bytes / 8; i += 8)
            {
                sum += words[i] + words[i + 1] + words[i + 2] + words[i + 3] + words[i + 4] + words[i + 5] + words[i + 6] + words[i + 7];
            }
            GC.KeepAlive(sum);
            return bytes / ((Stopwatch.GetTimestamp() - t0) / (double)Stopwatch.Frequency) / 1e9;
        }
        double bestPlaced = 0, bestResident = 0;
        for (int round = 0; round < 5; round++)
        {
            bestPlaced = Math.Max(bestPlaced, Once(placed.Pointer));
            bestResident = Math.Max(bestResident, Once(resident.Pointer));
        }
        return (bestPlaced, bestResident);
    }

    private sealed class KillableControlPlane(long budget) : IWriteBudgetSource
    {
        private volatile bool _dead;
        public void Kill() => _dead = true;
        public bool TryReadBudget(out long pages)
        {
            pages = budget;
            return !_dead;
        }
    }
}
