using System.Runtime.InteropServices;
using CramCore.Internals;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// Compressed writeback (seed 003): above the pool's high watermark, the coldest pool entries are
/// written to the <see cref="BackingFile"/> still compressed, packed back to back, and their slots
/// flipped to the file extent; the pool objects are freed and the pool compacted, down to the low
/// watermark. "Coldest": pool slots in the order their copies were stored, with a second chance for
/// a slot the fault service marked referenced (read back since) — CLOCK over store order, an
/// approximation of LRU by last fault-in or eviction. Segment compaction rewrites the live extents
/// of mostly dead segments the same way. Every move follows the protocol in cramnative.h ("Virtual
/// swap"): copy, CramNative_SlotsMove under the engine lock, free the old location. A failed write
/// (ENOSPC, EIO) takes the batch back — the entries stay in the pool — and pauses writeback for a
/// second; it resumes by itself when a write succeeds again. Runs under the reclaimer's pass lock.
/// </summary>
internal sealed unsafe class Writeback : IDisposable
{
    /// <summary>Entries per batch (one write, one native move call).</summary>
    public const int BatchEntries = 256;


    private readonly INativeEngine _engine;
    private readonly TierEventChannel _events; // pauses, resumptions, a full file
    private readonly TimeProvider _time;       // the pause after a write error, the rate limit
    private readonly SlotTable _slots;
    private readonly CompressedPool _pool;
    private readonly BackingFile _file;
    private readonly FifoQueue<uint> _queue;
    private readonly long _highBytes, _lowBytes, _bytesPerSecond;
    private readonly NativeSlotMove[] _moves = new NativeSlotMove[BatchEntries];
    private readonly byte* _segmentCopy; // a segment read back for compaction
    private long _allowance, _allowanceAt;
    private long _pausedUntil;
    private long _pages, _bytes, _segmentCompactions;

    public Writeback(INativeEngine engine, SlotTable slots, CramOptions options, TierEventChannel events)
    {
        _engine = engine;
        _events = events;
        _time = options.TimeProvider;
        _slots = slots;
        _pool = slots.Pool;
        _file = slots.File!;
        _queue = slots.PoolOrder!;
        _highBytes = (long)(options.CompressedPoolLimitBytes * options.WritebackHighWatermark);
        _lowBytes = (long)(options.CompressedPoolLimitBytes * options.WritebackLowWatermark);
        _bytesPerSecond = options.WritebackBytesPerSecond;
        _allowanceAt = _time.GetTimestamp();
        _segmentCopy = (byte*)NativeMemory.AlignedAlloc(BackingFile.SegmentBytes, SharedLayout.PageSize);
    }

    /// <summary>Pages written back (cumulative).</summary>
    public long Pages => Interlocked.Read(ref _pages);
    /// <summary>Stored (compressed) bytes written back (cumulative).</summary>
    public long Bytes => Interlocked.Read(ref _bytes);
    public long SegmentCompactions => Interlocked.Read(ref _segmentCompactions);
    /// <summary>The last write error while writeback is paused, else <see cref="Errno.None"/>.</summary>
    public Errno PausedBy { get; private set; }
    /// <summary>The file reached <see cref="CramOptions.BackingFileLimitBytes"/> and has no dead segment to reuse.</summary>
    public bool FileFull { get; private set; }

    /// <summary>Whether the pool is above the high watermark.</summary>
    public bool AboveHighWatermark => _pool.UsedBytes > _highBytes;

    /// <summary>
    /// Writes back until the pool is at the low watermark (or <paramref name="force"/> bytes of
    /// stored data were moved, when positive), within the rate limit. Returns the pages moved.
    /// </summary>
    public long Run(long force = 0)
    {
        if (_time.GetTimestamp() < Volatile.Read(ref _pausedUntil))
        {
            return 0;
        }
        long moved = 0, movedBytes = 0;
        while (force > 0 ? movedBytes < force : _pool.UsedBytes > _lowBytes)
        {
            int pages = Batch(out long bytes, out bool stop);
            moved += pages;
            movedBytes += bytes;
            if (_pool.SlackBytes > Math.Max(CompressedPool.ZspagePages * SharedLayout.PageSize, _pool.UsedBytes / 8))
            {
                _pool.Compact(); // freed objects leave holes; compaction turns them into free memory
            }
            if (stop || pages == 0)
            {
                break;
            }
        }
        return moved;
    }

    /// <summary>One batch: choose, append, write, move, free. Returns pages moved; <paramref name="stop"/> when nothing more can be done now.</summary>
    private int Batch(out long bytes, out bool stop)
    {
        bytes = 0;
        stop = false;
        if (!RateAllows())
        {
            stop = true;
            return 0;
        }
        if (!_file.HasRoom(CompressedPool.MaxObjectSize) && !OpenSegment())
        {
            stop = true;
            return 0;
        }
        _file.MarkBatch();
        int n = 0, secondChances = 0, budget = _queue.Count;
        while (n < BatchEntries && budget-- > 0 && _queue.TryDequeue(out uint id))
        {
            NativeSlot* s = _slots.TryGet(id);
            if (s == null)
            {
                continue; // freed since it was queued
            }
            byte flags = NativeSlot.LoadFlags(s);
            if (s->Backend != SlotBackend.Pool || (flags & (SlotFlags.Stale | SlotFlags.Bad)) != 0)
            {
                continue; // left the pool (freed, moved, stale): a dead queue entry
            }
            if ((flags & SlotFlags.Referenced) != 0 && secondChances++ < BatchEntries * 4)
            {
                NativeSlot.ClearFlags(s, SlotFlags.Referenced);
                _queue.Enqueue(id); // read back since it was stored: give it another round
                continue;
            }
            if (!_file.HasRoom(s->Length))
            {
                _queue.Enqueue(id); // first in the next batch's segment... approximately: at the tail
                break;
            }
            ulong handle = s->Location;
            ulong location = _file.Append((byte*)_pool.AddressOf((uint)handle), s->Length, id);
            _moves[n++] = new NativeSlotMove
            {
                Slot = id, FromBackend = SlotBackend.Pool, FromLocation = handle, ToBackend = SlotBackend.File, ToLocation = location,
            };
        }
        if (n == 0)
        {
            stop = true;
            return 0;
        }
        if (!CommitAndMove(n, requeue: true))
        {
            stop = true;
            return 0;
        }
        int moved = 0;
        for (int i = 0; i < n; i++)
        {
            ref NativeSlotMove m = ref _moves[i];
            if (m.Moved != 0)
            {
                NativeSlot* s = _slots.Get(m.Slot);
                bytes += s->Length;
                _pool.Free((uint)m.FromLocation); // step 3: no fault can read it any more
                _slots.Moved(SlotBackend.Pool, SlotBackend.File);
                moved++;
            }
        }
        Interlocked.Add(ref _pages, moved);
        Interlocked.Add(ref _bytes, bytes);
        _allowance -= bytes;
        return moved;
    }

    /// <summary>
    /// Writes the batch's extents, then moves the slots (step 2). A refused move's new extent is
    /// released at once. False if the write failed: the extents were taken back, the entries are
    /// where they were (requeued when <paramref name="requeue"/>), and writeback pauses.
    /// </summary>
    private bool CommitAndMove(int n, bool requeue)
    {
        Errno error = _file.Commit();
        if (error != Errno.None)
        {
            if (requeue)
            {
                for (int i = 0; i < n; i++)
                {
                    _queue.Enqueue((uint)_moves[i].Slot);
                }
            }
            Pause(error);
            return false;
        }
        Resume();
        int moved;
        fixed (NativeSlotMove* moves = _moves)
        {
            Interop.ThrowIfFailed(_engine.SlotsMove(moves, n, out moved), "Moving slots to the backing file");
        }
        for (int i = 0; i < n; i++)
        {
            ref NativeSlotMove m = ref _moves[i];
            if (m.Moved == 0)
            {
                _file.Release(m.ToLocation, _slots.Get(m.Slot)->Length); // went stale or bad meanwhile
            }
        }
        return true;
    }

    private bool OpenSegment()
    {
        if (_file.OpenNextSegment())
        {
            FileFull = false;
            return true;
        }
        if (!FileFull)
        {
            FileFull = true;
            _events.Post(CramTierEventKind.BackingFileFull, $"The backing file reached its limit of {_file.FileBytes} bytes; writeback stops until space is freed.");
        }
        return false;
    }

    private bool RateAllows()
    {
        if (_bytesPerSecond == 0)
        {
            return true;
        }
        long now = _time.GetTimestamp();
        _allowance = Math.Min(_bytesPerSecond, _allowance + (long)((double)(now - _allowanceAt) / _time.TimestampFrequency * _bytesPerSecond));
        _allowanceAt = now;
        return _allowance > 0;
    }

    private void Pause(Errno error)
    {
        Volatile.Write(ref _pausedUntil, _time.GetTimestamp() + _time.TimestampFrequency /* one second */);
        if (PausedBy == Errno.None)
        {
            PausedBy = error;
            _events.Post(CramTierEventKind.WritebackPaused,
                $"Writing to the backing file {_file.Path} failed ({error}); entries stay in the pool and writeback retries every second.");
        }
    }

    private void Resume()
    {
        if (PausedBy != Errno.None)
        {
            PausedBy = Errno.None;
            _events.Post(CramTierEventKind.WritebackResumed, $"Writing to the backing file {_file.Path} works again; writeback resumed.");
        }
    }

    /// <summary>
    /// Rewrites the live extents of segments less than half live into the open segment and frees
    /// them, while dead bytes are more than a quarter of the file (at least four segments' worth).
    /// Returns the segments emptied.
    /// </summary>
    public int CompactSegments(bool force = false)
    {
        if (!force && _file.DeadBytes < Math.Max(4L * BackingFile.SegmentBytes, _file.UsedBytes / 4))
        {
            return 0;
        }
        if (_time.GetTimestamp() < Volatile.Read(ref _pausedUntil))
        {
            return 0;
        }
        int emptied = 0;
        foreach (int segment in _file.SparseSegments(0.5))
        {
            if (_file.ReadSegment(segment, _segmentCopy) != Errno.None)
            {
                continue; // unreadable now: its extents stay where they are; faults report what they find
            }
            var ids = _file.SlotsOf(segment).ToArray();
            var moved = new HashSet<uint>();
            int i = 0;
            while (i < ids.Length)
            {
                if (!_file.HasRoom(CompressedPool.MaxObjectSize) && !OpenSegment())
                {
                    return emptied;
                }
                _file.MarkBatch();
                int n = 0;
                for (; i < ids.Length && n < BatchEntries; i++)
                {
                    NativeSlot* s = _slots.TryGet(ids[i]);
                    if (s == null || s->Backend != SlotBackend.File || s->Location / BackingFile.SegmentBytes != (ulong)segment ||
                        (NativeSlot.LoadFlags(s) & (SlotFlags.Stale | SlotFlags.Bad)) != 0 || moved.Contains(ids[i]))
                    {
                        continue; // dead, elsewhere, about to be freed by the reaper, or moved already
                    }
                    // The copy read before any move must still be this extent's bytes (the segment
                    // can be freed and reopened while it is compacted): never move bytes that do not
                    // match the checksum; a damaged extent stays where it is for the fault to report.
                    byte* source = _segmentCopy + (s->Location % BackingFile.SegmentBytes);
                    if (Checksum.Crc32C(source, s->Length) != s->Checksum)
                    {
                        continue;
                    }
                    if (!_file.HasRoom(s->Length))
                    {
                        break;
                    }
                    ulong from = s->Location;
                    ulong to = _file.Append(source, s->Length, ids[i]);
                    moved.Add(ids[i]);
                    _moves[n++] = new NativeSlotMove
                    {
                        Slot = ids[i], FromBackend = SlotBackend.File, FromLocation = from, ToBackend = SlotBackend.File, ToLocation = to,
                    };
                }
                if (n == 0)
                {
                    continue;
                }
                if (!CommitAndMove(n, requeue: false))
                {
                    return emptied;
                }
                for (int k = 0; k < n; k++)
                {
                    if (_moves[k].Moved != 0)
                    {
                        _file.Release(_moves[k].FromLocation, _slots.Get(_moves[k].Slot)->Length);
                    }
                }
            }
            emptied++;
            Interlocked.Increment(ref _segmentCompactions);
        }
        return emptied;
    }

    /// <summary>Drops queue entries of slots that left the pool, when they are most of the queue.</summary>
    public void TrimQueue()
    {
        if (_queue.Count > 2 * _slots.PoolSlots + 4096)
        {
            _queue.Retain(id => _slots.TryGet(id) is var s && s != null && s->Backend == SlotBackend.Pool);
        }
    }

    public void Dispose() => NativeMemory.AlignedFree(_segmentCopy);
}
