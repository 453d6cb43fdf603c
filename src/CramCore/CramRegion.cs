using System.Buffers;
using System.Runtime.CompilerServices;
using CramCore.Internals;
using CramCore.Native;

namespace CramCore;

/// <summary>
/// A range of virtual memory whose cold pages live compressed. Use it like any memory, from any
/// number of threads, through <see cref="AsSpan{T}"/> or <see cref="Pointer"/>; evicted pages come
/// back on first access. Never store object references in a region.
/// </summary>
/// <remarks>
/// Dispose a region when you are done with it. One that becomes unreachable without being
/// disposed is released by its finalizer (its memory unmapped, its stored pages freed), like any
/// object that owns native memory. Pointers and spans into the region do not keep it reachable:
/// hold the <see cref="CramRegion"/> (or <see cref="GC.KeepAlive"/> it) for as long as you use its
/// memory. After <see cref="Dispose"/> every member but <see cref="Dispose"/> throws
/// <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed unsafe class CramRegion : IDisposable
{
    private readonly CramEngine _engine;
    private readonly RegionMapping _mapping;
    private volatile bool _disposed;

    internal CramRegion(CramEngine engine, RegionMapping mapping)
    {
        _engine = engine;
        _mapping = mapping;
    }

    /// <summary>Releases an abandoned region (see the remarks on <see cref="CramRegion"/>).</summary>
    ~CramRegion()
    {
        if (_disposed || _mapping.Detached)
        {
            return;
        }
        _disposed = true;
        try
        {
            _engine.Regions.Remove(_mapping);
        }
        catch (Exception)
        {
            // A finalizer must not throw; the engine's own release (Dispose or finalizer) still
            // unmaps the region with everything else.
        }
    }

    internal RegionMapping Mapping => _mapping;
    internal uint Id => _mapping.Id;
    internal byte* BasePointer => _mapping.BasePointer;
    internal ulong* PageTableEntries => _mapping.PageTableEntries;

    /// <summary>The engine the region belongs to.</summary>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public CramEngine Engine
    {
        get
        {
            ThrowIfDisposed();
            return _engine;
        }
    }

    /// <summary>Size of the region in bytes (a multiple of 4096).</summary>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public long Length
    {
        get
        {
            ThrowIfDisposed();
            return _mapping.Length;
        }
    }

    /// <summary>Address of the first byte. Valid until the region is disposed or finalized (keep the region reachable while you use it).</summary>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public byte* Pointer
    {
        get
        {
            ThrowIfDisposed();
            return BasePointer;
        }
    }

    /// <summary>A span of <paramref name="count"/> values of <typeparamref name="T"/> starting <paramref name="byteOffset"/> bytes into the region (keep the region reachable while you use it).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public Span<T> AsSpan<T>(long byteOffset, int count) where T : unmanaged
    {
        ThrowIfDisposed();
        ThrowIfOutside(byteOffset, (long)count * sizeof(T)); // negative exactly when count is
        return new Span<T>(BasePointer + byteOffset, count);
    }

    /// <summary>
    /// A <see cref="Memory{T}"/> of <paramref name="count"/> values of <typeparamref name="T"/>
    /// starting <paramref name="byteOffset"/> bytes into the region, for APIs that take memory
    /// rather than spans (async I/O, System.IO.Pipelines). It keeps the region reachable while it is
    /// in use; <c>Pin</c> is free (region memory never moves) and its pointer is valid until the
    /// region is disposed. Handing it to a system call (<c>Stream.ReadAsync</c> on a file or socket)
    /// makes the kernel touch the pages: fine in <see cref="UserfaultfdMode.Syscall"/> and
    /// <see cref="UserfaultfdMode.Device"/> mode with the service thread; in
    /// <see cref="UserfaultfdMode.UserModeOnly"/> mode or with <see cref="CramFaultService.FaultingThread"/>
    /// an evicted page fails the call with EFAULT, so use <see cref="ReadFrom"/> and
    /// <see cref="WriteTo"/> (or their async forms) there.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public Memory<T> AsMemory<T>(long byteOffset, int count) where T : unmanaged
    {
        ThrowIfDisposed();
        ThrowIfOutside(byteOffset, (long)count * sizeof(T)); // negative exactly when count is
        return new RegionMemoryManager<T>(this, byteOffset, count).Memory;
    }

    /// <summary>Bytes a bounce buffer of the I/O helpers holds.</summary>
    internal const int BounceBytes = 64 << 10;

    /// <summary>True when the kernel cannot fault pages in for a system call (user-mode-only userfaultfd, or the faulting-thread service): I/O goes through a bounce buffer.</summary>
    private bool NeedsBounce => _engine.SystemCallsMissEvictedPages;

    /// <summary>
    /// Reads up to <paramref name="count"/> bytes from <paramref name="stream"/> into the region at
    /// <paramref name="byteOffset"/>, until <paramref name="count"/> or the end of the stream; returns
    /// the bytes read. Works in every userfaultfd mode: where the kernel cannot fault region pages in
    /// for a system call (<see cref="UserfaultfdMode.UserModeOnly"/>, <see cref="CramFaultService.FaultingThread"/>), the data passes through a
    /// pooled buffer and reaches the region by ordinary stores, so no evicted page is ever handed to
    /// the kernel; elsewhere it is read into the region directly.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public int ReadFrom(Stream stream, long byteOffset, int count)
    {
        Span<byte> target = CheckedBytes(stream, byteOffset, count);
        EnterOrThrow(); // a racing Dispose waits until the copy is done
        try
        {
            if (!NeedsBounce)
            {
                int read = 0, n;
                while (read < count && (n = stream.Read(target[read..])) > 0)
                {
                    read += n;
                }
                return read;
            }
            byte[] bounce = ArrayPool<byte>.Shared.Rent(Math.Min(count, BounceBytes));
            try
            {
                int read = 0, n;
                while (read < count && (n = stream.Read(bounce, 0, Math.Min(bounce.Length, count - read))) > 0)
                {
                    bounce.AsSpan(0, n).CopyTo(AsBytes(byteOffset + read, n));
                    read += n;
                }
                return read;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(bounce);
            }
        }
        finally
        {
            _mapping.Exit();
        }
    }

    /// <summary>The asynchronous form of <see cref="ReadFrom"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public ValueTask<int> ReadFromAsync(Stream stream, long byteOffset, int count, CancellationToken cancellationToken = default)
    {
        _ = CheckedBytes(stream, byteOffset, count);
        bool bounce = NeedsBounce;
        EnterOrThrow(); // RegionIo exits when the copy is done: a racing Dispose waits for it
        return RegionIo.ReadFromAsync(this, _mapping, stream, byteOffset, count, bounce, cancellationToken);
    }

    /// <summary>
    /// Writes <paramref name="count"/> bytes of the region at <paramref name="byteOffset"/> to
    /// <paramref name="stream"/>, in every userfaultfd mode (see <see cref="ReadFrom"/>: through a
    /// pooled buffer where the kernel cannot fault region pages in, directly elsewhere).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public void WriteTo(Stream stream, long byteOffset, int count)
    {
        Span<byte> source = CheckedBytes(stream, byteOffset, count);
        EnterOrThrow(); // a racing Dispose waits until the copy is done
        try
        {
            if (!NeedsBounce)
            {
                stream.Write(source);
                return;
            }
            byte[] bounce = ArrayPool<byte>.Shared.Rent(Math.Min(count, BounceBytes));
            try
            {
                for (int done = 0; done < count;)
                {
                    int n = Math.Min(bounce.Length, count - done);
                    AsBytes(byteOffset + done, n).CopyTo(bounce);
                    stream.Write(bounce, 0, n);
                    done += n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(bounce);
            }
        }
        finally
        {
            _mapping.Exit();
        }
    }

    /// <summary>The asynchronous form of <see cref="WriteTo"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public ValueTask WriteToAsync(Stream stream, long byteOffset, int count, CancellationToken cancellationToken = default)
    {
        _ = CheckedBytes(stream, byteOffset, count);
        bool bounce = NeedsBounce;
        EnterOrThrow(); // RegionIo exits when the copy is done: a racing Dispose waits for it
        return RegionIo.WriteToAsync(this, _mapping, stream, byteOffset, count, bounce, cancellationToken);
    }

    private Span<byte> CheckedBytes(Stream stream, long byteOffset, int count)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(stream);
        return AsSpan<byte>(byteOffset, count);
    }

    private Span<byte> AsBytes(long byteOffset, int count) => new(BasePointer + byteOffset, count);

    /// <summary>
    /// Evicts up to <paramref name="bytes"/> of this region's resident pages (coldest first:
    /// second chance over fault-in order), compressing the ones that are not already stored.
    /// Returns the bytes evicted; less than asked when fewer pages can be evicted.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    /// <exception cref="InvalidOperationException">Called from inside a callback CramCore is running (a <see cref="CramEngine.TierEvent"/> handler, an <see cref="ICramDevice"/>, the logger): it would deadlock; do the work on another thread.</exception>
    public long Reclaim(long bytes)
    {
        ThrowIfDisposed();
        UserCallback.ThrowIfInside();
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long pages = (bytes >> SharedLayout.PageShift) + ((bytes & (SharedLayout.PageSize - 1)) != 0 ? 1 : 0); // no overflow at long.MaxValue
        long evicted = _engine.Regions.Reclaim(_mapping, pages) << SharedLayout.PageShift;
        _engine.RaisePendingEvents();
        return evicted;
    }

    /// <summary>
    /// Faults in every page of a range (and, with <paramref name="forWrite"/>, makes it writable)
    /// so the kernel can access it. Needed before passing region memory to a system call when the
    /// engine runs in <see cref="UserfaultfdMode.UserModeOnly"/> or with <see cref="CramFaultService.FaultingThread"/>. Reclaim may evict the pages again
    /// later; call this right before the system call.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public void MakeResident(long byteOffset, long length, bool forWrite)
    {
        ThrowIfDisposed();
        ThrowIfOutside(byteOffset, length);
        EnterOrThrow();
        try
        {
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
        finally
        {
            _mapping.Exit();
        }
    }

    /// <summary>Marks a library call in flight on this region (so a racing Dispose waits for it), or throws if the region is going.</summary>
    private void EnterOrThrow()
    {
        if (!_mapping.TryEnter())
        {
            throw new ObjectDisposedException(nameof(CramRegion));
        }
    }

    /// <summary>
    /// Tells the engine what the application knows about a range (see <see cref="CramAdvice"/>):
    /// reclaim it first (<see cref="CramAdvice.Cold"/>), keep it resident while the limit allows
    /// (<see cref="CramAdvice.Hot"/>), swap it in ahead of use in the background
    /// (<see cref="CramAdvice.WillNeed"/>), or discard it, so it reads as zeros
    /// (<see cref="CramAdvice.DontNeed"/>). Hints apply to every page the range touches; a discard
    /// drops only whole pages and zeroes the rest of the range in place. The latest advice for a
    /// page wins; <see cref="CramAdvice.Normal"/> clears hot and cold.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the region, or <paramref name="advice"/> is not a <see cref="CramAdvice"/> value.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    public void Advise(long byteOffset, long length, CramAdvice advice)
    {
        ThrowIfDisposed();
        ThrowIfOutside(byteOffset, length);
        if (!Enum.IsDefined(advice))
        {
            throw new ArgumentOutOfRangeException(nameof(advice), advice, $"Not a {nameof(CramAdvice)} value; use one of {string.Join(", ", Enum.GetNames<CramAdvice>())}.");
        }
        if (length == 0)
        {
            return;
        }
        long end = byteOffset + length; // no overflow: both are inside the region
        EnterOrThrow(); // a racing Dispose waits until the range is done, instead of unmapping it under ZeroInPlace
        try
        {
            if (advice != CramAdvice.DontNeed)
            {
                AdvisePages((ulong)byteOffset >> SharedLayout.PageShift, (ulong)(end + SharedLayout.PageSize - 1) >> SharedLayout.PageShift, advice);
            }
            else
            {
                long firstWhole = (byteOffset + SharedLayout.PageSize - 1) >> SharedLayout.PageShift, endWhole = end >> SharedLayout.PageShift;
                if (firstWhole >= endWhole)
                {
                    ZeroInPlace(byteOffset, end); // inside one page, or across one boundary
                }
                else
                {
                    ZeroInPlace(byteOffset, firstWhole << SharedLayout.PageShift);
                    AdvisePages((ulong)firstWhole, (ulong)endWhole, advice);
                    ZeroInPlace(endWhole << SharedLayout.PageShift, end);
                }
            }
        }
        finally
        {
            _mapping.Exit();
        }
        _engine.RaisePendingEvents(); // after Exit: a handler may dispose this region
    }

    /// <summary>Pages [start, end) to the engine's hint machinery (EngineRegions.Advise); the caller raises the events it posted.</summary>
    private void AdvisePages(ulong start, ulong end, CramAdvice advice) => _engine.Regions.Advise(_mapping, start, end, advice);

    /// <summary>Zeroes bytes [from, to) (at most two pages) in place, skipping a page never touched: it reads as zeros already, and stays unpopulated.</summary>
    private void ZeroInPlace(long from, long to)
    {
        while (from < to)
        {
            long pageEnd = Math.Min(to, (from | (SharedLayout.PageSize - 1)) + 1);
            if (GetPageState(from) != PageState.Empty)
            {
                AsBytes(from, (int)(pageEnd - from)).Clear();
            }
            from = pageEnd;
        }
    }

    /// <summary>
    /// This region's pages now: logical, resident, evicted, placed and clean-copy bytes, and the
    /// stored bytes of its copies. Counts only the parts of the page table that were ever touched,
    /// without stopping faults or reclaim (the engine's <see cref="CramEngine.GetStats"/> has the
    /// engine-wide counters and faults by kind).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The region was disposed.</exception>
    /// <exception cref="InvalidOperationException">Called from inside a callback CramCore is running (a <see cref="CramEngine.TierEvent"/> handler, an <see cref="ICramDevice"/>, the logger): it would deadlock; do the work on another thread.</exception>
    public CramRegionStats GetStats()
    {
        ThrowIfDisposed();
        UserCallback.ThrowIfInside();
        return _engine.Regions.Census(_mapping);
    }

    internal PageState GetPageState(long byteOffset) =>
        PageTableEntry.State(PageTableEntry.Load(PageTableEntries + (byteOffset >> SharedLayout.PageShift)));

    /// <summary>Unmaps the region and frees its compressed pages. No thread may be using it.</summary>
    /// <exception cref="InvalidOperationException">Called from inside a callback CramCore is running (a <see cref="CramEngine.TierEvent"/> handler, an <see cref="ICramDevice"/>, the logger): it would deadlock; do the work on another thread.</exception>
    public void Dispose()
    {
        UserCallback.ThrowIfInside();
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        GC.SuppressFinalize(this);
        _mapping.MarkDetached(); // no engine lock held: waits for an Advise or MakeResident in flight on another thread
        _engine.Regions.Remove(_mapping);
    }


    private void ThrowIfDisposed()
    {
        if (_disposed || _mapping.Detached)
        {
            ThrowDisposed();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowDisposed() => throw new ObjectDisposedException(nameof(CramRegion));

    /// <summary>The one range check of every member that takes an offset and a size (a negative size is outside too).</summary>
    private void ThrowIfOutside(long byteOffset, long bytes)
    {
        if (byteOffset < 0 || bytes < 0 || byteOffset > _mapping.Length || bytes > _mapping.Length - byteOffset)
        {
            ThrowRangeOutside(byteOffset, bytes);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowRangeOutside(long byteOffset, long bytes) =>
        throw new ArgumentOutOfRangeException(nameof(byteOffset), $"The range [{byteOffset}, {byteOffset}+{bytes}) is not inside the region of {_mapping.Length} bytes.");
}
