using System.Diagnostics.Metrics;

namespace CramCore;

/// <summary>
/// The <c>CramCore</c> meter: every live engine's counters as System.Diagnostics.Metrics
/// instruments, tagged with <c>cramcore.engine</c>. Watch them with
/// <c>dotnet-counters monitor --counters CramCore -p PID</c>.
/// </summary>
internal static class CramMetrics
{
    public const string MeterName = "CramCore";
    private static readonly Meter s_meter = new(MeterName, "1.0");
    private static readonly Lock s_lock = new();
    private static readonly List<(WeakReference<CramEngine> Engine, int Id)> s_engines = []; // weak: an abandoned engine must stay collectable
    private static int s_nextId;

    static CramMetrics()
    {
        Gauge("cramcore.logical", "By", "Bytes of pages that hold data, resident or evicted", s => s.LogicalBytes);
        Gauge("cramcore.resident", "By", "Bytes of region pages mapped in memory", s => s.ResidentBytes);
        Gauge("cramcore.stored", "By", "Bytes of storage holding compressed pages", s => s.StoredBytes);
        Gauge("cramcore.stored.clean_copies", "By", "Of the stored bytes, copies that resident pages keep (let go first when the pool is full)", s => s.CleanCopyBytes);
        Gauge("cramcore.same_filled_pages", "{page}", "Pages stored as a repeated value", s => s.SameFilledPages);
        Counter("cramcore.faults.zero_fill", "{fault}", "Faults on never-touched pages", s => s.ZeroFillFaults);
        Counter("cramcore.faults.refault", "{fault}", "Faults on evicted pages (swap-ins)", s => s.Refaults);
        Counter("cramcore.readahead", "{page}", "Evicted pages swapped in ahead of a sequential reader", s => s.ReadaheadPages);
        Counter("cramcore.faults.write_protect", "{fault}", "Write-protect faults on clean pages", s => s.WriteProtectFaults);
        Counter("cramcore.evictions", "{page}", "Pages evicted", s => s.Evictions);
        Counter("cramcore.evictions.cancelled", "{page}", "Evictions cancelled by a racing write", s => s.CancelledEvictions);
        Counter("cramcore.incompressible", "{page}", "Eviction attempts on pages that did not compress", s => s.IncompressiblePages);
        Counter("cramcore.estimator.skipped", "{page}", "Pages kept resident uncompressed because the estimator predicted they would not compress", s => s.EstimatedIncompressiblePages);
        Counter("cramcore.estimator.mispredicted_compressible", "{page}", "Pages predicted compressible that did not compress", s => s.MispredictedCompressiblePages);
        Counter("cramcore.estimator.audits", "{page}", "Predicted-incompressible pages compressed anyway to audit the estimator", s => s.EstimatorAudits);
        Counter("cramcore.estimator.false_incompressible", "{page}", "Audited pages that did compress", s => s.FalseIncompressiblePages);
        Gauge("cramcore.backing_file", "By", "Bytes of backing-file segments in use", s => s.BackingFileBytes);
        Gauge("cramcore.backing_file.live", "By", "Bytes of backing-file extents pages still name", s => s.BackingFileLiveBytes);
        Gauge("cramcore.backing_file.dead", "By", "Bytes of backing-file extents awaiting segment compaction", s => s.BackingFileDeadBytes);
        Gauge("cramcore.file_pages", "{page}", "Evicted pages whose copy is in the backing file", s => s.FilePages);
        Counter("cramcore.writeback.pages", "{page}", "Pages written back to the backing file, still compressed", s => s.WritebackPages);
        Counter("cramcore.writeback.bytes", "By", "Stored bytes written back to the backing file", s => s.WritebackBytes);
        Counter("cramcore.faults.refault_from_file", "{fault}", "Swap-ins read from the backing file", s => s.RefaultsFromFile);
        Counter("cramcore.errors.checksum", "{page}", "Stored copies that failed their checksum (never mapped; SIGBUS)", s => s.ChecksumFailures);
        Counter("cramcore.errors.read", "{read}", "Backing-file reads that failed twice (never mapped; SIGBUS)", s => s.ReadErrors);
        Counter("cramcore.errors.write", "{write}", "Failed writes to the backing file (entries stayed in the pool)", s => s.WriteErrors);
        Counter("cramcore.zombies_reaped", "{slot}", "Slots no page named, found and freed by the reaper", s => s.ZombiesReaped);
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

    private static void Gauge(string name, string unit, string description, Func<CramStats, long> read) =>
        s_meter.CreateObservableGauge(name, () => Observe(read), unit, description);

    private static void Counter(string name, string unit, string description, Func<CramStats, long> read) =>
        s_meter.CreateObservableCounter(name, () => Observe(read), unit, description);

    private static List<Measurement<long>> Observe(Func<CramStats, long> read)
    {
        var result = new List<Measurement<long>>();
        lock (s_lock)
        {
            s_engines.RemoveAll(e => !e.Engine.TryGetTarget(out _));
            foreach ((WeakReference<CramEngine> weak, int id) in s_engines)
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

    public static void Register(CramEngine engine)
    {
        lock (s_lock)
        {
            s_engines.Add((new WeakReference<CramEngine>(engine), s_nextId++));
        }
    }

    public static void Unregister(CramEngine engine)
    {
        lock (s_lock)
        {
            s_engines.RemoveAll(e => !e.Engine.TryGetTarget(out CramEngine? live) || live == engine);
        }
    }
}
