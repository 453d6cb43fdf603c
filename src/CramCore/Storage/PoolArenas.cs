using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The compressed pool's memory: NORESERVE arenas (address space only until touched; optionally
/// mlocked) added as needed, each carved by a lock-free <see cref="BitmapBuddy"/> into zspage
/// blocks. A freed block keeps its resident pages ("retained") for the next zspage there, the way
/// malloc keeps freed memory, until <see cref="DiscardRetained"/> gives them back to the kernel.
/// </summary>
internal sealed unsafe class PoolArenas : IDisposable
{
    private sealed class Arena(byte* memory, long bytes, int blockShift, BitmapBuddy buddy)
    {
        public readonly byte* Memory = memory;
        public readonly long Bytes = bytes;
        public readonly BitmapBuddy Buddy = buddy;
        /// <summary>Per free block: how many of its first pages are still resident from its last use.</summary>
        public readonly ushort[] Retained = new ushort[bytes >> blockShift];
        public int BlockOf(byte* block) => (int)((block - Memory) >> blockShift);
    }

    private readonly long _arenaBytes;
    private readonly int _blockOrder;
    private readonly bool _lockMemory;
    private readonly Lock _arenaLock = new();
    private readonly Lock _retainLock = new(); // Arena.Retained
    private Arena[] _arenas = [];

    /// <param name="arenaBytes">Bytes per arena (a power of two).</param>
    /// <param name="blockOrder">Every block is 2^order pages: blocks are never split, so retained pages stay exact.</param>
    /// <param name="lockMemory">mlock each arena; the first is mapped now, so a locking problem shows at once.</param>
    public PoolArenas(long arenaBytes, int blockOrder, bool lockMemory)
    {
        _arenaBytes = arenaBytes;
        _blockOrder = blockOrder;
        _lockMemory = lockMemory;
        if (lockMemory)
        {
            _arenas = [NewArena()];
        }
    }

    /// <summary>Address space mapped for arenas.</summary>
    public long MappedBytes => Volatile.Read(ref _arenas).Sum(a => a.Bytes);

    /// <summary>Where each arena is mapped (tests).</summary>
    internal nint[] Addresses => [.. Volatile.Read(ref _arenas).Select(a => (nint)a.Memory)];

    /// <summary>A free block, or null when no arena has one and no more can be mapped (the pool is full).</summary>
    public byte* Allocate(out int arenaIndex)
    {
        while (true)
        {
            Arena[] arenas = Volatile.Read(ref _arenas);
            for (int i = 0; i < arenas.Length; i++)
            {
                byte* block = arenas[i].Buddy.Allocate(_blockOrder);
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

    /// <summary>Takes the count of pages of a just-allocated block that are still resident, and forgets it.</summary>
    public int TakeRetained(int arenaIndex, byte* block)
    {
        Arena arena = Volatile.Read(ref _arenas)[arenaIndex];
        lock (_retainLock) // nothing is written to the block before this: a discard racing with us is harmless
        {
            ref ushort retained = ref arena.Retained[arena.BlockOf(block)];
            int pages = retained;
            retained = 0;
            return pages;
        }
    }

    /// <summary>Frees a block whose first <paramref name="residentPages"/> pages stay resident for its next use.</summary>
    public void Free(int arenaIndex, byte* block, int residentPages)
    {
        Arena arena = Volatile.Read(ref _arenas)[arenaIndex];
        lock (_retainLock)
        {
            arena.Retained[arena.BlockOf(block)] = (ushort)residentPages;
        }
        arena.Buddy.Free(block, _blockOrder);
    }

    /// <summary>Gives the retained pages of free blocks back to the kernel. Returns the bytes.</summary>
    public long DiscardRetained()
    {
        long discarded = 0;
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
                    Discard(a.Memory + ((long)b << (SharedLayout.PageShift + _blockOrder)), bytes);
                    discarded += bytes;
                }
            }
        }
        return discarded;
    }

    /// <summary>Gives pages back to the kernel (not when locked: they stay, and read as they were).</summary>
    public void Discard(byte* address, long bytes)
    {
        if (!_lockMemory)
        {
            Interop.CramNative.Discard((ulong)address, (ulong)bytes);
        }
    }

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
        return new Arena((byte*)memory, _arenaBytes, SharedLayout.PageShift + _blockOrder, new BitmapBuddy((byte*)memory, maxOrder));
    }

    public void Dispose()
    {
        foreach (Arena a in _arenas)
        {
            a.Buddy.Dispose();
            Interop.CramNative.ArenaUnmap((ulong)a.Memory, (ulong)a.Bytes);
        }
        _arenas = [];
    }
}
