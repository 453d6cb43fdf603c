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

    /// <summary>Ranges advised cold (<see cref="CramAdvice.Cold"/>): their evicted pages are recompressed without waiting for the working set's distance. Changed and read under the maintenance lock.</summary>
    public PageRangeSet ColdPages { get; } = new();

    /// <summary>The region is going or gone (disposed, finalized, or the engine went): nothing may start using its memory.</summary>
    public bool Detached => _calls.Closed;

    /// <summary>
    /// Library calls that read or write the region's memory or page table from an application's
    /// thread (<see cref="CramRegion.Advise"/>, <see cref="CramRegion.MakeResident"/>): a dispose
    /// waits for them (<see cref="MarkDetached"/>). Raise no event inside one: a handler may dispose.
    /// </summary>
    private readonly InFlightGate _calls = new();

    /// <summary>Starts such a call; false once the region is going. Pair with <see cref="Exit"/>.</summary>
    public bool TryEnter() => _calls.TryEnter();

    public void Exit() => _calls.Exit();

    /// <summary>No new call may start, and the ones in flight have finished: the region can be unmapped. Call with no engine lock held.</summary>
    public void MarkDetached() => _calls.Close();
}
