using System.Diagnostics.Metrics;
using CramCore.Native;

namespace CramCore;

/// <summary>
/// The <c>CramCore</c> meter: every live engine's counters as System.Diagnostics.Metrics
/// instruments, tagged with <c>cramcore.engine</c>. Watch them with
/// <c>dotnet-counters monitor --counters CramCore -p PID</c>. Engines created with an
/// <see cref="IMeterFactory"/> report on a meter of their own from that factory instead.
/// Names follow OpenTelemetry's conventions (dotted namespaces, UCUM units).
/// </summary>
internal sealed class CramMetrics
{
    public const string MeterName = CramEngine.MeterName;

    /// <summary>The process-wide meter for engines created without an <see cref="IMeterFactory"/>.</summary>
    private static readonly CramMetrics s_shared = new(new Meter(MeterName, "1.0"));

    private readonly Lock _lock = new();
    private readonly List<(WeakReference<CramEngine> Engine, int Id)> _engines = []; // weak: an abandoned engine must stay collectable
    private int _nextId;

    /// <summary>Every instrument, on <paramref name="meter"/>, observing the engines registered here.</summary>
    private CramMetrics(Meter meter)
    {
        Meter = meter;
        Define();
    }

    public Meter Meter { get; }

    /// <summary>The shared meter, or a meter from <paramref name="factory"/> (dependency injection, tests) that reports this engine only.</summary>
    public static CramMetrics For(IMeterFactory? factory) =>
        factory is null ? s_shared : new CramMetrics(factory.Create(new MeterOptions(MeterName) { Version = "1.0" }));

    private void Define()
    {
        Gauge("cramcore.memory.logical", "By", "Bytes of pages that hold data, resident or evicted", s => s.LogicalBytes);
        Gauge("cramcore.memory.resident", "By", "Bytes of region pages mapped in memory", s => s.ResidentBytes);
        Gauge("cramcore.memory.stored", "By", "Bytes of stored (compressed) copies of pages in the pool", s => s.StoredBytes);
        Gauge("cramcore.memory.pool", "By", "Bytes of pool memory holding the stored copies", s => s.PoolBytes);
        Gauge("cramcore.memory.peak_resident", "By", "Highest resident bytes seen", s => s.PeakResidentBytes);
        Gauge("cramcore.memory.used", "By", "Memory as MemoryLimitBytes counts it: resident + pool + metadata", s => s.MemoryUsedBytes);
        Gauge("cramcore.memory.metadata", "By", "CramCore's own memory besides resident pages and the pool", s => s.MetadataBytes);
        Gauge("cramcore.memory.limit_exceeded", "1", "1 while MemoryLimitBytes cannot be held (faults wait MemoryLimitWait each)", s => s.MemoryLimitExceeded ? 1 : 0);
        Counter("cramcore.faults.memory_limit_waits", "{fault}", "Faults that waited because the memory limit could not be held", s => s.MemoryLimitWaits);
        Counter("cramcore.faults.throttled", "{fault}", "Faults that waited for reclaim because resident memory was over the limit", s => s.ThrottledFaults);
        Counter("cramcore.errors.service", "{error}", "Fault-service system calls that failed (should stay 0)", s => s.ServiceErrors);
        Counter("cramcore.errors.callback", "{error}", "Exceptions your callbacks threw that CramCore caught (handlers, the CRAM device, the logger)", s => s.CallbackFailures);
        Counter("cramcore.pool.full_rejections", "{page}", "Pages left resident because the compressed pool was full", s => s.PoolFullRejections);
        Gauge("cramcore.memory.clean_copies", "By", "Of the stored bytes, copies that resident pages keep (let go first when the pool is full)", s => s.CleanCopyBytes);
        Gauge("cramcore.memory.same_filled", "{page}", "Pages stored as a repeated value", s => s.SameFilledPages);
        Counter("cramcore.faults.zero_fill", "{fault}", "Faults on never-touched pages", s => s.ZeroFillFaults);
        Meter.CreateObservableCounter("cramcore.faults.swapin", ObserveSwapIns, "{fault}", "Faults on evicted pages (swap-ins)");
        Counter("cramcore.swapin.readahead", "{page}", "Evicted pages swapped in ahead of a sequential reader", s => s.ReadaheadPages);
        Counter("cramcore.swapin.prefetched", "{page}", "Evicted pages swapped in ahead of use because their range was advised WillNeed", s => s.PrefetchedPages);
        Counter("cramcore.advice.discarded", "{page}", "Pages discarded because their range was advised DontNeed", s => s.DiscardedPages);
        var buckets = new InstrumentAdvice<double> { HistogramBucketBoundaries = [.. Enumerable.Range(0, SharedLayout.SwapinLatencyBuckets - 1).Select(b => (1L << b) / 1e6)] };
        _serviceTime = Meter.CreateHistogram<double>(ServiceTimeName, "s",
            "The fault service's time per swap-in, from taking the fault to just before waking the thread (a wait at the hard limit included); not what the application waits (no kernel fault entry, no wake-ups). Each at its power-of-two microsecond bucket's upper bound",
            tags: null, advice: buckets);
        _faultLatency = Meter.CreateHistogram<double>(FaultLatencyName, "s",
            "Swap-in latency as the faulting thread sees it (faulting-thread service only: its SIGBUS handler's entry to return; nothing is recorded under the service thread). Each at its power-of-two microsecond bucket's upper bound",
            tags: null, advice: buckets);
        Counter("cramcore.faults.write_protect", "{fault}", "Write-protect faults on clean pages", s => s.WriteProtectFaults);
        Counter("cramcore.reclaim.evictions", "{page}", "Pages evicted", s => s.Evictions);
        Counter("cramcore.reclaim.cancelled", "{page}", "Evictions cancelled by a racing write", s => s.CancelledEvictions);
        Counter("cramcore.reclaim.incompressible", "{page}", "Eviction attempts on pages that did not compress", s => s.IncompressiblePages);
        Counter("cramcore.estimator.skipped", "{page}", "Pages kept resident uncompressed because the estimator predicted they would not compress", s => s.EstimatedIncompressiblePages);
        Counter("cramcore.estimator.mispredicted_compressible", "{page}", "Pages predicted compressible that did not compress", s => s.MispredictedCompressiblePages);
        Counter("cramcore.estimator.audits", "{page}", "Predicted-incompressible pages compressed anyway to audit the estimator", s => s.EstimatorAudits);
        Counter("cramcore.estimator.false_incompressible", "{page}", "Audited pages that did compress", s => s.FalseIncompressiblePages);
        Gauge("cramcore.backing_file.size", "By", "Bytes of backing-file segments in use", s => s.BackingFileBytes);
        Gauge("cramcore.backing_file.live", "By", "Bytes of backing-file extents pages still name", s => s.BackingFileLiveBytes);
        Gauge("cramcore.backing_file.dead", "By", "Bytes of backing-file extents awaiting segment compaction", s => s.BackingFileDeadBytes);
        Gauge("cramcore.backing_file.pages", "{page}", "Evicted pages whose copy is in the backing file", s => s.FilePages);
        Counter("cramcore.writeback.pages", "{page}", "Pages written back to the backing file, still compressed", s => s.WritebackPages);
        Gauge("cramcore.recompression.pages", "{page}", "Stored copies the recompressor rewrote with zstd (RecompressionCpuShare)", s => s.RecompressedPages);
        Counter("cramcore.faults.swapin_zstd", "{fault}", "Swap-ins that decoded a recompressed (zstd) copy", s => s.RefaultsZstd);
        Counter("cramcore.writeback.bytes", "By", "Stored bytes written back to the backing file", s => s.WritebackBytes);
        Counter("cramcore.faults.swapin_from_file", "{fault}", "Swap-ins read from the backing file", s => s.RefaultsFromFile);
        Counter("cramcore.errors.checksum", "{page}", "Stored copies that failed their checksum (never mapped; SIGBUS)", s => s.ChecksumFailures);
        Counter("cramcore.errors.read", "{read}", "Backing-file reads that failed twice (never mapped; SIGBUS)", s => s.ReadErrors);
        Counter("cramcore.errors.write", "{write}", "Failed writes to the backing file (entries stayed in the pool)", s => s.WriteErrors);
        Counter("cramcore.reaper.zombies", "{slot}", "Slots no page named, found and freed by the reaper", s => s.ZombiesReaped);
        Gauge("cramcore.cram.placed_pages", "{page}", "Pages on the CRAM node", s => s.CramPlacedPages);
        Gauge("cramcore.cram.physical_usage", "By", "Physical usage of the CRAM device as it would see it", s => s.CramPhysicalUsageBytes);
        Gauge("cramcore.cram.overflow", "By", "Most physical usage beyond the device's capacity seen (poison on real hardware)", s => s.CramOverflowBytes);
        Gauge("cramcore.cram.writable_pages", "{page}", "Placed pages writable in place", s => s.CramWritablePages);
        Gauge("cramcore.cram.writable_budget", "{page}", "The writable budget now", s => s.CramWritableBudgetPages);
        Gauge("cramcore.cram.balloon", "{frame}", "Device frames the balloon holds back", s => s.CramBalloonFrames);
        Gauge("cramcore.cram.pressure_high", "1", "1 while the CRAM node is over its high pressure threshold", s => s.CramPressureHigh ? 1 : 0);
        Counter("cramcore.cram.promotions", "{page}", "Writes that promoted a placed page to host memory", s => s.CramPromotions);
        Counter("cramcore.cram.made_writable", "{page}", "Writes that made a placed page writable in place", s => s.CramMadeWritable);
        Counter("cramcore.cram.trimmed", "{frame}", "Frames freed and trimmed on the device", s => s.CramTrimmedFrames);
        Counter("cramcore.cram.moved_out", "{page}", "Entries moved off the CRAM node to the pool", s => s.CramMovedOut);
    }

    private Histogram<double> _serviceTime = null!, _faultLatency = null!;

    /// <summary>The histogram of the fault service's time per swap-in (<see cref="CramStats.FaultServiceTime"/>).</summary>
    public const string ServiceTimeName = "cramcore.fault.service_time";

    /// <summary>The histogram of swap-in latency as the faulting thread sees it (<see cref="CramStats.FaultLatency"/>).</summary>
    public const string FaultLatencyName = "cramcore.fault.latency";

    /// <summary>
    /// Records the swap-ins the engine counted since the last call (its native buckets against
    /// <see cref="CramEngine.ServiceTimesRecorded"/> and <see cref="CramEngine.FaultLatenciesRecorded"/>)
    /// into <c>cramcore.fault.service_time</c> and <c>cramcore.fault.latency</c>, each at the value
    /// <see cref="CramLatencyHistogram.Quantile"/> reports for its bucket (its upper bound; the open
    /// last bucket's lower bound), so the metrics' quantiles and the stats' agree, while anyone listens.
    /// Called after every reclaim-worker tick and whenever the observable instruments are collected
    /// (an engine without a limit has no worker), so a collection sees every swap-in until then.
    /// </summary>
    public void RecordSwapIns(CramEngine engine)
    {
        foreach ((CramEngine live, int id) in LiveEngines())
        {
            if (live == engine)
            {
                RecordSwapIns(engine, id);
            }
        }
    }

    /// <summary>The registered engines still alive, with their tag ids (a snapshot taken under the lock).</summary>
    private List<(CramEngine Engine, int Id)> LiveEngines()
    {
        List<(CramEngine Engine, int Id)> live = [];
        lock (_lock)
        {
            foreach ((WeakReference<CramEngine> weak, int id) in _engines)
            {
                if (weak.TryGetTarget(out CramEngine? engine))
                {
                    live.Add((engine, id));
                }
            }
        }
        return live;
    }

    private unsafe void RecordSwapIns(CramEngine engine, int id)
    {
        var tag = new KeyValuePair<string, object?>("cramcore.engine", id);
        Record(_serviceTime, engine.ServiceTimesRecorded, Engine.EngineStatistics.FaultServiceTime(engine.Parts.Shared), tag);
        Record(_faultLatency, engine.FaultLatenciesRecorded, Engine.EngineStatistics.FaultLatency(engine.Parts.Shared), tag);
    }

    private static void Record(Histogram<double> histogram, long[] seen, CramLatencyHistogram now, KeyValuePair<string, object?> tag)
    {
        lock (seen) // the worker's tick and a collection may both get here
        {
            bool enabled = histogram.Enabled;
            for (int b = 0; b < seen.Length; b++)
            {
                long delta = now.Counts[b] - seen[b];
                seen[b] = now.Counts[b];
                double seconds = CramLatencyHistogram.BucketValueMicroseconds(b, seen.Length) / 1e6;
                for (long i = 0; i < delta && enabled; i++)
                {
                    histogram.Record(seconds, tag);
                }
            }
        }
    }

    /// <summary>Brings the histogram up to date for every engine, then observes the swap-in counter.</summary>
    private List<Measurement<long>> ObserveSwapIns()
    {
        foreach ((CramEngine engine, int id) in LiveEngines())
        {
            try
            {
                RecordSwapIns(engine, id);
            }
            catch (ObjectDisposedException)
            {
            }
        }
        return Observe(s => s.Refaults);
    }

    private void Gauge(string name, string unit, string description, Func<CramStats, long> read) =>
        Meter.CreateObservableGauge(name, () => Observe(read), unit, description);

    private void Counter(string name, string unit, string description, Func<CramStats, long> read) =>
        Meter.CreateObservableCounter(name, () => Observe(read), unit, description);

    private List<Measurement<long>> Observe(Func<CramStats, long> read)
    {
        var result = new List<Measurement<long>>();
        lock (_lock)
        {
            _engines.RemoveAll(e => !e.Engine.TryGetTarget(out _));
            foreach ((WeakReference<CramEngine> weak, int id) in _engines)
            {
                if (!weak.TryGetTarget(out CramEngine? engine))
                {
                    continue;
                }
                try
                {
                    result.Add(new Measurement<long>(read(engine.GetStats()), new KeyValuePair<string, object?>("cramcore.engine", id)));
                }
                catch (ObjectDisposedException)
                {
                }
            }
        }
        return result;
    }

    public void Register(CramEngine engine)
    {
        lock (_lock)
        {
            _engines.Add((new WeakReference<CramEngine>(engine), _nextId++));
        }
    }

    public void Unregister(CramEngine engine)
    {
        lock (_lock)
        {
            _engines.RemoveAll(e => !e.Engine.TryGetTarget(out CramEngine? live) || live == engine);
        }
    }
}
