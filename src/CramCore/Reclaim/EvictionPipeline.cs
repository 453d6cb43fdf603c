using System.Runtime.InteropServices;
using CramCore.Estimation;
using CramCore.Internals;
using CramCore.Native;
using CramCore.Storage;

namespace CramCore.Reclaim;

/// <summary>
/// Evicts a batch of victims, region by region, in stages (the page states are those of the state
/// machine in cramnative.h):
/// <list type="number">
/// <item><b>claim</b> — done by <see cref="VictimClock.Select"/>: DIRTY→EVICTING;</item>
/// <item><b>protect</b> — write-protect the claimed pages, one ioctl per run, before reading them,
///   so a write from now on takes a WP fault that cancels the eviction (no lost write);</item>
/// <item><b>classify and compress</b> — <see cref="PageEstimator"/> (or the same-filled check alone):
///   zero, same-filled, incompressible (kept resident without an LZ4 attempt) or worth compressing,
///   and then LZ4 into a chunk buffer; <see cref="ChunkPages"/> pages at a time, shared with the
///   process's <see cref="CompressionHelpers"/> (<see cref="CramOptions.CompressionThreads"/>): these
///   are pure functions of the page, which is write-protected and stays mapped. Two chunk buffers:
///   the helpers compress the next chunk while the worker stores this one (then joins them);</item>
/// <item><b>store</b> — in victim order, by the reclaim worker alone: slot 0, a same-filled slot, the LZ4 copy into the compressed pool, or, for a very
///   compressible page the CRAM node wants, a frame of the node (the page itself stays in place);
///   with a backing file, a page that does not compress is stored as it is, for writeback;</item>
/// <item><b>publish</b> — EVICTING→CLEAN(slot); if a write cancelled the eviction the CAS fails and
///   the copy, possibly torn, is freed;</item>
/// <item><b>drop</b> — native: CLEAN→DROPPING→MADV_DONTNEED→EVICTED, for published pages and for
///   victims that were CLEAN already;</item>
/// <item><b>place</b> — native, for the node's pages: EVICTING→PLACED where the node's ledger admits
///   them (read-only in place; off the host's resident account); a refused page goes back to DIRTY.</item>
/// </list>
/// <b>Roll-back.</b> Invariant kept on every path: each DIRTY or CLEAN page is in the victim clock's
/// FIFO or in the native fault-in log, so reclaim sees it again. A full pool ends storing for the
/// batch: the remaining claimed pages go back to DIRTY (still write-protected until their next write)
/// and to the front of the FIFO, in their order (they are still the coldest: the next pass, after
/// writeback made room, takes them first, so pages evicted together are stored — and written back —
/// together), and the batch's CLEAN pages are still dropped. A failed write-protect or drop, or
/// any exception, settles the rest of the batch the same way (EVICTING→DIRTY, CLEAN stays CLEAN;
/// both requeued) and rethrows. Not thread-safe: the reclaimer's pass lock.
/// </summary>
internal sealed unsafe class EvictionPipeline : IDisposable
{
    /// <summary>Victims per batch.</summary>
    public const int BatchPages = 256;

    /// <summary>One in this many pages the estimator calls incompressible is compressed anyway, to measure its error.</summary>
    public const int AuditInterval = 64;

    /// <summary>Pages classified and compressed at once (by the reclaim worker and the helpers) before they are stored in order.</summary>
    public const int ChunkPages = 32;

    /// <summary>A chunk page's compressed size when LZ4 was not tried (zero, same-filled or predicted incompressible).</summary>
    private const int NotCompressed = -1;

    private readonly IPageOperations _ops;
    private readonly SlotTable _slots;
    private readonly ReclaimCounters _counters;
    private readonly int _threshold;
    private readonly bool _storeUncompressed;
    private readonly bool _storeIncompressible;
    private readonly bool _estimate;
    // Two chunk buffers (set 0 and 1), ChunkPages entries each: entry set * ChunkPages + j is page j
    // of the chunk the set holds.
    private readonly byte* _output; // 2 * ChunkPages pages: each chunk page's LZ4 copy
    private readonly CompressionJob[] _jobs = new CompressionJob[2];
    private readonly bool _helped;
    private readonly byte*[] _chunkData = new byte*[2 * ChunkPages];     // set * ChunkPages + job item -> page
    private readonly int[] _chunkIndex = new int[2 * ChunkPages];        // set * ChunkPages + job item -> entry
    private readonly PageClass[] _predicted = new PageClass[2 * ChunkPages];
    private readonly ulong[] _fill = new ulong[2 * ChunkPages];
    private readonly int[] _size = new int[2 * ChunkPages];
    private readonly ulong[] _protect = new ulong[BatchPages];
    private readonly ulong[] _drop = new ulong[BatchPages];
    private readonly NativeCramPlace[] _place = new NativeCramPlace[BatchPages];
    private readonly ulong[] _placeEntries = new ulong[BatchPages];
    private readonly ulong[] _unstored = new ulong[BatchPages]; // claimed pages a full pool sent back, in victim order
    private int _unstoredCount;
    private bool _disposed;
    private int _ownerThread; // the thread running EvictBatch: items run by other threads are the helpers' work
    private readonly CramNode? _node;
    private int _sinceAudit;

    public EvictionPipeline(IPageOperations operations, SlotTable slots, ReclaimCounters counters, CramOptions options)
    {
        _ops = operations;
        _slots = slots;
        _counters = counters;
        _threshold = options.CompressionThresholdBytes;
        _storeUncompressed = options.StoreUncompressed;
        _storeIncompressible = options.BackingFile is not null; // writeback takes them to the file: nothing stays resident for lack of compression
        _estimate = options.EstimateCompressibility && !options.StoreUncompressed;
        _node = slots.Node;
        _output = (byte*)NativeMemory.Alloc((nuint)(2 * ChunkPages) * SharedLayout.PageSize);
        _jobs[0] = new CompressionJob(item => ClassifyAndCompress(0, item));
        _jobs[1] = new CompressionJob(item => ClassifyAndCompress(1, item));
        _helped = options.CompressionThreads > 1;
        if (_helped)
        {
            CompressionHelpers.Acquire(options.CompressionThreads - 1);
        }
    }

    /// <summary>Native memory the pipeline holds (the two chunk buffers), for the memory limit's metadata.</summary>
    public static long MetadataBytes => 2L * ChunkPages * SharedLayout.PageSize;

    /// <summary>What <see cref="Store"/> did with a page.</summary>
    private enum StoreResult
    {
        Stored,
        Placed,
        Incompressible,
        PoolFull,
    }

    /// <summary>
    /// Evicts <paramref name="victims"/> (sorted, no duplicates; <see cref="FaultLogEntry"/> encoding),
    /// of which <paramref name="claimed"/> ones are EVICTING and the others were CLEAN. Returns the
    /// pages dropped; <paramref name="poolFull"/> says the pool refused a store.
    /// </summary>
    public int EvictBatch(RegionTable regions, ReadOnlySpan<ulong> victims, ReadOnlySpan<bool> claimed, VictimClock clock, out bool poolFull)
    {
        poolFull = false;
        int dropped = 0, settled = 0;
        _unstoredCount = 0;
        _ownerThread = Environment.CurrentManagedThreadId;
        int posted0 = _helped ? CompressionHelpers.Post(_jobs[0]) : -1, posted1 = _helped ? CompressionHelpers.Post(_jobs[1]) : -1;
        try
        {
            while (settled < victims.Length)
            {
                uint regionId = FaultLogEntry.RegionOf(victims[settled]);
                int end = settled + 1;
                while (end < victims.Length && FaultLogEntry.RegionOf(victims[end]) == regionId)
                {
                    end++;
                }
                RegionMapping region = regions.Get(regionId)!; // regions leave only while reclaim is paused
                dropped += EvictRegion(region, victims[settled..end], claimed[settled..end], clock, ref poolFull);
                settled = end;
            }
        }
        catch
        {
            _counters.AddError();
            RollBack(regions, victims[settled..], clock);
            throw;
        }
        finally
        {
            CompressionHelpers.Withdraw(posted0);
            CompressionHelpers.Withdraw(posted1);
            clock.ReturnToFront(_unstored.AsSpan(0, _unstoredCount));
        }
        return dropped;
    }

    /// <summary>All stages for one region's victims; returns the pages dropped.</summary>
    private int EvictRegion(RegionMapping region, ReadOnlySpan<ulong> victims, ReadOnlySpan<bool> claimed, VictimClock clock, ref bool poolFull)
    {
        if (!poolFull)
        {
            Protect(region, victims, claimed);
        }
        long compressed = 0;
        int drop = 0, place = 0;
        int pendingSet = -1, pendingItems = 0; // the chunk whose compression was started and not yet waited for
        try
        {
            if (!poolFull)
            {
                pendingItems = StartChunk(0, region, victims[..Math.Min(ChunkPages, victims.Length)], claimed);
                pendingSet = 0;
            }
            for (int i = 0; i < victims.Length; i++)
            {
                int set = (i / ChunkPages) & 1;
                if (i % ChunkPages == 0)
                {
                    if (pendingSet >= 0)
                    {
                        _jobs[pendingSet].Finish(pendingItems); // this chunk's results (the worker helps with what is left)
                        pendingSet = -1;
                    }
                    int next = i + ChunkPages;
                    if (!poolFull && next < victims.Length)
                    {
                        // The helpers compress the next chunk while this one is stored.
                        pendingItems = StartChunk(set ^ 1, region, victims[next..Math.Min(next + ChunkPages, victims.Length)], claimed[next..]);
                        pendingSet = set ^ 1;
                    }
                }
                ulong page = FaultLogEntry.PageOf(victims[i]);
                ulong* pte = region.PageTableEntries + page;
                if (!claimed[i])
                {
                    _drop[drop++] = page; // CLEAN when chosen: its copy is stored already
                    continue;
                }
                if (poolFull)
                {
                    ReturnUnstored(pte, victims[i]); // not protected: the batch stopped storing before this region
                    continue;
                }
                byte* data = region.BasePointer + (page << SharedLayout.PageShift);
                StoreResult stored = Store(data, pte, set * ChunkPages + i % ChunkPages, out ulong slot, out bool lz4, out int size);
                if (stored == StoreResult.Placed)
                {
                    _placeEntries[place] = victims[i];
                    _place[place++] = new NativeCramPlace { Page = page, Slot = slot, Size = (uint)size };
                    continue;
                }
                if (stored == StoreResult.PoolFull)
                {
                    poolFull = true;
                    ReturnUnstored(pte, victims[i]);
                    continue;
                }
                if (stored == StoreResult.Incompressible)
                {
                    continue;
                }
                compressed += lz4 ? 1 : 0;
                if (Publish(pte, slot))
                {
                    _drop[drop++] = page;
                }
            }
        }
        finally
        {
            if (pendingSet >= 0)
            {
                _jobs[pendingSet].FinishQuietly(pendingItems); // the pool filled up (or a failure): no helper may still write into the buffer
            }
        }
        _counters.AddCompressed(compressed);
        int placed = Place(region, place, clock);
        return placed + Drop(region, drop); // placed pages left the host's resident account too
    }

    /// <summary>Stage place (native): EVICTING→PLACED for the node's pages its ledger admits; the others go back to DIRTY and their frames are freed. Returns the pages placed.</summary>
    private int Place(RegionMapping region, int count, VictimClock clock)
    {
        if (count == 0)
        {
            return 0;
        }
        int placed = 0;
        Errno error;
        fixed (NativeCramPlace* places = _place)
        {
            error = _ops.Place(region.Id, places, count, out _);
        }
        for (int i = 0; i < count; i++)
        {
            ref NativeCramPlace p = ref _place[i];
            if (error == Errno.None && p.Placed != 0)
            {
                _node!.Placed((long)_slots.Get(p.Slot)->Location, region.Id, p.Page);
                _counters.AddPlaced();
                placed++;
                continue;
            }
            _slots.Free(p.Slot); // frees the frame
            RollBackClaim(region.PageTableEntries + p.Page, _placeEntries[i], clock); // refused: back to DIRTY (a write may have beaten us to it)
        }
        if (error != Errno.None)
        {
            throw Interop.GetExceptionForErrno(error, "Placing pages on the CRAM node");
        }
        return placed;
    }

    /// <summary>Stage protect: write-protects every claimed page, one ioctl per run, before any is read.</summary>
    private void Protect(RegionMapping region, ReadOnlySpan<ulong> victims, ReadOnlySpan<bool> claimed)
    {
        int count = 0;
        for (int i = 0; i < victims.Length; i++)
        {
            if (claimed[i])
            {
                _protect[count++] = FaultLogEntry.PageOf(victims[i]);
            }
        }
        if (count == 0)
        {
            return;
        }
        Errno error;
        fixed (ulong* pages = _protect)
        {
            error = _ops.WriteProtect(region.Id, pages, count);
        }
        if (error != Errno.None)
        {
            throw Interop.GetExceptionForErrno(error, "Write-protecting pages for eviction");
        }
    }

    /// <summary>
    /// Stage classify and compress, started: the claimed pages of one chunk of a region's victims
    /// offered to the helpers in chunk set <paramref name="set"/>; results by entry. Returns the
    /// items, for the <see cref="CompressionJob.Finish"/> that waits for them.
    /// </summary>
    private int StartChunk(int set, RegionMapping region, ReadOnlySpan<ulong> victims, ReadOnlySpan<bool> claimed)
    {
        int items = 0, first = set * ChunkPages;
        for (int j = 0; j < victims.Length; j++)
        {
            if (claimed[j])
            {
                _chunkData[first + items] = region.BasePointer + (FaultLogEntry.PageOf(victims[j]) << SharedLayout.PageShift);
                _chunkIndex[first + items++] = first + j;
            }
        }
        _jobs[set].Start(items);
        return items;
    }

    /// <summary>One item of a chunk (any thread): classify the page and, when it is worth it, compress it into its place in the chunk buffer.</summary>
    private void ClassifyAndCompress(int set, int item)
    {
        if (Environment.CurrentManagedThreadId != _ownerThread)
        {
            _counters.AddHelperClassified();
        }
        byte* data = _chunkData[set * ChunkPages + item];
        int j = _chunkIndex[set * ChunkPages + item];
        PageClass predicted = Classify(data, out _fill[j]);
        _predicted[j] = predicted;
        _size[j] = predicted is PageClass.Zero or PageClass.SameFilled or PageClass.Incompressible || _storeUncompressed
            ? NotCompressed
            : Interop.Lz4.CompressDefault(data, Output(j), SharedLayout.PageSize, _threshold);
    }

    private byte* Output(int chunkIndex) => _output + ((long)chunkIndex << SharedLayout.PageShift);

    /// <summary>Stage classify: what the estimator (or the same-filled check alone) expects of the page.</summary>
    private PageClass Classify(byte* data, out ulong fill)
    {
        if (_estimate)
        {
            PageEstimate estimate = PageEstimator.Estimate(data, _threshold);
            fill = estimate.FillValue;
            return estimate.Class;
        }
        return !SameFilled.Check(data, out fill) ? PageClass.Uncertain : fill == 0 ? PageClass.Zero : PageClass.SameFilled;
    }

    /// <summary>
    /// Stage store: slot 0 for a zero page, a same-filled slot, or an LZ4 (raw, with
    /// <see cref="CramOptions.StoreUncompressed"/>) copy in the pool. A page predicted or found
    /// incompressible goes EVICTING→INCOMPRESSIBLE here, or with a backing file into the pool as it is
    /// (<see cref="Incompressible"/>); one in <see cref="AuditInterval"/> of the
    /// predicted ones is compressed anyway to measure the estimator.
    /// </summary>
    private StoreResult Store(byte* data, ulong* pte, int chunkIndex, out ulong slot, out bool lz4, out int size)
    {
        PageClass predicted = _predicted[chunkIndex];
        ulong fill = _fill[chunkIndex];
        slot = 0;
        lz4 = false;
        size = 0;
        bool audit = false;
        if (predicted == PageClass.Incompressible && !(audit = ++_sinceAudit == AuditInterval))
        {
            return Incompressible(data, pte, estimated: true, out slot, out size);
        }
        if (audit)
        {
            _sinceAudit = 0;
            _counters.AddAudit();
        }
        if (predicted <= PageClass.SameFilled)
        {
            if (fill == 0)
            {
                slot = SharedLayout.ZeroSlot;
                _counters.AddZeroCopy(1); // before publishing: the service may release the copy right after
            }
            else
            {
                slot = _slots.AllocateSameFilled(fill);
            }
            return StoreResult.Stored;
        }
        size = SharedLayout.PageSize;
        byte* copy = data;
        if (!_storeUncompressed)
        {
            byte* output = Output(chunkIndex);
            size = _size[chunkIndex] != NotCompressed ? _size[chunkIndex] : Interop.Lz4.CompressDefault(data, output, SharedLayout.PageSize, _threshold); // an audit
            if (predicted is PageClass.Compressible or PageClass.VeryCompressible && size <= 0)
            {
                _counters.AddMispredictedCompressible();
            }
            else if (audit && size > 0)
            {
                _counters.AddFalseIncompressible(); // and it is stored, like any page that compresses
            }
            if (size <= 0)
            {
                return Incompressible(data, pte, estimated: false, out slot, out size);
            }
            copy = output;
            lz4 = true;
            // Allocation control: only very compressible pages, confirmed by their size, go to the node.
            if (_node is not null && predicted == PageClass.VeryCompressible && _node.Wants(size))
            {
                long frame = _node.AllocateFrame();
                if (frame >= 0)
                {
                    slot = _slots.AllocateCram(frame, size);
                    return StoreResult.Placed;
                }
            }
        }
        return _ops.TryStore(_storeUncompressed, copy, size, out slot)
            ? StoreResult.Stored
            : StoreResult.PoolFull;
    }

    /// <summary>
    /// Stage publish: EVICTING→CLEAN(slot). False if a write cancelled the eviction while the page
    /// was read (the service counted it and re-logged the page): the copy may be torn and is freed.
    /// </summary>
    private bool Publish(ulong* pte, ulong slot)
    {
        // Counted before the page is CLEAN: from then on a write-protect fault or a drop may take it out (and uncount it).
        _slots.CountCleanCopy(slot, +1);
        if (PageTableEntry.TryTransition(pte, PageTableEntry.Make(PageState.Evicting, 0), PageTableEntry.Make(PageState.Clean, slot)))
        {
            return true;
        }
        _slots.CountCleanCopy(slot, -1);
        if (slot == SharedLayout.ZeroSlot)
        {
            _counters.AddZeroCopy(-1);
        }
        else
        {
            _slots.Free(slot);
        }
        return false;
    }

    /// <summary>Stage drop (native): CLEAN→DROPPING→MADV_DONTNEED→EVICTED for _drop[0..count), in order.</summary>
    private int Drop(RegionMapping region, int count)
    {
        if (count == 0)
        {
            return 0;
        }
        Errno error;
        int dropped;
        fixed (ulong* pages = _drop)
        {
            error = _ops.Drop(region.Id, pages, count, out dropped);
        }
        if (error != Errno.None)
        {
            throw Interop.GetExceptionForErrno(error, "Dropping evicted pages");
        }
        return dropped;
    }

    /// <summary>
    /// A page that does not compress: with a backing file, stored as it is (a raw pool copy that
    /// writeback takes to the file like any other), so it leaves memory; without one, kept resident.
    /// </summary>
    private StoreResult Incompressible(byte* data, ulong* pte, bool estimated, out ulong slot, out int size)
    {
        size = 0;
        slot = 0;
        if (!_storeIncompressible)
        {
            KeepIncompressible(pte, estimated);
            return StoreResult.Incompressible;
        }
        if (!_ops.TryStore(raw: true, data, SharedLayout.PageSize, out slot))
        {
            return StoreResult.PoolFull;
        }
        size = SharedLayout.PageSize;
        _counters.AddIncompressible(estimated);
        _counters.AddUncompressedStored();
        return StoreResult.Stored;
    }

    /// <summary>EVICTING→INCOMPRESSIBLE: stays resident and write-protected; the next write re-logs it.</summary>
    private void KeepIncompressible(ulong* pte, bool estimated)
    {
        if (PageTableEntry.TryTransition(pte, PageTableEntry.Make(PageState.Evicting, 0), PageTableEntry.Make(PageState.Incompressible, 0)))
        {
            _counters.AddIncompressible(estimated);
        }
    }

    /// <summary>EVICTING→DIRTY and back in the FIFO. If the CAS fails, a write cancelled the eviction and the service re-logged the page.</summary>
    private static void RollBackClaim(ulong* pte, ulong entry, VictimClock clock)
    {
        if (Unclaim(pte))
        {
            clock.Requeue(entry);
        }
    }

    /// <summary>EVICTING→DIRTY for a page the full pool could not take; it goes back to the front of the FIFO when the batch ends. If the CAS fails, a write cancelled the eviction and the service re-logged the page.</summary>
    private void ReturnUnstored(ulong* pte, ulong entry)
    {
        if (Unclaim(pte))
        {
            _unstored[_unstoredCount++] = entry;
        }
    }

    /// <summary>EVICTING→DIRTY; false if a write cancelled the eviction first.</summary>
    private static bool Unclaim(ulong* pte) =>
        PageTableEntry.TryTransition(pte, PageTableEntry.Make(PageState.Evicting, 0), PageTableEntry.Make(PageState.Dirty, 0));

    /// <summary>Settles victims a failure left behind: claimed pages go back to DIRTY, CLEAN ones stay; both are requeued.</summary>
    private static void RollBack(RegionTable regions, ReadOnlySpan<ulong> victims, VictimClock clock)
    {
        foreach (ulong entry in victims)
        {
            RegionMapping region = regions.Get(FaultLogEntry.RegionOf(entry))!;
            ulong* pte = region.PageTableEntries + FaultLogEntry.PageOf(entry);
            switch (PageTableEntry.State(PageTableEntry.Load(pte)))
            {
                case PageState.Evicting:
                    RollBackClaim(pte, entry, clock);
                    break;
                case PageState.Clean:
                    clock.Requeue(entry);
                    break;
            }
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (_helped)
        {
            CompressionHelpers.Release();
        }
        NativeMemory.Free(_output);
    }
}
