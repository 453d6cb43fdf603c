using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The file backend's managed half (cramnative.h, "Virtual swap"; the native half is file_read in
/// native/fault.c): compressed objects written as they are in the pool, packed back to back into
/// <see cref="SegmentBytes"/> segments, so a page costs its compressed size on disk. The file is
/// created with mode 0600 (O_EXCL: an existing file is never overwritten) and unlinked at once
/// unless kept; it is opened O_DIRECT where the file system allows, so neither writes nor reads
/// fill the page cache (which would spend the RAM the tier saves). It grows one segment at a time
/// as writeback needs it, up to an optional limit; a segment whose extents are all dead is punched
/// out and reused, lowest first. Extents never straddle segments.
/// <para>
/// Its bookkeeping is used only under the maintenance lock (lock 3); its I/O — <see cref="Write"/>,
/// <see cref="ReadSegment"/>, <see cref="Punch"/> — only by <see cref="Writeback"/> holding its I/O
/// lock (2a) and not lock 3, so a file system that blocks stalls writeback alone. Only writeback
/// writes the file, so while it holds lock 2a no extent's bytes change; a segment whose extents all
/// died is set aside (<see cref="TakeDeadSegments"/>) until writeback has punched it, so it is never
/// reused, nor its blocks punched, under a write in flight. Counters are read without a lock.
/// </para>
/// </summary>
internal sealed unsafe class BackingFile : ISegmentTier, IDisposable
{
    /// <summary>Bytes per segment: the unit of growth, of writes and of compaction.</summary>
    public const int SegmentBytes = 256 * 1024;

    private readonly SafeFileHandle _handle;
    private readonly IBackingFileDevice _device; // writes, compaction reads, hole punches
    private readonly long _limitSegments;
    private readonly List<Segment> _segments = [];
    private readonly SortedSet<int> _freeSegments = [];
    private readonly List<int> _deadSegments = []; // all extents dead, blocks not yet punched: not reusable yet
    private readonly byte* _buffer; // the open segment's bytes, page-aligned for O_DIRECT
    private int _open = -1;         // the segment being filled, or -1
    private int _committed;         // bytes of the open segment on disk
    private int _batchFirst;        // index in the open segment's slots of the batch's first extent
    private long _liveBytes, _usedBytes, _bytesWritten, _writeErrors, _segmentsInUse;

    private sealed class Segment
    {
        public int Used;   // bytes of extents written (live or dead)
        public int Live;   // bytes of extents a slot names
        public long Opened; // when it was opened (OpenNextSegment's count): the oldest entries are in the oldest segments
        public readonly List<uint> Slots = []; // slot ids of its extents, in order (compaction checks each)
    }

    private BackingFile(SafeFileHandle handle, bool direct, string path, long limitBytes, IBackingFileDevice device)
    {
        _handle = handle;
        _device = device;
        Direct = direct;
        Path = path;
        _limitSegments = limitBytes == 0 ? long.MaxValue : limitBytes / SegmentBytes;
        _buffer = (byte*)NativeMemory.AlignedAlloc(SegmentBytes, SharedLayout.PageSize);
    }

    /// <summary>Creates the file at <paramref name="path"/>; unlinked at once unless <paramref name="keep"/>. Its I/O goes through <paramref name="device"/> (default: the system calls).</summary>
    /// <exception cref="IOException">It exists or cannot be created; the message names the option and the fix.</exception>
    public static BackingFile Open(string path, bool keep, long limitBytes, IBackingFileDevice? device = null)
    {
        string full = System.IO.Path.GetFullPath(path);
        byte[] utf8 = Encoding.UTF8.GetBytes(full + "\0");
        int fd, direct;
        fixed (byte* p = utf8)
        {
            if (Interop.CramNative.BackingFileOpen(p, keep ? 1 : 0, &fd, &direct) != 0)
            {
                Errno errno = Interop.LastErrno();
                throw errno == Errno.EEXIST
                    ? new IOException($"BackingFile '{full}' already exists; CramCore never overwrites a file: remove it or choose another path.")
                    : new IOException($"Creating BackingFile '{full}' failed: {Interop.GetExceptionForErrno(errno, "open").Message} Choose a path in a writable directory.");
            }
        }
        return new BackingFile(new SafeFileHandle(fd, ownsHandle: true), direct != 0, full, limitBytes, device ?? NativeFileDevice.Instance);
    }

    /// <summary>The file's path (it no longer exists unless kept).</summary>
    public string Path { get; }

    /// <summary>Whether the file is opened O_DIRECT.</summary>
    public bool Direct { get; }

    /// <summary>The descriptor the fault service reads with.</summary>
    public int Descriptor => (int)_handle.DangerousGetHandle();

    public long LiveBytes => Interlocked.Read(ref _liveBytes);
    /// <summary>Bytes of extents in segments in use, dead ones included.</summary>
    public long UsedBytes => Interlocked.Read(ref _usedBytes);
    public long DeadBytes => UsedBytes - LiveBytes;
    /// <summary>Bytes of the file's segments in use (its disk footprint; dead segments are holes).</summary>
    public long FileBytes => Interlocked.Read(ref _segmentsInUse) * SegmentBytes;
    public long Segments => Interlocked.Read(ref _segmentsInUse);
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);
    public long WriteErrors => Interlocked.Read(ref _writeErrors);

    /// <summary>Room for <paramref name="length"/> more bytes in the open segment.</summary>
    public bool HasRoom(int length) => _open >= 0 && _segments[_open].Used + length <= SegmentBytes;

    /// <summary>
    /// Seals the open segment (its bytes are all committed) and opens another: a dead one (lowest
    /// first) or a new one at the end. False when the file is at its size limit.
    /// </summary>
    public bool OpenNextSegment()
    {
        if (_open >= 0 && _committed != _segments[_open].Used)
        {
            throw new InvalidOperationException("The open segment has uncommitted extents.");
        }
        int next;
        if (_freeSegments.Count > 0)
        {
            next = _freeSegments.Min;
            _freeSegments.Remove(next);
        }
        else if (_segments.Count < _limitSegments)
        {
            next = _segments.Count;
            _segments.Add(new Segment());
        }
        else
        {
            return false;
        }
        int sealedSegment = _open;
        _open = next;
        _segments[next].Opened = ++_opened;
        _committed = 0;
        Interlocked.Increment(ref _segmentsInUse);
        if (sealedSegment >= 0)
        {
            FreeIfDead(sealedSegment); // every extent may have died while it was open
        }
        return true;
    }

    /// <summary>
    /// Appends an extent to the open segment's buffer (not yet on disk; <see cref="Write"/> writes it).
    /// <see cref="HasRoom"/> must be true. Returns its location (byte offset in the file).
    /// </summary>
    public ulong Append(byte* data, int length, uint slot)
    {
        Segment s = _segments[_open];
        ulong location = (ulong)_open * SegmentBytes + (ulong)s.Used;
        Buffer.MemoryCopy(data, _buffer + s.Used, length, length);
        s.Used += length;
        s.Live += length;
        s.Slots.Add(slot);
        Interlocked.Add(ref _liveBytes, length);
        Interlocked.Add(ref _usedBytes, length);
        return location;
    }

    /// <summary>The bytes of the open segment not yet on disk, as whole pages: what one <see cref="Write"/> puts on disk.</summary>
    public readonly struct PendingWrite(int segment, int from, int to, int used)
    {
        public int Segment { get; } = segment;
        /// <summary>Start and end (page-aligned) in the segment.</summary>
        public int From { get; } = from;
        public int To { get; } = to;
        /// <summary>The segment's extent bytes once written.</summary>
        public int Used { get; } = used;
        public bool IsEmpty => To <= From;
    }

    /// <summary>
    /// The open segment's uncommitted extents (whole pages, from the page holding the first one),
    /// to hand to <see cref="Write"/> and then <see cref="Finish"/>. Under lock 3.
    /// </summary>
    public PendingWrite PrepareWrite()
    {
        if (_open < 0 || _segments[_open].Used == _committed)
        {
            return default;
        }
        int used = _segments[_open].Used;
        return new PendingWrite(_open, _committed & ~(SharedLayout.PageSize - 1), (used + SharedLayout.PageSize - 1) & ~(SharedLayout.PageSize - 1), used);
    }

    /// <summary>Puts <paramref name="write"/> on disk: the system call, outside lock 3 (writeback's I/O lock held, so nothing appends meanwhile).</summary>
    public Errno Write(in PendingWrite write)
    {
        if (write.IsEmpty)
        {
            return Errno.None;
        }
        Errno error = _device.Write(Descriptor, _buffer + write.From, (ulong)(write.To - write.From), (ulong)((long)write.Segment * SegmentBytes + write.From));
        if (error != Errno.None)
        {
            Interlocked.Increment(ref _writeErrors);
        }
        else
        {
            Interlocked.Add(ref _bytesWritten, write.To - write.From);
        }
        return error;
    }

    /// <summary>
    /// After <see cref="Write"/>, under lock 3: the extents are committed, or on <paramref name="error"/>
    /// taken back, as if never appended.
    /// </summary>
    public void Finish(in PendingWrite write, Errno error)
    {
        if (write.IsEmpty)
        {
            return;
        }
        if (error != Errno.None)
        {
            TakeBackUncommitted(_segments[write.Segment]);
            return;
        }
        _committed = write.Used;
    }

    public SlotBackend Backend => SlotBackend.File;

    public string Description => $"the backing file {Path}";

    /// <summary>Whether the extent at <paramref name="location"/> of the open segment, as appended (before or after the write), holds <paramref name="data"/>.</summary>
    public bool AppendedEquals(ulong location, byte* data, int length) =>
        new ReadOnlySpan<byte>(_buffer + (long)(location % SegmentBytes), length).SequenceEqual(new ReadOnlySpan<byte>(data, length));

    public bool UpkeepDue => false;

    public void Upkeep(Lock maintenance)
    {
    }

    /// <summary>Takes back the extents appended since <see cref="MarkBatch"/>, as if never appended.</summary>
    private void TakeBackUncommitted(Segment s)
    {
        int bytes = s.Used - _committed;
        s.Slots.RemoveRange(_batchFirst, s.Slots.Count - _batchFirst);
        s.Used = _committed;
        s.Live -= bytes;
        Interlocked.Add(ref _liveBytes, -bytes);
        Interlocked.Add(ref _usedBytes, -bytes);
    }

    /// <summary>Marks the start of a batch of appends (the open segment's bytes are all committed), so a failed <see cref="Write"/> can take them back.</summary>
    public void MarkBatch()
    {
        if (_open >= 0 && _committed != _segments[_open].Used)
        {
            throw new InvalidOperationException("The open segment has uncommitted extents.");
        }
        _batchFirst = _open >= 0 ? _segments[_open].Slots.Count : 0;
    }

    /// <summary>An extent no slot names any more: its bytes are dead. A sealed segment with nothing live is punched out and reused.</summary>
    public void Release(ulong location, int length)
    {
        int segment = (int)(location / SegmentBytes);
        Segment s = _segments[segment];
        s.Live -= length;
        Interlocked.Add(ref _liveBytes, -length);
        if (s.Live < 0)
        {
            throw new InvalidOperationException($"Backing-file segment {segment} released more than it held.");
        }
        if (segment != _open)
        {
            FreeIfDead(segment);
        }
    }

    private void FreeIfDead(int segment)
    {
        Segment s = _segments[segment];
        if (s.Live != 0 || segment == _open || _freeSegments.Contains(segment) || _deadSegments.Contains(segment))
        {
            return;
        }
        Interlocked.Add(ref _usedBytes, -s.Used);
        s.Used = 0;
        s.Slots.Clear();
        _deadSegments.Add(segment);
        Volatile.Write(ref _deadCount, _deadSegments.Count); // writeback punches it, outside lock 3, then it is reused
    }

    /// <summary>Whether segments wait to be punched and reused.</summary>
    public bool HasDeadSegments => Volatile.Read(ref _deadCount) > 0;

    private int _deadCount;

    /// <summary>The segments whose extents all died since the last call (under lock 3); writeback <see cref="Punch"/>es each, then hands it to <see cref="Reuse"/>.</summary>
    public int[] TakeDeadSegments()
    {
        int[] dead = [.. _deadSegments];
        _deadSegments.Clear();
        Volatile.Write(ref _deadCount, 0);
        return dead;
    }

    /// <summary>Gives a dead segment's blocks back (a hole; if the file system cannot punch, the space is still reused). Outside lock 3.</summary>
    public void Punch(int segment) => _device.Discard(Descriptor, (ulong)segment * SegmentBytes, SegmentBytes);

    /// <summary>A punched segment can be opened again (under lock 3).</summary>
    public void Reuse(int segment)
    {
        _freeSegments.Add(segment);
        Interlocked.Decrement(ref _segmentsInUse);
    }

    private long _opened; // segments opened so far (each segment's Opened is its number)

    /// <summary>Sealed segments with live extents, the oldest (first opened) first: what the file gives the remote tier when it is full (spill).</summary>
    public List<int> OldestSegments(int count)
    {
        var result = new List<int>();
        for (int i = 0; i < _segments.Count; i++)
        {
            if (i != _open && _segments[i].Live > 0)
            {
                result.Add(i);
            }
        }
        result.Sort((a, b) => _segments[a].Opened.CompareTo(_segments[b].Opened));
        return result.Count > count ? result.GetRange(0, count) : result;
    }

    /// <summary>The most bytes the file may take (0: no limit).</summary>
    public long LimitBytes => _limitSegments == long.MaxValue ? 0 : _limitSegments * SegmentBytes;

    /// <summary>Sealed segments whose live bytes are below <paramref name="liveFraction"/> of a segment, emptiest first.</summary>
    public List<int> SparseSegments(double liveFraction)
    {
        var result = new List<int>();
        for (int i = 0; i < _segments.Count; i++)
        {
            Segment s = _segments[i];
            if (i != _open && s.Used > 0 && s.Live < liveFraction * SegmentBytes)
            {
                result.Add(i);
            }
        }
        result.Sort((a, b) => _segments[a].Live.CompareTo(_segments[b].Live));
        return result;
    }

    public int SegmentOf(ulong location) => (int)(location / SegmentBytes);

    public byte* StoredBytes(byte* copy, ulong location, int length, byte* plain) => copy + (location % SegmentBytes);

    /// <summary>The slot ids of a segment's extents (some may be dead or reused: check each slot's location).</summary>
    public IReadOnlyList<uint> SlotsOf(int segment) => _segments[segment].Slots;

    /// <summary>The bytes to read for a whole segment: its extents, rounded up to pages (under lock 3).</summary>
    public int SegmentReadLength(int segment) => (_segments[segment].Used + SharedLayout.PageSize - 1) & ~(SharedLayout.PageSize - 1);

    /// <summary>Reads <paramref name="length"/> bytes of a segment (<see cref="SegmentReadLength"/>) into <paramref name="destination"/> (page-aligned, <see cref="SegmentBytes"/>). Outside lock 3.</summary>
    public Errno ReadSegment(int segment, int length, byte* destination) =>
        _device.Read(Descriptor, destination, (ulong)length, (ulong)segment * SegmentBytes);

    public void Dispose()
    {
        _handle.Dispose();
        NativeMemory.AlignedFree(_buffer);
    }
}
