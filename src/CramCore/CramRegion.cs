using System.Runtime.CompilerServices;

namespace CramCore;

/// <summary>
/// A range of virtual memory whose cold pages live compressed. Use it like any memory, from any
/// number of threads, through <see cref="AsSpan{T}"/> or <see cref="Pointer"/>; evicted pages come
/// back on first access. Never store object references in a region.
/// </summary>
public sealed unsafe class CramRegion : IDisposable
{
    private readonly CramEngine _engine;
    private volatile bool _disposed;

    internal CramRegion(CramEngine engine, uint id, byte* basePointer, ulong* pageTable, long length)
    {
        _engine = engine;
        Id = id;
        BasePointer = basePointer;
        PageTableEntries = pageTable;
        Length = length;
    }

    internal uint Id { get; }
    internal byte* BasePointer { get; }
    internal ulong* PageTableEntries { get; }
    internal ulong PageCount => (ulong)Length >> SharedLayout.PageShift;

    /// <summary>The engine the region belongs to.</summary>
    public CramEngine Engine => _engine;

    /// <summary>Size of the region in bytes (a multiple of 4096).</summary>
    public long Length { get; }

    /// <summary>Address of the first byte. Valid until the region is disposed.</summary>
    public byte* Pointer
    {
        get
        {
            ThrowIfDisposed();
            return BasePointer;
        }
    }

    /// <summary>A span of <paramref name="count"/> values of <typeparamref name="T"/> starting <paramref name="byteOffset"/> bytes into the region.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    public Span<T> AsSpan<T>(long byteOffset, int count) where T : unmanaged
    {
        ThrowIfDisposed();
        if (byteOffset < 0 || count < 0 || byteOffset > Length || (long)count * sizeof(T) > Length - byteOffset)
        {
            ThrowRangeOutside(byteOffset, (long)count * sizeof(T));
        }
        return new Span<T>(BasePointer + byteOffset, count);
    }

    /// <summary>
    /// Evicts up to <paramref name="bytes"/> of this region's resident pages (coldest first:
    /// second chance over fault-in order), compressing the ones that are not already stored.
    /// Returns the bytes evicted; less than asked when fewer pages can be evicted.
    /// </summary>
    public long Reclaim(long bytes)
    {
        ThrowIfDisposed();
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long pages = (bytes >> SharedLayout.PageShift) + ((bytes & (SharedLayout.PageSize - 1)) != 0 ? 1 : 0); // no overflow at long.MaxValue
        long evicted = _engine.Reclaimer.Reclaim(pages, this) << SharedLayout.PageShift;
        _engine.RaisePendingEvents();
        return evicted;
    }

    /// <summary>
    /// Faults in every page of a range (and, with <paramref name="forWrite"/>, makes it writable)
    /// so the kernel can access it. Needed before passing region memory to a system call when the
    /// engine runs in <see cref="UserfaultfdMode.UserModeOnly"/>. Reclaim may evict the pages again
    /// later; call this right before the system call.
    /// </summary>
    public void MakeResident(long byteOffset, long length, bool forWrite)
    {
        ThrowIfDisposed();
        if (byteOffset < 0 || length < 0 || byteOffset > Length || length > Length - byteOffset)
        {
            ThrowRangeOutside(byteOffset, length);
        }
        long first = byteOffset >> SharedLayout.PageShift;
        long end = (byteOffset + length + SharedLayout.PageSize - 1) >> SharedLayout.PageShift;
        for (long page = first; page < end; page++)
        {
            int* word = (int*)(BasePointer + (page << SharedLayout.PageShift));
            if (forWrite)
            {
                Interlocked.Or(ref *word, 0); // an atomic write that changes nothing
            }
            else
            {
                Volatile.Read(ref *word);
            }
        }
    }

    internal PageState GetPageState(long byteOffset) =>
        PageTableEntry.State(PageTableEntry.Load(PageTableEntries + (byteOffset >> SharedLayout.PageShift)));

    /// <summary>Unmaps the region and frees its compressed pages. No thread may be using it.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        _engine.RemoveRegion(this);
    }

    internal void MarkDisposed() => _disposed = true;

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            ThrowDisposed();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowDisposed() => throw new ObjectDisposedException(nameof(CramRegion));

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowRangeOutside(long byteOffset, long bytes) =>
        throw new ArgumentOutOfRangeException(nameof(byteOffset), $"The range [{byteOffset}, {byteOffset}+{bytes}) is not inside the region of {Length} bytes.");
}
