using System.Runtime.InteropServices;

namespace CramCore;

/// <summary>
/// The virtual swap slot table; stored copies live in the <see cref="CompressedPool"/>. Page-table entries name slots, never
/// storage addresses, so data can move between backends by rewriting a slot. Slots are allocated
/// here (managed code); the fault service only reads them and pushes stale ones on a lock-free list
/// that <see cref="DrainStale"/> frees. Clusters of slots are allocated on demand and published
/// before any page-table entry names a slot in them.
/// </summary>
internal sealed unsafe class SlotTable : IDisposable
{
    private readonly NativeShared* _shared;
    private readonly CompressedPool _pool;
    private readonly ulong* _directory;
    private readonly Lock _lock = new();
    private readonly IdStack<ulong> _free = new(1024);
    private ulong _nextFresh = 1; // slot 0 means "zero page" and is never allocated
    private long _sameFilledSlots;

    public SlotTable(NativeShared* shared, CompressedPool pool)
    {
        _shared = shared;
        _pool = pool;
        _directory = (ulong*)shared->SlotDirectory;
    }

    public long StoredBytes => _pool.ObjectBytes;
    public long SameFilledSlots => Volatile.Read(ref _sameFilledSlots);

    public NativeSlot* Get(ulong id) =>
        (NativeSlot*)_directory[id >> NativeShared.SlotClusterShift] + (id & (NativeShared.SlotClusterSize - 1));

    /// <summary>Allocates a slot for a same-filled page (no storage).</summary>
    public ulong AllocateSameFilled(ulong value)
    {
        ulong id = AllocateId();
        NativeSlot* s = Get(id);
        s->Data = value;
        s->Length = 0;
        s->Backend = (ushort)SlotBackend.SameFilled;
        Interlocked.Increment(ref _sameFilledSlots);
        return id;
    }

    /// <summary>
    /// Allocates a slot holding a copy of <paramref name="length"/> bytes at <paramref name="source"/>
    /// in the compressed pool. False when the pool is full.
    /// </summary>
    public bool TryAllocateStored(SlotBackend backend, byte* source, int length, out ulong id)
    {
        uint handle = _pool.Store(source, length);
        if (handle == 0)
        {
            id = 0;
            return false;
        }
        id = AllocateId();
        NativeSlot* s = Get(id);
        s->Data = handle;
        s->Length = (uint)length;
        s->Backend = (ushort)backend;
        return true;
    }

    public void Free(ulong id)
    {
        if (id == PageTable.ZeroSlot)
        {
            return;
        }
        NativeSlot* s = Get(id);
        switch ((SlotBackend)s->Backend)
        {
            case SlotBackend.SameFilled:
                Interlocked.Decrement(ref _sameFilledSlots);
                break;
            case SlotBackend.Lz4:
            case SlotBackend.Raw:
                _pool.Free((uint)s->Data);
                break;
            default:
                throw new InvalidOperationException($"Slot {id} freed twice (backend {s->Backend}).");
        }
        *s = default;
        lock (_lock)
        {
            _free.Push(id);
        }
    }

    /// <summary>Frees every slot the fault service has marked stale. Returns how many.</summary>
    public int DrainStale()
    {
        ulong id = Interlocked.Exchange(ref _shared->StaleHead, 0);
        int n = 0;
        while (id != 0)
        {
            ulong next = Get(id)->NextStale;
            Free(id);
            id = next;
            n++;
        }
        return n;
    }

    private ulong AllocateId()
    {
        lock (_lock)
        {
            if (_free.TryPop(out ulong reused))
            {
                return reused;
            }
            ulong id = _nextFresh++;
            ulong cluster = id >> NativeShared.SlotClusterShift;
            if (cluster >= NativeShared.SlotDirectorySize)
            {
                _nextFresh--;
                throw new InvalidOperationException("The virtual swap slot table is full (2^32 slots).");
            }
            if (_directory[cluster] == 0)
            {
                void* memory = NativeMemory.AllocZeroed((nuint)(NativeShared.SlotClusterSize * sizeof(NativeSlot)));
                Volatile.Write(ref _directory[cluster], (ulong)memory);
            }
            return id;
        }
    }

    /// <summary>Frees the clusters (the pool, disposed after this, holds the copies). Only when no region is active.</summary>
    public void Dispose()
    {
        DrainStale();
        for (ulong c = 0; c < NativeShared.SlotDirectorySize && c <= (_nextFresh >> NativeShared.SlotClusterShift); c++)
        {
            if (_directory[c] != 0)
            {
                NativeMemory.Free((void*)_directory[c]);
                _directory[c] = 0;
            }
        }
        _sameFilledSlots = 0;
    }
}
