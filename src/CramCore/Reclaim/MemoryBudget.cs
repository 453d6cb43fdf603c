using CramCore.Internals;
using CramCore.Native;

namespace CramCore.Reclaim;

/// <summary>
/// Decides the resident limit the engine holds, from <see cref="CramOptions.ResidentLimitBytes"/>
/// and <see cref="CramOptions.MemoryLimitBytes"/> (cramnative.h, "Memory limit"), and says when the
/// memory limit cannot be held. Memory used is resident region pages + the compressed pool's pages +
/// metadata (<see cref="MemoryUsedBytes"/>); the resident limit is the lower of the user's and what
/// the memory limit leaves after the pool and metadata, set a little lower so that the fault
/// service's hard limit (where faults wait for reclaim) lands on it. As reclaim fills the pool the
/// limit falls, so pages are evicted further until the sum fits. It never falls below
/// <see cref="FloorPages"/>; memory over the limit with the resident limit there, or with reclaim
/// finding nothing to evict, is the limit not holding: <see cref="Check"/> then tells the fault
/// service to make every page added wait (<see cref="CramOptions.MemoryLimitWait"/>) and raises
/// <see cref="CramTierEventKind.MemoryLimitExceeded"/>; once memory is back under, the wait ends
/// and <see cref="CramTierEventKind.MemoryLimitRestored"/> follows. <see cref="Update"/> runs on the
/// reclaim worker before every pass and when the user changes the resident limit; both take the
/// budget's own lock (cramnative.h, lock 1a: taken alone or under the engine's lock; under it only
/// the metadata measure's leaf locks and native calls that take no lock).
/// </summary>
internal sealed unsafe class MemoryBudget
{
    /// <summary>The least resident limit the memory limit can impose (the smallest resident limit there is).</summary>
    public const long FloorPages = 64;

    private readonly INativeEngine _engine;
    private readonly NativeShared* _shared;
    private readonly Reclaimer _reclaimer;
    private readonly MemoryUse _use;
    private readonly TierEventChannel _events;
    private readonly ulong _waitUs;
    private readonly Lock _lock = new();
    private long _userLimitPages;
    private long _limitPages = -1; // the resident limit given to the service, -1 before the first Update
    private bool _atFloor;
    private bool _exceeded;
    private long _exceededEpisodes;

    /// <summary>A budget for <paramref name="memoryLimitBytes"/> (0: none) and the user's resident limit <paramref name="userLimitPages"/> (0: none); <paramref name="use"/> measures memory use, <paramref name="events"/> takes the events.</summary>
    public MemoryBudget(INativeEngine engine, NativeShared* shared, Reclaimer reclaimer, long memoryLimitBytes, TimeSpan wait, long userLimitPages,
        MemoryUse use, TierEventChannel events)
    {
        _engine = engine;
        _shared = shared;
        _reclaimer = reclaimer;
        MemoryLimitBytes = memoryLimitBytes;
        _waitUs = (ulong)wait.TotalMicroseconds;
        _userLimitPages = userLimitPages;
        _use = use;
        _events = events;
    }

    /// <summary><see cref="CramOptions.MemoryLimitBytes"/> (0: none).</summary>
    public long MemoryLimitBytes { get; }

    /// <summary>Whether there is any limit to hold (a resident or a memory limit).</summary>
    public bool Limited => MemoryLimitBytes > 0 || Volatile.Read(ref _userLimitPages) > 0;

    /// <summary>The resident limit in force now, in pages (0: none).</summary>
    public long LimitPages => Math.Max(0, Volatile.Read(ref _limitPages));

    /// <summary>Whether the memory limit cannot be held now (<see cref="CramTierEventKind.MemoryLimitExceeded"/> was raised and faults wait).</summary>
    public bool Exceeded => Volatile.Read(ref _exceeded);

    /// <summary>Times the memory limit could not be held (cumulative).</summary>
    public long ExceededEpisodes => Interlocked.Read(ref _exceededEpisodes);

    /// <summary>Memory the limit counts: resident region pages, the pool's pages and metadata.</summary>
    public long MemoryUsedBytes =>
        _use.ResidentBytes + _use.PoolBytes + _use.MetadataBytes;

    /// <summary>Sets the user's resident limit (pages, 0: none) and applies the result at once.</summary>
    public void SetUserLimit(long pages)
    {
        lock (_lock)
        {
            Volatile.Write(ref _userLimitPages, pages);
            UpdateLocked();
        }
    }

    /// <summary>Recomputes the resident limit from memory use now and gives it to the fault service and reclaim if it changed. Returns it (pages, 0: none).</summary>
    public long Update()
    {
        lock (_lock)
        {
            return UpdateLocked();
        }
    }

    private long UpdateLocked()
    {
        long limit = Volatile.Read(ref _userLimitPages);
        _atFloor = false;
        if (MemoryLimitBytes > 0)
        {
            long room = (MemoryLimitBytes - _use.PoolBytes - _use.MetadataBytes) >> SharedLayout.PageShift;
            // The service lets resident memory pass the soft limit by the hard limit's margin before faults
            // wait; where the memory limit binds, put the hard limit on it.
            long soft = Math.Min(room - 32, room * 40 / 41);
            if (soft <= FloorPages)
            {
                soft = FloorPages;
                _atFloor = true;
            }
            limit = limit == 0 ? soft : Math.Min(limit, soft);
        }
        if (limit != _limitPages)
        {
            ulong hard = limit == 0 ? 0 : (ulong)ReclaimWatermarks.HardLimitPages(limit);
            Interop.ThrowIfFailed(_engine.SetResidentLimit((ulong)limit, hard), "Setting the resident limit");
            Volatile.Write(ref _limitPages, limit);
            _reclaimer.LimitPages = limit;
        }
        return limit;
    }

    /// <summary>
    /// After reclaim has done what it can (<paramref name="stalled"/>: it found nothing to evict):
    /// enters or leaves the state where the memory limit cannot be held, telling the fault service
    /// and raising the event on each change.
    /// </summary>
    public void Check(bool stalled)
    {
        if (MemoryLimitBytes == 0)
        {
            return;
        }
        lock (_lock)
        {
            long resident = _use.ResidentBytes, pool = _use.PoolBytes, metadata = _use.MetadataBytes;
            long used = resident + pool + metadata;
            if (!_exceeded && used > MemoryLimitBytes && (stalled || _atFloor))
            {
                _exceeded = true;
                Interlocked.Increment(ref _exceededEpisodes);
                Volatile.Write(ref _shared->MemoryWaitUs, _waitUs);
                _events.Post(CramTierEventKind.MemoryLimitExceeded,
                    $"Memory use ({used >> 20} MiB: resident {resident >> 20} MiB, pool {pool >> 20} MiB, metadata {metadata >> 20} MiB) is over MemoryLimitBytes ({MemoryLimitBytes >> 20} MiB) and reclaim can free no more: " +
                    (_atFloor ? "the pool and metadata fill the limit. " : "the resident pages do not compress, or the pool is full. ") +
                    $"Every fault that adds a page now waits up to {TimeSpan.FromMicroseconds(_waitUs).TotalMilliseconds} ms (MemoryLimitWait), then proceeds. Set BackingFile, raise MemoryLimitBytes, or free memory (Advise DontNeed, dispose regions).");
            }
            else if (_exceeded && used <= MemoryLimitBytes)
            {
                // Posted before the flag flips: whoever sees Exceeded false finds the event queued.
                _events.Post(CramTierEventKind.MemoryLimitRestored, $"Memory use ({used >> 20} MiB) is back under MemoryLimitBytes ({MemoryLimitBytes >> 20} MiB); faults no longer wait.");
                Volatile.Write(ref _shared->MemoryWaitUs, 0ul);
                Volatile.Write(ref _exceeded, false);
            }
        }
    }
}
