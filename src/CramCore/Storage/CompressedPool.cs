using System.Runtime.InteropServices;

namespace CramCore.Storage;

/// <summary>Occupancy of one size class of the compressed pool.</summary>
internal readonly record struct PoolClassStats(int ObjectSize, int ZspagePages, long Objects, long Capacity);

/// <summary>A snapshot of the compressed pool.</summary>
internal readonly record struct PoolStats(
    long UsedBytes, long ObjectBytes, long Objects, long Zspages, long ArenaBytes, long CompactedPages,
    long MovedObjects, long FullRejections, double Fragmentation, PoolClassStats[] Classes)
{
    /// <summary>Σ object sizes / bytes of class pages in use.</summary>
    public double Density => UsedBytes == 0 ? 1 : (double)ObjectBytes / UsedBytes;
}

/// <summary>
/// The compressed pool, in the manner of zsmalloc: objects of up to 4 KiB are packed into
/// "zspages" of a size class with 16-byte granularity, taken from <see cref="BitmapBuddy"/>
/// arenas. A zspage is one contiguous 64 KiB block (4 KiB for the 4 KiB class), so objects never
/// straddle discontiguous pages, and its pages cost memory only once a slot on them is used: the
/// arenas are NORESERVE mappings, the pool counts touched pages as used, and a released zspage
/// gives its touched pages back with MADV_DONTNEED. That keeps both zsmalloc's losses small: the
/// slack at the end of a zspage (65536 mod size) and the half-empty last zspage of every class.
/// An object is named by a handle (one indirection, in native memory, read by the fault service),
/// so <see cref="Compact"/> can move objects out of sparse zspages and release them. Moves go
/// through CramNative_PoolMove, under the lock the fault service holds while it resolves faults.
/// Each class has its own lock; the fault service never takes any of them.
/// </summary>
internal sealed unsafe class CompressedPool : IDisposable
{
    public const int Granularity = 16;
    public const int MaxObjectSize = SharedLayout.PageSize;
    private const int ZspageOrder = 4; // 16 pages
    private const int MaxCapacity = (SharedLayout.PageSize << ZspageOrder) / Granularity;
    private const int ZspageChunk = 1024;

    private sealed class SizeClass(int size, int order)
    {
        public readonly int Size = size;
        public readonly int Order = order;
        public readonly int Capacity = (SharedLayout.PageSize << order) / size;
        public readonly int Index = size / Granularity - 1;
        public readonly Lock Lock = new();
        public int[] Partial = new int[8];
        public int PartialCount;
        public long Objects;
        public long Zspages;
    }

    private struct Zspage
    {
        public byte* Base;
        public int Arena;
        public int Class;
        public int InUse;
        public int FreeHead;    // freed objects, linked through their first 4 bytes; -1 ends
        public int FreeCursor;  // objects never used start here
        public int TouchedPages; // pages holding at least one slot ever used (counted as used memory)
        public int PartialIndex; // position in its class's partial list, -1 when full
        public uint[] Handles;  // per object: the handle that owns it (0 = free)
    }

    private sealed class Arena(byte* memory, long bytes, BitmapBuddy buddy)
    {
        public readonly byte* Memory = memory;
        public readonly long Bytes = bytes;
        public readonly BitmapBuddy Buddy = buddy;
        /// <summary>Per free zspage block: how many of its first pages are still resident from its last use.</summary>
        public readonly ushort[] Retained = new ushort[bytes >> (SharedLayout.PageShift + ZspageOrder)];
        public int BlockOf(byte* block) => (int)((block - Memory) >> (SharedLayout.PageShift + ZspageOrder));
    }

    private readonly SizeClass[] _classes; // one per 16-byte size
    private readonly nint _engine;        // 0 for a pool outside an engine
    private readonly long _arenaBytes, _maxBytes;
    private readonly bool _lockMemory;
    private readonly Lock _arenaLock = new(), _zspageLock = new(), _handleLock = new();
    private readonly Lock _retainLock = new(); // Arena.Retained and _retainedBytes
    private Arena[] _arenas = [];
    private Zspage[][] _zspages = [];
    private readonly Stack<int> _freeZspages = new(64);
    private int _nextZspage;
    private readonly ClusteredDirectory<NativePoolHandle> _handles = new("compressed pool's handle table");
    private long _usedBytes, _objectBytes, _objects, _compactedPages, _movedObjects, _fullRejections;
    private long _retainedBytes; // resident pages of free zspage blocks (part of _usedBytes)
    private readonly NativePoolMove[] _moves;
    private readonly int[] _movedFrom;

    public CompressedPool(long arenaBytes, long maxBytes, bool lockMemory, nint engine)
    {
        _arenaBytes = arenaBytes;
        _maxBytes = maxBytes;
        _lockMemory = lockMemory;
        _engine = engine;
        _classes = new SizeClass[MaxObjectSize / Granularity];
        for (int i = 0; i < _classes.Length; i++)
        {
            int size = (i + 1) * Granularity;
            _classes[i] = new SizeClass(size, ZspageOrder); // one block size: blocks are never split, so retained pages stay exact
        }
        _moves = new NativePoolMove[MaxCapacity];
        _movedFrom = new int[MaxCapacity];
        if (lockMemory)
        {
            _arenas = [NewArena()]; // a locking problem (RLIMIT_MEMLOCK) shows up now, not in the middle of reclaim
        }
    }

    /// <summary>The handle directory, for the fault service (NativeShared.HandleDirectory).</summary>
    public ulong HandleDirectory => _handles.Address;

    private SizeClass ClassOf(int length) => _classes[(length - 1) / Granularity];

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
        uint handle = NewHandle();
        lock (c.Lock)
        {
            int id;
            if (c.PartialCount > 0)
            {
                id = c.Partial[c.PartialCount - 1];
            }
            else if ((id = NewZspage(c)) < 0)
            {
                FreeHandle(handle);
                Interlocked.Increment(ref _fullRejections);
                return 0;
            }
            ref Zspage z = ref Page(id);
            int index = TakeObject(ref z, c);
            if (index < 0)
            {
                if (z.InUse == 0)
                {
                    RemovePartial(c, ref z);
                    ReleaseZspage(c, id);
                }
                FreeHandle(handle);
                Interlocked.Increment(ref _fullRejections);
                return 0;
            }
            if (z.InUse == c.Capacity)
            {
                RemovePartial(c, ref z);
            }
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
            bool wasFull = z.InUse == c.Capacity;
            z.InUse--;
            c.Objects--;
            if (z.InUse == 0)
            {
                if (!wasFull)
                {
                    RemovePartial(c, ref z);
                }
                ReleaseZspage(c, id);
            }
            else if (wasFull)
            {
                AddPartial(c, ref z, id);
            }
            *h = default;
        }
        Interlocked.Add(ref _objectBytes, -length);
        Interlocked.Decrement(ref _objects);
        FreeHandle(handle);
    }

    /// <summary>Puts a slot on its zspage's free list (the link lives in the slot's first 4 bytes).</summary>
    private static void PushFree(ref Zspage z, SizeClass c, int index)
    {
        *(int*)(z.Base + (long)index * c.Size) = z.FreeHead;
        z.FreeHead = index;
    }

    /// <summary>Takes a free slot of <paramref name="z"/>; -1 when touching a new page would pass the pool's limit.</summary>
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
            if (touched > z.TouchedPages)
            {
                long bytes = (long)(touched - z.TouchedPages) << SharedLayout.PageShift;
                if (_maxBytes > 0 && Interlocked.Add(ref _usedBytes, bytes) > _maxBytes)
                {
                    Interlocked.Add(ref _usedBytes, -bytes);
                    return -1;
                }
                if (_maxBytes == 0)
                {
                    Interlocked.Add(ref _usedBytes, bytes);
                }
                z.TouchedPages = touched;
            }
            index = z.FreeCursor++;
        }
        z.InUse++;
        return index;
    }

    private static void AddPartial(SizeClass c, ref Zspage z, int id)
    {
        if (c.PartialCount == c.Partial.Length)
        {
            Array.Resize(ref c.Partial, c.Partial.Length * 2);
        }
        z.PartialIndex = c.PartialCount;
        c.Partial[c.PartialCount++] = id;
    }

    private void RemovePartial(SizeClass c, ref Zspage z)
    {
        int last = c.Partial[--c.PartialCount];
        c.Partial[z.PartialIndex] = last;
        Page(last).PartialIndex = z.PartialIndex;
        z.PartialIndex = -1;
    }

    /// <summary>A new, empty zspage for class <paramref name="c"/> (in its partial list), or -1 when the pool is full.</summary>
    private int NewZspage(SizeClass c)
    {
        byte* memory = AllocateBlock(c.Order, out int arena);
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
        z.Class = c.Index;
        z.InUse = 0;
        z.FreeHead = -1;
        z.FreeCursor = 0;
        Arena owner = Volatile.Read(ref _arenas)[arena];
        lock (_retainLock) // nothing is written to the block before this: a discard racing with us is harmless
        {
            ref ushort retained = ref owner.Retained[owner.BlockOf(memory)];
            z.TouchedPages = retained; // already resident and counted as used
            _retainedBytes -= (long)retained << SharedLayout.PageShift;
            retained = 0;
        }
        AddPartial(c, ref z, id);
        c.Zspages++;
        return id;
    }

    /// <summary>
    /// Gives a zspage's block back to its arena. Its resident pages stay for the next zspage there
    /// (still counted as used, so <see cref="SlackBytes"/> shows them), so a class that empties
    /// and refills does not pay a page fault per page, the way malloc keeps freed memory; they go
    /// back to the kernel in <see cref="Compact"/>, which the engine's background reclaim runs
    /// when slack grows.
    /// </summary>
    private void ReleaseZspage(SizeClass c, int id)
    {
        ref Zspage z = ref Page(id);
        Arena owner = Volatile.Read(ref _arenas)[z.Arena];
        lock (_retainLock)
        {
            owner.Retained[owner.BlockOf(z.Base)] = (ushort)z.TouchedPages;
            _retainedBytes += (long)z.TouchedPages << SharedLayout.PageShift;
        }
        owner.Buddy.Free(z.Base, c.Order);
        z.Base = null;
        c.Zspages--;
        lock (_zspageLock)
        {
            _freeZspages.Push(id);
        }
    }

    /// <summary>Returns the retained pages of free blocks to the kernel.</summary>
    private void DiscardRetained()
    {
        lock (_retainLock)
        {
            foreach (Arena a in Volatile.Read(ref _arenas))
            {
                for (int b = 0; b < a.Retained.Length; b++)
                {
                    if (a.Retained[b] == 0)
                    {
                        continue;
                    }
                    long bytes = (long)a.Retained[b] << SharedLayout.PageShift;
                    a.Retained[b] = 0;
                    if (!_lockMemory)
                    {
                        Interop.CramNative.Discard((ulong)(a.Memory + ((long)b << (SharedLayout.PageShift + ZspageOrder))), (ulong)bytes);
                    }
                    _retainedBytes -= bytes;
                    Interlocked.Add(ref _usedBytes, -bytes);
                }
            }
        }
    }

    private byte* AllocateBlock(int order, out int arenaIndex)
    {
        while (true)
        {
            Arena[] arenas = Volatile.Read(ref _arenas);
            for (int i = 0; i < arenas.Length; i++)
            {
                byte* block = arenas[i].Buddy.Allocate(order);
                if (block != null)
                {
                    arenaIndex = i;
                    return block;
                }
            }
            lock (_arenaLock)
            {
                if (_arenas.Length == arenas.Length)
                {
                    Arena? added;
                    try
                    {
                        added = NewArena(); // address space only: pages cost memory once touched
                    }
                    catch (InvalidOperationException)
                    {
                        added = null; // no more address space (or memory to lock): the pool is full
                    }
                    if (added is null)
                    {
                        arenaIndex = -1;
                        return null;
                    }
                    _arenas = [.. arenas, added];
                }
            }
        }
    }

    private Arena NewArena()
    {
        ulong memory;
        if (Interop.CramNative.ArenaMap((ulong)_arenaBytes, _lockMemory ? 1 : 0, &memory) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new InvalidOperationException(_lockMemory
                ? $"LockPoolMemory: mapping and locking a {_arenaBytes >> 20} MiB pool arena failed (errno {errno}: {Marshal.GetPInvokeErrorMessage(errno)}). Raise RLIMIT_MEMLOCK (ulimit -l) or grant CAP_IPC_LOCK, or set LockPoolMemory = false."
                : $"Mapping a {_arenaBytes >> 20} MiB pool arena failed (errno {errno}: {Marshal.GetPInvokeErrorMessage(errno)}).");
        }
        int maxOrder = System.Numerics.BitOperations.Log2((ulong)(_arenaBytes >> SharedLayout.PageShift));
        return new Arena((byte*)memory, _arenaBytes, new BitmapBuddy((byte*)memory, maxOrder));
    }

    private uint NewHandle() => (uint)_handles.Allocate(); // ids stay below 2^32: the table's capacity

    private void FreeHandle(uint handle) => _handles.Free(handle);

    /// <summary>
    /// Moves objects out of the sparsest zspages of each class into the fullest ones and returns
    /// the emptied zspages to the arena. Returns the bytes given back.
    /// </summary>
    public long Compact()
    {
        long before = Volatile.Read(ref _usedBytes);
        foreach (SizeClass c in _classes)
        {
            lock (c.Lock)
            {
                CompactClass(c);
            }
        }
        DiscardRetained();
        return before - Volatile.Read(ref _usedBytes);
    }

    private void CompactClass(SizeClass c)
    {
        EmptySparseZspages(c);
        for (int i = 0; i < c.PartialCount; i++)
        {
            ShrinkZspage(c, c.Partial[i]);
        }
    }

    /// <summary>
    /// Moves a zspage's objects down into its lowest free slots, then gives back the pages above
    /// the last object: the zspages that remain after <see cref="EmptySparseZspages"/> hold their
    /// free slots at page granularity no more.
    /// </summary>
    private void ShrinkZspage(SizeClass c, int id)
    {
        ref Zspage z = ref Page(id);
        int moves = 0;
        for (int low = 0, high = z.FreeCursor - 1; ; low++, high--)
        {
            while (low < high && z.Handles[low] != 0)
            {
                low++;
            }
            while (high > low && z.Handles[high] == 0)
            {
                high--;
            }
            if (low >= high)
            {
                break;
            }
            _moves[moves++] = new NativePoolMove { Handle = z.Handles[high], Destination = (ulong)(z.Base + (long)low * c.Size), Zspage = (uint)id };
            z.Handles[low] = z.Handles[high];
            z.Handles[high] = 0;
        }
        if (moves > 0)
        {
            fixed (NativePoolMove* m = _moves)
            {
                Interop.ThrowIfFailed(Interop.CramNative.PoolMove(_engine, HandleDirectory, m, moves), "Moving pool objects");
            }
            Interlocked.Add(ref _movedObjects, moves);
        }
        // The live objects are now slots [0, InUse): no free slot below the cursor.
        z.FreeCursor = z.InUse;
        z.FreeHead = -1;
        int touched = (int)(((long)z.FreeCursor * c.Size + SharedLayout.PageSize - 1) >> SharedLayout.PageShift);
        if (touched < z.TouchedPages)
        {
            long offset = (long)touched << SharedLayout.PageShift, bytes = (long)(z.TouchedPages - touched) << SharedLayout.PageShift;
            if (!_lockMemory)
            {
                Interop.CramNative.Discard((ulong)(z.Base + offset), (ulong)bytes);
            }
            Interlocked.Add(ref _usedBytes, -bytes);
            Interlocked.Add(ref _compactedPages, z.TouchedPages - touched);
            z.TouchedPages = touched;
        }
    }

    /// <summary>Empties the sparsest zspages into the fullest ones and releases them, while the objects fit.</summary>
    private void EmptySparseZspages(SizeClass c)
    {
        while (c.PartialCount >= 2)
        {
            // The sparsest zspage is the source; it must fit in the free room of the others.
            int source = -1;
            long room = 0;
            for (int i = 0; i < c.PartialCount; i++)
            {
                int id = c.Partial[i];
                room += c.Capacity - Page(id).InUse;
                if (source < 0 || Page(id).InUse < Page(source).InUse)
                {
                    source = id;
                }
            }
            ref Zspage src = ref Page(source);
            room -= c.Capacity - src.InUse;
            if (room < src.InUse)
            {
                return;
            }
            RemovePartial(c, ref src);
            int moves = 0;
            for (int index = 0; index < src.FreeCursor; index++)
            {
                uint handle = src.Handles[index];
                if (handle == 0)
                {
                    continue;
                }
                // Fill the fullest other zspage first, so the sparse ones empty out next.
                int target = c.Partial[0];
                for (int i = 1; i < c.PartialCount; i++)
                {
                    if (Page(c.Partial[i]).InUse > Page(target).InUse)
                    {
                        target = c.Partial[i];
                    }
                }
                ref Zspage dst = ref Page(target);
                int slot = TakeObject(ref dst, c);
                if (slot < 0)
                {
                    break; // the pool's limit: stop here; the source keeps the objects not moved
                }
                dst.Handles[slot] = handle;
                src.Handles[index] = 0;
                _movedFrom[moves] = index;
                if (dst.InUse == c.Capacity)
                {
                    RemovePartial(c, ref dst);
                }
                _moves[moves++] = new NativePoolMove { Handle = handle, Destination = (ulong)(dst.Base + (long)slot * c.Size), Zspage = (uint)target };
            }
            fixed (NativePoolMove* m = _moves)
            {
                Interop.ThrowIfFailed(Interop.CramNative.PoolMove(_engine, HandleDirectory, m, moves), "Moving pool objects");
            }
            for (int i = 0; i < moves; i++) // only now: the links overwrite the moved objects' first bytes
            {
                PushFree(ref src, c, _movedFrom[i]);
            }
            src.InUse -= moves;
            Interlocked.Add(ref _movedObjects, moves);
            if (src.InUse > 0)
            {
                AddPartial(c, ref src, source);
                return;
            }
            Interlocked.Add(ref _compactedPages, src.TouchedPages);
            ReleaseZspage(c, source);
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
    public long ObjectBytes => Volatile.Read(ref _objectBytes);
    public long UsedBytes => Volatile.Read(ref _usedBytes);
    public long FullRejections => Volatile.Read(ref _fullRejections);

    /// <summary>Fragmentation of the arenas' free space (see <see cref="BuddyStats.Fragmentation"/>).</summary>
    public double Fragmentation
    {
        get
        {
            Arena[] arenas = Volatile.Read(ref _arenas);
            if (arenas.Length == 0)
            {
                return 0;
            }
            var free = new long[arenas.Max(a => a.Buddy.MaxOrder) + 1];
            foreach (Arena a in arenas)
            {
                long[] f = a.Buddy.FreeBytesByOrder();
                for (int i = 0; i < f.Length; i++)
                {
                    free[i] += f[i];
                }
            }
            return BuddyStats.Fragmentation(free);
        }
    }

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
        Arena[] arenas = Volatile.Read(ref _arenas);
        return new PoolStats(UsedBytes, ObjectBytes, Volatile.Read(ref _objects), _classes.Sum(c => Volatile.Read(ref c.Zspages)),
            arenas.Sum(a => a.Bytes), Volatile.Read(ref _compactedPages), Volatile.Read(ref _movedObjects), FullRejections,
            Fragmentation, classes.ToArray());
    }

    public void Dispose()
    {
        foreach (Arena a in _arenas)
        {
            a.Buddy.Dispose();
            Interop.CramNative.ArenaUnmap((ulong)a.Memory, (ulong)a.Bytes);
        }
        _arenas = [];
        _handles.Dispose();
    }
}
