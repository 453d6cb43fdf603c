using System.Buffers.Binary;
using System.Security.Cryptography;
using CramCore.Native;
using CramCore.Storage;

namespace CramCore.Remote;

/// <summary>
/// The remote tier as writeback sees it (<see cref="ISegmentTier"/>): each writeback batch becomes
/// one segment, a value of up to <see cref="SegmentBytes"/> written once to the store under
/// "<c>prefix:segment-in-hex</c>" on the node <see cref="ICramRemoteStore.NodeOf"/> names. Each
/// entry is sealed on its own with AES-256-GCM under the engine's key (cramnative.h, "Remote tier":
/// nonce = segment, offset; ciphertext then a 16-byte tag), so the fault path fetches and opens one
/// extent. A segment whose entries all died is deleted; live segments' leases are renewed while the
/// engine lives; <see cref="Dispose"/> deletes every key. Its state changes under lock 3, as the
/// file's do; the store is called outside it, from writeback's thread.
/// </summary>
internal sealed unsafe class RemoteSegments : ISegmentTier, IDisposable
{
    /// <summary>The most bytes of one segment (one value on the store); offsets fit CRAM_REMOTE_OFFSET_BITS.</summary>
    public const int SegmentBytes = 256 * 1024;

    private sealed class Segment(string key, int node)
    {
        public string Key { get; } = key;
        public int Node { get; } = node;
        public int Used; // extent bytes (sealed: + tag each)
        public int Live; // of those, the extents a slot names
        public bool Written;
        public readonly List<uint> Slots = []; // slot ids of its extents, in order (compaction checks each)
    }

    private readonly ICramRemoteStore _store;
    private readonly AesGcm? _aes;
    private readonly int _tagBytes;
    private readonly TimeSpan _lease, _timeout;
    private readonly TimeProvider _time;
    private readonly byte[] _buffer = GC.AllocateUninitializedArray<byte>(SegmentBytes, pinned: true);
    private readonly Dictionary<uint, Segment> _segments = [];
    private readonly List<(int Segment, long DiedAt)> _dead = [];
    private readonly Dictionary<int, string> _deadKeys = [];
    private readonly Action<int, System.Net.IPEndPoint> _publishNode;
    private uint _nextId = 1, _open;
    private long _liveBytes, _usedBytes, _bytesWritten, _writeErrors, _segmentsDeleted, _renewedAt;

    /// <summary>Segments on <paramref name="store"/> under "<paramref name="prefix"/>:…", sealed with <paramref name="key"/> (AES-256, 32 bytes; null: unsealed), leased for <paramref name="lease"/>; each store call may take <paramref name="timeout"/>, timed on <paramref name="time"/>. <paramref name="publishNode"/> gives the native read half a node's endpoint: at once for every node, and again after a failover.</summary>
    public RemoteSegments(ICramRemoteStore store, string prefix, byte[]? key, TimeSpan lease, TimeSpan timeout, TimeProvider time, Action<int, System.Net.IPEndPoint> publishNode)
    {
        _publishNode = publishNode;
        _store = store;
        Prefix = prefix;
        _aes = key is null ? null : new AesGcm(key, RemoteLocation.TagBytes);
        _tagBytes = key is null ? 0 : RemoteLocation.TagBytes;
        _lease = lease;
        _timeout = timeout;
        _time = time;
        _renewedAt = time.GetTimestamp();
        store.NodesChanged += OnNodesChanged;
        PublishNodes();
    }

    public string Prefix { get; }
    public SlotBackend Backend => SlotBackend.Remote;
    public string Description => $"the remote store {string.Join(',', _store.Nodes)}";
    /// <summary>Stored bytes (tags included) that slots name.</summary>
    public long LiveBytes => Interlocked.Read(ref _liveBytes);
    /// <summary>Bytes of the segments on the store (live or dead extents).</summary>
    public long UsedBytes => Interlocked.Read(ref _usedBytes);
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);
    public long WriteErrors => Interlocked.Read(ref _writeErrors);
    public long SegmentsDeleted => Interlocked.Read(ref _segmentsDeleted);
    /// <summary>The last write's error, while writes fail.</summary>
    public string? LastError { get; private set; }

    /// <summary>The segment key of <paramref name="segment"/>, as the native read half builds it.</summary>
    public string KeyOf(uint segment) => $"{Prefix}:{segment:x}";

    /// <summary>Stored bytes on each node (live extents), for the per-node balance of a cluster.</summary>
    public long[] NodeBytes()
    {
        var bytes = new long[_store.Nodes.Count];
        foreach (Segment s in _segments.Values)
        {
            if (s.Written && s.Node < bytes.Length)
            {
                bytes[s.Node] += s.Used;
            }
        }
        return bytes;
    }

    /// <summary>
    /// Of the given remote slots' extents, how many cannot be read back intact from the store now
    /// (missing, short, a tag or checksum that does not verify): each segment is read once, with the
    /// managed client. For checks and benchmarks (after a store was killed, say); the fault path never calls it.
    /// </summary>
    public int CountUnreadable(IEnumerable<(ulong Location, int Length, uint Checksum)> extents)
    {
        int bad = 0;
        byte[] value = new byte[SegmentBytes];
        foreach (IGrouping<uint, (ulong Location, int Length, uint Checksum)> segment in extents.GroupBy(e => RemoteLocation.Segment(e.Location)))
        {
            int read;
            try
            {
                using var cancel = new CancellationTokenSource(_timeout);
                read = _store.ReadAsync(KeyOf(segment.Key), 0, value, cancel.Token).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                read = 0;
            }
            foreach ((ulong location, int length, uint checksum) in segment)
            {
                int offset = RemoteLocation.Offset(location);
                if (offset + length + _tagBytes > read || !Opens(location, value.AsSpan(offset, length + _tagBytes), checksum))
                {
                    bad++;
                }
            }
        }
        return bad;
    }

    /// <summary>The stored bytes of the extent at <paramref name="location"/> (opened, not checked), read with the managed client: for tests that stand in for the native read half.</summary>
    internal bool TryReadStored(ulong location, int length, byte* destination)
    {
        byte[] extent = new byte[length + _tagBytes];
        using var cancel = new CancellationTokenSource(_timeout);
        if (_store.ReadAsync(KeyOf(RemoteLocation.Segment(location)), RemoteLocation.Offset(location), extent, cancel.Token).GetAwaiter().GetResult() != extent.Length)
        {
            return false;
        }
        return Open(location, extent, new Span<byte>(destination, length));
    }

    /// <summary>
    /// The one way an extent is opened in managed code (remote.c opens them natively): the stored bytes
    /// of the extent at <paramref name="location"/> (<paramref name="extent"/>: ciphertext then tag, or
    /// the bytes themselves unsealed) into <paramref name="plain"/>; false if its tag does not verify.
    /// </summary>
    private bool Open(ulong location, ReadOnlySpan<byte> extent, Span<byte> plain)
    {
        int length = extent.Length - _tagBytes;
        if (_aes is null)
        {
            extent.CopyTo(plain);
            return true;
        }
        try
        {
            _aes.Decrypt(Nonce(RemoteLocation.Segment(location), RemoteLocation.Offset(location), stackalloc byte[12]), extent[..length], extent[length..], plain[..length]);
            return true;
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }
    }

    /// <summary>Whether an extent opens and matches its checksum.</summary>
    private bool Opens(ulong location, ReadOnlySpan<byte> extent, uint checksum)
    {
        byte[] plain = new byte[extent.Length - _tagBytes];
        if (!Open(location, extent, plain))
        {
            return false;
        }
        fixed (byte* p = plain)
        {
            return Checksum.Crc32C(p, plain.Length) == checksum;
        }
    }

    /// <summary>The AES-GCM seal of one 4 KiB page's worth of bytes, timed (µs per seal, the mean of <paramref name="rounds"/>): the cost encryption adds to writeback, per entry.</summary>
    public double SealMicroseconds(int length, int rounds = 2000)
    {
        if (_aes is null)
        {
            return 0;
        }
        byte[] plain = new byte[length], cipher = new byte[length], tag = new byte[RemoteLocation.TagBytes];
        Span<byte> nonce = stackalloc byte[12];
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        for (int i = 0; i < rounds; i++)
        {
            _aes.Encrypt(Nonce(0, i, nonce), plain, cipher, tag);
        }
        return System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMicroseconds / rounds;
    }

    public long DeadBytes => UsedBytes - LiveBytes;

    public List<int> SparseSegments(double liveFraction)
    {
        var result = new List<int>();
        foreach ((uint id, Segment s) in _segments)
        {
            if (s.Written && id != _open && s.Live < liveFraction * SegmentBytes)
            {
                result.Add((int)id);
            }
        }
        result.Sort((a, b) => _segments[(uint)a].Live.CompareTo(_segments[(uint)b].Live));
        return result;
    }

    public IReadOnlyList<uint> SlotsOf(int segment) => _segments.TryGetValue((uint)segment, out Segment? s) ? s.Slots : [];

    public int SegmentReadLength(int segment) => _segments.TryGetValue((uint)segment, out Segment? s) ? s.Used : 0;

    public Errno ReadSegment(int segment, int length, byte* destination)
    {
        try
        {
            using var cancel = new CancellationTokenSource(_timeout);
            var memory = new UnmanagedMemory(destination, length);
            return _store.ReadAsync(KeyOf((uint)segment), 0, memory.Memory, cancel.Token).GetAwaiter().GetResult() == length ? Errno.None : Errno.EIO;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            LastError = e.Message;
            return Errno.EIO;
        }
    }

    public int SegmentOf(ulong location) => (int)RemoteLocation.Segment(location);

    public byte* StoredBytes(byte* copy, ulong location, int length, byte* plain)
    {
        byte* extent = copy + RemoteLocation.Offset(location);
        if (_aes is null)
        {
            return extent;
        }
        return Open(location, new ReadOnlySpan<byte>(extent, length + _tagBytes), new Span<byte>(plain, length)) ? plain : null;
    }

    /// <summary>Native memory as <see cref="Memory{T}"/>, for the store's read into a segment copy.</summary>
    private sealed class UnmanagedMemory(byte* pointer, int length) : System.Buffers.MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(pointer, length);
        public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);
        public override void Unpin()
        {
        }
        protected override void Dispose(bool disposing)
        {
        }
    }

    public bool HasRoom(int length) => _open != 0 && _segments[_open].Used + length + _tagBytes <= SegmentBytes && !_segments[_open].Written;

    public bool OpenNextSegment()
    {
        if (_store.CapacityBytes > 0 && UsedBytes + SegmentBytes > _store.CapacityBytes)
        {
            return false;
        }
        if (_open != 0 && _segments[_open] is { Written: false, Used: 0 })
        {
            _segments.Remove(_open);
        }
        uint id = _nextId++;
        string key = KeyOf(id);
        int node = _store.NodeOf(key);
        if ((uint)node >= (uint)_store.Nodes.Count)
        {
            throw new InvalidOperationException($"The remote store placed key {key} on node {node}, but lists {_store.Nodes.Count} nodes.");
        }
        _segments[id] = new Segment(key, node);
        _open = id;
        return true;
    }

    public void MarkBatch()
    {
    }

    public ulong Append(byte* data, int length, uint slot)
    {
        Segment s = _segments[_open];
        int offset = s.Used;
        var source = new ReadOnlySpan<byte>(data, length);
        Span<byte> extent = _buffer.AsSpan(offset, length + _tagBytes);
        if (_aes is null)
        {
            source.CopyTo(extent);
        }
        else
        {
            _aes.Encrypt(Nonce(_open, offset, stackalloc byte[12]), source, extent[..length], extent[length..]);
        }
        s.Used += length + _tagBytes;
        s.Live += length + _tagBytes;
        s.Slots.Add(slot);
        Interlocked.Add(ref _liveBytes, length + _tagBytes);
        Interlocked.Add(ref _usedBytes, length + _tagBytes);
        return RemoteLocation.Make(_open, s.Node, offset);
    }

    /// <summary>The AES-GCM nonce of the extent at <paramref name="offset"/> of <paramref name="segment"/>: segment (8 bytes LE) then offset (4 bytes LE), as remote.c builds it.</summary>
    internal static ReadOnlySpan<byte> Nonce(uint segment, int offset, Span<byte> nonce)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(nonce, segment);
        BinaryPrimitives.WriteInt32LittleEndian(nonce[8..], offset);
        return nonce;
    }

    public bool AppendedEquals(ulong location, byte* data, int length)
    {
        byte[] plain = new byte[length];
        return Open(location, _buffer.AsSpan(RemoteLocation.Offset(location), length + _tagBytes), plain) && plain.AsSpan().SequenceEqual(new ReadOnlySpan<byte>(data, length));
    }

    public BackingFile.PendingWrite PrepareWrite()
    {
        if (_open == 0 || _segments[_open] is { Used: 0 } or { Written: true })
        {
            return default;
        }
        int used = _segments[_open].Used;
        return new BackingFile.PendingWrite((int)_open, 0, used, used);
    }

    public Errno Write(in BackingFile.PendingWrite write)
    {
        if (write.IsEmpty)
        {
            return Errno.None;
        }
        string key = KeyOf((uint)write.Segment);
        try
        {
            using var cancel = new CancellationTokenSource(_timeout);
            _store.WriteAsync(key, _buffer.AsMemory(0, write.Used), _lease, cancel.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            LastError = e.Message;
            Interlocked.Increment(ref _writeErrors);
            return Errno.EIO;
        }
        LastError = null;
        Interlocked.Add(ref _bytesWritten, write.Used);
        return Errno.None;
    }

    public void Finish(in BackingFile.PendingWrite write, Errno error)
    {
        if (write.IsEmpty)
        {
            return;
        }
        uint id = (uint)write.Segment;
        Segment s = _segments[id];
        _open = 0; // one batch, one segment: the next batch opens another
        if (error != Errno.None)
        {
            // Taken back as if never appended; the key may exist in part (a write that failed late): deleted, or its lease ends.
            _segments.Remove(id);
            Interlocked.Add(ref _liveBytes, -s.Live);
            Interlocked.Add(ref _usedBytes, -s.Used);
            QueueDelete((int)id, s.Key);
            return;
        }
        s.Written = true;
    }

    public void Release(ulong location, int length)
    {
        uint id = RemoteLocation.Segment(location);
        if (!_segments.TryGetValue(id, out Segment? s))
        {
            throw new InvalidOperationException($"Remote segment {id} released an extent it does not hold.");
        }
        s.Live -= length + _tagBytes;
        Interlocked.Add(ref _liveBytes, -(length + _tagBytes));
        if (s.Live < 0)
        {
            throw new InvalidOperationException($"Remote segment {id} released more than it held.");
        }
        if (s.Live == 0 && s.Written)
        {
            _segments.Remove(id);
            Interlocked.Add(ref _usedBytes, -s.Used);
            QueueDelete((int)id, s.Key);
        }
    }

    private void QueueDelete(int id, string key)
    {
        _dead.Add((id, _time.GetTimestamp()));
        lock (_deadKeys)
        {
            _deadKeys[id] = key;
        }
    }

    /// <summary>
    /// How long a dead segment stays on the store before it is deleted: longer than a fetch can take.
    /// A fetch reads outside the fault service's lock (cramnative.h, "Remote tier"), so a compaction
    /// that moved its slot while it was in flight must not pull the old bytes from under it.
    /// </summary>
    private TimeSpan DeleteGrace => _timeout + TimeSpan.FromSeconds(1);

    public bool HasDeadSegments => _dead.Count > 0 && _time.GetElapsedTime(_dead[0].DiedAt) >= DeleteGrace;

    public int[] TakeDeadSegments()
    {
        int due = 0;
        while (due < _dead.Count && _time.GetElapsedTime(_dead[due].DiedAt) >= DeleteGrace)
        {
            due++;
        }
        int[] dead = [.. _dead.Take(due).Select(d => d.Segment)];
        _dead.RemoveRange(0, due);
        return dead;
    }

    public void Punch(int segment)
    {
        string? key;
        lock (_deadKeys)
        {
            _deadKeys.Remove(segment, out key);
        }
        if (key is null)
        {
            return;
        }
        try
        {
            using var cancel = new CancellationTokenSource(_timeout);
            _store.DeleteAsync([key], cancel.Token).GetAwaiter().GetResult();
            Interlocked.Increment(ref _segmentsDeleted);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Best effort: the key's lease ends it.
        }
    }

    public void Reuse(int segment)
    {
    }

    public bool UpkeepDue => LeaseDue;

    private bool LeaseDue => _time.GetElapsedTime(Interlocked.Read(ref _renewedAt)) >= _lease / 3;

    /// <summary>Gives the native read half every node's endpoint as the store lists it now (an atomic store per node: safe on any thread).</summary>
    private void PublishNodes()
    {
        IReadOnlyList<System.Net.IPEndPoint> nodes = _store.Nodes;
        for (int i = 0; i < nodes.Count; i++)
        {
            _publishNode(i, nodes[i]);
        }
    }

    /// <summary>A failover: fetches in flight retry until they reach the new master.</summary>
    private void OnNodesChanged(object? sender, EventArgs e)
    {
        if (!_disposed)
        {
            PublishNodes();
        }
    }

    private volatile bool _disposed;

    public void Upkeep(Lock maintenance)
    {
        if (!LeaseDue)
        {
            return;
        }
        Interlocked.Exchange(ref _renewedAt, _time.GetTimestamp());
        List<string> keys;
        lock (maintenance)
        {
            keys = [.. _segments.Values.Where(s => s.Written).Select(s => s.Key)];
        }
        if (keys.Count == 0)
        {
            return;
        }
        try
        {
            using var cancel = new CancellationTokenSource(_timeout);
            _store.RenewAsync(keys, _lease, cancel.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Interlocked.Exchange(ref _renewedAt, 0); // again at the next upkeep
        }
    }

    /// <summary>Deletes every key the engine wrote (best effort, within the timeout): nothing is left behind on the store.</summary>
    public void Dispose()
    {
        _disposed = true;
        _store.NodesChanged -= OnNodesChanged;
        List<string> keys = [.. _segments.Values.Select(s => s.Key)];
        lock (_deadKeys)
        {
            keys.AddRange(_deadKeys.Values);
            _deadKeys.Clear();
        }
        _segments.Clear();
        if (keys.Count > 0)
        {
            try
            {
                using var cancel = new CancellationTokenSource(_timeout);
                _store.DeleteAsync(keys, cancel.Token).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The leases end them.
            }
        }
        _aes?.Dispose();
    }
}
