using CramCore.Internals;

namespace CramCore;

/// <summary>A snapshot of an engine's state and counters (<see cref="CramEngine.GetStats"/>). Counters are cumulative.</summary>
public sealed record CramStats
{
    /// <summary>Bytes of pages that hold data: touched at least once and not discarded, resident or evicted.</summary>
    public long LogicalBytes { get; init; }
    /// <summary>Bytes of region pages mapped in memory now.</summary>
    public long ResidentBytes { get; init; }
    /// <summary>Highest <see cref="ResidentBytes"/> seen since the engine was created.</summary>
    public long PeakResidentBytes { get; init; }
    /// <summary>Σ sizes of the compressed (or uncompressed) copies of pages held in the pool.</summary>
    public long StoredBytes { get; init; }
    /// <summary>Bytes of pool pages holding those copies (≥ <see cref="StoredBytes"/>; the difference is packing slack).</summary>
    public long PoolBytes { get; init; }
    /// <summary>Pool pages given back by compaction (cumulative).</summary>
    public long PoolCompactedPages { get; init; }
    /// <summary>Pages reclaim left resident because the pool was full (<see cref="CramOptions.CompressedPoolLimitBytes"/>).</summary>
    public long PoolFullRejections { get; init; }
    /// <summary>Fragmentation of the pool arenas' free space: 1 − largest free block / all free space (0 = one free block).</summary>
    public double PoolFragmentation { get; init; }
    /// <summary>Occupancy of each pool size class in use.</summary>
    public IReadOnlyList<CramPoolClass> PoolClasses { get; init; } = ReadableList<CramPoolClass>.Empty;
    /// <summary>Pages whose copy is a repeated 8-byte value (zero pages included): no storage, no LZ4.</summary>
    public long SameFilledPages { get; init; }
    /// <summary>Logical bytes per byte of memory used (resident + pool); 1 when nothing is stored. A region read back after eviction keeps its copies (<see cref="CleanCopyBytes"/>), which lowers this until the pool needs the room.</summary>
    public double EffectiveRatio => ResidentBytes + PoolBytes == 0 ? 1 : (double)LogicalBytes / (ResidentBytes + PoolBytes);

    /// <summary>
    /// Of <see cref="StoredBytes"/>, the copies that resident pages keep: a page read back after
    /// eviction keeps its copy, so evicting it again costs no compression (as the kernel's swap
    /// cache). They go first, before any writeback, when the pool is full.
    /// </summary>
    public long CleanCopyBytes { get; init; }
    /// <summary>Resident pages that keep a stored copy (see <see cref="CleanCopyBytes"/>).</summary>
    public long CleanCopyPages { get; init; }
    /// <summary>Stored bytes of clean copies let go because the pool was full (cumulative).</summary>
    public long CleanCopiesReleasedBytes { get; init; }

    /// <summary>Faults on never-touched pages, answered with zeros.</summary>
    public long ZeroFillFaults { get; init; }
    /// <summary>Faults on evicted pages (swap-ins), of every backend.</summary>
    public long Refaults => RefaultsLz4 + RefaultsSameFilled + RefaultsUncompressed + RefaultsZstd;
    /// <summary>Swap-ins decompressed with LZ4.</summary>
    public long RefaultsLz4 { get; init; }
    /// <summary>Swap-ins of same-filled or zero pages, rebuilt without LZ4.</summary>
    public long RefaultsSameFilled { get; init; }
    /// <summary>Swap-ins of pages stored uncompressed.</summary>
    public long RefaultsUncompressed { get; init; }
    /// <summary>Evicted pages swapped in ahead of a sequential reader, with no fault of their own (swap readahead).</summary>
    public long ReadaheadPages { get; init; }
    /// <summary>Evicted pages swapped in ahead of use because a range was advised <see cref="CramAdvice.WillNeed"/> (prefetch), with no fault of their own.</summary>
    public long PrefetchedPages { get; init; }
    /// <summary>Swap-ins that came back into the working set: the page refaulted within a short distance (evictions since its own), so reclaim keeps it on its active list.</summary>
    public long WorkingSetActivations { get; init; }
    /// <summary>Pages reclaim moved off its active list (the list was full, or nothing else was left to evict).</summary>
    public long WorkingSetDemotions { get; init; }
    /// <summary>Pages that held data and were discarded by <see cref="CramAdvice.DontNeed"/> (cumulative): their memory and copies freed, never compressed.</summary>
    public long DiscardedPages { get; init; }
    /// <summary>
    /// The fault service's time per swap-in (a fault on an evicted page): from taking the fault
    /// (reading its message, or entering the SIGBUS handler and taking the lock) to just before
    /// waking the thread, a wait at the hard limit included. Not what the application waits: that
    /// adds the kernel's fault entry and the wake-ups (see <see cref="FaultLatency"/>). Metric
    /// <c>cramcore.fault.service_time</c>.
    /// </summary>
    public CramLatencyHistogram FaultServiceTime { get; init; } = CramLatencyHistogram.Empty;
    /// <summary>
    /// Swap-in latency as the faulting thread sees it. With <see cref="CramFaultService.FaultingThread"/>,
    /// every swap-in, from its SIGBUS handler's entry to its return (the lock's wait, decode, mapping, a remote fetch;
    /// all but the kernel's signal delivery). With the service thread, whose faulting thread waits in
    /// the kernel where no user-space code can time it, samples: the engine's probe takes swap-in
    /// faults of its own every <see cref="CramOptions.FaultLatencyProbeInterval"/> at most while
    /// swap-ins happen, two back to back, and times the second whole (kernel entry, the service's wake-up, checksum, LZ4
    /// decode of a real page, mapping, the wake-up back; not a file read or a remote fetch). Its count
    /// is then the number of probes, not of swap-ins. Metric <c>cramcore.fault.latency</c>.
    /// </summary>
    public CramLatencyHistogram FaultLatency { get; init; } = CramLatencyHistogram.Empty;
    /// <summary>Swap-ins of pages whose copy the recompressor had rewritten with zstd (decoded by the fault service with its dictionary).</summary>
    public long RefaultsZstd { get; init; }
    /// <summary>Stored copies that are zstd now (<see cref="CramOptions.RecompressionCpuShare"/>: the pool's cold copies rewritten where that saved a size class, and the copies writeback re-encoded on their way to the file or the store), in whatever tier they are.</summary>
    public long RecompressedPages { get; init; }
    /// <summary>Cold copies the recompressor tried and kept as LZ4 (zstd saved no size class).</summary>
    public long RecompressionKeptPages { get; init; }
    /// <summary>Recompression's working time, the recompressor's and writeback's re-encoding together (wall clock, an upper bound of their CPU time for it; held to <see cref="CramOptions.RecompressionCpuShare"/> of the time).</summary>
    public TimeSpan RecompressionBusyTime { get; init; }
    /// <summary>zstd dictionaries loaded now (the current one, and retiring ones some copies still use).</summary>
    public int ZstdDictionaries { get; init; }
    /// <summary>zstd dictionaries trained from this engine's pages (the first, and one each time the sizes of new copies drifted).</summary>
    public long ZstdDictionariesTrained { get; init; }
    /// <summary>zstd dictionaries removed once no copy used them any more.</summary>
    public long ZstdDictionariesRetired { get; init; }
    /// <summary>Write-protect faults: first write to a clean (swapped-in) or incompressible page.</summary>
    public long WriteProtectFaults { get; init; }
    /// <summary>Evictions cancelled because the page was written while it was being evicted.</summary>
    public long CancelledEvictions { get; init; }
    /// <summary>Fault messages for pages another message had already resolved.</summary>
    public long SpuriousFaults { get; init; }
    /// <summary>Faults that waited for reclaim because resident memory was over the limit.</summary>
    public long ThrottledFaults { get; init; }

    /// <summary>
    /// Memory as <see cref="CramOptions.MemoryLimitBytes"/> counts it: <see cref="ResidentBytes"/> +
    /// <see cref="PoolBytes"/> (with <see cref="CramOptions.LockPoolMemory"/>, every locked arena byte
    /// instead, resident from Create) + <see cref="MetadataBytes"/>. Computed with or without a memory limit.
    /// </summary>
    public long MemoryUsedBytes { get; init; }
    /// <summary>
    /// CramCore's own memory besides resident pages and the pool: page tables in use (4 KiB per 2 MiB
    /// of a region ever touched), the fault-in log (512 KiB), the slot and handle tables (16 bytes per
    /// stored page each), the pool's handle arrays, reclaim's and writeback's queues (8 and 4 bytes a
    /// page, as rings) and, with a backing file, its two 256 KiB segment buffers.
    /// </summary>
    public long MetadataBytes { get; init; }
    /// <summary>
    /// The resident limit reclaim holds now (0: none): <see cref="CramEngine.ResidentLimitBytes"/>,
    /// or, with <see cref="CramOptions.MemoryLimitBytes"/>, what that leaves after the pool and
    /// metadata if it is lower (never below 64 pages).
    /// </summary>
    public long ResidentTargetBytes { get; init; }
    /// <summary>Whether <see cref="CramOptions.MemoryLimitBytes"/> cannot be held now (<see cref="CramTierEventKind.MemoryLimitExceeded"/>): every fault that adds a page waits up to <see cref="CramOptions.MemoryLimitWait"/>.</summary>
    public bool MemoryLimitExceeded { get; init; }
    /// <summary>Times the memory limit could not be held (each raised <see cref="CramTierEventKind.MemoryLimitExceeded"/>; cumulative).</summary>
    public long MemoryLimitExceededEpisodes { get; init; }
    /// <summary>Faults that waited because the memory limit could not be held (cumulative).</summary>
    public long MemoryLimitWaits { get; init; }

    /// <summary>Pages evicted (unmapped after their copy was stored).</summary>
    public long Evictions { get; init; }
    /// <summary>Threads that classify and compress reclaim's victims, the reclaim worker included (<see cref="CramOptions.CompressionThreads"/>, resolved).</summary>
    public int CompressionThreads { get; init; }

    /// <summary>Threads that map a readahead window, the faulting (or service) thread included (<see cref="CramOptions.ReadaheadThreads"/>, resolved).</summary>
    public int ReadaheadThreads { get; init; }
    /// <summary>Victims a compression helper classified (and compressed, when worth it) rather than the reclaim worker.</summary>
    public long HelperClassifiedPages { get; init; }
    /// <summary>Pages compressed with LZ4 and stored.</summary>
    public long CompressedPages { get; init; }
    /// <summary>
    /// Eviction attempts on pages that do not compress below the threshold: LZ4 failed, or
    /// (<see cref="EstimatedIncompressiblePages"/> of them) the estimator predicted it. Without a
    /// backing file such a page stays resident; with one it is stored as it is
    /// (<see cref="UncompressedStoredPages"/>) and written back to the file.
    /// </summary>
    public long IncompressiblePages { get; init; }
    /// <summary>Of <see cref="IncompressiblePages"/>, those stored as they are (there is a backing file) rather than kept resident.</summary>
    public long UncompressedStoredPages { get; init; }
    /// <summary>Of <see cref="IncompressiblePages"/>, those the estimator was confident would not compress, so LZ4 was not tried (see <see cref="CramOptions.EstimateCompressibility"/>).</summary>
    public long EstimatedIncompressiblePages { get; init; }
    /// <summary>Pages the estimator was confident would compress that LZ4 could not get below the threshold (estimator errors that cost a wasted compression).</summary>
    public long MispredictedCompressiblePages { get; init; }
    /// <summary>Pages the estimator called incompressible that were compressed anyway to check it (one in 64).</summary>
    public long EstimatorAudits { get; init; }
    /// <summary>Audited pages that did compress below the threshold (estimator errors that cost memory); divide by <see cref="EstimatorAudits"/> for the error rate.</summary>
    public long FalseIncompressiblePages { get; init; }
    /// <summary>Fault-service errors (failed ioctls, undecodable copies). Anything but 0 is a bug to report.</summary>
    public long ServiceErrors { get; init; }

    /// <summary>Exceptions thrown by your callbacks (event handlers, the CRAM device, the logger) that CramCore caught and carried on past (<see cref="CramTierEventKind.CallbackFailed"/>).</summary>
    public long CallbackFailures { get; init; }
    /// <summary>Of the swap-ins, those read from the backing file (<see cref="CramOptions.BackingFile"/>).</summary>
    public long RefaultsFromFile { get; init; }
    /// <summary>Reads of the backing file by faults and readahead: one per extent, or one for a sequential reader's window of extents.</summary>
    public long FileReads { get; init; }
    /// <summary>Bytes those reads brought in (whole pages; a window's dead bytes included).</summary>
    public long FileReadBytes { get; init; }
    /// <summary>Of <see cref="FileReads"/>, those that began where the previous one ended (or in its last page): sequential for the device.</summary>
    public long FileReadsSequential { get; init; }
    /// <summary>Stored copies that failed their CRC-32C check when a fault read them: never mapped; the faulting thread got SIGBUS.</summary>
    public long ChecksumFailures { get; init; }
    /// <summary>Backing-file reads that failed twice: never mapped; the faulting thread got SIGBUS.</summary>
    public long ReadErrors { get; init; }
    /// <summary>Faults answered with SIGBUS (a page whose copy failed its check or could not be read, now or before).</summary>
    public long BadPageFaults { get; init; }
    /// <summary>Slots in use that no page named any more, found and freed by the reaper (a nonzero value means a bug was contained).</summary>
    public long ZombiesReaped { get; init; }

    /// <summary>Evicted pages whose copy is in the backing file.</summary>
    public long FilePages { get; init; }
    /// <summary>Bytes of backing-file segments in use (dead segments are holes and do not count).</summary>
    public long BackingFileBytes { get; init; }
    /// <summary>Bytes of backing-file extents that pages still name.</summary>
    public long BackingFileLiveBytes { get; init; }
    /// <summary>Bytes of backing-file extents no page names any more, awaiting segment compaction.</summary>
    public long BackingFileDeadBytes { get; init; }
    /// <summary>Backing-file segments (256 KiB) in use.</summary>
    public long BackingFileSegments { get; init; }
    /// <summary>Segments emptied by compaction (live extents rewritten elsewhere), cumulative.</summary>
    public long BackingFileSegmentsCompacted { get; init; }
    /// <summary>Pages written back from the pool to the backing file, still compressed (cumulative).</summary>
    public long WritebackPages { get; init; }
    /// <summary>Stored bytes written back (cumulative).</summary>
    public long WritebackBytes { get; init; }
    /// <summary>Failed writes to the backing file (cumulative); each left its entries in the pool.</summary>
    public long WriteErrors { get; init; }
    /// <summary>Of <see cref="WritebackPages"/>, copies re-encoded with zstd on the way out (LZ4 in the pool; see <see cref="CramOptions.RecompressionCpuShare"/>).</summary>
    public long WritebackRecompressedPages { get; init; }
    /// <summary>Bytes that re-encoding saved the file and the store, against the LZ4 copies it replaced (<see cref="WritebackBytes"/> is what was written).</summary>
    public long WritebackRecompressionSavedBytes { get; init; }
    /// <summary>Writeback is paused after a write error and retries every second.</summary>
    public bool WritebackPaused { get; init; }

    /// <summary>Evicted pages whose copy is on the remote store (<see cref="CramOptions.RemoteStore"/>).</summary>
    public long RemotePages { get; init; }
    /// <summary>Bytes on the remote store that pages still name (sealed extents: the compressed bytes and a 16-byte tag each).</summary>
    public long RemoteLiveBytes { get; init; }
    /// <summary>Bytes of the engine's segments on the remote store (live or dead extents).</summary>
    public long RemoteStoredBytes { get; init; }
    /// <summary>Bytes written to the remote store (cumulative): segment values.</summary>
    public long RemoteBytesWritten { get; init; }
    /// <summary>Remote segments deleted because every entry in them died (cumulative).</summary>
    public long RemoteSegmentsDeleted { get; init; }
    /// <summary>Pages fetched from the remote store (cumulative): faults' own and read ahead.</summary>
    public long RemoteFetches { get; init; }
    /// <summary>Requests to the remote store that brought pages in (cumulative): one per remote swap-in fault, with the pages a sequential reader's readahead adds to it.</summary>
    public long RemoteRequests { get; init; }
    /// <summary>Pages being fetched from the remote store now (a fault's, its readahead, or a prefetch's).</summary>
    public long RemoteFetchesInFlight { get; init; }
    /// <summary>Cluster redirections the read half followed by itself (-MOVED after a failover or a migration; cumulative).</summary>
    public long RemoteRedirects { get; init; }
    /// <summary>Fetch attempts that failed and were retried, reconnecting (cumulative).</summary>
    public long RemoteFetchRetries { get; init; }
    /// <summary>Fetches that failed for good (the store unreachable past <see cref="CramOptions.RemoteReadTimeout"/>, or a copy that did not verify): SIGBUS, as a read error (cumulative).</summary>
    public long RemoteFetchFailures { get; init; }
    /// <summary>Of those, sealed extents whose AES-GCM tag did not verify (tampered with, or another engine's).</summary>
    public long RemoteAuthFailures { get; init; }
    /// <summary>TLS sessions with the remote store that failed (a handshake: its certificate not trusted or not for the name asked; an alert from it: no client certificate it accepts; cumulative): each is retried as a failed connection is, so a persistent one ends in read errors.</summary>
    public long RemoteTlsFailures { get; init; }
    /// <summary>Mean time of a remote fetch's request, from sending it to its reply read (µs; 0 before the first).</summary>
    public double RemoteFetchMeanMicroseconds { get; init; }
    /// <summary>Mean time to open (AES-GCM) one remote entry (µs).</summary>
    public double RemoteOpenMeanMicroseconds { get; init; }
    /// <summary>Mean time to check and decode one remote entry (CRC-32C, LZ4; µs).</summary>
    public double RemoteDecodeMeanMicroseconds { get; init; }

    /// <summary>The CRAM device's physical capacity (0: no node).</summary>
    public long CramCapacityBytes { get; init; }
    /// <summary>Pages on the CRAM node (mapped in place: read-only, or writable within the budget).</summary>
    public long CramPlacedPages { get; init; }
    /// <summary>The node's ledger: Σ sizes the device measured for its pages at placement or re-placement.</summary>
    public long CramLedgerBytes { get; init; }
    /// <summary>Physical usage as the device sees it (the ledger with writable frames compressed again by the last scan).</summary>
    public long CramPhysicalUsageBytes { get; init; }
    /// <summary>Observed compression ratio on the node: placed bytes ÷ physical usage.</summary>
    public double CramCompressionRatio => CramPhysicalUsageBytes == 0 ? 0 : (double)CramPlacedPages * 4096 / CramPhysicalUsageBytes;
    /// <summary>Most physical usage beyond capacity any scan saw: what real hardware would turn into poison. 0 with write control.</summary>
    public long CramOverflowBytes { get; init; }
    /// <summary>The node is above its high pressure threshold and takes no new pages.</summary>
    public bool CramPressureHigh { get; init; }
    /// <summary>Pages that may be writable in place now (the risk dial, or the control plane's budget; long.MaxValue without write control).</summary>
    public long CramWritableBudgetPages { get; init; }
    /// <summary>Placed pages writable in place now.</summary>
    public long CramWritablePages { get; init; }
    /// <summary>Most placed pages ever writable at once.</summary>
    public long CramMaxWritablePages { get; init; }
    /// <summary>Writes that made a placed page writable in place (cumulative).</summary>
    public long CramMadeWritable { get; init; }
    /// <summary>Writes that promoted a placed page to ordinary memory (cumulative).</summary>
    public long CramPromotions { get; init; }
    /// <summary>Time spent copying promoted pages out of the device.</summary>
    public TimeSpan CramPromotionCopyTime { get; init; }
    /// <summary>Pages placed on the node (cumulative).</summary>
    public long CramPlacements { get; init; }
    /// <summary>Writable pages made read-only again by reclaim (cumulative).</summary>
    public long CramReplacements { get; init; }
    /// <summary>Placements the node's ledger refused (cumulative).</summary>
    public long CramPlacementRefusals { get; init; }
    /// <summary>Frames freed and trimmed on the device (cumulative).</summary>
    public long CramTrimmedFrames { get; init; }
    /// <summary>Frames the balloon holds back: the device exposes more frames than capacity × observed ratio × margin can fill.</summary>
    public long CramBalloonFrames { get; init; }
    /// <summary>Entries moved off the node to the pool (pressure or balloon), through virtual swap (cumulative).</summary>
    public long CramMovedOut { get; init; }
    /// <summary>The control plane answered within its lease.</summary>
    public bool CramControlPlaneAlive { get; init; }

    /// <summary>Time the fault service spent resolving faults.</summary>
    public TimeSpan FaultServiceBusyTime { get; init; }

    /// <summary>The userfaultfd mode in use. In <see cref="UserfaultfdMode.UserModeOnly"/>, system calls on evicted pages fail with EFAULT.</summary>
    public UserfaultfdMode UserfaultfdMode { get; init; }
    /// <summary>Who resolves faults (never <see cref="CramFaultService.Auto"/>). With <see cref="CramFaultService.FaultingThread"/>, system calls on evicted pages fail with EFAULT.</summary>
    public CramFaultService FaultService { get; init; }
    /// <summary>Regions alive in the engine.</summary>
    public int Regions { get; init; }
}

/// <summary>One size class of the compressed pool: objects up to <paramref name="ObjectSize"/> bytes, packed into pool pages of <paramref name="ZspagePages"/> pages.</summary>
/// <param name="ObjectSize">Largest object of the class, in bytes.</param>
/// <param name="ZspagePages">Pages per pool page of the class.</param>
/// <param name="Objects">Objects stored.</param>
/// <param name="Capacity">Objects the class's pool pages can hold.</param>
public readonly record struct CramPoolClass(int ObjectSize, int ZspagePages, long Objects, long Capacity);

/// <summary>
/// A latency histogram in power-of-two microsecond buckets: bucket 0 counts latencies under 1 µs,
/// bucket b latencies in [2^(b-1), 2^b) µs, and the last bucket everything from 2^(n-2) µs on.
/// </summary>
public sealed record CramLatencyHistogram
{
    internal static readonly CramLatencyHistogram Empty = new([]);

    internal CramLatencyHistogram(long[] counts) => Counts = new ReadableList<long>(counts);

    /// <summary>The count in each bucket.</summary>
    public IReadOnlyList<long> Counts { get; }

    /// <summary>Latencies counted.</summary>
    public long Count => Counts.Sum();

    /// <summary>The exclusive upper bound of <paramref name="bucket"/>; <see cref="TimeSpan.MaxValue"/> for the last.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bucket"/> is not a bucket of this histogram.</exception>
    public TimeSpan UpperBound(int bucket)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bucket);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(bucket, Counts.Count);
        return bucket == Counts.Count - 1 ? TimeSpan.MaxValue : TimeSpan.FromMicroseconds(1L << bucket);
    }

    /// <summary>
    /// The latencies counted since <paramref name="earlier"/>, an earlier snapshot of the same
    /// histogram (say, from <see cref="CramEngine.GetStats"/> before a phase of a run).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="earlier"/> has other buckets, or counts more than this one: it is not an earlier snapshot of the same histogram.</exception>
    public CramLatencyHistogram Since(CramLatencyHistogram earlier)
    {
        ArgumentNullException.ThrowIfNull(earlier);
        if (earlier.Counts.Count == 0)
        {
            return this;
        }
        var counts = new long[Counts.Count];
        for (int b = 0; b < counts.Length && earlier.Counts.Count == counts.Length; b++)
        {
            counts[b] = Counts[b] - earlier.Counts[b];
        }
        if (earlier.Counts.Count != counts.Length || counts.Any(c => c < 0))
        {
            throw new ArgumentException("earlier is not an earlier snapshot of this histogram: take both from the same engine's stats, the earlier one first.", nameof(earlier));
        }
        return new CramLatencyHistogram(counts);
    }

    /// <summary>
    /// The upper bound of the bucket that holds the <paramref name="quantile"/> (0.5 for the median):
    /// the latency is below it, and at least half of it; for the open last bucket, its lower bound.
    /// <see cref="TimeSpan.Zero"/> when nothing was counted. The metrics record each latency at this
    /// same value of its bucket, so their quantiles and these agree.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="quantile"/> is not in [0, 1].</exception>
    public TimeSpan Quantile(double quantile)
    {
        if (!(quantile is >= 0 and <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(quantile), quantile, "A quantile is between 0 and 1 (0.5 for the median, 0.99 for the 99th percentile).");
        }
        long total = Count;
        if (total == 0)
        {
            return TimeSpan.Zero;
        }
        long rank = Math.Max(1, (long)Math.Ceiling(quantile * total)), seen = 0;
        for (int b = 0; b < Counts.Count; b++)
        {
            seen += Counts[b];
            if (seen >= rank)
            {
                return TimeSpan.FromMicroseconds(BucketValueMicroseconds(b, Counts.Count));
            }
        }
        return TimeSpan.FromMicroseconds(BucketValueMicroseconds(Counts.Count - 1, Counts.Count));
    }

    /// <summary>The value a latency in <paramref name="bucket"/> is reported at (quantiles) and recorded at (metrics): its upper bound, or the open last bucket's lower bound.</summary>
    internal static double BucketValueMicroseconds(int bucket, int buckets) => bucket == buckets - 1 ? 1L << (bucket - 1) : 1L << bucket;
}
