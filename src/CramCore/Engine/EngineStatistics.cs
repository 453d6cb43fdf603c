using CramCore.Internals;
using CramCore.Native;
using CramCore.Reclaim;
using CramCore.Storage;

namespace CramCore.Engine;

/// <summary>The engine's statistics (<see cref="CramEngine.GetStats"/>), read from its parts.</summary>
internal static unsafe class EngineStatistics
{
    /// <summary>The fault service's time per swap-in (native buckets, copied).</summary>
    public static CramLatencyHistogram FaultServiceTime(NativeShared* shared) => Histogram(shared->Stats.SwapinLatencyUsLog2);

    /// <summary>The swap-in latency the faulting thread saw (native buckets, copied; faulting-thread service only).</summary>
    public static CramLatencyHistogram FaultLatency(NativeShared* shared) => Histogram(shared->Stats.FaultLatencyUsLog2);

    private static CramLatencyHistogram Histogram(ulong* buckets)
    {
        var counts = new long[SharedLayout.SwapinLatencyBuckets];
        for (int b = 0; b < counts.Length; b++)
        {
            counts[b] = (long)Volatile.Read(ref buckets[b]);
        }
        return new CramLatencyHistogram(counts);
    }

    /// <summary>A snapshot of the engine's counters: the service's (native, read without locks), reclaim's, the tiers'.</summary>
    public static CramStats Snapshot(EngineParts parts, UserfaultfdMode mode, int regions)
    {
        NativeShared* shared = parts.Shared;
        SlotTable slots = parts.Slots;
        Reclaimer reclaimer = parts.Reclaimer;
        BackingFile? file = parts.File;
        Writeback? writeback = parts.Writeback;
        CramNode? node = parts.Node;
        reclaimer.TryDrain();
        ref NativeStats s = ref shared->Stats;
        NativeRemoteStats remote = default;
        if (parts.Remote is not null)
        {
            Interop.CramNative.RemoteStats(parts.Native, &remote); // fails only for a null engine
        }
        PoolStats pool = parts.Pool.GetStats();
        ReclaimCounters reclaim = reclaimer.Counters;
        long resident = Pages(s.ResidentPages), metadata = parts.MemoryUse.MetadataBytes;
        return new CramStats
        {
            LogicalBytes = Pages(s.PopulatedPages),
            ResidentBytes = resident,
            PeakResidentBytes = Pages(s.PeakResidentPages),
            StoredBytes = slots.StoredBytes,
            CleanCopyBytes = (long)Volatile.Read(ref s.CleanCopyBytes),
            CleanCopyPages = (long)Volatile.Read(ref s.CleanCopyPages),
            CleanCopiesReleasedBytes = reclaimer.CleanCopiesReleased,
            SameFilledPages = slots.SameFilledSlots + reclaim.ZeroCopiesPublished - (long)Volatile.Read(ref s.ZeroCopiesReleased),
            ZeroFillFaults = (long)s.FaultsZero,
            RefaultsLz4 = (long)s.FaultsSwapinLz4,
            ReadaheadPages = (long)s.ReadaheadPages,
            PrefetchedPages = (long)s.PrefetchedPages,
            DiscardedPages = (long)s.DiscardedPages,
            WorkingSetActivations = (long)s.WorkingsetActivations,
            WorkingSetDemotions = reclaimer.Demotions,
            FaultServiceTime = FaultServiceTime(shared),
            FaultLatency = FaultLatency(shared),
            RefaultsSameFilled = (long)s.FaultsSwapinSame,
            RefaultsUncompressed = (long)s.FaultsSwapinRaw,
            RefaultsZstd = (long)s.FaultsSwapinZstd,
            RecompressedPages = slots.ZstdSlots,
            RecompressionKeptPages = parts.Recompressor?.Kept ?? 0,
            RecompressionBusyTime = parts.Recompressor?.Budget.Spent ?? TimeSpan.Zero,
            ZstdDictionaries = parts.Recompressor?.Dictionaries ?? 0,
            ZstdDictionariesTrained = parts.Recompressor?.DictionariesTrained ?? 0,
            ZstdDictionariesRetired = parts.Recompressor?.DictionariesRetired ?? 0,
            WriteProtectFaults = (long)s.FaultsWp,
            CancelledEvictions = (long)s.FaultsWpCancel,
            SpuriousFaults = (long)s.FaultsSpurious,
            ThrottledFaults = (long)s.ThrottleWaits,
            MemoryUsedBytes = resident + parts.Pool.ChargedBytes + metadata, // the budget's sum (MemoryUse), of this snapshot's parts
            MetadataBytes = metadata,
            ResidentTargetBytes = parts.Budget.LimitPages << SharedLayout.PageShift,
            MemoryLimitExceeded = parts.Budget.Exceeded,
            MemoryLimitExceededEpisodes = parts.Budget.ExceededEpisodes,
            MemoryLimitWaits = (long)Volatile.Read(ref s.MemoryLimitWaits),
            Evictions = (long)s.EvictedPagesTotal,
            CompressedPages = reclaim.CompressedPages,
            CompressionThreads = parts.CompressionThreads,
            ReadaheadThreads = parts.ReadaheadThreads,
            HelperClassifiedPages = reclaim.HelperClassifiedPages,
            IncompressiblePages = reclaim.IncompressiblePages,
            UncompressedStoredPages = reclaim.UncompressedStoredPages,
            EstimatedIncompressiblePages = reclaim.EstimatedIncompressiblePages,
            MispredictedCompressiblePages = reclaim.MispredictedCompressiblePages,
            EstimatorAudits = reclaim.EstimatorAudits,
            FalseIncompressiblePages = reclaim.FalseIncompressiblePages,
            ServiceErrors = (long)s.ServiceErrors,
            CallbackFailures = parts.Events.CallbackFailures,
            RefaultsFromFile = (long)s.FaultsSwapinFile,
            FileReads = (long)s.FileReads,
            FileReadBytes = (long)s.FileReadBytes,
            FileReadsSequential = (long)s.FileReadsSequential,
            ChecksumFailures = (long)s.ChecksumFailures,
            ReadErrors = (long)s.ReadErrors,
            BadPageFaults = (long)s.BadPageFaults,
            ZombiesReaped = parts.Reaper.ZombiesReaped,
            FilePages = slots.FileSlots,
            BackingFileBytes = file?.FileBytes ?? 0,
            BackingFileLiveBytes = file?.LiveBytes ?? 0,
            BackingFileDeadBytes = file?.DeadBytes ?? 0,
            BackingFileSegments = file?.Segments ?? 0,
            BackingFileSegmentsCompacted = writeback?.SegmentCompactions ?? 0,
            WritebackPages = writeback?.Pages ?? 0,
            WritebackBytes = writeback?.Bytes ?? 0,
            WritebackRecompressedPages = writeback?.RecompressedPages ?? 0,
            WritebackRecompressionSavedBytes = writeback?.RecompressedBytesSaved ?? 0,
            WriteErrors = file?.WriteErrors ?? parts.Remote?.WriteErrors ?? 0,
            WritebackPaused = writeback is { PausedBy: not Errno.None },
            RemotePages = slots.RemoteSlots,
            RemoteLiveBytes = parts.Remote?.LiveBytes ?? 0,
            RemoteStoredBytes = parts.Remote?.UsedBytes ?? 0,
            RemoteBytesWritten = parts.Remote?.BytesWritten ?? 0,
            RemoteSegmentsDeleted = parts.Remote?.SegmentsDeleted ?? 0,
            RemoteFetches = (long)remote.Fetches,
            RemoteRequests = (long)remote.Requests,
            RemoteFetchRetries = (long)remote.FetchRetries,
            RemoteRedirects = (long)remote.Redirects,
            RemoteFetchesInFlight = (long)remote.Inflight,
            RemoteFetchFailures = (long)remote.FetchFailures,
            RemoteAuthFailures = (long)remote.AuthFailures,
            RemoteTlsFailures = (long)remote.TlsFailures,
            RemoteFetchMeanMicroseconds = remote.Requests == 0 ? 0 : remote.FetchNs / 1000.0 / remote.Requests,
            RemoteOpenMeanMicroseconds = remote.Fetches == 0 ? 0 : remote.OpenNs / 1000.0 / remote.Fetches,
            RemoteDecodeMeanMicroseconds = remote.Fetches == 0 ? 0 : remote.DecodeNs / 1000.0 / remote.Fetches,
            CramCapacityBytes = node?.Device.CapacityBytes ?? 0,
            CramPlacedPages = (long)s.CramPlacedPages,
            CramLedgerBytes = (long)s.CramPlacedBytes,
            CramPhysicalUsageBytes = node?.PhysicalUsageBytes ?? 0,
            CramOverflowBytes = Math.Max(0, node?.MaxOverflowBytes ?? 0),
            CramPressureHigh = node?.PressureHigh ?? false,
            CramWritableBudgetPages = node is { WriteControl: true } ? (long)Math.Min((ulong)long.MaxValue, Volatile.Read(ref shared->CramWritableLimit)) : (node is null ? 0 : long.MaxValue),
            CramWritablePages = (long)s.CramWritablePages,
            CramMaxWritablePages = (long)s.CramMaxWritable,
            CramMadeWritable = (long)s.CramMadeWritable,
            CramPromotions = (long)s.CramPromotions,
            CramPromotionCopyTime = TimeSpan.FromTicks((long)(s.CramPromotionCopyNs / 100)),
            CramPlacements = reclaim.Placements,
            CramReplacements = reclaim.Replacements,
            CramPlacementRefusals = (long)s.CramPlacementRefusals,
            CramTrimmedFrames = node?.TrimmedFrames ?? 0,
            CramBalloonFrames = node?.BalloonFrames ?? 0,
            CramMovedOut = node?.MovedOut ?? 0,
            CramControlPlaneAlive = node?.ControlPlaneAlive ?? false,
            FaultServiceBusyTime = TimeSpan.FromTicks((long)(s.ServiceBusyNs / 100)),
            UserfaultfdMode = mode,
            FaultService = parts.FaultService,
            Regions = regions,
            PoolBytes = pool.UsedBytes,
            PoolCompactedPages = pool.CompactedPages,
            PoolFullRejections = pool.FullRejections,
            PoolFragmentation = pool.Fragmentation,
            PoolClasses = new ReadableList<CramPoolClass>([.. pool.Classes.Select(c => new CramPoolClass(c.ObjectSize, c.ZspagePages, c.Objects, c.Capacity))]),
        };

        static long Pages(ulong pages) => (long)Volatile.Read(ref pages) << SharedLayout.PageShift;
    }
}
