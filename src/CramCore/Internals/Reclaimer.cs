using System.Runtime.InteropServices;

namespace CramCore;

/// <summary>
/// Chooses victims (second chance over fault-in order) and evicts them in batches:
/// claim (DIRTY→EVICTING) → write-protect (one ioctl per run) → estimate (<see cref="PageEstimator"/>:
/// zero and same-filled pages become a value; pages it is confident will not compress stay resident
/// without an LZ4 attempt) → LZ4 → store → publish (EVICTING→CLEAN) → drop (native:
/// CLEAN→DROPPING→MADV_DONTNEED→EVICTED).
/// A write during any of this takes a WP fault that cancels the eviction (the service moves the
/// page back to DIRTY), so the publish CAS fails and the copy is discarded: no write is lost.
/// Runs on managed threads: the background thread that holds the resident limit, and callers of
/// <see cref="CramRegion.Reclaim"/>. One pass at a time.
/// </summary>
internal sealed unsafe class Reclaimer : IDisposable
{
    internal const int BatchPages = 256;

    private readonly CramEngine _engine;
    private readonly NativeShared* _shared;
    private readonly SlotTable _slots;
    private readonly int _threshold;
    private readonly bool _storeUncompressed;
    private readonly bool _estimate;
    private readonly Lock _lock = new();
    private readonly VictimQueue _queue = new();
    private readonly ulong[] _dirty = new ulong[BatchPages];
    private readonly ulong[] _clean = new ulong[BatchPages];
    private readonly ulong[] _pages = new ulong[BatchPages];
    private readonly byte* _scratch;
    private ulong _seenLogOverflows;
    private bool _poolFull; // set when a store failed: ends the pass
    private long _incompressible;
    private long _compressed;
    private long _estimatedIncompressible;
    private long _mispredictedCompressible;
    private long _audits;
    private long _falseIncompressible;
    private int _sinceAudit;

    /// <summary>One in this many pages the estimator calls incompressible is compressed anyway, to measure its error.</summary>
    internal const int AuditInterval = 64;
    private Thread? _thread;
    private volatile bool _stopping;
    private readonly long _limitPages;
    private readonly long _lowWaterPages;

    public Reclaimer(CramEngine engine, NativeShared* shared, SlotTable slots, CramOptions options)
    {
        _engine = engine;
        _shared = shared;
        _slots = slots;
        _threshold = options.CompressionThreshold;
        _storeUncompressed = options.StoreUncompressed;
        _estimate = options.EstimateCompressibility && !options.StoreUncompressed;
        _scratch = (byte*)NativeMemory.Alloc(PageTable.PageSize);
        if (options.ResidentLimitBytes > 0)
        {
            _limitPages = options.ResidentLimitBytes / PageTable.PageSize;
            _lowWaterPages = LowWaterPages(_limitPages);
        }
    }

    /// <summary>Background reclaim brings resident memory down to this after the limit is crossed.</summary>
    internal static long LowWaterPages(long limitPages) =>
        Math.Max(1, limitPages - Math.Max(32, limitPages / 64));

    /// <summary>Faults wait (bounded) for reclaim above this.</summary>
    internal static long HardLimitPages(long limitPages) => limitPages + Math.Max(32, limitPages / 40);

    public long IncompressiblePages => Volatile.Read(ref _incompressible);
    public long CompressedPages => Volatile.Read(ref _compressed);
    public long EstimatedIncompressiblePages => Volatile.Read(ref _estimatedIncompressible);
    public long MispredictedCompressiblePages => Volatile.Read(ref _mispredictedCompressible);
    public long EstimatorAudits => Volatile.Read(ref _audits);
    public long FalseIncompressiblePages => Volatile.Read(ref _falseIncompressible);

    public void StartBackground()
    {
        if (_limitPages == 0)
        {
            return;
        }
        _thread = new Thread(BackgroundLoop) { IsBackground = true, Name = "cram-reclaim" };
        _thread.Start();
    }

    private void BackgroundLoop()
    {
        nint engine = _engine.NativeHandle;
        while (!_stopping)
        {
            int signalled;
            Interop.CramNative.WaitReclaimSignal(engine, 20, &signalled);
            if (_stopping)
            {
                break;
            }
            _slots.DrainStale();
            long resident;
            while (!_stopping && (resident = (long)Volatile.Read(ref _shared->Stats.ResidentPages)) > _lowWaterPages)
            {
                bool stalled = Reclaim(resident - _lowWaterPages, null) == 0;
                // Tell the service whether faults over the hard limit are worth delaying.
                Volatile.Write(ref _shared->ReclaimStalled, stalled ? 1u : 0u);
                if (stalled)
                {
                    break; // nothing evictable right now; wait for the next signal or tick
                }
            }
            if (!_stopping)
            {
                lock (_lock)
                {
                    PullFaultLog(); // keep the log from overflowing while nothing needs reclaiming
                }
                _engine.CompactPoolIfFragmented();
            }
        }
    }

    /// <summary>Evicts up to <paramref name="targetPages"/> pages, of one region if given. Returns pages evicted.</summary>
    public long Reclaim(long targetPages, CramRegion? only)
    {
        lock (_lock)
        {
            if (_stopping)
            {
                return 0; // the engine is being disposed: its shared memory may be gone
            }
            _slots.DrainStale();
            PullFaultLog();
            long evicted = 0;
            long budget = 2L * _queue.Count + BatchPages;
            _poolFull = false;
            while (evicted < targetPages && _queue.Count > 0 && budget > 0 && !_stopping && !_poolFull)
            {
                int dirty = 0, clean = 0;
                long want = Math.Min(BatchPages, targetPages - evicted);
                while (dirty + clean < want && _queue.Count > 0 && budget-- > 0)
                {
                    ulong entry = _queue.Dequeue();
                    CramRegion? region = _engine.RegionById(VictimQueue.RegionOf(entry));
                    if (region is null)
                    {
                        continue;
                    }
                    if (only is not null && region != only)
                    {
                        _queue.Enqueue(entry);
                        continue;
                    }
                    ulong* pte = region.PageTableEntries + VictimQueue.PageOf(entry);
                    ulong p = PageTable.Load(pte);
                    switch (PageTable.State(p))
                    {
                        case PageState.Dirty or PageState.Clean when (p & PageTable.Referenced) != 0:
                            PageTable.TryTransition(pte, p, p & ~PageTable.Referenced);
                            _queue.Enqueue(entry); // second chance
                            break;
                        case PageState.Dirty:
                            if (PageTable.TryTransition(pte, p, PageTable.Make(PageState.Evicting, 0)))
                            {
                                _dirty[dirty++] = entry;
                            }
                            break;
                        case PageState.Clean:
                            _clean[clean++] = entry;
                            break;
                        default:
                            break; // evicted, incompressible (re-logged when written) or someone else's
                    }
                }
                evicted += EvictBatch(dirty, clean);
            }
            return evicted;
        }
    }

    private long EvictBatch(int dirtyCount, int cleanCount)
    {
        // Entries sort by region first, so each region's pages form one contiguous group.
        SortIfNeeded(_dirty, dirtyCount);
        for (int i = 0; i < dirtyCount;)
        {
            uint regionId = VictimQueue.RegionOf(_dirty[i]);
            int n = 0;
            while (i < dirtyCount && VictimQueue.RegionOf(_dirty[i]) == regionId)
            {
                _pages[n++] = VictimQueue.PageOf(_dirty[i++]);
            }
            CompressGroup(_engine.RegionById(regionId)!, n, ref cleanCount);
        }
        SortIfNeeded(_clean, cleanCount);
        long dropped = 0;
        for (int i = 0; i < cleanCount;)
        {
            uint regionId = VictimQueue.RegionOf(_clean[i]);
            int n = 0;
            while (i < cleanCount && VictimQueue.RegionOf(_clean[i]) == regionId)
            {
                _pages[n++] = VictimQueue.PageOf(_clean[i++]);
            }
            int d;
            fixed (ulong* pages = _pages)
            {
                Interop.ThrowIfFailed(Interop.CramNative.DropPages(_engine.NativeHandle, regionId, pages, n, &d), "Dropping evicted pages");
            }
            dropped += d;
        }
        return dropped;
    }

    /// <summary>Victims usually come in address order already (fault-in order of sequential access).</summary>
    private static void SortIfNeeded(ulong[] entries, int count)
    {
        for (int i = 1; i < count; i++)
        {
            if (entries[i] < entries[i - 1])
            {
                Array.Sort(entries, 0, count);
                return;
            }
        }
    }

    /// <summary>Write-protects and compresses the EVICTING pages in _pages[0..n); adds the published ones to _clean.</summary>
    private void CompressGroup(CramRegion region, int n, ref int cleanCount)
    {
        long compressed = 0, incompressible = 0;
        fixed (ulong* pages = _pages)
        {
            if (Interop.CramNative.WriteProtectPages(_engine.NativeHandle, region.Id, pages, n) != 0)
            {
                Exception error = Interop.GetExceptionForLastError("Write-protecting pages for eviction");
                for (int i = 0; i < n; i++) // give the pages back; nothing was copied yet
                {
                    PageTable.TryTransition(region.PageTableEntries + pages[i], PageTable.Make(PageState.Evicting, 0), PageTable.Make(PageState.Dirty, 0));
                }
                throw error;
            }
        }
        ulong evicting = PageTable.Make(PageState.Evicting, 0);
        for (int i = 0; i < n; i++)
        {
            ulong page = _pages[i];
            byte* data = region.BasePointer + (page << PageTable.PageShift);
            ulong* pte = region.PageTableEntries + page;
            ulong slot;
            ulong value;
            PageClass predicted;
            if (_estimate)
            {
                PageEstimate estimate = PageEstimator.Estimate(data, _threshold);
                predicted = estimate.Class;
                value = estimate.FillValue;
            }
            else
            {
                predicted = !SameFilled.Check(data, out value) ? PageClass.Uncertain : value == 0 ? PageClass.Zero : PageClass.SameFilled;
            }
            bool audit = false;
            if (predicted == PageClass.Incompressible && !(audit = ++_sinceAudit == AuditInterval))
            {
                // Stays resident and write-protected, as if LZ4 had failed; the next write re-queues it.
                if (PageTable.TryTransition(pte, evicting, PageTable.Make(PageState.Incompressible, 0)))
                {
                    incompressible++;
                    _estimatedIncompressible++;
                }
                continue;
            }
            if (audit)
            {
                _sinceAudit = 0;
                _audits++;
            }
            if (predicted <= PageClass.SameFilled)
            {
                if (value == 0)
                {
                    slot = PageTable.ZeroSlot;
                    // Counted before publishing: the service may take the copy back right after.
                    Interlocked.Increment(ref _shared->Stats.ZeroCopies);
                }
                else
                {
                    slot = _slots.AllocateSameFilled(value);
                }
            }
            else
            {
                int size = PageTable.PageSize;
                byte* copy = data;
                if (!_storeUncompressed)
                {
                    size = Interop.Lz4.CompressDefault(data, _scratch, PageTable.PageSize, _threshold);
                    if (predicted is PageClass.Compressible or PageClass.VeryCompressible && size <= 0)
                    {
                        _mispredictedCompressible++;
                    }
                    else if (audit && size > 0)
                    {
                        _falseIncompressible++; // and it is stored, like any page that compresses
                    }
                    if (size <= 0)
                    {
                        // Stays resident and write-protected; the next write re-queues it.
                        if (PageTable.TryTransition(pte, evicting, PageTable.Make(PageState.Incompressible, 0)))
                        {
                            incompressible++;
                        }
                        continue;
                    }
                    copy = _scratch;
                }
                if (!_slots.TryAllocateStored(_storeUncompressed ? SlotBackend.Raw : SlotBackend.Lz4, copy, size, out slot))
                {
                    // The pool is full: this page and the rest of the batch stay resident (DIRTY,
                    // still write-protected until their next write) and go back in the queue.
                    for (int j = i; j < n; j++)
                    {
                        PageTable.TryTransition(region.PageTableEntries + _pages[j], evicting, PageTable.Make(PageState.Dirty, 0));
                        _queue.Enqueue(VictimQueue.Encode(region.Id, _pages[j]));
                    }
                    _poolFull = true;
                    break;
                }
                compressed += _storeUncompressed ? 0 : 1;
            }
            if (PageTable.TryTransition(pte, evicting, PageTable.Make(PageState.Clean, slot)))
            {
                _clean[cleanCount++] = VictimQueue.Encode(region.Id, page);
            }
            else
            {
                // A write cancelled the eviction while we read the page: our copy may be torn.
                // (The service counts the cancellation.)
                if (slot == PageTable.ZeroSlot)
                {
                    Interlocked.Decrement(ref _shared->Stats.ZeroCopies);
                }
                else
                {
                    _slots.Free(slot);
                }
            }
        }
        Interlocked.Add(ref _compressed, compressed);
        Interlocked.Add(ref _incompressible, incompressible);
    }

    /// <summary>Appends the pages the service made resident, in fault order, to the victim queue.</summary>
    private void PullFaultLog()
    {
        ulong overflows = Volatile.Read(ref _shared->Stats.FaultLogOverflows);
        ulong head = Volatile.Read(ref _shared->FaultLogHead);
        ulong tail = _shared->FaultLogTail;
        if (overflows != _seenLogOverflows)
        {
            // Entries were lost: rebuild the queue from the page tables (address order).
            _seenLogOverflows = overflows;
            _queue.Clear();
            foreach (CramRegion region in _engine.LiveRegions())
            {
                for (ulong page = 0; page < region.PageCount; page++)
                {
                    if (PageTable.State(PageTable.Load(region.PageTableEntries + page)) is PageState.Dirty or PageState.Clean)
                    {
                        _queue.Enqueue(VictimQueue.Encode(region.Id, page));
                    }
                }
            }
        }
        else
        {
            ulong* log = (ulong*)_shared->FaultLog;
            for (ulong t = tail; t < head; t++)
            {
                _queue.Enqueue(log[t & (NativeShared.FaultLogSize - 1)]);
            }
        }
        Volatile.Write(ref _shared->FaultLogTail, head);
    }

    /// <summary>Takes the reclaim lock so a region can be torn down with no pass using it.</summary>
    public void ForgetRegion(CramRegion region, Action teardown)
    {
        lock (_lock)
        {
            PullFaultLog();
            _queue.RemoveRegion(region.Id);
            teardown();
        }
    }

    public void Stop()
    {
        _stopping = true;
        if (_thread is not null)
        {
            Interop.CramNative.SignalReclaim(_engine.NativeHandle);
            _thread.Join();
            _thread = null;
        }
    }

    public void Dispose()
    {
        Stop();
        NativeMemory.Free(_scratch);
    }
}
