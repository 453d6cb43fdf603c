namespace CramCore.Reclaim;

/// <summary>
/// One reclaim pass at a time: pull the fault-in log, take victims from the <see cref="VictimClock"/>,
/// sort them once (by region, then page; duplicates dropped), and hand them to the
/// <see cref="EvictionPipeline"/>, batch after batch, until the target is met, the pool is full or
/// nothing evictable is left. Called by the <see cref="ReclaimWorker"/> and by
/// <see cref="CramRegion.Reclaim"/>; a region is torn down under <see cref="Pause"/>.
/// </summary>
internal sealed unsafe class Reclaimer : IDisposable
{
    private readonly SlotTable _slots;
    private readonly RegionTable _regions;
    private readonly VictimClock _clock;
    private readonly EvictionPipeline _pipeline;
    private readonly Lock _lock = new();
    private readonly ulong[] _victims = new ulong[EvictionPipeline.BatchPages];
    private readonly bool[] _claimed = new bool[EvictionPipeline.BatchPages];
    private volatile bool _stopping;

    public Reclaimer(NativeShared* shared, RegionTable regions, SlotTable slots, IPageOperations operations, CramOptions options)
    {
        _slots = slots;
        _regions = regions;
        _clock = new VictimClock(shared, regions);
        _pipeline = new EvictionPipeline(operations, slots, Counters, options);
    }

    public ReclaimCounters Counters { get; } = new();

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
            _clock.PullFaultLog();
            long evicted = 0;
            long budget = 2L * _clock.Count + EvictionPipeline.BatchPages;
            bool poolFull = false;
            while (evicted < targetPages && _clock.Count > 0 && budget > 0 && !_stopping && !poolFull)
            {
                int want = (int)Math.Min(EvictionPipeline.BatchPages, targetPages - evicted);
                int n = _clock.Select(_victims.AsSpan(0, want), _claimed, only, ref budget);
                n = SortOnce(n);
                evicted += _pipeline.EvictBatch(_regions, _victims.AsSpan(0, n), _claimed.AsSpan(0, n), _clock, out poolFull);
            }
            return evicted;
        }
    }

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

    /// <summary>Drains the fault-in log into the clock, so it does not overflow while nothing needs reclaiming.</summary>
    public void PullFaultLog()
    {
        lock (_lock)
        {
            if (!_stopping)
            {
                _clock.PullFaultLog();
            }
        }
    }

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
