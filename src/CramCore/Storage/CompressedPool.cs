using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The compressed pool, in the manner of zsmalloc: objects of up to 4 KiB are packed into
/// <see cref="Zspage"/>s of a <see cref="SizeClass"/> with 16-byte granularity, taken from
/// <see cref="PoolArenas"/>. Every zspage is one contiguous 64 KiB block, so objects never straddle
/// discontiguous pages, and its pages cost memory only once an object on them is used: the arenas
/// are NORESERVE mappings, the pool counts touched pages as used, and a released zspage's touched
/// pages are retained for reuse, then given back with MADV_DONTNEED by <see cref="Compact"/>. That
/// keeps both of zsmalloc's losses small: the slack at the end of a zspage (65536 mod size) and the
/// half-empty last zspage of every class. An object is named by a handle (one indirection, in a
/// native <see cref="ClusteredDirectory{T}"/> the fault service reads), so compaction
/// (CompressedPool.Compaction.cs) can move objects and release zspages. Each class has its own
/// lock; the fault service never takes any of them.
/// </summary>
internal sealed unsafe partial class CompressedPool : IDisposable
{
    public const int Granularity = 16;
    public const int MaxObjectSize = SharedLayout.PageSize;
    public const int ZspageOrder = 4;
    public const int ZspagePages = 1 << ZspageOrder;
    /// <summary>Pages a zspage is backed ahead of its objects when it grows (one populate call instead of a fault per page).</summary>
    private const int PopulateAheadPages = 3;
    /// <summary>Only classes with this many zspages are backed ahead, so the pages backed ahead stay a few percent of a class at most.</summary>
    private const int PopulateAheadMinZspages = 8;
    private const int MaxCapacity = (SharedLayout.PageSize << ZspageOrder) / Granularity;
    private const int ZspageChunk = 1024;

    private readonly SizeClass[] _classes; // one per 16-byte size
    private readonly bool _lockMemory; // every arena is mlocked: all of it counts (ChargedBytes)
    private readonly INativeEngine _engine; // NativeEngine.Detached for a pool outside an engine
    private readonly long _maxBytes;
    private readonly PoolArenas _arenas;

    /// <summary>Where each arena is mapped (tests).</summary>
    internal nint[] ArenaAddresses => _arenas.Addresses;
    private readonly ClusteredDirectory<NativePoolHandle> _handles = new("compressed pool's handle table");
    private readonly Lock _zspageLock = new(); // _zspages growth and _freeZspages
    private Zspage[][] _zspages = [];
    private readonly Stack<int> _freeZspages = new(64);
    private int _nextZspage;
    private long _usedBytes, _objectBytes, _objects, _compactedPages, _movedObjects, _fullRejections;

    public CompressedPool(long arenaBytes, long maxBytes, bool lockMemory, INativeEngine engine)
    {
        _maxBytes = maxBytes;
        _engine = engine;
        _classes = new SizeClass[MaxObjectSize / Granularity];
        for (int i = 0; i < _classes.Length; i++)
        {
            _classes[i] = new SizeClass((i + 1) * Granularity, ZspageOrder);
        }
        _moves = new NativePoolMove[MaxCapacity];
        _movedFrom = new int[MaxCapacity];
        _lockMemory = lockMemory;
        _arenas = new PoolArenas(arenaBytes, ZspageOrder, lockMemory);
    }

    /// <summary>The handle directory, for the fault service (NativeShared.HandleDirectory).</summary>
    public ulong HandleDirectory => _handles.Address;

    private SizeClass ClassOf(int length) => _classes[(length - 1) / Granularity];

    /// <summary>The bytes an object of <paramref name="length"/> takes: its size class's object size (16-byte granularity).</summary>
    public static int ObjectSize(int length) => (length + Granularity - 1) / Granularity * Granularity;

    private ref Zspage Page(int id) => ref _zspages[id / ZspageChunk][id % ZspageChunk];

    private NativePoolHandle* Handle(uint id) => _handles.Get(id);

    /// <summary>Copies <paramref name="length"/> bytes into the pool. Returns the handle, or 0 when the pool is full.</summary>
    public uint Store(byte* data, int length)
    {
        if (length is <= 0 or > MaxObjectSize)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"between 1 and {MaxObjectSize}");
        }
        SizeClass c = ClassOf(length);
        uint handle = (uint)_handles.Allocate(); // below 2^32: the directory's capacity
        lock (c.Lock)
        {
            int id = c.Fullest();
            if (id < 0 && (id = NewZspage(c)) < 0)
            {
                _handles.Free(handle);
                Interlocked.Increment(ref _fullRejections);
                return 0;
            }
            ref Zspage z = ref Page(id);
            int index = TakeObject(ref z, c);
            if (index < 0)
            {
                if (z.InUse == 0)
                {
                    ReleaseZspage(c, id);
                }
                _handles.Free(handle);
                Interlocked.Increment(ref _fullRejections);
                return 0;
            }
            Regroup(c, ref z, id);
            byte* address = z.Base + (long)index * c.Size;
            z.Handles[index] = handle;
            NativePoolHandle* h = Handle(handle);
            h->Length = (uint)length;
            h->Zspage = (uint)id;
            Buffer.MemoryCopy(data, address, length, length);
            Volatile.Write(ref h->Address, (ulong)address);
            c.Objects++;
        }
        Interlocked.Add(ref _objectBytes, length);
        Interlocked.Increment(ref _objects);
        return handle;
    }

    /// <summary>Where an object's bytes are now; stable while compaction cannot run (the maintenance lock).</summary>
    public ulong AddressOf(uint handle) => Volatile.Read(ref Handle(handle)->Address);

    /// <summary>Copies an object out (tests, benchmarks). Returns its length.</summary>
    public int Load(uint handle, Span<byte> destination)
    {
        NativePoolHandle* h = Handle(handle);
        SizeClass c = ClassOf((int)h->Length);
        lock (c.Lock) // compaction cannot move it meanwhile
        {
            new ReadOnlySpan<byte>((void*)h->Address, (int)h->Length).CopyTo(destination);
            return (int)h->Length;
        }
    }

    public void Free(uint handle)
    {
        NativePoolHandle* h = Handle(handle);
        int length = (int)h->Length;
        if (length == 0)
        {
            throw new InvalidOperationException($"Pool handle {handle} freed twice.");
        }
        SizeClass c = ClassOf(length);
        lock (c.Lock)
        {
            int id = (int)h->Zspage; // read under the lock: compaction may have moved the object
            ref Zspage z = ref Page(id);
            int index = (int)((long)((byte*)h->Address - z.Base) / c.Size);
            z.Handles[index] = 0;
            PushFree(ref z, c, index);
            z.InUse--;
            c.Objects--;
            if (z.InUse == 0)
            {
                ReleaseZspage(c, id);
            }
            else
            {
                Regroup(c, ref z, id);
            }
            *h = default;
        }
        Interlocked.Add(ref _objectBytes, -length);
        Interlocked.Decrement(ref _objects);
        _handles.Free(handle);
    }

    /// <summary>Puts a slot on its zspage's free list (the link lives in the slot's first 4 bytes).</summary>
    private static void PushFree(ref Zspage z, SizeClass c, int index)
    {
        *(int*)(z.Base + (long)index * c.Size) = z.FreeHead;
        z.FreeHead = index;
    }

    /// <summary>Takes a free slot of <paramref name="z"/>; -1 when touching a new page would pass the pool's limit. The caller regroups.</summary>
    private int TakeObject(ref Zspage z, SizeClass c)
    {
        int index;
        if (z.FreeHead >= 0)
        {
            index = z.FreeHead;
            z.FreeHead = *(int*)(z.Base + (long)index * c.Size);
        }
        else
        {
            int touched = (int)(((long)(z.FreeCursor + 1) * c.Size + SharedLayout.PageSize - 1) >> SharedLayout.PageShift);
            // A class that holds many zspages is filling in bulk: back a few pages ahead of it.
            int ahead = c.Zspages >= PopulateAheadMinZspages ? PopulateAheadPages : 0;
            if (touched > z.TouchedPages && !(ahead > 0 && Touch(ref z, Math.Min(ZspagePages, touched + ahead))) && !Touch(ref z, touched))
            {
                return -1;
            }
            index = z.FreeCursor++;
        }
        z.InUse++;
        return index;
    }

    /// <summary>
    /// Counts a zspage's pages up to <paramref name="pages"/> as used and backs the new ones in one
    /// call: a first write to a fresh pool page otherwise costs a page fault each, the largest
    /// item of an eviction after LZ4 itself. False (nothing changed) when the pool's limit says no.
    /// </summary>
    private bool Touch(ref Zspage z, int pages)
    {
        long bytes = (long)(pages - z.TouchedPages) << SharedLayout.PageShift;
        if (_maxBytes > 0 && Interlocked.Add(ref _usedBytes, bytes) > _maxBytes)
        {
            Interlocked.Add(ref _usedBytes, -bytes);
            return false;
        }
        if (_maxBytes == 0)
        {
            Interlocked.Add(ref _usedBytes, bytes);
        }
        Interop.CramNative.Populate((ulong)(z.Base + ((long)z.TouchedPages << SharedLayout.PageShift)), (ulong)bytes);
        z.TouchedPages = pages;
        return true;
    }

    /// <summary>Moves a zspage to the fullness group its use now calls for (none when full).</summary>
    private void Regroup(SizeClass c, ref Zspage z, int id)
    {
        int group = c.GroupOf(z.InUse);
        if (group == z.Group)
        {
            return;
        }
        Ungroup(c, ref z);
        if (group >= 0)
        {
            ref int[] members = ref c.Groups[group];
            ref int count = ref c.GroupCounts[group];
            if (count == members.Length)
            {
                Array.Resize(ref members, members.Length * 2);
            }
            z.Group = group;
            z.GroupIndex = count;
            members[count++] = id;
        }
    }

    /// <summary>Takes a zspage out of its fullness group, if it is in one.</summary>
    private void Ungroup(SizeClass c, ref Zspage z)
    {
        if (z.Group < 0)
        {
            return;
        }
        int[] members = c.Groups[z.Group];
        int last = members[--c.GroupCounts[z.Group]];
        members[z.GroupIndex] = last;
        Page(last).GroupIndex = z.GroupIndex;
        z.Group = -1;
    }

    /// <summary>A new, empty zspage for class <paramref name="c"/> (in fullness group 0), or -1 when the pool is full.</summary>
    private int NewZspage(SizeClass c)
    {
        byte* memory = _arenas.Allocate(out int arena);
        if (memory == null)
        {
            return -1;
        }
        int id;
        lock (_zspageLock)
        {
            if (!_freeZspages.TryPop(out id))
            {
                id = _nextZspage++;
                if (id / ZspageChunk == _zspages.Length)
                {
                    var chunks = new Zspage[_zspages.Length + 1][];
                    Array.Copy(_zspages, chunks, _zspages.Length);
                    chunks[^1] = new Zspage[ZspageChunk];
                    Volatile.Write(ref _zspages, chunks);
                }
            }
        }
        ref Zspage z = ref Page(id);
        if (z.Handles is null || z.Handles.Length < c.Capacity)
        {
            z.Handles = new uint[c.Capacity];
        }
        else
        {
            Array.Clear(z.Handles);
        }
        z.Base = memory;
        z.Arena = arena;
        z.InUse = 0;
        z.FreeHead = -1;
        z.FreeCursor = 0;
        z.Group = -1;
        z.TouchedPages = _arenas.TakeRetained(arena, memory); // already resident and counted as used
        Regroup(c, ref z, id);
        c.Zspages++;
        return id;
    }

    /// <summary>
    /// Gives an empty zspage's block back to its arena. Its resident pages stay for the next zspage
    /// there (still counted as used, so <see cref="SlackBytes"/> shows them), so a class that empties
    /// and refills does not pay a page fault per page, the way malloc keeps freed memory; they go
    /// back to the kernel in <see cref="Compact"/>, which the engine's background reclaim runs when
    /// slack grows.
    /// </summary>
    private void ReleaseZspage(SizeClass c, int id)
    {
        ref Zspage z = ref Page(id);
        Ungroup(c, ref z);
        _arenas.Free(z.Arena, z.Base, z.TouchedPages);
        z.Base = null;
        c.Zspages--;
        lock (_zspageLock)
        {
            _freeZspages.Push(id);
        }
    }

    /// <summary>Compacts when slack passes max(16 MiB, a quarter of the pool); background reclaim calls this between passes.</summary>
    public void CompactIfFragmented()
    {
        if (SlackBytes > Math.Max(16L << 20, UsedBytes / 4))
        {
            Compact();
        }
    }

    /// <summary>Bytes of zspages in use minus Σ object sizes: what compaction could give back at most.</summary>
    public long SlackBytes => Volatile.Read(ref _usedBytes) - Volatile.Read(ref _objectBytes);

    /// <summary>Bytes of the pool's bookkeeping: the handle table and each zspage's handle array (metadata of the memory limit).</summary>
    public long MetadataBytes
    {
        get
        {
            long bytes = _handles.MetadataBytes;
            foreach (SizeClass c in _classes)
            {
                bytes += Volatile.Read(ref c.Zspages) * c.Capacity * sizeof(uint);
            }
            return bytes;
        }
    }
    public long ObjectBytes => Volatile.Read(ref _objectBytes);
    public long UsedBytes => Volatile.Read(ref _usedBytes);

    /// <summary>
    /// The pool's memory as the memory limit counts it: its used pages, or with
    /// <see cref="CramOptions.LockPoolMemory"/> every arena byte, which mlock makes resident from the
    /// moment an arena is mapped.
    /// </summary>
    public long ChargedBytes => _lockMemory ? Math.Max(UsedBytes, _arenas.MappedBytes) : UsedBytes;
    public long FullRejections => Volatile.Read(ref _fullRejections);

    /// <summary>Fragmentation of the arenas' free space (see <see cref="BuddyStats.Fragmentation"/>).</summary>
    public double Fragmentation => _arenas.Fragmentation;

    /// <summary>Bookkeeping bytes per live object: its handle, its entry in the zspage's owner table, its share of the zspage record.</summary>
    public double MetadataBytesPerObject()
    {
        long objects = Volatile.Read(ref _objects);
        if (objects == 0)
        {
            return 0;
        }
        long bytes = 0, zspages = 0;
        foreach (SizeClass c in _classes)
        {
            lock (c.Lock)
            {
                bytes += c.Zspages * c.Capacity * sizeof(uint);
                zspages += c.Zspages;
            }
        }
        return (double)(bytes + zspages * System.Runtime.CompilerServices.Unsafe.SizeOf<Zspage>() + objects * sizeof(NativePoolHandle)) / objects;
    }

    public PoolStats GetStats()
    {
        var classes = new List<PoolClassStats>();
        foreach (SizeClass c in _classes)
        {
            lock (c.Lock)
            {
                if (c.Zspages > 0)
                {
                    classes.Add(new PoolClassStats(c.Size, 1 << c.Order, c.Objects, c.Zspages * c.Capacity));
                }
            }
        }
        return new PoolStats(UsedBytes, ObjectBytes, Volatile.Read(ref _objects), _classes.Sum(c => Volatile.Read(ref c.Zspages)),
            _arenas.MappedBytes, Volatile.Read(ref _compactedPages), Volatile.Read(ref _movedObjects), FullRejections,
            Fragmentation, classes.ToArray());
    }

    public void Dispose()
    {
        _arenas.Dispose();
        _handles.Dispose();
    }
}
