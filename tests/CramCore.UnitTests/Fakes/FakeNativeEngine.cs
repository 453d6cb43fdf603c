using System.Runtime.InteropServices;

namespace CramCore.Tests.Fakes;

/// <summary>
/// An in-memory native engine: regions in ordinary memory, page tables and the shared block in
/// native memory, and the state machine of cramnative.h run in C# — what the fault service does
/// (first touch, read and write swap-in, write-protect faults, promotion on the CRAM node) on the
/// test's call, and what the batched native operations do (<see cref="INativeEngine"/>) when
/// reclaim, writeback, the reaper and the CRAM node call them. No userfaultfd, no thread: a unit
/// test drives faults by calling <see cref="Read"/> and <see cref="Write"/> before it touches a
/// page, where the real service would be woken by the access. Write protection is tracked per page
/// (a write to a protected page is the WP fault). Every page-table write is checked against
/// cramnative.h's transition table (as the CRAM_DEBUG build does).
/// </summary>
internal sealed unsafe class FakeNativeEngine : INativeEngine, IDisposable
{
    private const int P = SharedLayout.PageSize;
    private readonly List<(IntPtr Base, IntPtr Table)> _allocations = [];
    private readonly HashSet<(uint Region, ulong Page)> _protected = [];
    private readonly byte* _buffer = (byte*)NativeMemory.AlignedAlloc(3 * P, P);
    private uint _nextRegion;

    public FakeNativeEngine()
    {
        Shared = (NativeShared*)NativeMemory.AllocZeroed((nuint)sizeof(NativeShared));
        Shared->FaultLog = (ulong)NativeMemory.AllocZeroed((nuint)SharedLayout.FaultLogSize * sizeof(ulong));
        Shared->BackingFd = -1;
    }

    public NativeShared* Shared { get; }

    public RegionTable Regions { get; } = new();

    /// <summary>Stored copies that failed their checksum on a swap-in (the real service poisons the page).</summary>
    public int ChecksumFailures { get; private set; }

    /// <summary>A region of <paramref name="pages"/> pages, all EMPTY.</summary>
    public RegionMapping CreateRegion(int pages)
    {
        RegionCreate((ulong)pages * P, out uint id, out ulong baseAddress, out ulong pageTable);
        var region = new RegionMapping(id, (byte*)baseAddress, (ulong*)pageTable, (long)pages * P);
        Regions.Add(region); // as EngineRegions.Create does after the native call
        return region;
    }

    public byte* Page(RegionMapping r, ulong page) => r.BasePointer + (long)page * P;

    public PageState State(RegionMapping r, ulong page) => PageTableEntry.State(PageTableEntry.Load(r.PageTableEntries + page));

    public bool IsProtected(RegionMapping r, ulong page) => _protected.Contains((r.Id, page));

    // ------------------------------------------------------------------ the fault service's side

    /// <summary>What a read of the page faults in: a first touch (EMPTY → DIRTY, zeros) or a read swap-in (EVICTED → CLEAN, write-protected).</summary>
    public void Read(RegionMapping r, ulong page)
    {
        NoteActivity();
        ulong pte = PageTableEntry.Load(r.PageTableEntries + page);
        switch (PageTableEntry.State(pte))
        {
            case PageState.Empty:
                FirstTouch(r, page);
                break;
            case PageState.Evicted:
                SwapIn(r, page, pte, write: false);
                break;
        }
    }

    /// <summary>What a write to the page faults in: a first touch, a write swap-in (EVICTED → DIRTY), or a write-protect fault (CLEAN, EVICTING, INCOMPRESSIBLE, DIRTY → UNPROTECTING → DIRTY; PLACED → writable in place or promoted).</summary>
    public void Write(RegionMapping r, ulong page)
    {
        NoteActivity();
        ulong* entry = r.PageTableEntries + page;
        ulong pte = PageTableEntry.Load(entry);
        switch (PageTableEntry.State(pte))
        {
            case PageState.Empty:
                FirstTouch(r, page);
                return;
            case PageState.Evicted:
                SwapIn(r, page, pte, write: true);
                return;
        }
        if (!_protected.Contains((r.Id, page)))
        {
            return; // mapped writable: no fault
        }
        PageState state = PageTableEntry.State(pte);
        if (state == PageState.Placed)
        {
            PlacedWrite(r, page, pte);
            return;
        }
        Store(entry, pte, PageTableEntry.Make(PageState.Unprotecting, 0), cas: true);
        _protected.Remove((r.Id, page));
        Store(entry, PageTableEntry.Make(PageState.Unprotecting, 0), PageTableEntry.Make(PageState.Dirty, 0) | PageTableEntry.Referenced | (pte & PageTableEntry.Active), cas: false);
        ref NativeStats s = ref Shared->Stats;
        switch (state)
        {
            case PageState.Clean:
                CleanCopyCount(PageTableEntry.Slot(pte), -1);
                StalePush(PageTableEntry.Slot(pte));
                s.FaultsWp++;
                break;
            case PageState.Evicting:
                s.FaultsWpCancel++;
                break;
            case PageState.Incompressible:
                s.FaultsWp++;
                break;
            default:
                s.FaultsSpurious++;
                break;
        }
        if (state != PageState.Dirty)
        {
            LogFault(r, page);
        }
    }

    /// <summary>Logs a page again, as a refault or a second write fault would: the duplicates reclaim's queues must not accumulate without bound.</summary>
    public void LogAgain(RegionMapping r, ulong page) => LogFault(r, page);

    private void FirstTouch(RegionMapping r, ulong page)
    {
        new Span<byte>(Page(r, page), P).Clear();
        Store(r.PageTableEntries + page, PageTableEntry.Make(PageState.Empty, 0), PageTableEntry.Make(PageState.Dirty, 0), cas: true);
        Shared->Stats.FaultsZero++;
        Shared->Stats.PopulatedPages++;
        Shared->Stats.ResidentPages++;
        LogFault(r, page);
    }

    private void SwapIn(RegionMapping r, ulong page, ulong pte, bool write, bool prefetch = false)
    {
        ulong id = PageTableEntry.Slot(pte);
        byte* page0 = Page(r, page);
        if (id == SharedLayout.ZeroSlot)
        {
            new Span<byte>(page0, P).Clear();
            Shared->Stats.FaultsSwapinSame++;
        }
        else
        {
            NativeSlot* slot = SlotOf(id);
            if (!ReadCopy(slot, page0))
            {
                ChecksumFailures++;
                throw new InvalidDataException($"slot {id}: the stored copy failed its checksum (the service would poison the page)");
            }
            if (!write)
            {
                Interlocked.Or(ref *(uint*)&slot->Length, (uint)SlotFlags.Referenced << 24);
            }
        }
        ulong next = write ? PageTableEntry.Make(PageState.Dirty, 0) | PageTableEntry.Referenced : PageTableEntry.Make(PageState.Clean, id);
        if (prefetch)
        {
            // readahead and prefetch set neither bit (cramnative.h, "Working set")
        }
        else if (RefaultActivates(pte))
        {
            next |= PageTableEntry.Active;
            Shared->Stats.WorkingsetActivations++;
        }
        else if (!write)
        {
            next |= PageTableEntry.Trial;
        }
        Store(r.PageTableEntries + page, pte, next, cas: true);
        if (write)
        {
            StalePush(id);
        }
        else
        {
            _protected.Add((r.Id, page));
            CleanCopyCount(id, +1);
        }
        LogFault(r, page);
        Shared->Stats.ResidentPages++;
    }

    /// <summary>Reads a remote extent's stored bytes (opened) into the destination: what remote.c does natively (FakeStack sets it with a remote tier).</summary>
    public delegate bool RemoteExtentReader(ulong location, int length, byte* destination);

    public RemoteExtentReader? RemoteReader { get; set; }

    /// <summary>The service's read half of every backend: the page's 4096 bytes into <paramref name="destination"/>, checksum checked.</summary>
    private bool ReadCopy(NativeSlot* slot, byte* destination)
    {
        switch (slot->Backend)
        {
            case SlotBackend.SameFilled:
                new Span<ulong>(destination, P / sizeof(ulong)).Fill(slot->Location);
                Shared->Stats.FaultsSwapinSame++;
                return true;
            case SlotBackend.Pool:
            case SlotBackend.File:
            case SlotBackend.Remote:
                byte* stored;
                if (slot->Backend == SlotBackend.Remote)
                {
                    // The native read half (remote.c) fetches and opens the extent; here the tier's managed client does.
                    if (RemoteReader is null || !RemoteReader(slot->Location, slot->Length, _buffer))
                    {
                        return false;
                    }
                    stored = _buffer;
                }
                else if (slot->Backend == SlotBackend.Pool)
                {
                    NativePoolHandle* handle = Record<NativePoolHandle>(Shared->HandleDirectory, slot->Location);
                    stored = (byte*)handle->Address;
                }
                else
                {
                    ulong first = slot->Location & ~(ulong)(P - 1);
                    ulong span = ((slot->Location + slot->Length + P - 1) & ~(ulong)(P - 1)) - first; // the covering pages, as file_read
                    if (Interop.CramNative.BackingFileRead(Shared->BackingFd, _buffer, span, first) != 0)
                    {
                        return false;
                    }
                    stored = _buffer + (slot->Location - first);
                    Shared->Stats.FaultsSwapinFile++;
                }
                if (Checksum.Crc32C(stored, slot->Length) != slot->Checksum)
                {
                    return false;
                }
                if ((NativeSlot.LoadFlags(slot) & SlotFlags.Raw) != 0)
                {
                    Buffer.MemoryCopy(stored, destination, P, slot->Length);
                    Shared->Stats.FaultsSwapinRaw++;
                    return true;
                }
                byte flags = NativeSlot.LoadFlags(slot);
                if ((flags & SlotFlags.Zstd) != 0)
                {
                    Shared->Stats.FaultsSwapinZstd++;
                    return _zstd.Decompress(stored, slot->Length, SlotFlags.Dictionary(flags), destination);
                }
                Shared->Stats.FaultsSwapinLz4++;
                return Interop.Lz4.DecompressSafe(stored, destination, slot->Length, P) == P;
            default:
                throw new InvalidOperationException($"a swap-in from backend {slot->Backend}");
        }
    }

    /// <summary>A write to a PLACED page: writable in place within the budget and the ledger, else promoted (cramnative.h, "CRAM node").</summary>
    private void PlacedWrite(RegionMapping r, ulong page, ulong pte)
    {
        ref NativeStats s = ref Shared->Stats;
        ulong id = PageTableEntry.Slot(pte);
        bool control = Shared->CramWriteControl != 0;
        bool allow = !control || (s.CramWritablePages < Shared->CramWritableLimit
            && s.CramPlacedBytes + (s.CramWritablePages + 1) * P <= Shared->CramCapacityBytes);
        ulong* entry = r.PageTableEntries + page;
        Store(entry, pte, PageTableEntry.Make(PageState.Unprotecting, 0), cas: true);
        _protected.Remove((r.Id, page));
        if (allow)
        {
            Store(entry, PageTableEntry.Make(PageState.Unprotecting, 0), PageTableEntry.Make(PageState.PlacedWritable, id) | PageTableEntry.Referenced, cas: false);
            s.CramWritablePages++;
            s.CramMaxWritable = Math.Max(s.CramMaxWritable, s.CramWritablePages);
            s.CramMadeWritable++;
        }
        else
        {
            Store(entry, PageTableEntry.Make(PageState.Unprotecting, 0), PageTableEntry.Make(PageState.Dirty, 0) | PageTableEntry.Referenced, cas: false);
            s.CramPlacedPages--;
            s.CramPlacedBytes -= SlotOf(id)->Length;
            StalePush(id);
            s.CramPromotions++;
            s.ResidentPages++;
        }
        LogFault(r, page);
    }

    // ------------------------------------------------------------------ the batched operations

    public Errno WriteProtectPages(uint regionId, ulong* pages, int count)
    {
        for (int i = 0; i < count; i++)
        {
            _protected.Add((regionId, pages[i]));
        }
        return Errno.None;
    }

    public Errno DropPages(uint regionId, ulong* pages, int count, out int dropped)
    {
        RegionMapping r = Regions.Get(regionId) ?? throw new InvalidOperationException($"no region {regionId}");
        ulong stamp = EvictionStamp();
        int n = 0;
        for (int i = 0; i < count; i++)
        {
            ulong* entry = r.PageTableEntries + pages[i];
            ulong p = PageTableEntry.Load(entry);
            if (PageTableEntry.State(p) != PageState.Clean)
            {
                continue;
            }
            ulong slot = PageTableEntry.Slot(p);
            Store(entry, p, PageTableEntry.Make(PageState.Dropping, slot), cas: true);
            new Span<byte>(Page(r, pages[i]), P).Fill(0xDD); // MADV_DONTNEED: whatever reads it now reads garbage in the fake, never the data
            _protected.Remove((regionId, pages[i]));
            Store(entry, PageTableEntry.Make(PageState.Dropping, slot), PageTableEntry.Make(PageState.Evicted, slot) | stamp, cas: false);
            CleanCopyCount(slot, -1);
            pages[n++] = pages[i];
        }
        Shared->Stats.ResidentPages -= (ulong)n;
        Shared->Stats.EvictedPagesTotal += (ulong)n;
        dropped = n;
        return Errno.None;
    }

    public Errno PlacePages(uint regionId, NativeCramPlace* places, int count, out int placed)
    {
        RegionMapping r = Regions.Get(regionId)!;
        ref NativeStats s = ref Shared->Stats;
        bool control = Shared->CramWriteControl != 0;
        int n = 0;
        for (int i = 0; i < count; i++)
        {
            NativeCramPlace* pl = places + i;
            pl->Placed = 0;
            if (s.CramPlacedBytes + pl->Size + (control ? s.CramWritablePages : 0) * P > Shared->CramCapacityBytes)
            {
                s.CramPlacementRefusals++;
                continue;
            }
            ulong* entry = r.PageTableEntries + pl->Page;
            if (PageTableEntry.Load(entry) != PageTableEntry.Make(PageState.Evicting, 0))
            {
                continue;
            }
            Store(entry, PageTableEntry.Make(PageState.Evicting, 0), PageTableEntry.Make(PageState.Placed, pl->Slot), cas: true);
            pl->Placed = 1;
            s.CramPlacedBytes += pl->Size;
            s.CramPlacedPages++;
            n++;
        }
        s.ResidentPages -= (ulong)n;
        placed = n;
        return Errno.None;
    }

    public Errno ReplacePages(uint regionId, ulong* pages, int count, out int replaced)
    {
        RegionMapping r = Regions.Get(regionId)!;
        ref NativeStats s = ref Shared->Stats;
        int n = 0;
        for (int i = 0; i < count; i++)
        {
            ulong* entry = r.PageTableEntries + pages[i];
            ulong p = PageTableEntry.Load(entry);
            if (PageTableEntry.State(p) != PageState.PlacedWritable)
            {
                continue;
            }
            _protected.Add((regionId, pages[i]));
            NativeSlot* slot = SlotOf(PageTableEntry.Slot(p));
            int size = Interop.Lz4.CompressDefault(Page(r, pages[i]), _buffer, P, 2 * P);
            uint measured = size > 0 && size < P ? (uint)size : P;
            s.CramPlacedBytes = s.CramPlacedBytes - slot->Length + measured;
            slot->Length = (ushort)measured;
            Store(entry, p, PageTableEntry.Make(PageState.Placed, PageTableEntry.Slot(p)), cas: false);
            s.CramWritablePages--;
            pages[n++] = pages[i];
        }
        replaced = n;
        return Errno.None;
    }

    public Errno MoveOutPages(uint regionId, NativeCramMoveOut* moves, int count, out int moved)
    {
        RegionMapping r = Regions.Get(regionId)!;
        ref NativeStats s = ref Shared->Stats;
        int n = 0;
        for (int i = 0; i < count; i++)
        {
            NativeCramMoveOut* m = moves + i;
            m->Moved = 0;
            ulong* entry = r.PageTableEntries + m->Page;
            if (PageTableEntry.Load(entry) != PageTableEntry.Make(PageState.Placed, m->Slot))
            {
                continue;
            }
            Store(entry, PageTableEntry.Make(PageState.Placed, m->Slot), PageTableEntry.Make(PageState.Dropping, m->Slot), cas: false);
            NativeSlot* slot = SlotOf(m->Slot);
            uint old = slot->Length;
            new Span<byte>(Page(r, m->Page), P).Fill(0xDD);
            _protected.Remove((regionId, m->Page));
            slot->Location = m->Handle;
            slot->Checksum = m->Checksum;
            slot->Length = (ushort)m->Length;
            slot->Backend = SlotBackend.Pool;
            if (m->Raw != 0)
            {
                Interlocked.Or(ref *(uint*)&slot->Length, (uint)SlotFlags.Raw << 24);
            }
            Store(entry, PageTableEntry.Make(PageState.Dropping, m->Slot), PageTableEntry.Make(PageState.Evicted, m->Slot), cas: false);
            s.CramPlacedPages--;
            s.CramPlacedBytes -= old;
            s.EvictedPagesTotal++;
            m->Moved = 1;
            n++;
        }
        moved = n;
        return Errno.None;
    }

    public Errno FindPages(uint regionId, ulong first, ulong end, uint stateMask, ulong* pages, int capacity, out int found, out ulong next)
    {
        RegionMapping r = Regions.Get(regionId)!;
        int n = 0;
        ulong i = first;
        for (; i < end && n < capacity; i++)
        {
            if ((stateMask & (1u << (int)State(r, i))) != 0)
            {
                pages[n++] = i;
            }
        }
        found = n;
        next = i;
        return Errno.None;
    }

    public Errno SlotsMove(NativeSlotMove* moves, int count, out int moved)
    {
        int n = 0;
        for (int i = 0; i < count; i++)
        {
            NativeSlotMove* m = moves + i;
            NativeSlot* slot = SlotOf(m->Slot);
            bool ok = slot->Backend == m->FromBackend && slot->Location == m->FromLocation
                && (NativeSlot.LoadFlags(slot) & (SlotFlags.Stale | SlotFlags.Bad)) == 0;
            m->Moved = ok ? 1u : 0u;
            if (ok)
            {
                slot->Location = m->ToLocation;
                slot->Backend = m->ToBackend;
                n++;
            }
        }
        moved = n;
        return Errno.None;
    }

    private readonly ZstdCodec _zstd = new(); // the fault service's decoder and dictionaries (codec.c)

    public Errno SlotsRecode(NativeSlotRecode* recodes, int count, out int recoded)
    {
        int n = 0;
        for (int i = 0; i < count; i++)
        {
            NativeSlotRecode* c = recodes + i;
            NativeSlot* slot = SlotOf(c->Slot);
            bool ok = slot->Backend == c->FromBackend && slot->Location == c->FromLocation
                && (NativeSlot.LoadFlags(slot) & (SlotFlags.Stale | SlotFlags.Bad | SlotFlags.Raw | SlotFlags.CleanCopy)) == 0;
            if (ok && c->Region != SlotFlags.AnyPage)
            {
                RegionMapping? r = Regions.Snapshot().FirstOrDefault(m => m.Id == c->Region);
                ulong pte = r is null || c->Page >= (ulong)r.PageCount ? 0 : PageTableEntry.Load(r.PageTableEntries + c->Page);
                ok = r is not null && PageTableEntry.State(pte) == PageState.Evicted && PageTableEntry.Slot(pte) == c->Slot;
            }
            c->Recoded = ok ? (byte)1 : (byte)0;
            if (ok)
            {
                slot->Location = c->ToLocation;
                slot->Checksum = c->Checksum;
                NativeSlot.ClearFlags(slot, SlotFlags.CodecMask);
                slot->Length = c->Length;
                slot->Backend = c->ToBackend;
                NativeSlot.SetFlags(slot, c->Flags);
                n++;
            }
        }
        recoded = n;
        return Errno.None;
    }

    public Errno FindColdEntries(ref uint regionId, ref ulong page, ulong minDistance, uint recodeDictionaries, ulong stride, ref ulong tick, NativeColdEntry* entries, int capacity, out int found, out bool wrapped)
    {
        int n = 0;
        wrapped = false;
        uint first = regionId;
        RegionMapping[] regions = Regions.Snapshot().Where(m => m.Id >= first).OrderBy(m => m.Id).ToArray();
        foreach (RegionMapping r in regions)
        {
            for (ulong i = r.Id == first ? page : 0; i < (ulong)r.PageCount; i++)
            {
                if (n == capacity)
                {
                    (regionId, page, found) = (r.Id, i, n);
                    return Errno.None;
                }
                ulong pte = PageTableEntry.Load(r.PageTableEntries + i);
                if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == SharedLayout.ZeroSlot)
                {
                    continue; // the fake keeps no eviction stamps: every evicted page is cold
                }
                NativeSlot* slot = SlotOf(PageTableEntry.Slot(pte));
                byte flags = NativeSlot.LoadFlags(slot);
                if (slot->Backend != SlotBackend.Pool || (flags & (SlotFlags.Raw | SlotFlags.Stale | SlotFlags.Bad)) != 0 || SlotFlags.IsKept(flags) ||
                    ((flags & SlotFlags.Zstd) != 0 && (recodeDictionaries & (1u << SlotFlags.Dictionary(flags))) == 0))
                {
                    continue;
                }
                if (stride > 1 && tick++ % stride != 0)
                {
                    continue;
                }
                entries[n++] = new NativeColdEntry { Page = i, Slot = PageTableEntry.Slot(pte), Location = slot->Location, Region = r.Id, Length = slot->Length, Flags = flags };
            }
        }
        (regionId, page, found, wrapped) = (0, 0, n, true);
        return Errno.None;
    }

    public Errno ZstdDictionarySet(int index, ReadOnlySpan<byte> dictionary, out long memoryBytes)
    {
        _zstd.SetDictionary(index, dictionary);
        memoryBytes = _zstd.MemoryBytes;
        return Errno.None;
    }

    public Errno MarkNamedSlots(ulong* named, ulong bits)
    {
        foreach (RegionMapping r in Regions.Snapshot())
        {
            for (ulong i = 0; i < r.PageCount; i++)
            {
                ulong p = PageTableEntry.Load(r.PageTableEntries + i);
                ulong slot = PageTableEntry.Slot(p);
                if (PageTableEntry.State(p) is PageState.Clean or PageState.Dropping or PageState.Evicted or PageState.Placed or PageState.PlacedWritable && slot < bits)
                {
                    named[slot >> 6] |= 1UL << (int)(slot & 63);
                }
            }
        }
        return Errno.None;
    }

    /// <summary>The real native code with no engine (nothing to lock against: no service runs).</summary>
    public Errno PoolMove(ulong handleDirectory, NativePoolMove* moves, int count) => NativeEngine.Detached.PoolMove(handleDirectory, moves, count);

    public ulong SoftLimitPages { get; private set; }

    public ulong HardLimitPages { get; private set; }

    public Errno SetResidentLimit(ulong softLimitPages, ulong hardLimitPages)
    {
        (SoftLimitPages, HardLimitPages) = (softLimitPages, hardLimitPages);
        return Errno.None;
    }

    // ------------------------------------------------------------------ regions and the worker's signal

    private readonly SemaphoreSlim _reclaimSignal = new(0);

    /// <summary>A region as CramNative_RegionCreate makes one: the caller (EngineRegions) adds it to the region table.</summary>
    public Errno RegionCreate(ulong length, out uint regionId, out ulong baseAddress, out ulong pageTable)
    {
        ulong pages = length / P;
        var basePointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, P);
        var table = (ulong*)NativeMemory.AllocZeroed((nuint)pages * sizeof(ulong));
        _allocations.Add(((IntPtr)basePointer, (IntPtr)table));
        (regionId, baseAddress, pageTable) = (_nextRegion++, (ulong)basePointer, (ulong)table);
        return Errno.None;
    }

    public Errno RegionDeactivate(uint regionId) => Errno.None; // no service to fence out

    /// <summary>Every page forgotten (counters fixed, named slots pushed stale), as region destroy does; the memory goes at Dispose.</summary>
    public Errno RegionDestroy(uint regionId)
    {
        RegionMapping r = Regions.Get(regionId) ?? throw new InvalidOperationException($"no region {regionId}");
        Forget(r, 0, r.PageCount);
        return Errno.None;
    }

    public Errno RegionCensus(uint regionId, NativeRegionCensus* census)
    {
        RegionMapping r = Regions.Get(regionId)!;
        *census = default;
        for (ulong i = 0; i < r.PageCount; i++)
        {
            ulong p = PageTableEntry.Load(r.PageTableEntries + i);
            PageState s = PageTableEntry.State(p);
            if (s == PageState.Empty)
            {
                continue;
            }
            census->PopulatedPages++;
            census->ResidentPages += s is PageState.Evicted or PageState.Placed or PageState.PlacedWritable ? 0UL : 1UL;
            census->EvictedPages += s == PageState.Evicted ? 1UL : 0UL;
            census->CleanCopyPages += s is PageState.Clean or PageState.Dropping ? 1UL : 0UL;
            census->PlacedPages += s is PageState.Placed or PageState.PlacedWritable ? 1UL : 0UL;
        }
        return Errno.None;
    }

    /// <summary>Every EVICTED page of the range swapped in for read, as a fault would, but neither active nor on trial (CramNative_PrefetchPages).</summary>
    public Errno PrefetchPages(uint regionId, ulong first, ulong end, out ulong next, out ulong brought, out bool atLimit)
    {
        RegionMapping r = Regions.Get(regionId)!;
        brought = 0;
        for (ulong i = first; i < end && i < r.PageCount; i++)
        {
            ulong pte = PageTableEntry.Load(r.PageTableEntries + i);
            if (PageTableEntry.State(pte) == PageState.Evicted)
            {
                SwapIn(r, i, pte, write: false, prefetch: true);
                brought++;
            }
        }
        Shared->Stats.PrefetchedPages += brought;
        (next, atLimit) = (end, false);
        return Errno.None;
    }

    /// <summary>Every populated page of the range becomes EMPTY (CramNative_DiscardPages); EBUSY, changing nothing, if one is in a held state.</summary>
    public Errno DiscardPages(uint regionId, ulong first, ulong end, out ulong discarded)
    {
        RegionMapping r = Regions.Get(regionId)!;
        end = Math.Min(end, r.PageCount);
        for (ulong i = first; i < end; i++)
        {
            if (State(r, i) is PageState.Evicting or PageState.Dropping or PageState.Unprotecting)
            {
                discarded = 0;
                return Errno.EBUSY;
            }
        }
        discarded = Forget(r, first, end);
        Shared->Stats.DiscardedPages += discarded;
        return Errno.None;
    }

    /// <summary>Pages [first, end) to EMPTY with their counters and slots let go (page_forget in native/regions.c). Returns the populated pages.</summary>
    private ulong Forget(RegionMapping r, ulong first, ulong end)
    {
        ref NativeStats s = ref Shared->Stats;
        ulong populated = 0;
        for (ulong i = first; i < end; i++)
        {
            ulong* entry = r.PageTableEntries + i;
            ulong p = PageTableEntry.Load(entry);
            PageState state = PageTableEntry.State(p);
            if (state == PageState.Empty)
            {
                continue;
            }
            populated++;
            ulong slot = PageTableEntry.Slot(p);
            if (state is PageState.Placed or PageState.PlacedWritable)
            {
                s.CramPlacedPages--;
                s.CramPlacedBytes -= SlotOf(slot)->Length;
                s.CramWritablePages -= state == PageState.PlacedWritable ? 1UL : 0UL;
                StalePush(slot);
            }
            else
            {
                s.ResidentPages -= state == PageState.Evicted ? 0UL : 1UL;
                if (state == PageState.Clean)
                {
                    CleanCopyCount(slot, -1);
                }
                if (state is PageState.Clean or PageState.Evicted)
                {
                    StalePush(slot);
                }
            }
            Store(entry, p, PageTableEntry.Make(PageState.Empty, 0), cas: false);
            _protected.Remove((r.Id, i));
            new Span<byte>(Page(r, i), P).Fill(0xDD);
        }
        s.PopulatedPages -= populated;
        return populated;
    }

    public Errno SignalReclaim()
    {
        _reclaimSignal.Release();
        return Errno.None;
    }

    public Errno WaitReclaimSignal(int timeoutMs, out bool signalled)
    {
        signalled = _reclaimSignal.Wait(timeoutMs);
        return Errno.None;
    }

    private long _activity;
    private int _reclaimIdle;

    /// <summary>As native/fault.c's note_activity: counts the access, wakes an idle worker.</summary>
    private void NoteActivity()
    {
        Interlocked.Increment(ref _activity);
        if (Volatile.Read(ref _reclaimIdle) == 1 && Interlocked.Exchange(ref _reclaimIdle, 0) == 1)
        {
            _reclaimSignal.Release();
        }
    }

    public ulong ReclaimActivity => (ulong)Interlocked.Read(ref _activity);

    public Errno WaitReclaimIdle(ulong seenActivity, int timeoutMs, out bool signalled)
    {
        Interlocked.Exchange(ref _reclaimIdle, 1);
        if ((ulong)Interlocked.Read(ref _activity) != seenActivity)
        {
            Volatile.Write(ref _reclaimIdle, 0);
            signalled = true;
            return Errno.None;
        }
        signalled = _reclaimSignal.Wait(timeoutMs);
        Volatile.Write(ref _reclaimIdle, 0);
        return Errno.None;
    }

    // ------------------------------------------------------------------ shared-state helpers, as in native/state.c

    /// <summary>A page-table write, checked against cramnative.h's transition table as CRAM_DEBUG checks the native ones.</summary>
    private static void Store(ulong* entry, ulong expected, ulong desired, bool cas)
    {
        PageState from = PageTableEntry.State(expected), to = PageTableEntry.State(desired);
        if (from != to && !PageTransitions.Allowed(from, to))
        {
            throw new InvalidOperationException($"page-state transition {from} -> {to} is not in cramnative.h's CRAM_PTE_TRANSITIONS");
        }
        if (cas ? !PageTableEntry.TryTransition(entry, expected, desired) : PageTableEntry.Load(entry) != expected)
        {
            throw new InvalidOperationException($"the page changed under the fake service ({from} expected)");
        }
        Volatile.Write(ref *entry, desired);
    }

    private NativeSlot* SlotOf(ulong id) => Record<NativeSlot>(Shared->SlotDirectory, id);

    private static T* Record<T>(ulong directory, ulong id) where T : unmanaged
    {
        byte* cluster = (byte*)Volatile.Read(ref ((ulong*)directory)[id >> SharedLayout.DirectoryClusterShift]);
        return (T*)(cluster + (long)(id & (SharedLayout.DirectoryClusterSize - 1)) * sizeof(T));
    }

    private void CleanCopyCount(ulong id, int sign)
    {
        ulong bytes = id == SharedLayout.ZeroSlot ? 0UL : NativeSlot.ChangeFlagsWord(SlotOf(id), SlotFlags.CleanCopy, set: sign > 0) & 0xFFFF;
        Shared->Stats.CleanCopyPages += sign > 0 ? 1UL : ulong.MaxValue;
        Shared->Stats.CleanCopyBytes += sign > 0 ? bytes : 0UL - bytes;
    }

    private void StalePush(ulong id)
    {
        if (id == SharedLayout.ZeroSlot)
        {
            Shared->Stats.ZeroCopiesReleased++;
            return;
        }
        NativeSlot* slot = SlotOf(id);
        Interlocked.Or(ref *(uint*)&slot->Length, (uint)SlotFlags.Stale << 24);
        slot->Checksum = (uint)Shared->StaleHead;
        Shared->StaleHead = id;
    }

    private void LogFault(RegionMapping r, ulong page)
    {
        ulong head = Shared->FaultLogHead;
        if (head - Volatile.Read(ref Shared->FaultLogTail) >= SharedLayout.FaultLogSize)
        {
            Shared->Stats.FaultLogOverflows++;
            return;
        }
        ((ulong*)Shared->FaultLog)[head & (SharedLayout.FaultLogSize - 1)] = FaultLogEntry.Encode(r.Id, page);
        Volatile.Write(ref Shared->FaultLogHead, head + 1);
    }

    private ulong EvictionStamp() =>
        ((Shared->Stats.EvictedPagesTotal / PageTableEntry.EvictionStampUnit & 0xFFFF) << PageTableEntry.StampShift) | PageTableEntry.Stamped;

    private bool RefaultActivates(ulong pte)
    {
        ulong threshold = Shared->ActivateDistancePages;
        if (threshold == 0 || (pte & PageTableEntry.Stamped) == 0)
        {
            return false;
        }
        ulong now = Shared->Stats.EvictedPagesTotal / PageTableEntry.EvictionStampUnit;
        ulong distance = (((now - (pte >> PageTableEntry.StampShift)) & 0xFFFF) + 1) * PageTableEntry.EvictionStampUnit;
        return distance <= threshold;
    }

    public void Dispose()
    {
        _zstd.Dispose();
        foreach ((IntPtr b, IntPtr t) in _allocations)
        {
            NativeMemory.AlignedFree((void*)b);
            NativeMemory.Free((void*)t);
        }
        NativeMemory.Free((void*)Shared->FaultLog);
        NativeMemory.Free(Shared);
        NativeMemory.AlignedFree(_buffer);
        _reclaimSignal.Dispose();
    }
}
