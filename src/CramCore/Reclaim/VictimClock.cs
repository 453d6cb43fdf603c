using CramCore.Storage;

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
/// </summary>
internal sealed unsafe class VictimClock(NativeShared* shared, RegionTable regions)
{
    private readonly FifoQueue<ulong> _queue = new();
    private readonly FifoQueue<ulong> _cold = new();
    private ulong _seenLogOverflows;

    /// <summary>Pages waiting in the FIFO and in the cold queue.</summary>
    public int Count => _queue.Count + _cold.Count;

    /// <summary>Queues a resident page advised cold: it is looked at before any page of the FIFO.</summary>
    public void EnqueueCold(ulong entry) => _cold.Enqueue(entry);

    /// <summary>Forgets the cold queue's pages of a range (advised otherwise since).</summary>
    public void ForgetCold(uint regionId, ulong start, ulong end) =>
        _cold.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId || FaultLogEntry.PageOf(entry) < start || FaultLogEntry.PageOf(entry) >= end);

    /// <summary>Puts a page back at the end of the FIFO (a victim that could not be evicted now).</summary>
    public void Requeue(ulong entry) => _queue.Enqueue(entry);

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
        while (n < victims.Length && budget-- > 0)
        {
            bool cold = _cold.TryDequeue(out ulong entry);
            if (!cold && !_queue.TryDequeue(out entry))
            {
                break;
            }
            RegionMapping? region = regions.Get(FaultLogEntry.RegionOf(entry));
            ulong page = FaultLogEntry.PageOf(entry);
            if (region is null || page >= region.PageCount)
            {
                continue; // the region went away
            }
            if (only is not null && region != only)
            {
                (cold ? _cold : _queue).Enqueue(entry);
                continue;
            }
            ulong* pte = region.PageTableEntries + page;
            ulong p = PageTableEntry.Load(pte);
            if (spareHot && !region.HotPages.IsEmpty && PageTableEntry.State(p) is PageState.Dirty or PageState.Clean && region.HotPages.Contains(page))
            {
                _queue.Enqueue(entry); // advised hot: kept while something else can go
                hotSpared++;
                continue;
            }
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
    /// swap fills. Returns the stored bytes released.
    /// </summary>
    public long ReleaseCleanCopies(long bytesWanted, SlotTable slots)
    {
        long released = 0;
        _queue.Visit(entry =>
        {
            RegionMapping? region = regions.Get(FaultLogEntry.RegionOf(entry));
            ulong page = FaultLogEntry.PageOf(entry);
            if (region is null || page >= region.PageCount)
            {
                return true;
            }
            ulong* pte = region.PageTableEntries + page;
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
        });
        return released;
    }

    /// <summary>Appends the pages the service made resident, in fault order, to the FIFO.</summary>
    public void PullFaultLog()
    {
        ulong overflows = Volatile.Read(ref shared->Stats.FaultLogOverflows);
        ulong head = Volatile.Read(ref shared->FaultLogHead);
        ulong tail = shared->FaultLogTail;
        if (overflows != _seenLogOverflows)
        {
            // Entries were lost: rebuild the FIFO from the page tables (address order).
            _seenLogOverflows = overflows;
            _queue.Clear();
            foreach (RegionMapping region in regions.Snapshot())
            {
                for (ulong page = 0; page < region.PageCount; page++)
                {
                    if (PageTableEntry.State(PageTableEntry.Load(region.PageTableEntries + page)) is PageState.Dirty or PageState.Clean or PageState.PlacedWritable)
                    {
                        _queue.Enqueue(FaultLogEntry.Encode(region.Id, page));
                    }
                }
            }
        }
        else
        {
            ulong* log = (ulong*)shared->FaultLog;
            for (ulong t = tail; t < head; t++)
            {
                _queue.Enqueue(log[t & (SharedLayout.FaultLogSize - 1)]);
            }
        }
        Volatile.Write(ref shared->FaultLogTail, head);
    }

    /// <summary>Forgets every page of a region (being torn down, after the service was fenced out of it).</summary>
    public void ForgetRegion(uint regionId)
    {
        PullFaultLog();
        _queue.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId);
        _cold.Retain(entry => FaultLogEntry.RegionOf(entry) != regionId);
    }
}
