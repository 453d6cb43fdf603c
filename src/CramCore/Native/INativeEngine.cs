namespace CramCore.Native;

/// <summary>
/// The one seam between the managed layers and the native engine: every page-table, slot and pool
/// operation reclaim, writeback, the reaper, pool compaction, the memory budget and the CRAM node
/// ask of it (cramnative.h documents each CramNative_* call and the state machine). Production
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

    /// <summary>Sets bit id of <paramref name="named"/> for every slot a page table names (CramNative_MarkNamedSlots).</summary>
    Errno MarkNamedSlots(ulong* named, ulong bits);

    /// <summary>Moves pool objects and rewrites their handles, under the engine lock (CramNative_PoolMove).</summary>
    Errno PoolMove(ulong handleDirectory, NativePoolMove* moves, int count);

    /// <summary>Sets the resident limits the fault service holds (CramNative_SetResidentLimit).</summary>
    Errno SetResidentLimit(ulong softLimitPages, ulong hardLimitPages);
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

    public Errno MarkNamedSlots(ulong* named, ulong bits) => Result(Interop.CramNative.MarkNamedSlots(engine, named, bits));

    public Errno PoolMove(ulong handleDirectory, NativePoolMove* moves, int count) =>
        Result(Interop.CramNative.PoolMove(engine, handleDirectory, moves, count));

    public Errno SetResidentLimit(ulong softLimitPages, ulong hardLimitPages) =>
        Result(Interop.CramNative.SetResidentLimit(engine, softLimitPages, hardLimitPages));
}
