using System.Runtime.InteropServices;

using CramCore.Native;

namespace CramCore.Research;

/// <summary>
/// The classic buddy allocator (free list per order, split on allocate, coalesce on free) behind
/// one spin lock: the baseline `cram bench alloc` measures the lock-free one against.
/// Bookkeeping lives in side arrays, never in the arena's pages.
/// </summary>
internal sealed unsafe class SpinLockedBuddy : IDisposable
{
    private readonly int* _next, _prev; // per leaf index: free-list links of the block starting there
    private readonly byte* _freeOrder;   // per leaf index: order + 1 if a free block starts there
    private readonly int[] _heads;
    private int _lock;

    public SpinLockedBuddy(byte* arena, int maxOrder)
    {
        Base = arena;
        MaxOrder = maxOrder;
        long leaves = 1L << maxOrder;
        _next = (int*)NativeMemory.Alloc((nuint)leaves, sizeof(int));
        _prev = (int*)NativeMemory.Alloc((nuint)leaves, sizeof(int));
        _freeOrder = (byte*)NativeMemory.AllocZeroed((nuint)leaves);
        _heads = new int[maxOrder + 1];
        Array.Fill(_heads, -1);
        Push(0, maxOrder);
    }

    public byte* Base { get; }
    public int MaxOrder { get; }

    private void Push(int index, int order)
    {
        _next[index] = _heads[order];
        _prev[index] = -1;
        if (_heads[order] >= 0)
        {
            _prev[_heads[order]] = index;
        }
        _heads[order] = index;
        _freeOrder[index] = (byte)(order + 1);
    }

    private void Remove(int index, int order)
    {
        if (_prev[index] >= 0)
        {
            _next[_prev[index]] = _next[index];
        }
        else
        {
            _heads[order] = _next[index];
        }
        if (_next[index] >= 0)
        {
            _prev[_next[index]] = _prev[index];
        }
        _freeOrder[index] = 0;
    }

    private void Lock()
    {
        if (Interlocked.CompareExchange(ref _lock, 1, 0) != 0)
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _lock) != 0 || Interlocked.CompareExchange(ref _lock, 1, 0) != 0)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }
    }

    private void Unlock() => Volatile.Write(ref _lock, 0);

    public byte* Allocate(int order)
    {
        if ((uint)order > (uint)MaxOrder)
        {
            return null;
        }
        Lock();
        int k = order;
        while (k <= MaxOrder && _heads[k] < 0)
        {
            k++;
        }
        if (k > MaxOrder)
        {
            Unlock();
            return null;
        }
        int index = _heads[k];
        Remove(index, k);
        while (k > order)
        {
            k--;
            Push(index + (1 << k), k);
        }
        Unlock();
        return Base + ((long)index << SharedLayout.PageShift);
    }

    public void Free(byte* block, int order)
    {
        int index = (int)((block - Base) >> SharedLayout.PageShift);
        Lock();
        while (order < MaxOrder)
        {
            int buddy = index ^ (1 << order);
            if (_freeOrder[buddy] != order + 1)
            {
                break;
            }
            Remove(buddy, order);
            index = Math.Min(index, buddy);
            order++;
        }
        Push(index, order);
        Unlock();
    }

    /// <summary>True when the whole arena is one free block again.</summary>
    public bool IsPristine() => _heads[MaxOrder] == 0 && _heads.Take(MaxOrder).All(h => h < 0);

    public void Dispose()
    {
        NativeMemory.Free(_next);
        NativeMemory.Free(_prev);
        NativeMemory.Free(_freeOrder);
    }
}
