using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// A lock-free buddy allocator over one arena of 2^MaxOrder pages, kept as one bit per page.
/// Blocks are 4 KiB × 2^order, aligned to their size, exactly the blocks of a buddy system; the
/// buddy tree is implicit in the bits, so splitting and coalescing cost nothing: a free block of
/// order k is 2^k aligned clear bits, and freeing both halves of a block frees the block.
/// <list type="bullet">
/// <item>Orders 0–6 live inside one 64-bit word: allocate = find an aligned clear group with a
/// few bit operations, claim it with one CAS; free = one atomic AND.</item>
/// <item>Orders above 6 span 2^(order−6) whole words: claim them one by one with CAS 0 → all-ones
/// and roll back the claimed ones if any is taken (so no thread ever waits for another); free
/// writes zeros.</item>
/// </list>
/// Like NBBS (Marotta et al., IEEE TC 2021) every change is a single-word atomic RMW and a failed
/// claim undoes itself; unlike NBBS's tree of node states, an order-0 allocate or free costs one
/// atomic instead of one per tree level. Threads start searching at different words, so they
/// rarely touch the same cache line. No GC allocation per operation.
/// </summary>
internal sealed unsafe class BitmapBuddy : IDisposable
{
    private const int WordShift = 6;
    private const int WordBits = 64;
    private readonly ulong* _words;
    private readonly long _wordCount;
    private const int HintSlots = 64, HintStride = 8; // one cache line per slot: no false sharing
    private readonly long[] _hints = new long[HintSlots * HintStride]; // per thread slot: the word to look at first

    public BitmapBuddy(byte* arena, int maxOrder)
    {
        if (maxOrder is < WordShift or > 30)
        {
            throw new ArgumentOutOfRangeException(nameof(maxOrder), maxOrder, "between 6 (256 KiB) and 30");
        }
        Base = arena;
        MaxOrder = maxOrder;
        _wordCount = 1L << (maxOrder - WordShift);
        _words = (ulong*)NativeMemory.AllocZeroed((nuint)_wordCount, sizeof(ulong));
        for (int i = 0; i < HintSlots; i++)
        {
            _hints[i * HintStride] = i * _wordCount / HintSlots;
        }
    }

    public byte* Base { get; }
    public int MaxOrder { get; }
    public long CapacityBytes => (long)SharedLayout.PageSize << MaxOrder;

    /// <summary>Bits set at every multiple of 2^order (the possible starts of an aligned group).</summary>
    private static ReadOnlySpan<ulong> Starts =>
    [
        ~0UL, 0x5555_5555_5555_5555UL, 0x1111_1111_1111_1111UL, 0x0101_0101_0101_0101UL,
        0x0001_0001_0001_0001UL, 0x0000_0001_0000_0001UL, 0x0000_0000_0000_0001UL,
    ];

    /// <summary>Starts of the aligned groups of 2^order clear bits in <paramref name="word"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong FreeGroups(ulong word, int order)
    {
        ulong free = ~word;
        for (int j = 0; j < order; j++)
        {
            free &= free >> (1 << j);
        }
        return free & Unsafe.Add(ref MemoryMarshal.GetReference(Starts), order);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong GroupMask(int order) => order == WordShift ? ~0UL : (1UL << (1 << order)) - 1;

    /// <summary>Allocates a block of 4 KiB × 2^<paramref name="order"/>; null when none is free.</summary>
    public byte* Allocate(int order)
    {
        if ((uint)order > (uint)MaxOrder)
        {
            return null;
        }
        ref long hint = ref _hints[(Environment.CurrentManagedThreadId & (HintSlots - 1)) * HintStride];
        return order <= WordShift ? AllocateInWord(order, ref hint) : AllocateWords(order, ref hint);
    }

    private byte* AllocateInWord(int order, ref long hint)
    {
        long start = hint;
        ulong groupMask = GroupMask(order);
        for (long i = 0; i < _wordCount; i++)
        {
            long w = (start + i) & (_wordCount - 1);
            ulong old = Volatile.Read(ref _words[w]);
            ulong groups;
            while ((groups = FreeGroups(old, order)) != 0)
            {
                int bit = BitOperations.TrailingZeroCount(groups);
                ulong seen = Interlocked.CompareExchange(ref _words[w], old | (groupMask << bit), old);
                if (seen == old)
                {
                    if (w != start)
                    {
                        hint = w;
                    }
                    return Base + (((w << WordShift) + bit) << SharedLayout.PageShift);
                }
                old = seen; // someone changed the word: look at it again
            }
        }
        return null;
    }

    private byte* AllocateWords(int order, ref long hint)
    {
        long span = 1L << (order - WordShift);
        long start = hint & ~(span - 1);
        for (long i = 0; i < _wordCount; i += span)
        {
            long first = (start + i) & (_wordCount - 1);
            long claimed = 0;
            while (claimed < span && Volatile.Read(ref _words[first + claimed]) == 0 &&
                   Interlocked.CompareExchange(ref _words[first + claimed], ~0UL, 0) == 0)
            {
                claimed++;
            }
            if (claimed == span)
            {
                hint = first + span;
                return Base + ((first << WordShift) << SharedLayout.PageShift);
            }
            while (claimed > 0) // give back what we took; nobody else can have touched those words
            {
                Volatile.Write(ref _words[first + --claimed], 0);
            }
        }
        return null;
    }

    /// <summary>Frees a block returned by <see cref="Allocate"/> with the same order.</summary>
    public void Free(byte* block, int order)
    {
        long offset = BuddyStats.OffsetOfBlock(block, order, Base, MaxOrder);
        long page = offset >> SharedLayout.PageShift;
        long w = page >> WordShift;
        if (order <= WordShift)
        {
            ulong mask = GroupMask(order) << (int)(page & (WordBits - 1));
            ulong old = Interlocked.And(ref _words[w], ~mask);
            if ((old & mask) != mask)
            {
                Interlocked.Or(ref _words[w], old & mask); // put back what was ours to clear
                throw new InvalidOperationException($"Block {offset:x} of order {order} is not allocated (double free or wrong order).");
            }
            return;
        }
        long span = 1L << (order - WordShift);
        for (long i = 0; i < span; i++)
        {
            if (Volatile.Read(ref _words[w + i]) != ~0UL)
            {
                throw new InvalidOperationException($"Block {offset:x} of order {order} is not allocated (double free or wrong order).");
            }
        }
        for (long i = 0; i < span; i++)
        {
            Volatile.Write(ref _words[w + i], 0);
        }
    }

    /// <summary>Free bytes by order of the largest free aligned blocks (a snapshot; exact when quiescent).</summary>
    public long[] FreeBytesByOrder()
    {
        var result = new long[MaxOrder + 1];
        Walk(0, MaxOrder, result);
        return result;
    }

    private void Walk(long firstPage, int order, long[] free)
    {
        if (order >= WordShift)
        {
            long w = firstPage >> WordShift, span = 1L << (order - WordShift);
            bool allClear = true;
            for (long i = 0; i < span && allClear; i++)
            {
                allClear = Volatile.Read(ref _words[w + i]) == 0;
            }
            if (allClear)
            {
                free[order] += (long)SharedLayout.PageSize << order;
                return;
            }
            if (order == WordShift)
            {
                WalkWord(Volatile.Read(ref _words[w]), 0, WordShift, free);
                return;
            }
            Walk(firstPage, order - 1, free);
            Walk(firstPage + (1L << (order - 1)), order - 1, free);
            return;
        }
    }

    private static void WalkWord(ulong word, int firstBit, int order, long[] free)
    {
        ulong mask = GroupMask(order) << firstBit;
        if ((word & mask) == 0)
        {
            free[order] += (long)SharedLayout.PageSize << order;
        }
        else if ((word & mask) != mask && order > 0)
        {
            WalkWord(word, firstBit, order - 1, free);
            WalkWord(word, firstBit + (1 << (order - 1)), order - 1, free);
        }
    }

    /// <summary>True when every page is free again.</summary>
    public bool IsPristine()
    {
        for (long i = 0; i < _wordCount; i++)
        {
            if (_words[i] != 0)
            {
                return false;
            }
        }
        return true;
    }

    public void Dispose() => NativeMemory.Free(_words);
}
