using CramCore.Native;
using CramCore.Storage;

namespace CramCore.Reclaim;

/// <summary>
/// What the memory limit counts (<see cref="CramOptions.MemoryLimitBytes"/>), measured from the
/// parts below it: resident region pages (the service's counter), the compressed pool's pages, and
/// CramCore's own metadata. One measure for the budget and the engine's stats, so both count the
/// same bytes.
/// </summary>
internal sealed unsafe class MemoryUse(NativeShared* shared, SlotTable slots, CompressedPool pool, Reclaimer reclaimer, BackingFile? file, Recompressor? recompressor = null, Writeback? writeback = null)
{
    /// <summary>Resident region pages, in bytes.</summary>
    public long ResidentBytes => (long)Volatile.Read(ref shared->Stats.ResidentPages) << SharedLayout.PageShift;

    /// <summary>The compressed pool's memory: its pages in use, or every arena byte when they are locked (<see cref="CompressedPool.ChargedBytes"/>).</summary>
    public long PoolBytes => pool.ChargedBytes;

    /// <summary>
    /// CramCore's own memory besides resident pages and the pool: the page tables in use, the
    /// fault-in log, the slot and handle tables, the zspages' handle arrays, reclaim's and
    /// writeback's queues and buffers (a batch's copies, a segment read back, its zstd encoder), the
    /// backing file's two segment buffers, the remote tier's segment buffer, and the recompressor's
    /// buffers, zstd contexts and dictionaries (its own and the fault service's).
    /// </summary>
    public long MetadataBytes =>
        ((long)Volatile.Read(ref shared->Stats.PageTablePages) << SharedLayout.PageShift)
        + (long)SharedLayout.FaultLogSize * sizeof(ulong)
        + slots.MetadataBytes + pool.MetadataBytes + reclaimer.MetadataBytes
        + (slots.PoolOrder?.CapacityBytes ?? 0)
        + (file is null ? 0 : 2L * BackingFile.SegmentBytes)
        + (slots.Remote is null ? 0 : Remote.RemoteSegments.SegmentBytes)
        + (recompressor?.MemoryBytes ?? 0)
        + (writeback?.MemoryBytes ?? 0);
}
