using System.Buffers;

namespace CramCore.Internals;

/// <summary>
/// The <see cref="MemoryManager{T}"/> behind <see cref="CramRegion.AsMemory{T}"/>: a window of a
/// region. Region memory never moves, so pinning costs nothing; the manager holds the region, so a
/// <see cref="Memory{T}"/> (unlike a span or pointer) keeps its region reachable while it is in use.
/// Disposing the region makes <see cref="GetSpan"/> and <see cref="Pin"/> throw
/// <see cref="ObjectDisposedException"/>; a <see cref="MemoryHandle"/> taken before that must not be
/// used after it, as with any native memory.
/// </summary>
internal sealed unsafe class RegionMemoryManager<T>(CramRegion region, long byteOffset, int length) : MemoryManager<T>
    where T : unmanaged
{
    private T* Start => (T*)(region.Pointer + byteOffset); // Pointer throws once the region is disposed

    public override Span<T> GetSpan() => new(Start, length);

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, length);
        return new MemoryHandle(Start + elementIndex, default, this);
    }

    public override void Unpin()
    {
        // Nothing moves: the region's memory stays where it is until the region is disposed.
    }

    protected override void Dispose(bool disposing)
    {
        // The region owns the memory; a view has nothing of its own to release.
    }
}
