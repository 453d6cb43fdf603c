using CramCore.Native;
using CramCore.Storage;

namespace CramCore.Reclaim;

/// <summary>
/// The seam between the eviction pipeline and what it changes outside managed memory: native page
/// operations and the store. Production uses <see cref="NativePageOperations"/>; tests wrap it to
/// inject failures (a failed write-protect, a failed drop, a full pool), as Garnet's test hooks do,
/// so every roll-back path of <see cref="EvictionPipeline"/> runs.
/// </summary>
internal unsafe interface IPageOperations
{
    /// <summary>Write-protects <paramref name="pages"/> (sorted ascending) of a region. Returns <see cref="Errno.None"/> or the error.</summary>
    Errno WriteProtect(uint regionId, ulong* pages, int count);

    /// <summary>
    /// Drops the pages (sorted) still CLEAN: CLEAN→DROPPING→MADV_DONTNEED→EVICTED. The first
    /// <paramref name="dropped"/> entries become the pages dropped, in order; the others stay CLEAN.
    /// Returns <see cref="Errno.None"/> or the error (pages not dropped stay CLEAN either way).
    /// </summary>
    Errno Drop(uint regionId, ulong* pages, int count, out int dropped);

    /// <summary>Stores a copy (LZ4 block data, or the page itself when <paramref name="raw"/>) in a new pool slot. False when the pool is full.</summary>
    bool TryStore(bool raw, byte* source, int length, out ulong slot);

    /// <summary>EVICTING → PLACED on the CRAM node for each place the node's ledger admits (their Placed field says which).</summary>
    Errno Place(uint regionId, NativeCramPlace* places, int count, out int placed);
}

/// <summary>The real page operations: the native engine and the slot table.</summary>
internal sealed unsafe class NativePageOperations(INativeEngine engine, SlotTable slots) : IPageOperations
{
    public Errno WriteProtect(uint regionId, ulong* pages, int count) => engine.WriteProtectPages(regionId, pages, count);

    public Errno Drop(uint regionId, ulong* pages, int count, out int dropped) => engine.DropPages(regionId, pages, count, out dropped);

    public bool TryStore(bool raw, byte* source, int length, out ulong slot) =>
        slots.TryAllocateStored(raw, source, length, out slot);

    public Errno Place(uint regionId, NativeCramPlace* places, int count, out int placed) => engine.PlacePages(regionId, places, count, out placed);
}
