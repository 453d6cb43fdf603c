namespace CramCore.Storage;

/// <summary>
/// The virtual swap slot table; stored copies live in the <see cref="CompressedPool"/>. Page-table
/// entries name slots, never storage addresses, so data can move between backends by rewriting a
/// slot. Slots are allocated here (managed code); the fault service only reads them and pushes
/// stale ones on a lock-free list that <see cref="DrainStale"/> frees (region destroy pushes every
/// slot its page table still names the same way).
/// </summary>
internal sealed unsafe class SlotTable : IDisposable
{
    private readonly NativeShared* _shared;
    private readonly CompressedPool _pool;
    private readonly ClusteredDirectory<NativeSlot> _slots = new("virtual swap slot table");
    private long _sameFilledSlots;

    /// <summary>Creates the table and publishes its directory to the native side; before any region exists.</summary>
    public SlotTable(NativeShared* shared, CompressedPool pool)
    {
        _shared = shared;
        _pool = pool;
        shared->SlotDirectory = _slots.Address;
    }

    public long StoredBytes => _pool.ObjectBytes;
    public long SameFilledSlots => Volatile.Read(ref _sameFilledSlots);

    public NativeSlot* Get(ulong id) => _slots.Get(id);

    /// <summary>Allocates a slot for a same-filled page (no storage).</summary>
    public ulong AllocateSameFilled(ulong value)
    {
        ulong id = _slots.Allocate();
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
        id = _slots.Allocate();
        NativeSlot* s = Get(id);
        s->Data = handle;
        s->Length = (uint)length;
        s->Backend = (ushort)backend;
        return true;
    }

    public void Free(ulong id)
    {
        if (id == SharedLayout.ZeroSlot)
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
        _slots.Free(id);
    }

    /// <summary>Frees every slot the native side has marked stale. Returns how many.</summary>
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

    /// <summary>Frees the clusters (the pool, disposed after this, holds the copies). Only when no region is active.</summary>
    public void Dispose()
    {
        DrainStale();
        _slots.Dispose();
        _sameFilledSlots = 0;
    }
}
