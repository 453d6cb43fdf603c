using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// One class page of the compressed pool: a contiguous block of <see cref="CompressedPool.ZspagePages"/>
/// pages cut into objects of its class's size. Its pages cost memory only once an object on them
/// is used (<see cref="TouchedPages"/>). Guarded by its class's lock.
/// </summary>
internal unsafe struct Zspage
{
    public byte* Base;
    public int Arena;
    public int InUse;
    public int FreeHead;     // freed objects, linked through their first 4 bytes; -1 ends
    public int FreeCursor;   // objects never used start here
    public int TouchedPages; // pages holding at least one object ever used (counted as used memory)
    public int Group;        // fullness group while partial, -1 when full or released
    public int GroupIndex;   // position in that group
    public uint[] Handles;   // per object: the handle that owns it (0 = free)
}

/// <summary>
/// A size class: objects of <see cref="Size"/> bytes, its lock and counters, and its partial
/// zspages in fullness groups, as zsmalloc keeps them: group g holds the zspages whose use is in
/// [g, g + 1) / <see cref="FullnessGroups"/> of their capacity; full zspages are in none. Stores take
/// the fullest zspage with room, compaction empties the emptiest into the fullest — each found in
/// O(groups), not by a scan of the zspages.
/// </summary>
internal sealed class SizeClass(int size, int order)
{
    public const int FullnessGroups = 8;

    public readonly int Size = size;
    public readonly int Order = order;
    public readonly int Capacity = (SharedLayout.PageSize << order) / size;
    public readonly Lock Lock = new();
    public readonly int[][] Groups = [.. Enumerable.Range(0, FullnessGroups).Select(_ => new int[4])];
    public readonly int[] GroupCounts = new int[FullnessGroups];
    public long Objects;
    public long Zspages;

    /// <summary>The group of a partial zspage with <paramref name="inUse"/> objects, or -1 when full.</summary>
    public int GroupOf(int inUse) => inUse >= Capacity ? -1 : (int)((long)inUse * FullnessGroups / Capacity);

    /// <summary>Free object slots of the class: every zspage has <see cref="Capacity"/> of them.</summary>
    public long FreeSlots => Zspages * Capacity - Objects;

    /// <summary>The fullest partial zspage, or -1.</summary>
    public int Fullest()
    {
        for (int g = FullnessGroups - 1; g >= 0; g--)
        {
            if (GroupCounts[g] > 0)
            {
                return Groups[g][GroupCounts[g] - 1];
            }
        }
        return -1;
    }

    /// <summary>The emptiest partial zspage, or -1.</summary>
    public int Emptiest()
    {
        for (int g = 0; g < FullnessGroups; g++)
        {
            if (GroupCounts[g] > 0)
            {
                return Groups[g][GroupCounts[g] - 1];
            }
        }
        return -1;
    }

    /// <summary>Every partial zspage (a copy).</summary>
    public List<int> Partial()
    {
        var all = new List<int>();
        for (int g = 0; g < FullnessGroups; g++)
        {
            all.AddRange(Groups[g].AsSpan(0, GroupCounts[g]));
        }
        return all;
    }
}
