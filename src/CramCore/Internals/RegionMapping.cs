using CramCore.Native;

namespace CramCore.Internals;

/// <summary>
/// What reclaim, the CRAM node and the engine's region table know of a region: its id, memory and
/// page table. Deliberately not the public <see cref="CramRegion"/>: the engine's background thread
/// reaches these, and holding the public object from there would keep an abandoned region (and its
/// engine) reachable forever, so neither could be finalized.
/// </summary>
internal sealed unsafe class RegionMapping(uint id, byte* basePointer, ulong* pageTable, long length)
{
    public uint Id { get; } = id;
    public byte* BasePointer { get; } = basePointer;
    public ulong* PageTableEntries { get; } = pageTable;
    public long Length { get; } = length;
    public ulong PageCount => (ulong)Length >> SharedLayout.PageShift;

    /// <summary>Pages advised <see cref="CramAdvice.Hot"/>; changed and read under the reclaimer's maintenance lock.</summary>
    public PageRangeSet HotPages { get; } = new();

    /// <summary>The engine took the region out of its tables and unmapped it (disposed, finalized, or the engine went).</summary>
    public bool Detached => _detached;

    private volatile bool _detached;

    public void MarkDetached() => _detached = true;
}
