namespace CramCore.Tests;

/// <summary>Where an evicted page's copy is, read from the page table and the slot table.</summary>
internal static unsafe class EvictedSlots
{
    /// <summary>The slot of <paramref name="page"/> if it is evicted with a copy in <paramref name="backend"/>, else null.</summary>
    public static NativeSlot* Of(CramEngine engine, CramRegion region, long page, SlotBackend backend)
    {
        ulong pte = PageTableEntry.Load(region.PageTableEntries + page);
        if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == SharedLayout.ZeroSlot)
        {
            return null;
        }
        NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(pte));
        return slot->Backend == backend ? slot : null;
    }
}
