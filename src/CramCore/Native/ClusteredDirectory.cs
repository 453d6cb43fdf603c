using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>
/// A two-level radix table of <typeparamref name="T"/> records shared with native code (the slot
/// table and the pool's handle table; layout in cramnative.h, "Clustered directories"):
/// <c>directory[id &gt;&gt; 14]</c> is the address of a cluster of 16384 records, allocated the
/// first time an id in it is handed out and published (release) before that id is, and freed again
/// when its last id is given back. Metadata exists only for ids in use: a cluster is a lazily
/// committed zeroed mapping (calloc of 256 KiB is an mmap), ids are handed out lowest-first (the
/// lowest cluster with room; in it, the last id freed, else the next never-used one), so only the
/// pages holding records ever handed out cost memory, and there is no side table: a free record's
/// first 4 bytes link its cluster's free list (the caller zeroed the rest). Native code only looks
/// up records of ids it was handed (named by a page-table entry), so a cluster is never freed
/// under it. Id 0 is never handed out. Thread-safe.
/// </summary>
internal sealed unsafe class ClusteredDirectory<T> : IDisposable where T : unmanaged
{
    private const int Size = SharedLayout.DirectoryClusterSize;
    private const int NoFree = -1;

    private readonly string _name;
    private readonly ulong* _directory;
    private readonly Lock _lock = new();
    private int[] _inUse = new int[16];    // per cluster: ids handed out (id 0 counts in cluster 0)
    private int[] _fresh = new int[16];    // per cluster: records below this were handed out at some time
    private int[] _freeHead = new int[16]; // per cluster: index of the last record freed, or NoFree
    private int _clusters;
    private int _clusterLimit;   // 1 + highest cluster index allocated now or before
    private int _lowestWithRoom; // no cluster below this has a free id
    private long _count;
    private bool _disposed;

    /// <param name="name">What the table is, for the error when it is full.</param>
    public ClusteredDirectory(string name)
    {
        _name = name;
        // 2 MiB of address space; calloc maps it lazily, so only the pages naming clusters cost memory.
        _directory = (ulong*)NativeMemory.AllocZeroed(SharedLayout.DirectorySize, sizeof(ulong));
    }

    /// <summary>The directory's address, for the native side (NativeShared.SlotDirectory / HandleDirectory).</summary>
    public ulong Address => (ulong)_directory;

    /// <summary>Ids handed out now.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>
    /// Memory the table takes: the pages of each cluster holding records ever handed out (the rest
    /// of a cluster is never touched) and the directory's pages that name clusters.
    /// </summary>
    public long MetadataBytes
    {
        get
        {
            lock (_lock)
            {
                long bytes = ((long)_clusterLimit * sizeof(ulong) + SharedLayout.PageSize - 1) / SharedLayout.PageSize * SharedLayout.PageSize;
                for (int c = 0; c < _clusterLimit; c++)
                {
                    if (_directory[c] != 0)
                    {
                        bytes += ((long)_fresh[c] * sizeof(T) + SharedLayout.PageSize - 1) / SharedLayout.PageSize * SharedLayout.PageSize;
                    }
                }
                return bytes;
            }
        }
    }

    /// <summary>The record of <paramref name="id"/>; the id must have been handed out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Get(ulong id) =>
        (T*)_directory[id >> SharedLayout.DirectoryClusterShift] + (id & (SharedLayout.DirectoryClusterSize - 1));

    /// <summary>
    /// The record of an id remembered elsewhere (a queue, a list) that may have been freed since,
    /// or null if its cluster is gone; a record that exists may be free (the caller's own "free"
    /// marking tells). Only where no id is handed out or freed meanwhile (the maintenance lock).
    /// </summary>
    public T* TryGet(ulong id)
    {
        ulong c = id >> SharedLayout.DirectoryClusterShift;
        if (id == 0 || c >= (ulong)Volatile.Read(ref _clusterLimit))
        {
            return null;
        }
        ulong cluster = Volatile.Read(ref _directory[c]);
        ulong index = id & (SharedLayout.DirectoryClusterSize - 1);
        return cluster == 0 || index >= (ulong)_fresh[c] ? null : (T*)cluster + index;
    }

    /// <summary>Hands out the lowest free id; its record is zeroed (the caller of <see cref="Free"/> zeroed it, bar the link, which is cleared here).</summary>
    /// <exception cref="InvalidOperationException">All 2^32 ids are in use.</exception>
    public ulong Allocate()
    {
        lock (_lock)
        {
            int c = _lowestWithRoom;
            while (c < _clusterLimit && _directory[c] != 0 && _inUse[c] == Size)
            {
                c++;
            }
            if (c >= SharedLayout.DirectorySize)
            {
                throw new InvalidOperationException($"The {_name} is full (2^32 entries).");
            }
            _lowestWithRoom = c;
            if (c >= _clusterLimit || _directory[c] == 0)
            {
                NewCluster(c);
            }
            T* records = (T*)_directory[c];
            int index;
            if (_freeHead[c] != NoFree)
            {
                index = _freeHead[c];
                int* link = (int*)(records + index);
                _freeHead[c] = *link;
                *link = 0;
            }
            else
            {
                index = _fresh[c]++;
            }
            _inUse[c]++;
            _count++;
            return ((ulong)c << SharedLayout.DirectoryClusterShift) | (uint)index;
        }
    }

    private void NewCluster(int c)
    {
        if (c >= _inUse.Length)
        {
            int length = Math.Min(SharedLayout.DirectorySize, Math.Max(c + 1, _inUse.Length * 2));
            Array.Resize(ref _inUse, length);
            Array.Resize(ref _fresh, length);
            Array.Resize(ref _freeHead, length);
        }
        void* memory = NativeMemory.AllocZeroed((nuint)Size, (nuint)sizeof(T));
        Volatile.Write(ref _directory[c], (ulong)memory); // published before any id in it
        _inUse[c] = c == 0 ? 1 : 0; // id 0 is never handed out; cluster 0 is never freed
        _fresh[c] = c == 0 ? 1 : 0;
        _freeHead[c] = NoFree;
        _clusters++;
        _clusterLimit = Math.Max(_clusterLimit, c + 1);
    }

    /// <summary>
    /// Gives an id back; the caller has zeroed its record (its first 4 bytes become the free list's
    /// link). The cluster is freed with its last id. The caller guarantees the id is in use (the
    /// records carry their own "free" marking: a slot's backend, a handle's length).
    /// </summary>
    public void Free(ulong id)
    {
        lock (_lock)
        {
            int c = (int)(id >> SharedLayout.DirectoryClusterShift);
            int index = (int)(id & (SharedLayout.DirectoryClusterSize - 1));
            if (id == 0 || c >= _clusterLimit || _directory[c] == 0 || index >= _fresh[c])
            {
                throw new InvalidOperationException($"Id {id} of the {_name} was never handed out.");
            }
            _count--;
            _lowestWithRoom = Math.Min(_lowestWithRoom, c);
            if (--_inUse[c] == 0 && c != 0)
            {
                void* memory = (void*)_directory[c];
                Volatile.Write(ref _directory[c], 0UL);
                NativeMemory.Free(memory);
                _clusters--;
                return;
            }
            *(int*)((T*)_directory[c] + index) = _freeHead[c];
            _freeHead[c] = index;
        }
    }

    /// <summary>
    /// Calls <paramref name="visit"/> with the id and record of every record ever handed out in a
    /// cluster that exists (free ones included: the caller tells them apart). Under the table's
    /// lock: the visitor must not allocate or free.
    /// </summary>
    public void ForEachRecord(Action<ulong, nint> visit)
    {
        lock (_lock)
        {
            for (int c = 0; c < _clusterLimit; c++)
            {
                if (_directory[c] == 0)
                {
                    continue;
                }
                T* records = (T*)_directory[c];
                for (int i = c == 0 ? 1 : 0; i < _fresh[c]; i++)
                {
                    visit(((ulong)c << SharedLayout.DirectoryClusterShift) | (uint)i, (nint)(records + i));
                }
            }
        }
    }

    /// <summary>An upper bound (exclusive) of the ids handed out.</summary>
    public ulong IdLimit
    {
        get
        {
            lock (_lock)
            {
                return (ulong)_clusterLimit * Size;
            }
        }
    }

    /// <summary>Frees the clusters and the directory. Only when native code no longer reads the table.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        for (int c = 0; c < _clusterLimit; c++)
        {
            if (_directory[c] != 0)
            {
                NativeMemory.Free((void*)_directory[c]);
                _directory[c] = 0;
            }
        }
        NativeMemory.Free(_directory);
    }
}
