using CramCore.Storage;
using CramCore.Internals;
using CramCore.Native;

namespace CramCore.Reclaim;

/// <summary>
/// Chooses victims: second chance over fault-in order. The fault service appends every page it
/// makes resident to the native fault-in log; the clock drains the log into a FIFO and, asked for
/// victims, takes pages from the front: a page with the referenced bit gets it cleared and goes to
/// the back (its second chance); a DIRTY page is claimed (DIRTY→EVICTING) for compression; a CLEAN
/// page (already stored) is a victim as it is; a writable CRAM page is handed back to be re-placed
/// (read-only, its budget released). Other states are skipped: evicted, incompressible
/// (re-logged by the service when written) or held by the service. If the log overflowed, the FIFO
/// is rebuilt from the page tables in address order. Not thread-safe: the reclaimer's pass lock.
/// The application's hints come first (<see cref="CramRegion.Advise"/>): pages advised cold wait in
/// a queue of their own that is drained before the FIFO, with no second chance; pages advised hot
/// are passed over (back to the end of the FIFO) while <c>spareHot</c> is set.
/// The working set (cramnative.h, "Working set"): a page the service brought back ACTIVE (it
/// refaulted soon after its eviction) is moved from the FIFO to an active list instead of being
/// evicted. The active list holds at most <see cref="ActiveLimit"/> pages; past it the oldest are
/// demoted (ACTIVE and referenced cleared) to the end of the FIFO, and when nothing else is left to
/// evict, active pages are demoted a batch at a time, so the resident limit always holds. A page
/// swapped in from far comes back on TRIAL: it waits in a short FIFO of its own, evicted first
/// (without a second chance) whenever that holds more than <see cref="TrialLimit"/> pages.
/// </summary>
internal sealed unsafe class VictimClock(INativeEngine engine, NativeShared* shared, RegionTable regions)
{
    private readonly ulong[] _found = new ulong[4096];
    private readonly FifoQueue<ulong> _queue = new();
    private readonly FifoQueue<ulong> _cold = new();
    private readonly FifoQueue<ulong> _active = new();
    private readonly FifoQueue<ulong> _trial = new();
    private ulong _seenLogOverflows;

    /// <summary>Pages waiting in the FIFO, the cold queue, the trial FIFO and the active list.</summary>
    public int Count => _queue.Count + _cold.Count + _active.Count + _trial.Count;

    /// <summary>Bytes of the four queues' rings (metadata of the memory limit).</summary>
    public long MetadataBytes => _queue.CapacityBytes + _cold.CapacityBytes + _active.CapacityBytes + _trial.CapacityBytes;

    /// <summary>The most pages the trial FIFO holds before its oldest go first; the reclaimer sets it with <see cref="ActiveLimit"/>.</summary>
    public long TrialLimit { get; set; }

    /// <summary>The most pages the active list keeps; the reclaimer sets it from the resident limit before each pass.</summary>
    public long ActiveLimit { get; set; }

    /// <summary>Pages demoted from the active list (cumulative).</summary>
    public long Demotions { get; private set; }

    /// <summary>Demotes the oldest active pages until the list is within <see cref="ActiveLimit"/>, or <paramref name="atLeast"/> of them.</summary>
    public void Balance(int atLeast = 0)
    {
        while ((_active.Count > ActiveLimit || atLeast-- > 0) && _active.TryDequeue(out ulong entry))
        {
            ulong* pte = Locate(entry, out _);
            if (pte is null)
            {
                continue;
            }
            for (ulong p = PageTableEntry.Load(pte); (p & PageTableEntry.Active) != 0; p = PageTableEntry.Load(pte))
            {
                if (PageTableEntry.TryTransition(pte, p, p & ~(PageTableEntry.Active | PageTableEntry.Referenced)))
                {
                    Demotions++;
                    break;
                }
            }
            _queue.Enqueue(entry); // inactive now: evicted in its turn unless it refaults back
        }
    }

    /// <summary>Queues a resident page advised cold: it is looked at before any page of the FIFO.</summary>
    public void EnqueueCold(ulong entry) => _cold.Enqueue(entry);

    /// <summary>Forgets the cold queue's pages of a range (advised otherwise since).</summary>
    public void ForgetCold(uint regionId, ulong start, ulong end) =>
        _cold.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId || FaultLogEntry.PageOf(entry) < start || FaultLogEntry.PageOf(entry) >= end);

    /// <summary>Puts a page back at the end of the FIFO (a victim that could not be evicted now).</summary>
    public void Requeue(ulong entry) => _queue.Enqueue(entry);

    /// <summary>Puts pages back at the front of the FIFO, in the order given: victims that are still the coldest (a full pool could not take them), for the next pass to take first.</summary>
    public void ReturnToFront(ReadOnlySpan<ulong> entries)
    {
        for (int i = entries.Length - 1; i >= 0; i--)
        {
            _queue.EnqueueFront(entries[i]);
        }
    }

    /// <summary>
    /// Takes up to <paramref name="victims"/>.Length victims (of region <paramref name="only"/>, if
    /// given), looking at no more than <paramref name="budget"/> entries: first the cold queue, then
    /// the FIFO. Claimed pages are EVICTING and marked in <paramref name="claimed"/>; the others were
    /// CLEAN when chosen. Hot pages are passed over while <paramref name="spareHot"/>, and counted in
    /// <paramref name="hotSpared"/>. Returns how many.
    /// </summary>
    public int Select(Span<ulong> victims, Span<bool> claimed, RegionMapping? only, ref long budget, List<ulong> writablePlaced,
        bool spareHot, ref long hotSpared)
    {
        int n = 0;
        Balance();
        while (n < victims.Length && budget-- > 0)
        {
            // The order: pages advised cold; the trial FIFO's oldest while it is over its limit; the
            // FIFO; what is left on trial; and, when nothing inactive is left, the working set.
            bool cold = _cold.TryDequeue(out ulong entry), trial = false;
            if (!cold && !(trial = _trial.Count > TrialLimit && _trial.TryDequeue(out entry)) && !_queue.TryDequeue(out entry) &&
                !(trial = _trial.TryDequeue(out entry)))
            {
                if (_active.Count == 0)
                {
                    break;
                }
                Balance(atLeast: victims.Length - n); // nothing inactive is left: the working set has to give
                continue;
            }
            ulong* pte = Locate(entry, out RegionMapping? region);
            if (pte is null)
            {
                continue; // the region went away
            }
            if (only is not null && region != only)
            {
                (cold ? _cold : trial ? _trial : _queue).Enqueue(entry);
                continue;
            }
            ulong p = PageTableEntry.Load(pte);
            if (spareHot && !region!.HotPages.IsEmpty && PageTableEntry.State(p) is PageState.Dirty or PageState.Clean && region.HotPages.Contains(FaultLogEntry.PageOf(entry)))
            {
                _queue.Enqueue(entry); // advised hot: kept while something else can go
                hotSpared++;
                continue;
            }
            if (!cold && InWorkingSet(p))
            {
                _active.Enqueue(entry); // in the working set: onto the active list, not evicted
                continue;
            }
            if (!cold && !trial && OnTrial(p))
            {
                _trial.Enqueue(entry); // swapped in from far: waits on trial, evicted early
                continue;
            }
            cold |= trial; // neither gets a second chance
            switch (PageTableEntry.State(p))
            {
                case PageState.Dirty or PageState.Clean or PageState.PlacedWritable when !cold && (p & PageTableEntry.Referenced) != 0:
                    PageTableEntry.TryTransition(pte, p, p & ~PageTableEntry.Referenced);
                    _queue.Enqueue(entry); // second chance
                    break;
                case PageState.Dirty:
                    if (PageTableEntry.TryTransition(pte, p, PageTableEntry.Make(PageState.Evicting, 0)))
                    {
                        claimed[n] = true;
                        victims[n++] = entry;
                    }
                    break;
                case PageState.Clean:
                    claimed[n] = false;
                    victims[n++] = entry;
                    break;
                case PageState.PlacedWritable:
                    writablePlaced.Add(entry); // re-placed by the reclaimer: read-only again, budget released
                    break;
                case PageState.Installing:
                case PageState.Fetching:
                    _queue.Enqueue(entry); // readahead is mapping it, or a fetch from the remote store: CLEAN (or DIRTY) soon
                    break;
                default:
                    break;
            }
        }
        return n;
    }

    /// <summary>
    /// Frees the pool copies of CLEAN pages, oldest in the FIFO first, until about
    /// <paramref name="bytesWanted"/> stored bytes are released: CLEAN(slot)→DIRTY by CAS (a write
    /// fault or a drop that wins the race keeps the page; the page stays write-protected, and its next
    /// write clears the stray protection), then the slot is freed. The pages stay queued, so reclaim
    /// compresses them again when their turn comes. The kernel frees swap cache the same way when
    /// swap fills. Looks at the oldest <see cref="ReleaseScanLimit"/> entries at most, and at none
    /// when no page keeps a copy: a full pool asks on every pass, and a walk of the whole FIFO that
    /// finds nothing (a fill, where every page is dirty; copies all in the backing file) cost a fill
    /// with the file tier 7 % of its CPU. Returns the stored bytes released.
    /// </summary>
    public long ReleaseCleanCopies(long bytesWanted, SlotTable slots)
    {
        long released = 0, looked = 0;
        if (Volatile.Read(ref shared->Stats.CleanCopyPages) == 0)
        {
            return 0;
        }
        // Pages on trial first (swapped in from far: the likeliest to stay cold), then the FIFO; the
        // working set keeps its copies (a demoted page is then evicted by a drop alone).
        foreach (FifoQueue<ulong> queue in (ReadOnlySpan<FifoQueue<ulong>>)[_trial, _queue])
        {
            if (released >= bytesWanted)
            {
                break;
            }
            queue.Visit(Release);
        }
        return released;

        bool Release(ulong entry)
        {
            if (++looked > ReleaseScanLimit)
            {
                return false;
            }
            ulong* pte = Locate(entry, out _);
            if (pte is null)
            {
                return true;
            }
            ulong p = PageTableEntry.Load(pte);
            if (PageTableEntry.State(p) != PageState.Clean || PageTableEntry.Slot(p) == SharedLayout.ZeroSlot)
            {
                return true;
            }
            ulong slot = PageTableEntry.Slot(p);
            NativeSlot* s = slots.Get(slot);
            if (s->Backend != SlotBackend.Pool)
            {
                return true; // a copy in the file or on the node costs the pool nothing
            }
            int length = s->Length;
            if (!PageTableEntry.TryTransition(pte, p, PageTableEntry.Make(PageState.Dirty, 0)))
            {
                return true; // written or dropped meanwhile: theirs
            }
            slots.CountCleanCopy(slot, -1);
            slots.Free(slot);
            released += length;
            return released < bytesWanted;
        }
    }

    /// <summary>Queue entries one <see cref="ReleaseCleanCopies"/> looks at, at most: the coldest pages' copies are the ones to let go.</summary>
    public const int ReleaseScanLimit = 16 * EvictionPipeline.BatchPages;

    /// <summary>
    /// Most entries the queues may hold: twice the resident pages, and some slack. Every entry names
    /// a page that was resident when it was queued; a page can be queued again before its old entry
    /// comes up (it refaulted, or was logged again), so duplicates accumulate while reclaim cannot
    /// evict (a full pool in ghost mode, a stalled limit). Past this bound the FIFO is rebuilt from the
    /// page tables, as after a fault-log overflow, so the queues' memory follows what they describe.
    /// </summary>
    public long MaxEntries => 2 * (long)Volatile.Read(ref shared->Stats.ResidentPages) + SharedLayout.FaultLogSize / 16;

    /// <summary>Appends the pages the service made resident, in fault order, to the FIFO; rebuilds it from the page tables when log entries were lost or the queues outgrew <see cref="MaxEntries"/>.</summary>
    public void PullFaultLog()
    {
        ulong overflows = Volatile.Read(ref shared->Stats.FaultLogOverflows);
        ulong head = Volatile.Read(ref shared->FaultLogHead);
        ulong tail = shared->FaultLogTail;
        if (overflows != _seenLogOverflows)
        {
            _seenLogOverflows = overflows;
            Rebuild();
        }
        else
        {
            ulong* log = (ulong*)shared->FaultLog;
            for (ulong t = tail; t < head; t++)
            {
                Route(log[t & (SharedLayout.FaultLogSize - 1)]);
            }
            if (Count > MaxEntries)
            {
                Rebuilds++;
                Rebuild();
            }
        }
        Volatile.Write(ref shared->FaultLogTail, head);
    }

    /// <summary>Times the queues outgrew <see cref="MaxEntries"/> and were rebuilt (tests).</summary>
    public long Rebuilds { get; private set; }

    /// <summary>
    /// The FIFO anew from the page tables (address order), walking only the blocks first touch marked
    /// (FindPages), so it costs what was touched; active and trial pages are found again in it and
    /// moved back by their page-table bits. The cold queue keeps only pages still resident.
    /// </summary>
    private void Rebuild()
    {
        _queue.Clear();
        _active.Clear();
        _trial.Clear();
        _cold.Retain(entry =>
        {
            ulong* pte = Locate(entry, out _);
            return pte is not null && PageTableEntry.State(PageTableEntry.Load(pte)) is PageState.Dirty or PageState.Clean or PageState.Installing or PageState.Fetching;
        });
        // INSTALLING: a readahead or prefetch page being mapped, CLEAN in a moment; FETCHING: a remote fetch, CLEAN or
        // DIRTY once it lands (Select requeues both until then).
        const uint queued = 1u << (int)PageState.Dirty | 1u << (int)PageState.Clean | 1u << (int)PageState.PlacedWritable |
            1u << (int)PageState.Installing | 1u << (int)PageState.Fetching;
        foreach (RegionMapping region in regions.Snapshot())
        {
            fixed (ulong* found = _found)
            {
                for (ulong next = 0; next < region.PageCount;)
                {
                    Interop.ThrowIfFailed(engine.FindPages(region.Id, next, region.PageCount, queued, found, _found.Length, out int n, out ulong after),
                        "Listing a region's resident pages");
                    for (int i = 0; i < n; i++)
                    {
                        _queue.Enqueue(FaultLogEntry.Encode(region.Id, found[i]));
                    }
                    next = after;
                }
            }
        }
    }

    /// <summary>
    /// Queues a page the service just made resident where it belongs: the active list if it came back
    /// active, the trial FIFO if it came from far, the FIFO otherwise. Sorting them as they arrive
    /// (not when the FIFO turns to them) is what lets a page on trial go early.
    /// </summary>
    private void Route(ulong entry)
    {
        ulong* pte = Locate(entry, out _);
        ulong p = pte is null ? 0 : PageTableEntry.Load(pte);
        if (InWorkingSet(p))
        {
            _active.Enqueue(entry);
        }
        else if (OnTrial(p))
        {
            _trial.Enqueue(entry);
        }
        else
        {
            _queue.Enqueue(entry);
        }
    }

    /// <summary>The page-table entry a queue entry names, or null once its region went away (or no longer has that page).</summary>
    private ulong* Locate(ulong entry, out RegionMapping? region)
    {
        region = regions.Get(FaultLogEntry.RegionOf(entry));
        ulong page = FaultLogEntry.PageOf(entry);
        return region is null || page >= region.PageCount ? null : region.PageTableEntries + page;
    }

    /// <summary>A resident page the service brought back active: the working set keeps it.</summary>
    private static bool InWorkingSet(ulong p) => (p & PageTableEntry.Active) != 0 && PageTableEntry.State(p) is PageState.Dirty or PageState.Clean;

    /// <summary>A page swapped in from far, not written since: it waits on trial.</summary>
    private static bool OnTrial(ulong p) => (p & PageTableEntry.Trial) != 0 && PageTableEntry.State(p) == PageState.Clean;

    /// <summary>Forgets every page of a region (being torn down, after the service was fenced out of it).</summary>
    public void ForgetRegion(uint regionId)
    {
        PullFaultLog();
        _queue.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId);
        _cold.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId);
        _active.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId);
        _trial.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId);
    }
}
