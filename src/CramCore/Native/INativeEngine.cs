namespace CramCore.Native;

/// <summary>
/// The one seam between the managed layers and the native engine: every region, page-table, slot and
/// pool operation the engine's regions, reclaim and its worker, writeback, the reaper, pool
/// compaction, the memory budget and the CRAM node ask of it (cramnative.h documents each CramNative_* call and the state machine). Production
/// uses <see cref="NativeEngine"/>, the P/Invoke calls; unit tests use an in-memory fake that makes
/// the same transitions on page tables in ordinary memory, so those layers are tested without
/// userfaultfd. Each returns <see cref="Errno.None"/> or the error; outputs are valid either way
/// (a batch stops at its first error).
/// </summary>
internal unsafe interface INativeEngine
{
    /// <summary>Write-protects <paramref name="pages"/> (sorted ascending) of a region (CramNative_WriteProtectPages).</summary>
    Errno WriteProtectPages(uint regionId, ulong* pages, int count);

    /// <summary>CLEAN→DROPPING→EVICTED for the pages (sorted) still CLEAN; the first <paramref name="dropped"/> entries become the pages dropped (CramNative_DropPages).</summary>
    Errno DropPages(uint regionId, ulong* pages, int count, out int dropped);

    /// <summary>EVICTING→PLACED for each page the CRAM node's ledger admits (CramNative_PlacePages).</summary>
    Errno PlacePages(uint regionId, NativeCramPlace* places, int count, out int placed);

    /// <summary>PLACED_WRITABLE→PLACED: write-protect, measure again, release the budget (CramNative_ReplacePages).</summary>
    Errno ReplacePages(uint regionId, ulong* pages, int count, out int replaced);

    /// <summary>PLACED→EVICTED with the slot rewritten to a pool copy (CramNative_MoveOutPages).</summary>
    Errno MoveOutPages(uint regionId, NativeCramMoveOut* moves, int count, out int moved);

    /// <summary>Lists pages of [first, end) whose state is in <paramref name="stateMask"/>, over the touched blocks only (CramNative_FindPages).</summary>
    Errno FindPages(uint regionId, ulong first, ulong end, uint stateMask, ulong* pages, int capacity, out int found, out ulong next);

    /// <summary>Rewrites each slot still naming its old location, under the engine lock (CramNative_SlotsMove).</summary>
    Errno SlotsMove(NativeSlotMove* moves, int count, out int moved);

    /// <summary>Recompression's rewrite of each slot still at its old location, its page still EVICTED (or, with no page named, no resident page keeping it), possibly to another backend (CramNative_SlotsRecode).</summary>
    Errno SlotsRecode(NativeSlotRecode* recodes, int count, out int recoded);

    /// <summary>Recompression's candidates from a cursor (CramNative_FindColdEntries); with <paramref name="stride"/> above 1, one in every stride, counted by <paramref name="tick"/>.</summary>
    Errno FindColdEntries(ref uint regionId, ref ulong page, ulong minDistance, uint recodeDictionaries, ulong stride, ref ulong tick, NativeColdEntry* entries, int capacity, out int found, out bool wrapped);

    /// <summary>Sets or removes a zstd dictionary of the fault service (CramNative_ZstdDictionarySet); the decoder's memory for them all.</summary>
    Errno ZstdDictionarySet(int index, ReadOnlySpan<byte> dictionary, out long memoryBytes);

    /// <summary>Sets bit id of <paramref name="named"/> for every slot a page table names (CramNative_MarkNamedSlots).</summary>
    Errno MarkNamedSlots(ulong* named, ulong bits);

    /// <summary>Moves pool objects and rewrites their handles, under the engine lock (CramNative_PoolMove).</summary>
    Errno PoolMove(ulong handleDirectory, NativePoolMove* moves, int count);

    /// <summary>Sets the resident limits the fault service holds (CramNative_SetResidentLimit).</summary>
    Errno SetResidentLimit(ulong softLimitPages, ulong hardLimitPages);

    /// <summary>Maps a region and its page table; the service starts resolving its faults (CramNative_RegionCreate).</summary>
    Errno RegionCreate(ulong length, out uint regionId, out ulong baseAddress, out ulong pageTable);

    /// <summary>Fences the service out of a region (CramNative_RegionDeactivate).</summary>
    Errno RegionDeactivate(uint regionId);

    /// <summary>Frees a deactivated region: counters fixed, every slot it names pushed stale, unmapped (CramNative_RegionDestroy).</summary>
    Errno RegionDestroy(uint regionId);

    /// <summary>Counts a region's pages by state (CramNative_RegionCensus).</summary>
    Errno RegionCensus(uint regionId, NativeRegionCensus* census);

    /// <summary>Swaps in a bounded piece of a range's EVICTED pages ahead of any access (CramNative_PrefetchPages).</summary>
    Errno PrefetchPages(uint regionId, ulong first, ulong end, out ulong next, out ulong brought, out bool atLimit);

    /// <summary>Every populated page of a range becomes EMPTY; the caller holds reclaim paused (CramNative_DiscardPages).</summary>
    Errno DiscardPages(uint regionId, ulong first, ulong end, out ulong discarded);

    /// <summary>Wakes the reclaim worker (CramNative_SignalReclaim).</summary>
    Errno SignalReclaim();

    /// <summary>Waits up to <paramref name="timeoutMs"/> for the service to ask for reclaim (CramNative_WaitReclaimSignal).</summary>
    Errno WaitReclaimSignal(int timeoutMs, out bool signalled);

    /// <summary>Batches of faults resolved so far, a count that only grows (CramNative_ReclaimActivity).</summary>
    ulong ReclaimActivity { get; }

    /// <summary>The idle worker's sleep: at once if the activity count is no longer <paramref name="seenActivity"/>, else until the next fault batch or signal, or <paramref name="timeoutMs"/> (-1: no limit) (CramNative_WaitReclaimIdle).</summary>
    Errno WaitReclaimIdle(ulong seenActivity, int timeoutMs, out bool signalled);
}

/// <summary>The real engine: each operation is one P/Invoke into libCramNative.</summary>
internal sealed unsafe class NativeEngine(nint engine) : INativeEngine
{
    /// <summary>No engine: for a compressed pool of its own (benchmarks, tests), whose object moves no fault service reads.</summary>
    public static NativeEngine Detached { get; } = new(0);

    private static Errno Result(int rc) => rc == 0 ? Errno.None : Interop.LastErrno();

    public Errno WriteProtectPages(uint regionId, ulong* pages, int count) =>
        Result(Interop.CramNative.WriteProtectPages(engine, regionId, pages, count));

    public Errno DropPages(uint regionId, ulong* pages, int count, out int dropped)
    {
        int n = 0;
        Errno e = Result(Interop.CramNative.DropPages(engine, regionId, pages, count, &n));
        dropped = n;
        return e;
    }

    public Errno PlacePages(uint regionId, NativeCramPlace* places, int count, out int placed)
    {
        int n = 0;
        Errno e = Result(Interop.CramNative.PlacePages(engine, regionId, places, count, &n));
        placed = n;
        return e;
    }

    public Errno ReplacePages(uint regionId, ulong* pages, int count, out int replaced)
    {
        int n = 0;
        Errno e = Result(Interop.CramNative.ReplacePages(engine, regionId, pages, count, &n));
        replaced = n;
        return e;
    }

    public Errno MoveOutPages(uint regionId, NativeCramMoveOut* moves, int count, out int moved)
    {
        int n = 0;
        Errno e = Result(Interop.CramNative.MoveOutPages(engine, regionId, moves, count, &n));
        moved = n;
        return e;
    }

    public Errno FindPages(uint regionId, ulong first, ulong end, uint stateMask, ulong* pages, int capacity, out int found, out ulong next)
    {
        int n = 0;
        ulong after = end;
        Errno e = Result(Interop.CramNative.FindPages(engine, regionId, first, end, stateMask, pages, capacity, &n, &after));
        found = n;
        next = after;
        return e;
    }

    public Errno SlotsMove(NativeSlotMove* moves, int count, out int moved)
    {
        int n = 0;
        Errno e = Result(Interop.CramNative.SlotsMove(engine, moves, count, &n));
        moved = n;
        return e;
    }

    public Errno SlotsRecode(NativeSlotRecode* recodes, int count, out int recoded)
    {
        int n = 0;
        Errno e = Result(Interop.CramNative.SlotsRecode(engine, recodes, count, &n));
        recoded = n;
        return e;
    }

    public Errno FindColdEntries(ref uint regionId, ref ulong page, ulong minDistance, uint recodeDictionaries, ulong stride, ref ulong tick, NativeColdEntry* entries, int capacity, out int found, out bool wrapped)
    {
        uint r = regionId;
        ulong p = page, t = tick;
        int n = 0, w = 0;
        Errno e = Result(Interop.CramNative.FindColdEntries(engine, &r, &p, minDistance, recodeDictionaries, stride, &t, entries, capacity, &n, &w));
        regionId = r;
        page = p;
        tick = t;
        found = n;
        wrapped = w != 0;
        return e;
    }

    public Errno ZstdDictionarySet(int index, ReadOnlySpan<byte> dictionary, out long memoryBytes)
    {
        ulong bytes = 0;
        Errno e;
        fixed (byte* d = dictionary)
        {
            e = Result(Interop.CramNative.ZstdDictionarySet(engine, (uint)index, d, (ulong)dictionary.Length, &bytes));
        }
        memoryBytes = (long)bytes;
        return e;
    }

    public Errno MarkNamedSlots(ulong* named, ulong bits) => Result(Interop.CramNative.MarkNamedSlots(engine, named, bits));

    public Errno PoolMove(ulong handleDirectory, NativePoolMove* moves, int count) =>
        Result(Interop.CramNative.PoolMove(engine, handleDirectory, moves, count));

    public Errno SetResidentLimit(ulong softLimitPages, ulong hardLimitPages) =>
        Result(Interop.CramNative.SetResidentLimit(engine, softLimitPages, hardLimitPages));

    public Errno RegionCreate(ulong length, out uint regionId, out ulong baseAddress, out ulong pageTable)
    {
        uint id = 0;
        ulong b = 0, t = 0;
        Errno e = Result(Interop.CramNative.RegionCreate(engine, length, &id, &b, &t));
        (regionId, baseAddress, pageTable) = (id, b, t);
        return e;
    }

    public Errno RegionDeactivate(uint regionId) => Result(Interop.CramNative.RegionDeactivate(engine, regionId));

    public Errno RegionDestroy(uint regionId) => Result(Interop.CramNative.RegionDestroy(engine, regionId));

    public Errno RegionCensus(uint regionId, NativeRegionCensus* census) => Result(Interop.CramNative.RegionCensus(engine, regionId, census));

    public Errno PrefetchPages(uint regionId, ulong first, ulong end, out ulong next, out ulong brought, out bool atLimit)
    {
        ulong after = end, n = 0;
        int limit = 0;
        Errno e = Result(Interop.CramNative.PrefetchPages(engine, regionId, first, end, &after, &n, &limit));
        (next, brought, atLimit) = (after, n, limit != 0);
        return e;
    }

    public Errno DiscardPages(uint regionId, ulong first, ulong end, out ulong discarded)
    {
        ulong n = 0;
        Errno e = Result(Interop.CramNative.DiscardPages(engine, regionId, first, end, &n));
        discarded = n;
        return e;
    }

    public Errno SignalReclaim() => Result(Interop.CramNative.SignalReclaim(engine));

    public Errno WaitReclaimSignal(int timeoutMs, out bool signalled)
    {
        int s = 0;
        Errno e = Result(Interop.CramNative.WaitReclaimSignal(engine, timeoutMs, &s));
        signalled = s != 0;
        return e;
    }

    public ulong ReclaimActivity
    {
        get
        {
            ulong activity = 0;
            Interop.CramNative.ReclaimActivity(engine, &activity); // fails only for a null engine
            return activity;
        }
    }

    public Errno WaitReclaimIdle(ulong seenActivity, int timeoutMs, out bool signalled)
    {
        int s = 0;
        Errno e = Result(Interop.CramNative.WaitReclaimIdle(engine, seenActivity, timeoutMs, &s));
        signalled = s != 0;
        return e;
    }
}
