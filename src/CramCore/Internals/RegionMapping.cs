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

    /// <summary>The region is going or gone (disposed, finalized, or the engine went): nothing may start using its memory.</summary>
    public bool Detached => _detached;

    private volatile bool _detached;
    private int _users; // library calls on an application's thread using the region's memory or page table now

    /// <summary>
    /// Starts a library call that reads or writes the region's memory or page table from the caller's
    /// thread (<see cref="CramRegion.Advise"/>, <see cref="CramRegion.MakeResident"/>); false once the
    /// region is going. Pair with <see cref="Exit"/>; raise no event in between (a handler may dispose).
    /// </summary>
    public bool TryEnter()
    {
        Interlocked.Increment(ref _users);
        if (_detached)
        {
            Interlocked.Decrement(ref _users);
            return false;
        }
        return true;
    }

    public void Exit() => Interlocked.Decrement(ref _users);

    /// <summary>
    /// No new call may start (<see cref="TryEnter"/> fails), and the ones in flight have finished:
    /// after this the region can be unmapped under them. Call with no engine lock held (a call in
    /// flight may need one).
    /// </summary>
    public void MarkDetached()
    {
        _detached = true;
        var spin = new SpinWait();
        while (Volatile.Read(ref _users) != 0)
        {
            spin.SpinOnce();
        }
    }
}
