using CramCore.Internals;
using CramCore.Native;
using CramCore.Storage;

namespace CramCore.Reclaim;

/// <summary>
/// One reclaim pass at a time: pull the fault-in log, take victims from the <see cref="VictimClock"/>,
/// sort them once (by region, then page; duplicates dropped), and hand them to the
/// <see cref="EvictionPipeline"/>, batch after batch, until the target is met, the pool is full (and
/// <see cref="Writeback"/>, if there is a backing file, cannot make room) or nothing evictable is
/// left. Its lock is the engine's maintenance lock (cramnative.h, lock 3): passes, writeback's
/// batch steps, segment and pool compaction, the <see cref="Reaper"/> and region tear-down
/// (<see cref="Pause"/>) all run under it, so slots are created and freed on one path at a time.
/// Writeback's I/O does not: a pass that finds the pool full lets the lock go and asks writeback
/// (its own thread) for room. Called by the reclaim worker (Engine/ReclaimWorker.cs) and by
/// <see cref="CramRegion.Reclaim"/>, holding no lock.
/// </summary>
internal sealed unsafe class Reclaimer : IDisposable
{
    private readonly NativeShared* _shared;
    private readonly SlotTable _slots;
    private readonly RegionTable _regions;
    private readonly VictimClock _clock;
    private readonly EvictionPipeline _pipeline;
    private readonly Reaper _reaper;
    private readonly Writeback? _writeback;
    private readonly Recompressor? _recompressor;
    private readonly TierEventChannel _events;
    private readonly Lock _lock; // the maintenance lock (3), shared with writeback's short steps
    private bool _poolFullReported;
    private readonly ulong[] _victims = new ulong[EvictionPipeline.BatchPages];
    private readonly bool[] _claimed = new bool[EvictionPipeline.BatchPages];
    private readonly List<ulong> _writablePlaced = [];
    private readonly ulong[] _replace = new ulong[EvictionPipeline.BatchPages];
    private volatile bool _stopping;

    public Reclaimer(INativeEngine engine, NativeShared* shared, RegionTable regions, SlotTable slots, IPageOperations operations, CramOptions options,
        Reaper reaper, Writeback? writeback, TierEventChannel events, Lock maintenance, Recompressor? recompressor = null)
    {
        _lock = maintenance;
        _shared = shared;
        _slots = slots;
        _reaper = reaper;
        _writeback = writeback;
        _recompressor = recompressor;
        _events = events;
        _regions = regions;
        _clock = new VictimClock(engine, shared, regions);
        _pipeline = new EvictionPipeline(operations, slots, Counters, options);
    }

    public ReclaimCounters Counters { get; } = new();

    /// <summary>Pages reclaim could look at now: queued in the victim clock, or in the fault-in log not yet pulled (a snapshot, read without the lock).</summary>
    public long PendingPages =>
        _clock.Count + (long)(Volatile.Read(ref _shared->FaultLogHead) - Volatile.Read(ref _shared->FaultLogTail));

    /// <summary>Times the victim clock's queues outgrew twice the resident pages and were rebuilt from the page tables.</summary>
    public long QueueRebuilds => _clock.Rebuilds;

    /// <summary>The most entries the victim clock's queues hold before they are rebuilt (<see cref="VictimClock.MaxEntries"/>).</summary>
    public long MaxQueuedPages => _clock.MaxEntries;

    /// <summary>Bytes of the victim clock's queues and the pipeline's chunk buffer (metadata of the memory limit).</summary>
    public long MetadataBytes => _clock.MetadataBytes + EvictionPipeline.MetadataBytes;

    /// <summary>
    /// Evicts up to <paramref name="targetPages"/> pages, of one region if given. Returns pages
    /// evicted. A pass that finds the pool full asks writeback for room — outside the maintenance
    /// lock, which writeback's steps need — and goes on if it made some. Call it holding no lock.
    /// </summary>
    public long Reclaim(long targetPages, RegionMapping? only)
    {
        long evicted = 0;
        bool poolFull, roomMade = false, compacted = false;
        int roomWithoutProgress = 0;
        while (true)
        {
            long pass = Pass(targetPages - evicted, only, out poolFull);
            evicted += pass;
            if (!poolFull || evicted >= targetPages || _writeback is null || _stopping)
            {
                break;
            }
            if (pass == 0 && roomMade && !compacted)
            {
                compacted = true; // once for each room made
                if (CompactPool() > 0)
                {
                    continue; // writeback freed objects, but their holes were no free zspage yet: now they are
                }
            }
            if (!(roomMade = _writeback.MakeRoom()))
            {
                break;
            }
            compacted = false;
            if (pass == 0 && roomWithoutProgress++ > 0)
            {
                break; // room was made twice and nothing went in: what is left does not fit
            }
        }
        WaitingForRoom = poolFull && roomMade;
        lock (_lock)
        {
            ReportPool(poolFull, evicted);
        }
        if (evicted > 0)
        {
            _recompressor?.Request(); // copies evicted now may be cold later: the recompressor looks (cramnative.h, "Codecs")
        }
        return evicted;
    }

    /// <summary>
    /// Whether the last <see cref="Reclaim"/> ended with the pool full while writeback was still
    /// making room: a pause, not a stall (the resident limit's faults should wait for it, not give up).
    /// </summary>
    public bool WaitingForRoom { get; private set; }

    /// <summary>Compacts the pool under the pass lock; returns the bytes given back.</summary>
    private long CompactPool()
    {
        lock (_lock)
        {
            return _stopping ? 0 : _slots.Pool.Compact();
        }
    }

    /// <summary>One pass under the maintenance lock, until the target is met, nothing is left or the pool is full (<paramref name="poolFull"/>).</summary>
    private long Pass(long targetPages, RegionMapping? only, out bool poolFull)
    {
        poolFull = false;
        lock (_lock)
        {
            if (_stopping)
            {
                return 0; // the engine is being disposed: its shared memory may be gone
            }
            _reaper.Drain();
            _clock.PullFaultLog();
            SizeTheWorkingSet();
            long evicted = 0;
            long budget = 2L * _clock.Count + EvictionPipeline.BatchPages;
            bool spareHot = true;
            long hotSpared = 0;
            while (evicted < targetPages && _clock.Count > 0 && !_stopping && !poolFull)
            {
                if (budget <= 0)
                {
                    if (!spareHot || hotSpared == 0)
                    {
                        break;
                    }
                    // Everything else that could go has gone and the target is not met: pages
                    // advised hot go too, in the same order (CramAdvice.Hot: "while the limit allows").
                    spareHot = false;
                    budget = 2L * _clock.Count + EvictionPipeline.BatchPages;
                }
                int want = (int)Math.Min(EvictionPipeline.BatchPages, targetPages - evicted);
                int n = _clock.Select(_victims.AsSpan(0, want), _claimed, only, ref budget, _writablePlaced, spareHot, ref hotSpared);
                Replace();
                n = SortOnce(n);
                evicted += _pipeline.EvictBatch(_regions, _victims.AsSpan(0, n), _claimed.AsSpan(0, n), _clock, out poolFull);
                if (poolFull && ReleaseCleanCopies())
                {
                    poolFull = false; // copies of resident pages made room: go on
                }
            }
            return evicted;
        }
    }

    /// <summary>The resident limit in pages (0: none), as the engine holds it; sizes the working set at once and before every pass.</summary>
    public long LimitPages
    {
        get => Volatile.Read(ref _limitPages);
        set
        {
            Volatile.Write(ref _limitPages, value);
            SizeTheWorkingSet();
        }
    }

    private long _limitPages;

    /// <summary>Of the resident limit (or, without one, of what is resident), the share the active list may keep.</summary>
    internal const double ActiveShare = 0.75;

    /// <summary>Of the same, the pages the trial FIFO holds before its oldest are evicted first (measured with `cram bench hotcold`: 1/128 against 1/8 to 1/256; Zipf and uniform reads unchanged).</summary>
    internal const double TrialShare = 1.0 / 128;

    /// <summary>
    /// Of the same, the refault distance below which a swap-in comes back active: a page that would
    /// have stayed resident had the limit been twice as large (measured with `cram bench hotcold`:
    /// 1 against 0.25, 0.5 and 2, hot set and Zipf).
    /// </summary>
    internal const double ActivateDistanceShare = 1.0;

    /// <summary>
    /// Sizes the working set for this pass (cramnative.h, "Working set"), from the resident limit or,
    /// without one, from resident memory now: the active list's limit, and the refault distance
    /// below which the service brings a page back active.
    /// </summary>
    private void SizeTheWorkingSet()
    {
        long basis = LimitPages > 0 ? LimitPages : (long)Volatile.Read(ref _shared->Stats.ResidentPages);
        _clock.ActiveLimit = (long)(basis * ActiveShare);
        _clock.TrialLimit = (long)(basis * TrialShare);
        Volatile.Write(ref _shared->ActivateDistancePages, (ulong)(basis * ActivateDistanceShare));
    }

    /// <summary>Pages demoted from the active list (cumulative).</summary>
    public long Demotions => _clock.Demotions;

    /// <summary>
    /// The pool is full: first let go of copies that resident pages keep (cramnative.h, "Clean
    /// copies"), a batch's worth, and give the freed pool pages back, before writeback or giving up.
    /// True if that released anything.
    /// </summary>
    private bool ReleaseCleanCopies()
    {
        long released = _clock.ReleaseCleanCopies((long)EvictionPipeline.BatchPages * SharedLayout.PageSize, _slots);
        if (released == 0)
        {
            return false;
        }
        CleanCopiesReleased += released;
        _slots.Pool.Compact(); // the holes left are in other size classes too: give the pages back so any class can use them
        return true;
    }

    /// <summary>Stored bytes of clean copies let go because the pool was full (cumulative).</summary>
    public long CleanCopiesReleased { get; private set; }

    /// <summary>
    /// Sorts the batch by region, then page (victims mostly come in address order already: the
    /// fault-in order of sequential access), and drops duplicates (a page can be queued twice).
    /// The one sort of a batch: the pipeline and the native calls rely on it.
    /// </summary>
    private int SortOnce(int n)
    {
        for (int i = 1; i < n; i++)
        {
            if (_victims[i] <= _victims[i - 1])
            {
                Array.Sort(_victims, _claimed, 0, n);
                break;
            }
        }
        int unique = Math.Min(n, 1);
        for (int i = 1; i < n; i++)
        {
            if (_victims[i] != _victims[unique - 1])
            {
                _victims[unique] = _victims[i];
                _claimed[unique++] = _claimed[i];
            }
            else
            {
                _claimed[unique - 1] |= _claimed[i]; // only a CLEAN duplicate is ever chosen twice
            }
        }
        return unique;
    }

    /// <summary>Re-places the writable CRAM pages the clock handed back, region by region (sorted, as the native call needs).</summary>
    private void Replace()
    {
        if (_writablePlaced.Count == 0)
        {
            return;
        }
        _writablePlaced.Sort();
        int i = 0;
        while (i < _writablePlaced.Count)
        {
            uint region = FaultLogEntry.RegionOf(_writablePlaced[i]);
            int n = 0;
            for (; i < _writablePlaced.Count && FaultLogEntry.RegionOf(_writablePlaced[i]) == region && n < _replace.Length; i++)
            {
                ulong page = FaultLogEntry.PageOf(_writablePlaced[i]);
                if (n == 0 || _replace[n - 1] != page)
                {
                    _replace[n++] = page;
                }
            }
            Counters.AddReplaced(_slots.Node!.Replace(region, _replace, n));
        }
        _writablePlaced.Clear();
    }

    /// <summary>Raises <see cref="CramTierEventKind.PoolFull"/> once when a pass ends on a full pool, and PoolAvailable once it stores again.</summary>
    private void ReportPool(bool poolFull, long evicted)
    {
        if (poolFull && !_poolFullReported)
        {
            _poolFullReported = true;
            _events.Post(CramTierEventKind.PoolFull, _writeback is null
                ? "The compressed pool is full and there is no backing file (ghost mode): reclaim stops and pages stay resident; nothing is lost. Raise CompressedPoolLimitBytes or set BackingFile."
                : "The compressed pool is full and writeback cannot make room now (see WritebackPaused/BackingFileFull): reclaim stops and pages stay resident; nothing is lost.");
        }
        else if (!poolFull && evicted > 0 && _poolFullReported)
        {
            _poolFullReported = false;
            _events.Post(CramTierEventKind.PoolAvailable, "The compressed pool takes pages again.");
        }
    }

    /// <summary>
    /// Background upkeep between passes: free what the fault path released, drain the fault-in log
    /// (so it does not overflow while nothing needs reclaiming), write back above the pool's high
    /// watermark, compact the file's and the pool's dead space, and, when <paramref name="sweep"/>,
    /// look for zombie slots.
    /// </summary>
    public void Maintain(bool sweep)
    {
        lock (_lock)
        {
            if (_stopping)
            {
                return;
            }
            _reaper.Drain();
            _clock.PullFaultLog();
            _slots.Pool.CompactIfFragmented();
            _slots.Node?.Tick(_regions, _slots);
            if (sweep)
            {
                _reaper.Sweep();
            }
        }
        _writeback?.Upkeep(); // outside the maintenance lock: writeback takes its I/O lock first
        if (_recompressor?.Due == true)
        {
            _recompressor.Request(); // evictions since its last pass (they may have made older copies cold), or a dictionary retiring
        }
    }

    /// <summary>Frees what the fault path released, unless a pass holds the lock (then the pass does it): for stats.</summary>
    public void TryDrain()
    {
        if (_lock.TryEnter())
        {
            try
            {
                if (!_stopping)
                {
                    _reaper.Drain();
                }
            }
            finally
            {
                _lock.Exit();
            }
        }
    }

    /// <summary>Runs <paramref name="action"/> under the maintenance lock (pool compaction, forced writeback, sweeps); false once stopping.</summary>
    public bool Exclusive(Action action)
    {
        lock (_lock)
        {
            if (_stopping)
            {
                return false;
            }
            action();
            return true;
        }
    }

    /// <summary>
    /// Applies <see cref="CramAdvice.Cold"/>, <see cref="CramAdvice.Hot"/> or <see cref="CramAdvice.Normal"/>
    /// to the pages [start, end) of a region: the hot set changes and, for cold, the range's resident
    /// pages (listed by <paramref name="listResident"/>, which fills a buffer from a page on and
    /// returns how many it found and where to go on) lose their referenced bit and join the cold
    /// queue. Under the maintenance lock, so no pass sees half of it. False if the engine is stopping
    /// or the region went away.
    /// </summary>
    public bool Advise(RegionMapping region, ulong start, ulong end, CramAdvice advice, ListPages listResident)
    {
        lock (_lock)
        {
            if (_stopping || region.Detached)
            {
                return false;
            }
            if (advice == CramAdvice.Hot)
            {
                region.HotPages.Add(start, end);
                region.ColdPages.Remove(start, end);
                _clock.ForgetCold(region.Id, start, end);
                return true;
            }
            region.HotPages.Remove(start, end);
            _clock.ForgetCold(region.Id, start, end);
            if (advice != CramAdvice.Cold)
            {
                region.ColdPages.Remove(start, end);
                return true;
            }
            region.ColdPages.Add(start, end); // the recompressor takes its evicted pages at once (cramnative.h, "Codecs")
            _recompressor?.Request();
            _clock.PullFaultLog();
            ulong[] pages = _victims; // free between passes, and we hold the pass lock
            for (ulong next = start; next < end;)
            {
                int found = listResident(next, end, pages, out next);
                for (int i = 0; i < found; i++)
                {
                    ulong* pte = region.PageTableEntries + pages[i];
                    ulong p = PageTableEntry.Load(pte);
                    if ((p & (PageTableEntry.Referenced | PageTableEntry.Active)) != 0 && PageTableEntry.State(p) is PageState.Dirty or PageState.Clean)
                    {
                        // Out of the working set too: the application knows better. A fault that wins sets referenced again: its access is newer.
                        PageTableEntry.TryTransition(pte, p, p & ~(PageTableEntry.Referenced | PageTableEntry.Active));
                    }
                    _clock.EnqueueCold(FaultLogEntry.Encode(region.Id, pages[i]));
                }
            }
            return true;
        }
    }

    /// <summary>Lists up to <paramref name="pages"/>.Length resident pages of [start, end) from <paramref name="start"/> on; <paramref name="next"/> is where to go on.</summary>
    public delegate int ListPages(ulong start, ulong end, ulong[] pages, out ulong next);

    /// <summary>True once the engine is being disposed: a caller inside <see cref="Pause"/> must not touch native state.</summary>
    public bool Stopping => _stopping;

    /// <summary>Holds off every pass until the scope ends: for tearing a region down.</summary>
    public Lock.Scope Pause() => _lock.EnterScope();

    /// <summary>Forgets a region's pages; call inside <see cref="Pause"/>, after the service was fenced out of it.</summary>
    public void ForgetRegion(uint regionId)
    {
        if (!_lock.IsHeldByCurrentThread)
        {
            throw new InvalidOperationException("ForgetRegion needs the reclaimer paused.");
        }
        _clock.ForgetRegion(regionId);
    }

    /// <summary>Waits for a pass in progress, then makes every later pass return at once (the engine is being disposed).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _stopping = true;
            _pipeline.Dispose();
        }
    }
}
