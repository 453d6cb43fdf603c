using System.Diagnostics;
using System.Runtime.InteropServices;
using CramCore.Internals;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// Compressed writeback (seed 003): above the pool's high watermark, the coldest pool entries are
/// written to the tier below the pool (<see cref="ISegmentTier"/>: the <see cref="BackingFile"/>, else
/// the remote store) still compressed, packed back to back, and their slots flipped to the new
/// extent; the pool objects are freed and the pool compacted, down to the low watermark. With both a
/// file (with a limit) and a remote store, the file's oldest segments go on to the store when the
/// file passes the high watermark of its limit (<see cref="Spill"/>, a segment compaction into the
/// store), so the coldest entries leave each local tier when its budget is reached. "Coldest": pool slots in the order their copies were stored, with a second chance for
/// a slot the fault service marked referenced (read back since) — CLOCK over store order, an
/// approximation of LRU by last fault-in or eviction. Segment compaction rewrites the live extents
/// of mostly dead segments the same way. Every move follows the protocol in cramnative.h ("Virtual
/// swap"): copy, CramNative_SlotsMove under the engine lock, free the old location. A failed write
/// (ENOSPC, EIO) takes the batch back — the entries stay in the pool — and pauses writeback for a
/// second; it resumes by itself when a write succeeds again.
/// <para>
/// Off the reclaim path: writeback runs on its own thread (Writeback.Thread.cs), holding its I/O
/// lock (lock 2a in cramnative.h) for a whole run, and takes the maintenance lock (3) only for a
/// batch's two short steps: choose the entries and copy them into the open segment, then — after
/// the write, done holding 2a alone — move the slots and free the pool objects. A frozen or slow
/// file system therefore stalls writeback only: reclaim goes on compressing into the pool until the
/// pool is full. What changed while the write was in flight is checked before anything moves: the
/// slot table names the slots freed meanwhile (<see cref="SlotTable.WatchFrees"/>; a freed slot and
/// its pool object may already hold other bytes under the same ids); an entry not freed, still in
/// the pool at the same place and not stale, moves; the others stay (requeued if still pooled), and
/// their new extents are released.
/// </para>
/// <para>
/// Recompressed on the way out (cramnative.h, "Codecs"): with a recompressor, a batch's LZ4 copies
/// are taken out of the pool under lock 3, re-encoded with zstd and the current dictionary holding
/// no lock but 2a (Writeback.Recode.cs: with the recompression CPU budget the recompressor leaves
/// over, in the thread's own rounds only, never for a reclaim pass waiting for room nor for a
/// caller), and appended — the smaller encoding — under lock 3 again; after the write
/// CramNative_SlotsRecode rewrites those slots' location, length, checksum and codec in one step,
/// refusing a slot that a resident page keeps as its clean copy (whose count names its length), which
/// then stays in the pool and its new extent is released. Fewer bytes go to the file and the store.
/// </para>
/// </summary>
internal sealed unsafe partial class Writeback : IDisposable
{
    /// <summary>Entries per batch (one write, one native move call).</summary>
    public const int BatchEntries = 256;

    private readonly INativeEngine _engine;
    private readonly TierEventChannel _events; // pauses, resumptions, a full file
    private readonly TimeProvider _time;       // the pause after a write error, the rate limit
    private readonly Lock _maintenance;        // lock 3: a batch's choose-and-copy and move-and-free steps
    private readonly Lock _io = new();         // lock 2a: one run, compaction or punch at a time, I/O included
    private readonly SlotTable _slots;
    private readonly CompressedPool _pool;
    private readonly ISegmentTier _tier;  // where batches go: the backing file or the remote store
    private readonly BackingFile? _file;  // the file, for segment compaction
    private readonly ISegmentTier? _spill; // with a file and a remote store: where the file's oldest segments go when it is full
    private readonly FifoQueue<uint> _queue;
    private readonly long _highBytes, _lowBytes, _bytesPerSecond;
    private readonly double _highFraction, _lowFraction; // of the pool's limit, and of the file's when it spills to the store
    private readonly NativeSlotMove[] _moves = new NativeSlotMove[BatchEntries];
    private readonly int[] _lengths = new int[BatchEntries]; // each move's extent length, as appended
    private readonly int[] _poolLengths = new int[BatchEntries]; // a batch entry's length in the pool
    private readonly byte[] _codecs = new byte[BatchEntries];    // its codec bits once re-encoded, or AsIs
    private readonly uint[] _checksums = new uint[BatchEntries]; // the re-encoded copy's checksum
    private readonly byte* _staged;      // a batch's copies, taken out of the pool (then re-encoded in place)
    private readonly byte* _segmentCopy; // a segment read back for compaction
    private readonly byte* _plain;       // an extent of it opened (the store's are sealed)
    private long _allowance, _allowanceAt;
    private long _pausedUntil;
    private long _pages, _bytes, _segmentCompactions, _skippedMoves;

    /// <summary>Writeback of <paramref name="slots"/>' pool to its file; <paramref name="maintenance"/> is lock 3, which reclaim, the reaper and compaction hold. With a <paramref name="recompressor"/>, a batch's LZ4 copies are re-encoded with zstd on the way out (its dictionaries and CPU budget).</summary>
    public Writeback(INativeEngine engine, SlotTable slots, CramOptions options, TierEventChannel events, Lock maintenance, Recompressor? recompressor = null)
    {
        _recompressor = recompressor;
        _encoder = recompressor?.CreateWritebackEncoder();
        _engine = engine;
        _events = events;
        _time = options.TimeProvider;
        _maintenance = maintenance;
        _slots = slots;
        _pool = slots.Pool;
        _tier = slots.Tier!;
        _file = slots.File;
        _spill = _file is null ? null : slots.Remote;
        _queue = slots.PoolOrder!;
        _highBytes = (long)(options.CompressedPoolLimitBytes * options.WritebackHighWatermark);
        _highFraction = options.WritebackHighWatermark;
        _lowFraction = options.WritebackLowWatermark;
        _lowBytes = (long)(options.CompressedPoolLimitBytes * options.WritebackLowWatermark);
        _bytesPerSecond = options.WritebackBytesPerSecond;
        _allowanceAt = _time.GetTimestamp();
        _segmentCopy = (byte*)NativeMemory.AlignedAlloc(BackingFile.SegmentBytes, SharedLayout.PageSize);
        _plain = (byte*)NativeMemory.AlignedAlloc(SharedLayout.PageSize, SharedLayout.PageSize);
        _staged = (byte*)NativeMemory.AlignedAlloc(BatchEntries * (nuint)SharedLayout.PageSize, SharedLayout.PageSize);
        if (_encoder is not null)
        {
            _decoded = (byte*)NativeMemory.AlignedAlloc(SharedLayout.PageSize, SharedLayout.PageSize);
            _encoded = (byte*)NativeMemory.AlignedAlloc(SharedLayout.PageSize, SharedLayout.PageSize);
        }
    }

    /// <summary>Pages written back (cumulative).</summary>
    public long Pages => Interlocked.Read(ref _pages);
    /// <summary>Stored (compressed) bytes written back (cumulative).</summary>
    public long Bytes => Interlocked.Read(ref _bytes);
    public long SegmentCompactions => Interlocked.Read(ref _segmentCompactions);
    /// <summary>Entries written whose slot changed while the write was in flight (freed, compacted, rewritten): they stayed where they were (cumulative).</summary>
    public long SkippedMoves => Interlocked.Read(ref _skippedMoves);
    /// <summary>The last write error while writeback is paused, else <see cref="Errno.None"/>.</summary>
    public Errno PausedBy { get; private set; }
    /// <summary>The file reached <see cref="CramOptions.BackingFileLimitBytes"/> and has no dead segment to reuse.</summary>
    public bool FileFull { get; private set; }

    /// <summary>Whether the pool is above the high watermark.</summary>
    public bool AboveHighWatermark => _pool.UsedBytes > _highBytes;

    private bool Paused => _time.GetTimestamp() < Volatile.Read(ref _pausedUntil);

    /// <summary>
    /// Writes back until the pool is at the low watermark (or <paramref name="force"/> bytes of
    /// stored data were moved, when positive), within the rate limit. Returns the pages moved. Takes
    /// lock 2a, then 3 for each batch's short steps: never call it holding lock 3.
    /// </summary>
    public long Run(long force = 0)
    {
        lock (_io)
        {
            if (Paused)
            {
                return 0;
            }
            long moved = 0, movedBytes = 0;
            while (!_stopping && (force > 0 ? movedBytes < force : _pool.UsedBytes > _lowBytes))
            {
                int pages = Batch(out long bytes, out bool stop);
                moved += pages;
                movedBytes += bytes;
                if (pages > 0)
                {
                    Progressed();
                }
                if (stop || pages == 0)
                {
                    break;
                }
            }
            return moved;
        }
    }

    /// <summary>
    /// One batch: take the copies (lock 3), re-encode the LZ4 ones (2a only), append (lock 3), write
    /// (2a only), move or recode and free (lock 3). Returns pages moved; <paramref name="stop"/> when
    /// nothing more can be done now.
    /// </summary>
    private int Batch(out long bytes, out bool stop)
    {
        bytes = 0;
        stop = false;
        int n, dictionary = -1;
        lock (_maintenance)
        {
            if (!RateAllows() || (!_tier.HasRoom(CompressedPool.MaxObjectSize) && !OpenSegment()))
            {
                stop = true;
                return 0;
            }
            n = Take(out int candidates);
            if (n == 0)
            {
                stop = true;
                return 0;
            }
            _slots.WatchFrees(); // from the copy on: a slot freed meanwhile may hold other bytes under the same ids
            if (candidates > 0)
            {
                dictionary = _recompressor!.LeaseDictionary();
            }
        }
        try
        {
            Reencode(n, dictionary);
            BackingFile.PendingWrite write;
            lock (_maintenance)
            {
                _tier.MarkBatch();
                n = Append(n);
                write = _tier.PrepareWrite();
            }
            Errno error = _tier.Write(write);
            lock (_maintenance)
            {
                HashSet<ulong> freed = _slots.StopWatchingFrees();
                if (!Finish(write, error, n, requeue: true))
                {
                    stop = true;
                    return 0;
                }
                n = KeepUnchanged(n, freed);
                int moved = MoveOrRecode(n);
                for (int i = 0; i < n; i++)
                {
                    ref NativeSlotMove m = ref _moves[i];
                    if (m.Moved != 0)
                    {
                        bytes += _lengths[i];
                        _pool.Free((uint)m.FromLocation); // step 3: no fault can read it any more
                        _slots.Moved(SlotBackend.Pool, _tier.Backend);
                        if (_codecs[i] != AsIs)
                        {
                            _slots.Recoded(0, _codecs[i]);
                            Interlocked.Increment(ref _recompressedPages);
                            Interlocked.Add(ref _recompressedBytesSaved, _poolLengths[i] - _lengths[i]);
                        }
                    }
                }
                Interlocked.Add(ref _pages, moved);
                Interlocked.Add(ref _bytes, bytes);
                _allowance -= bytes;
                if (_pool.SlackBytes > Math.Max(CompressedPool.ZspagePages * SharedLayout.PageSize, _pool.UsedBytes / 8))
                {
                    _pool.Compact(); // freed objects leave holes; compaction turns them into free memory
                }
                return moved;
            }
        }
        finally
        {
            if (dictionary >= 0)
            {
                lock (_maintenance)
                {
                    _recompressor!.ReleaseDictionary(dictionary);
                }
            }
        }
    }

    /// <summary>
    /// Takes up to a batch of the coldest pool entries and copies their bytes out of the pool (under
    /// lock 3), about what the open segment has room for. Returns how many, and of those the
    /// <paramref name="candidates"/> to re-encode (none unless this run may).
    /// </summary>
    private int Take(out int candidates)
    {
        int n = 0, secondChances = 0, budget = _queue.Count, taken = 0;
        bool reencode = MayReencode;
        candidates = 0;
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
            if (!_tier.HasRoom(taken + s->Length))
            {
                // First in the next batch's segment, which follows this one in the file: entries stored
                // together stay together there, so a sequential reader's window is one read (at the
                // tail it would land a pool's worth of entries later, one far extent per segment).
                _queue.EnqueueFront(id);
                break;
            }
            ulong handle = s->Location;
            int length = s->Length;
            Buffer.MemoryCopy((void*)_pool.AddressOf((uint)handle), _staged + (long)n * SharedLayout.PageSize, SharedLayout.PageSize, length);
            taken += length;
            _poolLengths[n] = _lengths[n] = length;
            _codecs[n] = reencode && Reencodable(flags) ? Candidate : AsIs;
            candidates += _codecs[n] == Candidate ? 1 : 0;
            _moves[n++] = new NativeSlotMove { Slot = id, FromBackend = SlotBackend.Pool, FromLocation = handle, ToBackend = _tier.Backend };
        }
        return n;
    }

    /// <summary>
    /// Appends the batch's copies, as they are or re-encoded, to the open segment in order (under
    /// lock 3); those it has no room for (the store's extents take a tag each) go back to the front
    /// of the queue. Returns how many were appended.
    /// </summary>
    private int Append(int n)
    {
        for (int i = 0; i < n; i++)
        {
            if (!_tier.HasRoom(_lengths[i]))
            {
                for (int j = n - 1; j >= i; j--)
                {
                    _queue.EnqueueFront((uint)_moves[j].Slot);
                }
                return i;
            }
            _moves[i].ToLocation = _tier.Append(_staged + (long)i * SharedLayout.PageSize, _lengths[i], (uint)_moves[i].Slot);
        }
        return n;
    }

    /// <summary>
    /// After the write, under lock 3: keeps, at the front of the batch, the entries still in the pool
    /// where they were (the write ran without lock 3: an entry may have been freed — and its slot and
    /// pool object reused for other bytes —, or marked stale meanwhile; <paramref name="freed"/> names
    /// the slots freed since the batch was chosen). The others' extents are released, and those still
    /// pooled requeued. Returns how many are kept.
    /// </summary>
    private int KeepUnchanged(int n, HashSet<ulong> freed)
    {
        int kept = 0;
        for (int i = 0; i < n; i++)
        {
            NativeSlotMove m = _moves[i];
            int length = _lengths[i];
            NativeSlot* s = _slots.TryGet(m.Slot);
            bool same = !freed.Contains(m.Slot) && s != null && s->Backend == SlotBackend.Pool && s->Location == m.FromLocation &&
                (NativeSlot.LoadFlags(s) & (SlotFlags.Stale | SlotFlags.Bad)) == 0;
            if (same)
            {
                Debug.Assert(s->Length == _poolLengths[i] && (_codecs[i] != AsIs || _tier.AppendedEquals(m.ToLocation, (byte*)_pool.AddressOf((uint)m.FromLocation), length)),
                    "an unfreed pool entry changed under writeback");
                _lengths[kept] = length;
                _poolLengths[kept] = _poolLengths[i];
                _codecs[kept] = _codecs[i];
                _checksums[kept] = _checksums[i];
                _moves[kept++] = m;
                continue;
            }
            Interlocked.Increment(ref _skippedMoves);
            _tier.Release(m.ToLocation, length);
            RequeueIfPooled(m.Slot); // a new entry may have taken the slot: a later batch
        }
        return kept;
    }

    /// <summary>Queues slot <paramref name="id"/> again if it is (still, or again) a live pool entry: a later batch takes it.</summary>
    private void RequeueIfPooled(ulong id)
    {
        NativeSlot* s = _slots.TryGet(id);
        if (s != null && s->Backend == SlotBackend.Pool && (NativeSlot.LoadFlags(s) & (SlotFlags.Stale | SlotFlags.Bad)) == 0)
        {
            _queue.Enqueue((uint)id);
        }
    }

    /// <summary>
    /// After the batch's write, under lock 3: commits its extents, or on <paramref name="error"/> takes
    /// them back — the entries stay where they were (requeued when <paramref name="requeue"/>) — and
    /// pauses writeback. False on error.
    /// </summary>
    private bool Finish(in BackingFile.PendingWrite write, Errno error, int n, bool requeue) => Finish(_tier, write, error, n, requeue);

    private bool Finish(ISegmentTier destination, in BackingFile.PendingWrite write, Errno error, int n, bool requeue)
    {
        destination.Finish(write, error);
        if (error != Errno.None)
        {
            if (requeue)
            {
                for (int i = 0; i < n; i++)
                {
                    _queue.Enqueue((uint)_moves[i].Slot);
                }
            }
            Pause(destination, error);
            return false;
        }
        Resume(destination);
        return true;
    }

    /// <summary>Moves the first <paramref name="n"/> slots to their new extents (step 2); a refused move's new extent is released at once. Returns how many moved. Under lock 3.</summary>
    private int Move(int n, ISegmentTier destination)
    {
        if (n == 0)
        {
            return 0;
        }
        int moved;
        fixed (NativeSlotMove* moves = _moves)
        {
            Interop.ThrowIfFailed(_engine.SlotsMove(moves, n, out moved), "Moving slots to the backing file");
        }
        for (int i = 0; i < n; i++)
        {
            if (_moves[i].Moved == 0)
            {
                destination.Release(_moves[i].ToLocation, _lengths[i]); // went stale or bad meanwhile
            }
        }
        return moved;
    }

    private bool OpenSegment() => OpenSegment(_tier);

    private bool OpenSegment(ISegmentTier destination)
    {
        if (destination.OpenNextSegment())
        {
            FileFull = false;
            return true;
        }
        if (destination == _tier && _spill is not null)
        {
            return false; // the file is full, for now: the spill to the remote store makes room
        }
        if (!FileFull)
        {
            FileFull = true;
            _events.Post(CramTierEventKind.BackingFileFull, destination is BackingFile file
                ? $"The backing file reached its limit of {file.FileBytes} bytes; writeback stops until space is freed."
                : $"{destination.Description} reached the tier's capacity; writeback stops until space is freed.");
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

    private void Pause(Errno error) => Pause(_tier, error);

    private void Pause(ISegmentTier destination, Errno error)
    {
        Volatile.Write(ref _pausedUntil, _time.GetTimestamp() + _time.TimestampFrequency /* one second */);
        RetryAfterPause();
        if (PausedBy == Errno.None)
        {
            PausedBy = error;
            _events.Post(CramTierEventKind.WritebackPaused,
                $"Writing to {destination.Description} failed ({(destination is Remote.RemoteSegments r ? r.LastError : error.ToString())}); entries stay where they are and writeback retries every second.");
        }
    }

    private void Resume(ISegmentTier destination)
    {
        if (PausedBy != Errno.None)
        {
            PausedBy = Errno.None;
            _events.Post(CramTierEventKind.WritebackResumed, $"Writing to {destination.Description} works again; writeback resumed.");
        }
    }

    /// <summary>Whether dead bytes are worth a segment compaction: more than a quarter of the file, at least four segments' worth.</summary>
    private bool CompactionDue => CompactionDueIn(_file) || CompactionDueIn(_slots.Remote);

    private static bool CompactionDueIn(ISegmentTier? tier) => tier is not null && tier.DeadBytes >= Math.Max(4L * BackingFile.SegmentBytes, tier.UsedBytes / 4);

    /// <summary>
    /// Rewrites the live extents of segments less than half live into the open segment and frees
    /// them, while dead bytes are more than a quarter of the file (at least four segments' worth).
    /// Returns the segments emptied. Takes lock 2a, then 3 for its short steps; each segment is read
    /// and each batch written holding 2a only.
    /// </summary>
    public int CompactSegments(bool force = false)
    {
        lock (_io)
        {
            int emptied = 0;
            foreach (ISegmentTier? tier in new ISegmentTier?[] { _file, _slots.Remote })
            {
                if (tier is null || (!force && !CompactionDueIn(tier)) || Paused)
                {
                    continue;
                }
                List<int> sparse;
                lock (_maintenance)
                {
                    sparse = tier.SparseSegments(0.5);
                }
                foreach (int segment in sparse)
                {
                    if (_stopping)
                    {
                        return emptied;
                    }
                    SegmentCompaction result = CompactSegment(segment, tier, tier);
                    if (result == SegmentCompaction.Emptied)
                    {
                        emptied++;
                        Interlocked.Increment(ref _segmentCompactions);
                    }
                    else if (result == SegmentCompaction.Stopped)
                    {
                        break;
                    }
                }
            }
            return emptied;
        }
    }

    private enum SegmentCompaction { Emptied, Unreadable, Stopped }

    /// <summary>Moves one segment's live extents into the open segment (under lock 2a). While 2a is held nothing else writes the file, so the copy read stays the segment's bytes.</summary>
    private SegmentCompaction CompactSegment(int segment, ISegmentTier source, ISegmentTier destination)
    {
        uint[] ids;
        int length;
        lock (_maintenance)
        {
            ids = [.. source.SlotsOf(segment)];
            length = source.SegmentReadLength(segment);
        }
        if (length == 0)
        {
            return SegmentCompaction.Emptied; // every extent died meanwhile
        }
        if (source.ReadSegment(segment, length, _segmentCopy) != Errno.None)
        {
            return SegmentCompaction.Unreadable; // its extents stay where they are; faults report what they find
        }
        var moved = new HashSet<uint>();
        int next = 0;
        while (next < ids.Length)
        {
            int n;
            BackingFile.PendingWrite write;
            lock (_maintenance)
            {
                if (!destination.HasRoom(CompressedPool.MaxObjectSize) && !OpenSegment(destination))
                {
                    return SegmentCompaction.Stopped;
                }
                destination.MarkBatch();
                n = ChooseLive(segment, ids, ref next, moved, source, destination);
                if (n == 0)
                {
                    continue;
                }
                write = destination.PrepareWrite();
                _slots.WatchFrees();
            }
            Errno error = destination.Write(write);
            lock (_maintenance)
            {
                HashSet<ulong> freed = _slots.StopWatchingFrees();
                if (!Finish(destination, write, error, n, requeue: false))
                {
                    return SegmentCompaction.Stopped;
                }
                // Nothing wrote the file meanwhile (2a is held), so an extent still named by its slot
                // at the same place holds the bytes just copied; one freed or moved meanwhile is not moved.
                int kept = 0;
                for (int i = 0; i < n; i++)
                {
                    NativeSlot* s = _slots.TryGet(_moves[i].Slot);
                    if (!freed.Contains(_moves[i].Slot) && s != null && s->Backend == source.Backend && s->Location == _moves[i].FromLocation && s->Length == _lengths[i])
                    {
                        _lengths[kept] = _lengths[i];
                        _moves[kept++] = _moves[i];
                    }
                    else
                    {
                        Interlocked.Increment(ref _skippedMoves);
                        destination.Release(_moves[i].ToLocation, _lengths[i]);
                    }
                }
                Move(kept, destination);
                for (int k = 0; k < kept; k++)
                {
                    if (_moves[k].Moved != 0)
                    {
                        source.Release(_moves[k].FromLocation, _lengths[k]);
                        if (destination != source)
                        {
                            _slots.Moved(source.Backend, destination.Backend);
                            Interlocked.Increment(ref _spilledPages);
                        }
                    }
                }
            }
        }
        return SegmentCompaction.Emptied;
    }

    /// <summary>Appends up to a batch of the segment's live extents, from <paramref name="next"/> on, checked against their checksums (under lock 3). Returns how many.</summary>
    private int ChooseLive(int segment, uint[] ids, ref int next, HashSet<uint> moved, ISegmentTier source, ISegmentTier destination)
    {
        int n = 0;
        for (; next < ids.Length && n < BatchEntries; next++)
        {
            uint id = ids[next];
            NativeSlot* s = _slots.TryGet(id);
            if (s == null || s->Backend != source.Backend || source.SegmentOf(s->Location) != segment ||
                (NativeSlot.LoadFlags(s) & (SlotFlags.Stale | SlotFlags.Bad)) != 0 || moved.Contains(id))
            {
                continue; // dead, elsewhere, about to be freed by the reaper, or moved already
            }
            // The copy must be this extent's bytes: never move bytes that do not match the checksum;
            // a damaged extent stays where it is for the fault to report.
            byte* stored = source.StoredBytes(_segmentCopy, s->Location, s->Length, _plain);
            if (stored == null || Checksum.Crc32C(stored, s->Length) != s->Checksum)
            {
                continue;
            }
            if (!destination.HasRoom(s->Length))
            {
                break;
            }
            ulong from = s->Location;
            ulong to = destination.Append(stored, s->Length, id);
            moved.Add(id);
            _lengths[n] = s->Length;
            _moves[n++] = new NativeSlotMove
            {
                Slot = id, FromBackend = source.Backend, FromLocation = from, ToBackend = destination.Backend, ToLocation = to,
            };
        }
        return n;
    }

    /// <summary>Pages the file gave the remote store when it was full (cumulative).</summary>
    public long SpilledPages => Interlocked.Read(ref _spilledPages);

    private long _spilledPages;

    /// <summary>With a file and a remote store: whether the file is above its high watermark (of <see cref="CramOptions.BackingFileLimitBytes"/>), so its oldest segments should go to the store.</summary>
    private bool SpillDue => _spill is not null && _file!.LimitBytes > 0 && _file.FileBytes > _file.LimitBytes * _highFraction;

    /// <summary>
    /// The file's oldest segments go to the remote store, their live extents still compressed (and
    /// sealed there), one remote segment per batch, until the file is back at its low watermark: the
    /// coldest entries leave the local tiers when their budget is reached. Each move follows the
    /// protocol of a segment compaction (cramnative.h, "Virtual swap"); a refused write pauses it
    /// and the entries stay in the file. Takes lock 2a, then 3 for its short steps. Returns pages moved.
    /// </summary>
    public long Spill(bool force = false)
    {
        if (_spill is null || (!force && !SpillDue))
        {
            return 0;
        }
        lock (_io)
        {
            long before = SpilledPages;
            while (!_stopping && !Paused && (force ? SpilledPages == before : _file!.FileBytes > _file.LimitBytes * _lowFraction))
            {
                List<int> oldest;
                lock (_maintenance)
                {
                    oldest = _file!.OldestSegments(1);
                }
                if (oldest.Count == 0 || CompactSegment(oldest[0], _file!, _spill) != SegmentCompaction.Emptied)
                {
                    break;
                }
                PunchDeadSegmentsLocked();
            }
            return SpilledPages - before;
        }
    }

    /// <summary>Punches the segments whose extents all died and makes them reusable (lock 2a; 3 only to take and return them). Returns how many.</summary>
    public int PunchDeadSegments()
    {
        if (!_tier.HasDeadSegments && _spill?.HasDeadSegments != true)
        {
            return 0;
        }
        lock (_io)
        {
            return PunchDeadSegmentsLocked();
        }
    }

    /// <summary>The same, with lock 2a held: the file's dead segments and, with a spill, the remote store's.</summary>
    private int PunchDeadSegmentsLocked()
    {
        int punched = 0;
        foreach (ISegmentTier tier in _spill is null ? [_tier] : new[] { _tier, _spill })
        {
            int[] dead;
            lock (_maintenance)
            {
                dead = tier.TakeDeadSegments();
            }
            foreach (int segment in dead)
            {
                tier.Punch(segment);
            }
            lock (_maintenance)
            {
                foreach (int segment in dead)
                {
                    tier.Reuse(segment);
                }
            }
            punched += dead.Length;
        }
        return punched;
    }

    /// <summary>Whether the queue holds more than twice the pooled slots (and a few thousand): mostly entries of slots that left the pool.</summary>
    private bool QueueNeedsTrim => _queue.Count > 2 * _slots.PoolSlots + 4096;

    /// <summary>Drops queue entries of slots that left the pool, when they are most of the queue (under lock 3).</summary>
    public void TrimQueue()
    {
        lock (_maintenance)
        {
            if (QueueNeedsTrim)
            {
                _queue.Retain(id => _slots.TryGet(id) is var s && s != null && s->Backend == SlotBackend.Pool);
            }
        }
    }

    public void Dispose()
    {
        StopThread();
        NativeMemory.AlignedFree(_segmentCopy);
        NativeMemory.AlignedFree(_plain);
        NativeMemory.AlignedFree(_staged);
        DisposeEncoder();
    }
}
