using CramCore.Native;

namespace CramCore.Storage;

/// <summary>What the buddy allocators share: the check of a freed block, and fragmentation.</summary>
internal static unsafe class BuddyStats
{
    /// <summary>The offset of <paramref name="block"/> in the arena, after checking it can be a block of <paramref name="order"/> there.</summary>
    public static long OffsetOfBlock(byte* block, int order, byte* arena, int maxOrder)
    {
        long offset = block - arena;
        if ((uint)order > (uint)maxOrder || offset < 0 || offset >= (long)SharedLayout.PageSize << maxOrder || (offset & ((SharedLayout.PageSize << order) - 1)) != 0)
        {
            throw new ArgumentException($"Block {offset:x} of order {order} was not allocated from this arena.", nameof(block));
        }
        return offset;
    }

    /// <summary>Fragmentation of a free-space map: 1 − largest free block / all free space.</summary>
    public static double Fragmentation(long[] freeBytesByOrder)
    {
        long total = freeBytesByOrder.Sum();
        int largest = Array.FindLastIndex(freeBytesByOrder, b => b > 0);
        return total == 0 ? 0 : 1 - (double)((long)SharedLayout.PageSize << largest) / total;
    }
}
