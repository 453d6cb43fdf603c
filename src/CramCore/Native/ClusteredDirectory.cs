using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>
/// A two-level radix table of <typeparamref name="T"/> records shared with native code (the slot
/// table and the pool's handle table; layout in cramnative.h, "Clustered directories"):
/// <c>directory[id &gt;&gt; 14]</c> is the address of a cluster of 16384 records, allocated zeroed
/// the first time an id in it is handed out and published (release) before that id is. Native code
/// only looks records up. Ids are handed out lowest-first, and freed ids are reused before fresh
/// ones; id 0 is never handed out. Thread-safe.
/// </summary>
internal sealed unsafe class ClusteredDirectory<T> : IDisposable where T : unmanaged
{
    private readonly string _name;
    private readonly ulong* _directory;
    private readonly Lock _lock = new();
    private readonly Stack<ulong> _freeIds = new(1024);
    private ulong _nextFresh = 1;
    private bool _disposed;

    /// <param name="name">What the table is, for the error when it is full.</param>
    public ClusteredDirectory(string name)
    {
        _name = name;
        _directory = (ulong*)NativeMemory.AllocZeroed(SharedLayout.DirectorySize, sizeof(ulong));
    }

    /// <summary>The directory's address, for the native side (NativeShared.SlotDirectory / HandleDirectory).</summary>
    public ulong Address => (ulong)_directory;

    /// <summary>The record of <paramref name="id"/>; the id must have been handed out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Get(ulong id) =>
        (T*)_directory[id >> SharedLayout.DirectoryClusterShift] + (id & (SharedLayout.DirectoryClusterSize - 1));

    /// <summary>Hands out an id whose record exists (zeroed if never used, as left by <see cref="Free"/> otherwise).</summary>
    /// <exception cref="InvalidOperationException">All 2^32 ids are in use.</exception>
    public ulong Allocate()
    {
        lock (_lock)
        {
            if (_freeIds.TryPop(out ulong reused))
            {
                return reused;
            }
            ulong id = _nextFresh;
            ulong cluster = id >> SharedLayout.DirectoryClusterShift;
            if (cluster >= SharedLayout.DirectorySize)
            {
                throw new InvalidOperationException($"The {_name} is full (2^32 entries).");
            }
            if (_directory[cluster] == 0)
            {
                void* memory = NativeMemory.AllocZeroed((nuint)SharedLayout.DirectoryClusterSize, (nuint)sizeof(T));
                Volatile.Write(ref _directory[cluster], (ulong)memory);
            }
            _nextFresh++;
            return id;
        }
    }

    /// <summary>Gives an id back for reuse; the caller has cleared or rewritten what it needs of its record.</summary>
    public void Free(ulong id)
    {
        lock (_lock)
        {
            _freeIds.Push(id);
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
        for (ulong c = 0; c < SharedLayout.DirectorySize && c <= (_nextFresh >> SharedLayout.DirectoryClusterShift); c++)
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
