using System.Diagnostics;
using CramCore.Internals;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The virtual swap slot table. Page-table entries name slots, never storage; a slot's backend tag
/// says where its stored bytes are (the backend contract and the move protocol: cramnative.h,
/// "Virtual swap"): the <see cref="CompressedPool"/>, the <see cref="BackingFile"/>, or nowhere for a
/// same-filled page. Slots are allocated here, by reclaim, with a CRC-32C of the stored bytes the
/// fault service checks; they are freed only by <see cref="Free"/>, which the maintenance path calls
/// (the reaper's <see cref="DrainStale"/> and sweep, or a publish that lost its race), under the
/// reclaimer's pass lock, so no location is freed while managed code still copies from it. The fault
/// service only reads slots, sets their flags and pushes stale ones on a lock-free list.
/// </summary>
internal sealed unsafe class SlotTable : IDisposable
{
    private readonly NativeShared* _shared;
    private readonly CompressedPool _pool;
    private readonly ClusteredDirectory<NativeSlot> _slots = new("virtual swap slot table");
    private long _sameFilledSlots, _poolSlots, _fileSlots, _cramSlots, _remoteSlots;
    private readonly long[] _dictionarySlots = new long[SlotFlags.ZstdDictionaries]; // zstd slots by dictionary (0: none)

    /// <summary>Creates the table and publishes its directory to the native side; before any region exists.</summary>
    public SlotTable(NativeShared* shared, CompressedPool pool, BackingFile? file, CramCore.Remote.RemoteSegments? remote, CramNode? node)
    {
        _shared = shared;
        _pool = pool;
        File = file;
        Remote = remote;
        Node = node;
        PoolOrder = Tier is null ? null : new FifoQueue<uint>();
        shared->SlotDirectory = _slots.Address;
    }

    /// <summary>The CRAM node, or null.</summary>
    public CramNode? Node { get; }

    /// <summary>The tier writeback moves the pool's coldest entries to: the backing file, else the remote store; null in ghost mode.</summary>
    public ISegmentTier? Tier => (ISegmentTier?)File ?? Remote;

    /// <summary>The backing file, or null.</summary>
    public BackingFile? File { get; }

    /// <summary>The remote store's segments, or null (with a file too: where the file's oldest segments go when it is full).</summary>
    public CramCore.Remote.RemoteSegments? Remote { get; }

    /// <summary>Pool-resident slots in the order their copies were stored (writeback takes the oldest first); null without a tier below the pool.</summary>
    public FifoQueue<uint>? PoolOrder { get; }

    public CompressedPool Pool => _pool;
    public long StoredBytes => _pool.ObjectBytes;
    public long SameFilledSlots => Volatile.Read(ref _sameFilledSlots);
    public long PoolSlots => Volatile.Read(ref _poolSlots);
    public long FileSlots => Volatile.Read(ref _fileSlots);
    public long CramSlots => Volatile.Read(ref _cramSlots);
    public long RemoteSlots => Volatile.Read(ref _remoteSlots);
    public long Count => _slots.Count;

    /// <summary>Bytes of slot metadata (records, allocation bitmaps, directory pages) per slot in use.</summary>
    public long MetadataBytes => _slots.MetadataBytes;

    /// <summary>Bytes of slot metadata (records, allocation bitmaps, directory pages) per slot in use.</summary>
    public double MetadataBytesPerSlot => _slots.Count == 0 ? 0 : (double)_slots.MetadataBytes / _slots.Count;

    public NativeSlot* Get(ulong id) => _slots.Get(id);

    /// <summary>The slot of an id remembered elsewhere (a queue, a segment's list), or null if that id is not in use now.</summary>
    public NativeSlot* TryGet(ulong id)
    {
        NativeSlot* s = _slots.TryGet(id);
        return s != null && s->Backend != SlotBackend.Free ? s : null;
    }

    /// <summary>Allocates a slot for a same-filled page (no storage).</summary>
    public ulong AllocateSameFilled(ulong value)
    {
        ulong id = _slots.Allocate();
        NativeSlot* s = Get(id);
        *s = default;
        s->Location = value;
        s->Backend = SlotBackend.SameFilled;
        Interlocked.Increment(ref _sameFilledSlots);
        return id;
    }

    /// <summary>
    /// Allocates a slot holding a copy of <paramref name="length"/> bytes at <paramref name="source"/>
    /// (LZ4 block data, or the page itself when <paramref name="raw"/>) in the compressed pool, with
    /// its checksum. False when the pool is full.
    /// </summary>
    public bool TryAllocateStored(bool raw, byte* source, int length, out ulong id)
    {
        uint handle = _pool.Store(source, length);
        if (handle == 0)
        {
            id = 0;
            return false;
        }
        id = _slots.Allocate();
        NativeSlot* s = Get(id);
        *s = default;
        s->Location = handle;
        s->Checksum = Checksum.Crc32C(source, length);
        s->Length = (ushort)length;
        s->Backend = SlotBackend.Pool;
        s->Flags = raw ? SlotFlags.Raw : (byte)0;
        Interlocked.Increment(ref _poolSlots);
        PoolOrder?.Enqueue((uint)id);
        return true;
    }

    /// <summary>Allocates a slot naming CRAM frame <paramref name="frame"/>, which holds a page the device measured at <paramref name="size"/> bytes.</summary>
    public ulong AllocateCram(long frame, int size)
    {
        ulong id = _slots.Allocate();
        NativeSlot* s = Get(id);
        *s = default;
        s->Location = (ulong)frame;
        s->Length = (ushort)size;
        s->Backend = SlotBackend.Cram;
        Interlocked.Increment(ref _cramSlots);
        return id;
    }

    /// <summary>Slots whose copy is zstd with dictionary <paramref name="index"/> (0: none), in whatever backend.</summary>
    public long DictionarySlots(int index) => Volatile.Read(ref _dictionarySlots[index]);

    /// <summary>Slots whose copy is zstd (the recompressor's), in whatever backend.</summary>
    public long ZstdSlots => _dictionarySlots.Sum();

    /// <summary>Accounts for a slot the recompressor rewrote from codec bits <paramref name="before"/> to <paramref name="after"/> (cramnative.h, "Codecs"); under the maintenance lock.</summary>
    public void Recoded(byte before, byte after)
    {
        if ((before & SlotFlags.Zstd) != 0)
        {
            Interlocked.Decrement(ref _dictionarySlots[SlotFlags.Dictionary(before)]);
        }
        if ((after & SlotFlags.Zstd) != 0)
        {
            Interlocked.Increment(ref _dictionarySlots[SlotFlags.Dictionary(after)]);
        }
    }

    /// <summary>Accounts for a slot that a backend move took from <paramref name="from"/> to <paramref name="to"/>.</summary>
    public void Moved(SlotBackend from, SlotBackend to)
    {
        Interlocked.Decrement(ref Counter(from));
        Interlocked.Increment(ref Counter(to));
    }

    private ref long Counter(SlotBackend backend)
    {
        switch (backend)
        {
            case SlotBackend.Pool: return ref _poolSlots;
            case SlotBackend.File: return ref _fileSlots;
            case SlotBackend.Cram: return ref _cramSlots;
            case SlotBackend.Remote: return ref _remoteSlots;
            case SlotBackend.SameFilled: return ref _sameFilledSlots;
            default: throw new ArgumentOutOfRangeException(nameof(backend), backend, "not a storage backend");
        }
    }

    /// <summary>
    /// A page moved into CLEAN naming <paramref name="id"/> (<paramref name="sign"/> +1) or out of
    /// it (-1): the clean-copy counters the native side keeps too (cramnative.h, "Clean copies").
    /// </summary>
    public void CountCleanCopy(ulong id, int sign)
    {
        // The slot's CLEAN_COPY bit changes in the atomic step that reads the length counted: a
        // recode (which refuses a slot with the bit) can never make the two counts of one copy differ.
        ulong bytes = 0;
        if (id != SharedLayout.ZeroSlot)
        {
            uint word = NativeSlot.ChangeFlagsWord(Get(id), SlotFlags.CleanCopy, set: sign > 0);
            Debug.Assert(((word >> 24) & SlotFlags.CleanCopy) == (sign > 0 ? 0 : SlotFlags.CleanCopy), "a clean copy counted twice, or released uncounted");
            bytes = word & 0xFFFF;
        }
        ref NativeStats stats = ref _shared->Stats;
        Interlocked.Add(ref stats.CleanCopyPages, sign > 0 ? 1UL : ulong.MaxValue); // + (2^64 - 1) is - 1
        Interlocked.Add(ref stats.CleanCopyBytes, sign > 0 ? bytes : 0UL - bytes);
    }

    /// <summary>Frees a slot and the location it names. Only on the maintenance path (see the class summary).</summary>
    public void Free(ulong id)
    {
        if (id == SharedLayout.ZeroSlot)
        {
            return;
        }
        NativeSlot* s = Get(id);
        switch (s->Backend)
        {
            case SlotBackend.SameFilled:
                break;
            case SlotBackend.Pool:
                _pool.Free((uint)s->Location);
                break;
            case SlotBackend.File:
                File!.Release(s->Location, s->Length);
                break;
            case SlotBackend.Remote:
                Remote!.Release(s->Location, s->Length);
                break;
            case SlotBackend.Cram:
                Node!.Release((long)s->Location); // freed frame, queued for TRIM
                break;
            default:
                throw new InvalidOperationException($"Slot {id} freed twice (backend {s->Backend}).");
        }
        Interlocked.Decrement(ref Counter(s->Backend));
        byte flags = NativeSlot.LoadFlags(s);
        if ((flags & SlotFlags.Zstd) != 0)
        {
            Interlocked.Decrement(ref _dictionarySlots[SlotFlags.Dictionary(flags)]); // its dictionary may be retired once none is left
        }
        *s = default;
        _slots.Free(id);
        _freedWhileWatched?.Add(id);
        _freedWhileRecompressing?.Add(id);
    }

    private HashSet<ulong>? _freedWhileWatched, _freedWhileRecompressing;

    /// <summary>
    /// From now until <see cref="StopWatchingFrees"/>, remembers every slot freed (both under the
    /// maintenance lock). Writeback watches while a write runs without that lock, and the recompressor
    /// while it re-encodes (<paramref name="recompressor"/>; each has a watch of its own): a slot freed
    /// meanwhile may have been reused — id, pool object and all — for other bytes, and must not move.
    /// </summary>
    public void WatchFrees(bool recompressor = false)
    {
        if (recompressor)
        {
            _freedWhileRecompressing = [];
        }
        else
        {
            _freedWhileWatched = [];
        }
    }

    /// <summary>The slots freed since <see cref="WatchFrees"/> (the same watcher); watching stops.</summary>
    public HashSet<ulong> StopWatchingFrees(bool recompressor = false)
    {
        HashSet<ulong> freed = (recompressor ? _freedWhileRecompressing : _freedWhileWatched) ?? [];
        if (recompressor)
        {
            _freedWhileRecompressing = null;
        }
        else
        {
            _freedWhileWatched = null;
        }
        return freed;
    }

    /// <summary>Frees every slot the native side has marked stale (the link is in the checksum field). Returns how many.</summary>
    public int DrainStale()
    {
        ulong id = Interlocked.Exchange(ref _shared->StaleHead, 0);
        int n = 0;
        while (id != 0)
        {
            ulong next = Get(id)->Checksum;
            Free(id);
            id = next;
            n++;
        }
        return n;
    }

    /// <summary>Adds every slot in use whose bit in <paramref name="named"/> is clear to <paramref name="result"/> (the reaper's sweep).</summary>
    public void CollectUnnamed(ulong* named, ulong bits, List<ulong> result) =>
        _slots.ForEachRecord((id, record) =>
        {
            bool marked = id < bits && (named[id >> 6] & (1UL << (int)(id & 63))) != 0;
            if (!marked && ((NativeSlot*)record)->Backend != SlotBackend.Free)
            {
                result.Add(id);
            }
        });

    /// <summary>An upper bound (exclusive) of the slot ids in use.</summary>
    public ulong IdLimit => _slots.IdLimit;

    /// <summary>Frees the clusters (the pool and file, disposed after this, hold the copies). Only when no region is active.</summary>
    public void Dispose()
    {
        DrainStale();
        _slots.Dispose();
        _sameFilledSlots = _poolSlots = _fileSlots = _cramSlots = 0;
    }
}
