using System.Diagnostics;
using Spectre.Console;

namespace CramCore.Cli.Commands;

/// <summary>What `cram demo --json` prints.</summary>
internal sealed record DemoResult(
    long RegionBytes, long ResidentLimitBytes, long LogicalBytes, long ResidentBytes, long PeakResidentBytes,
    double PeakResidentOverLimit, long StoredBytes, long PoolBytes, long PoolCompactedPages, double EffectiveRatio,
    long SameFilledPages, long ZeroFillFaults, long Refaults, long WriteProtectFaults, long Evictions,
    long CancelledEvictions, long IncompressiblePages, long EstimatorSkippedPages, long EstimatorMispredictedCompressible,
    long EstimatorFalseIncompressible, long EstimatorAudits, long ThrottledFaults, long ServiceErrors,
    long Reads, long Writes, long SwapinSamples, double SwapinP50Us, double SwapinP99Us,
    double FillS, double WorkloadS, double VerifyS, long Mismatches,
    string? BackingFile, long PoolLimitBytes, [property: Figure(FigureUnit.Pages, Label = "pages written back")] long WritebackPages, [property: Figure(FigureUnit.Bytes, Label = "bytes written back")] long WritebackBytes, long FilePages,
    [property: Figure(FigureUnit.Bytes, Label = "backing file size")] long BackingFileBytes, long RefaultsFromFile, long ChecksumFailures,
    long CramCapacityBytes, long CramPlacedPages, long CramPhysicalUsageBytes, double CramCompressionRatio, long CramOverflowBytes,
    long CramMadeWritable, long CramMaxWritablePages, long CramPromotions, long CramTrimmedFrames, long CramMovedOut, string FaultService,
    string? RemoteStore, long RemotePages, long RemoteBytesWritten, long RemoteFetches, long RemoteRequests);

/// <summary>
/// `cram demo`: fills a large region with a realistic mix under a resident limit, runs a skewed
/// random read/write workload on several threads, then verifies every page against checksums
/// kept outside the region. Exit code 1 on any mismatch.
/// </summary>
internal static unsafe class DemoCommand
{
    /// <summary>The smallest --limit the demo takes.</summary>
    internal const long MinimumLimitBytes = 16L << 20;

    internal sealed record Settings(long SizeBytes, long LimitBytes, int Threads, int Seconds, string? Corpus, bool Json,
        string? BackingFile = null, long PoolLimitBytes = 0, bool Cram = false, CramFaultService FaultService = CramFaultService.Auto,
        string? Remote = null);

    private sealed class Phase(string name, long total)
    {
        public string Name { get; } = name;
        public long Total { get; } = total;
        public long Done;
        public TimeSpan Elapsed;
    }

    public static int Run(Settings s)
    {
        if (s.LimitBytes < MinimumLimitBytes)
        {
            // Below this, the fill threads outrun reclaim by more than the limit itself and the
            // resident figure means nothing (measured: --limit 1m peaked at 120x the limit).
            throw new CliException($"--limit: {Measure.Bytes(s.LimitBytes)} is below the floor of {Measure.Bytes(MinimumLimitBytes)}; give at least 16m (default 1g).");
        }
        if (s.SizeBytes < s.LimitBytes)
        {
            throw new CliException($"--size: {Measure.Bytes(s.SizeBytes)} is smaller than --limit ({Measure.Bytes(s.LimitBytes)}); give a size at least the limit (default 4g).");
        }
        if (s.Threads is < 1 or > 64)
        {
            throw new CliException($"--threads: {s.Threads} must be between 1 and 64.");
        }
        if (s.Seconds is < 0 or > 86_400)
        {
            throw new CliException($"--seconds: {s.Seconds} must be between 0 and 86400.");
        }
        if (s.PoolLimitBytes < 0 || (s.PoolLimitBytes > 0 && s.PoolLimitBytes < 1L << 20))
        {
            throw new CliException($"--pool-limit: {Measure.Bytes(s.PoolLimitBytes)} must be at least 1m, or 0 for the default.");
        }
        if (s.Remote is not null && s.BackingFile is not null)
        {
            throw new CliException("--remote and --backing-file: the demo sends the pool's overflow to one of them; give one (an engine takes both, the file spilling to the store, with CramOptions.BackingFileLimitBytes).");
        }
        if (s.Remote is "" && RespServer.Missing is { } missing)
        {
            throw new CliException($"--remote: no store given, and none can be started here: {missing}. Install them, or give --remote HOST:PORT.", ExitCode.Environment);
        }
        // With a backing file or a remote store, a pool far smaller than the data, so writeback runs.
        long poolLimit = s.PoolLimitBytes > 0 ? s.PoolLimitBytes : s.BackingFile is null && s.Remote is null ? 0 : Math.Max(16L << 20, s.SizeBytes / 16);
        PageSource source = s.Corpus is null ? PageSource.Generated() : PageSource.FromCorpus(s.Corpus);
        // --remote alone: a store of our own on loopback, for the length of the demo.
        using RespServer? localStore = s.Remote is "" ? RespServer.Start() : null;
        string? storeAddress = s.Remote is null ? null : localStore?.ToString() ?? s.Remote;
        using Redis.RedisRemoteStore? store = storeAddress is null ? null : Redis.RedisRemoteStore.Connect(storeAddress);
        using var engine = CramEngine.Create(new CramOptions
        {
            RemoteStore = store,
            ResidentLimitBytes = s.LimitBytes,
            BackingFile = s.BackingFile,
            CompressedPoolLimitBytes = poolLimit,
            PoolArenaBytes = poolLimit is > 0 and < 64L << 20 ? 1L << 20 : 64L << 20,
            // The CRAM node: a device with a sixteenth of the data's size, 4 MiB of it writable in place.
            CramDevice = s.Cram ? new EmulatedCramDevice(Math.Max(1L << 20, s.SizeBytes / 16)) : null,
            WritableBudgetPages = s.Cram ? 1024 : 0,
            FaultService = s.FaultService,
        });
        using var region = engine.CreateRegion(s.SizeBytes);
        long pages = region.Length / PageSource.PageSize;
        var checksums = new ulong[pages];
        var swapIns = new List<long>[s.Threads];
        long reads = 0, writes = 0, mismatches = 0;
        var firstMismatches = new List<long>();
        var fill = new Phase("fill", pages);
        var work = new Phase("workload", s.Seconds);
        var verify = new Phase("verify", pages);
        Phase[] phases = [fill, work, verify];

        if (!s.Json)
        {
            AnsiConsole.MarkupLine($"[bold]cram demo[/]: {Measure.Bytes(region.Length)} region, {Measure.Bytes(s.LimitBytes)} resident limit, {s.Threads} threads, {source.Description}, userfaultfd {engine.UserfaultfdMode}");
            if (s.Cram)
            {
                AnsiConsole.MarkupLine($"CRAM node: an emulated device of {Measure.Bytes(Math.Max(1L << 20, s.SizeBytes / 16))}, writable budget 1024 pages: very compressible pages are placed read-only in place");
            }
            if (s.BackingFile is not null)
            {
                AnsiConsole.MarkupLine($"backing file [bold]{Markup.Escape(s.BackingFile)}[/] (unlinked), pool limit {Measure.Bytes(poolLimit)}: the coldest compressed pages are written back to it");
            }
            if (storeAddress is not null)
            {
                AnsiConsole.MarkupLine($"remote store [bold]{Markup.Escape(storeAddress)}[/]{(localStore is null ? "" : " (a redis-server started for the demo)")}, pool limit {Measure.Bytes(poolLimit)}: the coldest compressed pages go there, sealed (AES-GCM), packed in segments");
            }
        }

        void RunPhase(Phase phase, Action<int> body)
        {
            var sw = Stopwatch.StartNew();
            var threads = Enumerable.Range(0, s.Threads).Select(t => new Thread(() => body(t)) { Name = $"demo-{phase.Name}-{t}" }).ToArray();
            foreach (var t in threads)
            {
                t.Start();
            }
            Report(engine, phase, threads, s.Json);
            phase.Elapsed = sw.Elapsed;
        }

        // Every page once, in chunks of 64 pages interleaved between threads (sequential within a chunk).
        void RunOverAllPages(Phase phase, Action<long> page) => RunPhase(phase, t =>
        {
            for (long chunk = t; chunk * 64 < pages; chunk += s.Threads)
            {
                long end = Math.Min(pages, chunk * 64 + 64);
                for (long i = chunk * 64; i < end; i++)
                {
                    page(i);
                }
                Interlocked.Add(ref phase.Done, end - chunk * 64);
            }
        });

        // 1. Fill.
        RunOverAllPages(fill, i =>
        {
            byte* p = region.Pointer + i * PageSource.PageSize;
            source.Write(new Span<byte>(p, PageSource.PageSize), i);
            checksums[i] = Measure.Checksum(p);
        });

        // 2. Workload: skewed random pages (a quarter of the accesses hit 1/16 of the pages), 80 %
        // reads and 20 % writes; a thread writes only the pages it owns (page % threads).
        var deadline = Stopwatch.GetTimestamp() + s.Seconds * Stopwatch.Frequency;
        ulong multiplier = 2654435761UL;
        while (GcdIsNotOne(multiplier, (ulong)pages))
        {
            multiplier += 2;
        }
        RunPhase(work, t =>
        {
            var rng = new PageSource.Xoshiro((ulong)t + 1000);
            var latencies = swapIns[t] = new List<long>(1 << 16);
            long sum = 0, r = 0, w = 0;
            while (Stopwatch.GetTimestamp() < deadline)
            {
                for (int k = 0; k < 256; k++)
                {
                    double u = rng.NextDouble();
                    long rank = (long)(pages * u * u * u * u);
                    long page = (long)((ulong)rank * multiplier % (ulong)pages);
                    bool write = rng.Next() % 5 == 0;
                    if (write)
                    {
                        page -= page % s.Threads - t;
                        if (page >= pages)
                        {
                            page -= s.Threads;
                        }
                    }
                    byte* p = region.Pointer + page * PageSource.PageSize;
                    bool evicted = region.GetPageState(page * PageSource.PageSize) == PageState.Evicted;
                    int offset = (int)(rng.Next() % (PageSource.PageSize / 64)) * 64;
                    long t0 = Stopwatch.GetTimestamp();
                    if (write)
                    {
                        var record = (ulong*)(p + offset);
                        record[0] = rng.Next();
                        long t1 = Stopwatch.GetTimestamp();
                        for (int j = 1; j < 8; j++)
                        {
                            record[j] = (ulong)j * 0x0101010101010101UL;
                        }
                        checksums[page] = Measure.Checksum(p);
                        if (evicted)
                        {
                            latencies.Add(t1 - t0);
                        }
                        w++;
                    }
                    else
                    {
                        sum += *(long*)(p + offset);
                        long t1 = Stopwatch.GetTimestamp();
                        if (evicted)
                        {
                            latencies.Add(t1 - t0);
                        }
                        r++;
                    }
                }
                if (t == 0)
                {
                    work.Done = (long)((Stopwatch.GetTimestamp() - (deadline - s.Seconds * Stopwatch.Frequency)) / Stopwatch.Frequency);
                }
            }
            Interlocked.Add(ref reads, r);
            Interlocked.Add(ref writes, w);
            GC.KeepAlive(sum);
        });
        work.Done = work.Total;

        // 3. Verify every page against the checksums kept outside the region.
        RunOverAllPages(verify, i =>
        {
            if (Measure.Checksum(region.Pointer + i * PageSource.PageSize) != checksums[i])
            {
                Interlocked.Increment(ref mismatches);
                lock (firstMismatches)
                {
                    if (firstMismatches.Count < 10)
                    {
                        firstMismatches.Add(i);
                    }
                }
            }
        });

        CramStats stats = engine.GetStats();
        var all = swapIns.SelectMany(l => l).ToList();
        double p50 = Measure.TicksToMicroseconds((long)Measure.Quantile(all, 0.50));
        double p99 = Measure.TicksToMicroseconds((long)Measure.Quantile(all, 0.99));
        double peakOverLimit = (double)stats.PeakResidentBytes / s.LimitBytes;
        var result = new DemoResult(
            RegionBytes: region.Length,
            ResidentLimitBytes: s.LimitBytes,
            LogicalBytes: stats.LogicalBytes,
            ResidentBytes: stats.ResidentBytes,
            PeakResidentBytes: stats.PeakResidentBytes,
            PeakResidentOverLimit: Math.Round(peakOverLimit, 4),
            StoredBytes: stats.StoredBytes,
            PoolBytes: stats.PoolBytes,
            PoolCompactedPages: stats.PoolCompactedPages,
            EffectiveRatio: Math.Round(stats.EffectiveRatio, 3),
            SameFilledPages: stats.SameFilledPages,
            ZeroFillFaults: stats.ZeroFillFaults,
            Refaults: stats.Refaults,
            WriteProtectFaults: stats.WriteProtectFaults,
            Evictions: stats.Evictions,
            CancelledEvictions: stats.CancelledEvictions,
            IncompressiblePages: stats.IncompressiblePages,
            EstimatorSkippedPages: stats.EstimatedIncompressiblePages,
            EstimatorMispredictedCompressible: stats.MispredictedCompressiblePages,
            EstimatorFalseIncompressible: stats.FalseIncompressiblePages,
            EstimatorAudits: stats.EstimatorAudits,
            ThrottledFaults: stats.ThrottledFaults,
            ServiceErrors: stats.ServiceErrors,
            Reads: reads,
            Writes: writes,
            SwapinSamples: all.Count,
            SwapinP50Us: Math.Round(p50, 2),
            SwapinP99Us: Math.Round(p99, 2),
            FillS: Math.Round(fill.Elapsed.TotalSeconds, 2),
            WorkloadS: Math.Round(work.Elapsed.TotalSeconds, 2),
            VerifyS: Math.Round(verify.Elapsed.TotalSeconds, 2),
            Mismatches: mismatches,
            BackingFile: s.BackingFile,
            PoolLimitBytes: poolLimit,
            WritebackPages: stats.WritebackPages,
            WritebackBytes: stats.WritebackBytes,
            FilePages: stats.FilePages,
            BackingFileBytes: stats.BackingFileBytes,
            RefaultsFromFile: stats.RefaultsFromFile,
            ChecksumFailures: stats.ChecksumFailures,
            CramCapacityBytes: stats.CramCapacityBytes,
            CramPlacedPages: stats.CramPlacedPages,
            CramPhysicalUsageBytes: stats.CramPhysicalUsageBytes,
            CramCompressionRatio: Math.Round(stats.CramCompressionRatio, 2),
            CramOverflowBytes: stats.CramOverflowBytes,
            CramMadeWritable: stats.CramMadeWritable,
            CramMaxWritablePages: stats.CramMaxWritablePages,
            CramPromotions: stats.CramPromotions,
            CramTrimmedFrames: stats.CramTrimmedFrames,
            CramMovedOut: stats.CramMovedOut,
            FaultService: BenchSupport.Name(stats.FaultService),
            RemoteStore: storeAddress,
            RemotePages: stats.RemotePages,
            RemoteBytesWritten: stats.RemoteBytesWritten,
            RemoteFetches: stats.RemoteFetches,
            RemoteRequests: stats.RemoteRequests);
        if (s.Json)
        {
            Console.WriteLine(ResultPrinter.ToJson(result));
        }
        else
        {
            var table = new Table().Border(TableBorder.Rounded).AddColumn("what").AddColumn(new TableColumn("value").RightAligned());
            table.AddRow("logical data", Measure.Bytes(stats.LogicalBytes));
            table.AddRow("resident now / peak", $"{Measure.Bytes(stats.ResidentBytes)} / {Measure.Bytes(stats.PeakResidentBytes)} ({peakOverLimit:P1} of limit)");
            table.AddRow("stored (compressed) / pool memory", $"{Measure.Bytes(stats.StoredBytes)} / {Measure.Bytes(stats.PoolBytes)}");
            table.AddRow("same-filled pages", $"{stats.SameFilledPages:N0}");
            if (s.Cram)
            {
                table.AddRow("CRAM node: placed pages / device usage (ratio) / overflow", $"{stats.CramPlacedPages:N0} / {Measure.Bytes(stats.CramPhysicalUsageBytes)} of {Measure.Bytes(stats.CramCapacityBytes)} ({stats.CramCompressionRatio:0.0}x) / {stats.CramOverflowBytes:N0} bytes");
                table.AddRow("CRAM writes: writable in place (max at once) / promoted / moved out / trimmed frames", $"{stats.CramMadeWritable:N0} ({stats.CramMaxWritablePages:N0}) / {stats.CramPromotions:N0} / {stats.CramMovedOut:N0} / {stats.CramTrimmedFrames:N0}");
            }
            if (s.BackingFile is not null)
            {
                table.AddRow("backing file: pages / bytes on disk", $"{stats.FilePages:N0} / {Measure.Bytes(stats.BackingFileBytes)} ({Measure.Bytes(stats.WritebackBytes)} written back, {stats.RefaultsFromFile:N0} swap-ins from it)");
            }
            if (storeAddress is not null)
            {
                table.AddRow("remote store: pages / bytes there", $"{stats.RemotePages:N0} / {Measure.Bytes(stats.RemoteStoredBytes)} ({Measure.Bytes(stats.RemoteBytesWritten)} sent, {stats.RemoteFetches:N0} pages fetched in {stats.RemoteRequests:N0} requests)");
            }
            table.AddRow("effective ratio (logical / (resident + pool))", $"{stats.EffectiveRatio:0.00}×");
            table.AddRow("faults: zero-fill / refault / write-protect", $"{stats.ZeroFillFaults:N0} / {stats.Refaults:N0} / {stats.WriteProtectFaults:N0}");
            table.AddRow("swap-in latency p50 / p99", $"{p50:0.0} µs / {p99:0.0} µs ({all.Count:N0} samples)");
            table.AddRow("evictions (cancelled by writes)", $"{stats.Evictions:N0} ({stats.CancelledEvictions:N0})");
            table.AddRow("incompressible pages (LZ4 not tried)", $"{stats.IncompressiblePages:N0} ({stats.EstimatedIncompressiblePages:N0})");
            table.AddRow("estimator errors: false incompressible / audits; mispredicted compressible", $"{stats.FalseIncompressiblePages:N0} / {stats.EstimatorAudits:N0}; {stats.MispredictedCompressiblePages:N0}");
            table.AddRow("workload reads / writes", $"{reads:N0} / {writes:N0}");
            table.AddRow("fill / workload / verify", $"{fill.Elapsed.TotalSeconds:0.0} s / {work.Elapsed.TotalSeconds:0.0} s / {verify.Elapsed.TotalSeconds:0.0} s");
            table.AddRow("integrity check", mismatches == 0 ? $"[green]all {pages:N0} pages match[/]" : $"[red]{mismatches:N0} pages differ (first: {string.Join(", ", firstMismatches)})[/]");
            AnsiConsole.Write(table);
        }
        return mismatches == 0 && stats.ServiceErrors == 0 && stats.ChecksumFailures == 0 && stats.CramOverflowBytes == 0 ? ExitCode.Success : ExitCode.IntegrityFailure;
    }

    private static bool GcdIsNotOne(ulong a, ulong b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }
        return a != 1;
    }

    /// <summary>Shows progress until the phase's threads finish: a live bar on a terminal, a line a second otherwise.</summary>
    private static void Report(CramEngine engine, Phase phase, Thread[] threads, bool quiet)
    {
        bool Done() => threads.All(t => !t.IsAlive);
        string Line()
        {
            var st = engine.GetStats();
            string file = st.BackingFileBytes > 0 ? $", file {Measure.Bytes(st.BackingFileBytes)}" : "";
            return $"resident {Measure.Bytes(st.ResidentBytes)}, stored {Measure.Bytes(st.StoredBytes)}{file}, refaults {st.Refaults:N0}, evictions {st.Evictions:N0}";
        }
        if (quiet)
        {
            foreach (var t in threads)
            {
                t.Join();
            }
            return;
        }
        if (AnsiConsole.Profile.Capabilities.Interactive)
        {
            AnsiConsole.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(phase.Name, maxValue: Math.Max(1, phase.Total));
                    while (!Done())
                    {
                        task.Value = Volatile.Read(ref phase.Done);
                        task.Description = $"{phase.Name}: {Line()}";
                        Thread.Sleep(100);
                    }
                    task.Value = task.MaxValue;
                });
            return;
        }
        var last = Stopwatch.StartNew();
        while (!Done())
        {
            Thread.Sleep(50);
            if (last.ElapsedMilliseconds >= 1000 || Done())
            {
                last.Restart();
                Console.WriteLine($"  {phase.Name} {100.0 * Volatile.Read(ref phase.Done) / Math.Max(1, phase.Total),5:0.0}%  {Line()}");
            }
        }
    }
}
