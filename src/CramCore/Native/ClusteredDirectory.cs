using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>
/// A two-level radix table of <typeparamref name="T"/> records shared with native code (the slot
/// table and the pool's handle table; layout in cramnative.h, "Clustered directories"):
/// <c>directory[id &gt;&gt; 14]</c> is the address of a cluster of 16384 records, allocated zeroed
/// the first time an id in it is handed out and published (release) before that id is, and freed
/// again when its last id is given back: metadata exists only for ids in use. Native code only looks
/// up records of ids it was handed (named by a page-table entry), so a cluster is never freed under
/// it. Ids are handed out lowest-first (the lowest cluster with room, the lowest id in it), which
/// keeps the ids in use dense and lets emptied clusters go. Id 0 is never handed out. Thread-safe.
/// </summary>
internal sealed unsafe class ClusteredDirectory<T> : IDisposable where T : unmanaged
{
    private const int Size = SharedLayout.DirectoryClusterSize;
    private const int WordsPerCluster = Size / 64;

    private readonly string _name;
    private readonly ulong* _directory;
    private readonly Lock _lock = new();
    private ulong[]?[] _allocated = new ulong[]?[16]; // per cluster: bit set = id handed out
    private int[] _inUse = new int[16];                // per cluster: ids handed out
    private int[] _wordHint = new int[16];             // per cluster: no free id below this bitmap word
    private int _clusters;          // clusters allocated now
    private int _clusterLimit;      // 1 + highest cluster index ever allocated
    private int _lowestWithRoom;    // no cluster below this has a free id
    private long _count;
    private bool _disposed;

    /// <param name="name">What the table is, for the error when it is full.</param>
    public ClusteredDirectory(string name)
    {
        _name = name;
        // 2 MiB of address space; calloc maps it lazily, so only the pages of clusters in use cost memory.
        _directory = (ulong*)NativeMemory.AllocZeroed(SharedLayout.DirectorySize, sizeof(ulong));
    }

    /// <summary>The directory's address, for the native side (NativeShared.SlotDirectory / HandleDirectory).</summary>
    public ulong Address => (ulong)_directory;

    /// <summary>Ids handed out now.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>An upper bound of the ids handed out (exclusive).</summary>
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

    /// <summary>
    /// Memory the table takes for the ids in use: the clusters' records and allocation bitmaps,
    /// and the directory's pages that name them.
    /// </summary>
    public long MetadataBytes
    {
        get
        {
            lock (_lock)
            {
                long directoryPages = ((long)_clusterLimit * sizeof(ulong) + SharedLayout.PageSize - 1) / SharedLayout.PageSize;
                return _clusters * ((long)Size * sizeof(T) + WordsPerCluster * sizeof(ulong)) + directoryPages * SharedLayout.PageSize;
            }
        }
    }

    /// <summary>The record of <paramref name="id"/>; the id must have been handed out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Get(ulong id) =>
        (T*)_directory[id >> SharedLayout.DirectoryClusterShift] + (id & (SharedLayout.DirectoryClusterSize - 1));

    /// <summary>Whether <paramref name="id"/> is handed out now (its cluster exists); for ids remembered elsewhere that may have been freed.</summary>
    public bool IsAllocated(ulong id)
    {
        lock (_lock)
        {
            int c = (int)(id >> SharedLayout.DirectoryClusterShift);
            int index = (int)(id & (SharedLayout.DirectoryClusterSize - 1));
            return id != 0 && c < _allocated.Length && _allocated[c] is { } bits && (bits[index >> 6] & (1UL << index)) != 0;
        }
    }

    /// <summary>Hands out the lowest free id; its record is zeroed (never used) or as <see cref="Free"/>'s caller left it.</summary>
    /// <exception cref="InvalidOperationException">All 2^32 ids are in use.</exception>
    public ulong Allocate()
    {
        lock (_lock)
        {
            int c = _lowestWithRoom;
            while (c < _clusterLimit && _allocated[c] is { } used && _inUse[c] == Size)
            {
                c++;
            }
            if (c >= SharedLayout.DirectorySize)
            {
                throw new InvalidOperationException($"The {_name} is full (2^32 entries).");
            }
            _lowestWithRoom = c;
            ulong[] bits = _allocated.Length > c && _allocated[c] is { } existing ? existing : NewCluster(c);
            for (int w = _wordHint[c]; w < WordsPerCluster; w++)
            {
                if (bits[w] != ulong.MaxValue)
                {
                    _wordHint[c] = w;
                    int b = BitOperations.TrailingZeroCount(~bits[w]);
                    bits[w] |= 1UL << b;
                    _inUse[c]++;
                    _count++;
                    return ((ulong)c << SharedLayout.DirectoryClusterShift) | (uint)(w * 64 + b);
                }
            }
            throw new InvalidOperationException($"The {_name}'s cluster {c} has no free id although its count says so.");
        }
    }

    private ulong[] NewCluster(int c)
    {
        if (c >= _allocated.Length)
        {
            int length = Math.Min(SharedLayout.DirectorySize, Math.Max(c + 1, _allocated.Length * 2));
            Array.Resize(ref _allocated, length);
            Array.Resize(ref _inUse, length);
            Array.Resize(ref _wordHint, length);
        }
        var bits = new ulong[WordsPerCluster];
        _inUse[c] = 0;
        if (c == 0)
        {
            bits[0] = 1; // id 0 is never handed out (counted as in use, not in Count); cluster 0 is never freed
            _inUse[0] = 1;
        }
        void* memory = NativeMemory.AllocZeroed((nuint)Size, (nuint)sizeof(T));
        Volatile.Write(ref _directory[c], (ulong)memory); // published before any id in it
        _allocated[c] = bits;
        _wordHint[c] = 0;
        _clusters++;
        _clusterLimit = Math.Max(_clusterLimit, c + 1);
        return bits;
    }

    /// <summary>Gives an id back. The cluster is freed with its last id; otherwise the record stays as the caller left it.</summary>
    public void Free(ulong id)
    {
        lock (_lock)
        {
            int c = (int)(id >> SharedLayout.DirectoryClusterShift);
            int index = (int)(id & (SharedLayout.DirectoryClusterSize - 1));
            ulong[]? bits = c < _allocated.Length ? _allocated[c] : null;
            if (id == 0 || bits is null || (bits[index >> 6] & (1UL << index)) == 0)
            {
                throw new InvalidOperationException($"Id {id} of the {_name} freed twice or never handed out.");
            }
            bits[index >> 6] &= ~(1UL << index);
            _wordHint[c] = Math.Min(_wordHint[c], index >> 6);
            _count--;
            _lowestWithRoom = Math.Min(_lowestWithRoom, c);
            if (--_inUse[c] == 0 && c != 0)
            {
                void* memory = (void*)_directory[c];
                Volatile.Write(ref _directory[c], 0UL);
                NativeMemory.Free(memory);
                _allocated[c] = null;
                _clusters--;
            }
        }
    }

    /// <summary>
    /// Adds to <paramref name="result"/> every id handed out whose bit in <paramref name="marks"/>
    /// (<paramref name="markBits"/> bits, id-indexed) is clear: the reaper's sweep.
    /// </summary>
    public void CollectUnmarked(ulong* marks, ulong markBits, List<ulong> result)
    {
        lock (_lock)
        {
            for (int c = 0; c < _clusterLimit; c++)
            {
                if (_allocated[c] is not { } bits)
                {
                    continue;
                }
                for (int w = 0; w < WordsPerCluster; w++)
                {
                    ulong first = ((ulong)c << SharedLayout.DirectoryClusterShift) + (ulong)(w * 64);
                    ulong unmarked = bits[w] & ~(first < markBits ? marks[first >> 6] : 0);
                    if (c == 0 && w == 0)
                    {
                        unmarked &= ~1UL; // id 0
                    }
                    while (unmarked != 0)
                    {
                        result.Add(first + (ulong)BitOperations.TrailingZeroCount(unmarked));
                        unmarked &= unmarked - 1;
                    }
                }
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
