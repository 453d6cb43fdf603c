using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

using CramCore.Native;
using CramCore.Storage;

namespace CramCore.Research;

/// <summary>
/// A lock-free buddy allocator over one arena of 2^MaxOrder pages, after NBBS (Marotta, Ianni,
/// Pellegrini, Quaglia, "NBBS: A Non-Blocking Buddy System for Multi-core Machines", IEEE TC 2021).
/// A complete binary tree has one state word per possible block (root = the whole arena, leaves
/// = 4 KiB pages). Every change is a CAS or an atomic OR on one word; nothing ever waits.
/// <list type="bullet">
/// <item>BUSY: the block is allocated whole.</item>
/// <item>OCC_L / OCC_R: something is allocated in the left / right half.</item>
/// <item>COAL_L / COAL_R: a free in that half is climbing up to clear the OCC bits.</item>
/// </list>
/// Allocation takes a free node (CAS 0 → BUSY) and climbs, setting its side's OCC bit in every
/// ancestor and clearing COAL there (which tells a racing free to stop); finding a BUSY ancestor
/// means the node lies inside an allocated block, so it undoes and skips that block. Free marks
/// COAL upwards until the buddy half is in use, releases the node, then clears OCC|COAL upwards
/// while its COAL mark is still there (an allocation that cleared it owns the bit now). Unlike
/// NBBS, allocation skips the CAS on ancestors whose bit is already set with no COAL (it still
/// reads every ancestor for BUSY), so a busy tree costs about two CASes per operation.
/// No GC allocation per operation.
/// </summary>
internal sealed unsafe class LockFreeBuddy : IDisposable
{
    private const uint Busy = 1, OccLeft = 2, OccRight = 4, CoalLeft = 8, CoalRight = 16;

    private readonly uint* _tree;
    private readonly int[] _hints; // per level: where the last allocation there ended (racy, a hint only)

    public LockFreeBuddy(byte* arena, int maxOrder)
    {
        if (maxOrder is < 0 or > 24)
        {
            throw new ArgumentOutOfRangeException(nameof(maxOrder), maxOrder, "between 0 and 24");
        }
        Base = arena;
        MaxOrder = maxOrder;
        _tree = (uint*)NativeMemory.AllocZeroed((nuint)(2L << maxOrder), sizeof(uint));
        _hints = new int[maxOrder + 1];
    }

    public byte* Base { get; }
    public int MaxOrder { get; }
    public long CapacityBytes => (long)SharedLayout.PageSize << MaxOrder;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Level(long node) => BitOperations.Log2((ulong)node);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint OccOf(long node) => (node & 1) == 0 ? OccLeft : OccRight;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint CoalOf(long node) => (node & 1) == 0 ? CoalLeft : CoalRight;

    /// <summary>Allocates a block of 4 KiB × 2^<paramref name="order"/>; null when none is free.</summary>
    public byte* Allocate(int order)
    {
        if ((uint)order > (uint)MaxOrder)
        {
            return null;
        }
        int level = MaxOrder - order;
        long first = 1L << level, count = 1L << level;
        long start = (uint)Volatile.Read(ref _hints[level]) & (count - 1);
        for (long i = 0; i < count;)
        {
            long node = first + ((start + i) & (count - 1));
            if (Volatile.Read(ref _tree[node]) != 0)
            {
                i++;
                continue;
            }
            long failed = TryAllocate(node);
            if (failed == 0)
            {
                _hints[level] = (int)(node - first + 1);
                return Base + ((node - first) << (order + SharedLayout.PageShift));
            }
            // The node lies inside block `failed`: skip the rest of that block at this level.
            long end = (failed + 1) << (level - Level(failed));
            i += Math.Max(1, end - node);
        }
        return null;
    }

    /// <summary>Returns 0 on success, or the node that stopped the allocation.</summary>
    private long TryAllocate(long node)
    {
        if (Interlocked.CompareExchange(ref _tree[node], Busy, 0) != 0)
        {
            return node;
        }
        long child = node;
        for (long current = node >> 1; current >= 1; child = current, current >>= 1)
        {
            uint occ = OccOf(child), coal = CoalOf(child);
            while (true)
            {
                uint old = Volatile.Read(ref _tree[current]);
                if ((old & Busy) != 0)
                {
                    Release(node, Level(current) + 1); // undo the marks below `current`
                    return current;
                }
                uint desired = (old & ~coal) | occ;
                if (desired == old || Interlocked.CompareExchange(ref _tree[current], desired, old) == old)
                {
                    break;
                }
            }
        }
        return 0;
    }

    /// <summary>Frees a block returned by <see cref="Allocate"/> with the same order.</summary>
    public void Free(byte* block, int order)
    {
        long offset = BuddyStats.OffsetOfBlock(block, order, Base, MaxOrder);
        long node = (1L << (MaxOrder - order)) + (offset >> (order + SharedLayout.PageShift));
        if (Volatile.Read(ref _tree[node]) != Busy)
        {
            throw new InvalidOperationException($"Block {offset:x} of order {order} is not allocated (double free or wrong order).");
        }
        Release(node, 0);
    }

    /// <summary>Frees <paramref name="node"/>, updating ancestors at levels ≥ <paramref name="topLevel"/>.</summary>
    private void Release(long node, int topLevel)
    {
        // 1. Announce the free: COAL on our side, up to where the buddy half is still in use.
        for (long current = node; Level(current) > topLevel; current >>= 1)
        {
            long parent = current >> 1;
            uint old = Interlocked.Or(ref _tree[parent], CoalOf(current));
            long buddy = current ^ 1;
            if ((old & OccOf(buddy)) != 0 && (old & CoalOf(buddy)) == 0)
            {
                break;
            }
        }
        // 2. Release the node itself.
        Volatile.Write(ref _tree[node], 0);
        // 3. Clear OCC|COAL upwards while our COAL mark survives and the parent becomes empty.
        for (long current = node; Level(current) > topLevel; current >>= 1)
        {
            long parent = current >> 1;
            uint occ = OccOf(current), coal = CoalOf(current), desired;
            while (true)
            {
                uint old = Volatile.Read(ref _tree[parent]);
                if ((old & coal) == 0)
                {
                    return; // an allocation took this half meanwhile
                }
                desired = old & ~(occ | coal);
                if (Interlocked.CompareExchange(ref _tree[parent], desired, old) == old)
                {
                    break;
                }
            }
            if ((desired & OccOf(current ^ 1)) != 0)
            {
                return; // the buddy half is in use: ancestors stay as they are
            }
        }
    }

    /// <summary>Free bytes by order of the largest free blocks (a snapshot; exact when quiescent).</summary>
    public long[] FreeBytesByOrder()
    {
        var result = new long[MaxOrder + 1];
        Walk(1, result);
        return result;

        void Walk(long node, long[] free)
        {
            uint s = Volatile.Read(ref _tree[node]);
            int order = MaxOrder - Level(node);
            if (s == 0)
            {
                free[order] += (long)SharedLayout.PageSize << order;
            }
            else if ((s & Busy) == 0 && order > 0)
            {
                Walk(node * 2, free);
                Walk(node * 2 + 1, free);
            }
        }
    }

    /// <summary>True when every node is free again: everything freed and fully coalesced.</summary>
    public bool IsPristine()
    {
        for (long n = 1; n < 2L << MaxOrder; n++)
        {
            if (_tree[n] != 0)
            {
                return false;
            }
        }
        return true;
    }

    public void Dispose() => NativeMemory.Free(_tree);
}
