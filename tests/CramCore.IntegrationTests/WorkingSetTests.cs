namespace CramCore.Tests;

/// <summary>
/// The working set (cramnative.h, "Working set"; Reclaim/VictimClock.cs): a page that refaults soon
/// after its eviction comes back ACTIVE and reclaim keeps it; one that refaults from far comes back
/// on TRIAL and goes first; evictions stamp the page-table word without disturbing its slot.
/// `cram bench hotcold` measures the policy; these pin its transitions.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class WorkingSetTests
{
    private const int P = TestPages.PageSize;

    private static ulong Word(CramRegion region, long page) => PageTableEntry.Load(region.PageTableEntries + page);

    [Fact]
    public void NearRefault_ComesBackActive_ReclaimKeepsIt_AWriteKeepsIt_ColdAdviceEndsIt()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, 512);
        Assert.Equal(32L * P, region.Reclaim(32L * P)); // pages 0..31, in fault-in order
        ulong evicted = Word(region, 31);
        Assert.Equal(PageState.Evicted, PageTableEntry.State(evicted));
        Assert.NotEqual(0UL, evicted & PageTableEntry.Stamped);
        Assert.True(engine.Parts.Slots.Get(PageTableEntry.Slot(evicted))->Length > 0, "the stamp disturbed the slot id");

        Assert.True(TestPages.CheckCompressible(region.Pointer + 31L * P, 31, 1)); // refaults 1 eviction after its own
        Assert.NotEqual(0UL, Word(region, 31) & PageTableEntry.Active);
        Assert.Equal(1, engine.GetStats().WorkingSetActivations);

        Assert.Equal(64L * P, region.Reclaim(64L * P)); // the FIFO goes on from page 32; page 31 stays
        Assert.Equal(PageState.Clean, PageTableEntry.State(Word(region, 31)));
        Assert.Equal(PageState.Evicted, PageTableEntry.State(Word(region, 32)));

        TestPages.WriteCompressible(region.Pointer + 31L * P, 31, 2); // a write keeps it in the working set
        Assert.Equal(PageState.Dirty, PageTableEntry.State(Word(region, 31)));
        Assert.NotEqual(0UL, Word(region, 31) & PageTableEntry.Active);

        region.Advise(31L * P, P, CramAdvice.Cold); // the application knows better
        Assert.Equal(0UL, Word(region, 31) & PageTableEntry.Active);
        Assert.Equal(P, region.Reclaim(P));
        Assert.Equal(PageState.Evicted, PageTableEntry.State(Word(region, 31)));
        Assert.True(TestPages.CheckCompressible(region.Pointer + 31L * P, 31, 2));
    }

    [Fact]
    public void FarRefault_GoesOnTrial_AndIsEvictedBeforeOlderPages()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, 2048);
        region.Reclaim(region.Length); // 2048 evictions: pages 0 and 1 were dropped 2048 evictions ago, farther than the resident set then
        for (int i = 20; i < 120; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 2); // back by writes: the FIFO, oldest first
        }
        for (int i = 2; i >= 0; i--) // backwards: no readahead
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1));
            Assert.NotEqual(0UL, Word(region, i) & PageTableEntry.Trial);
            Assert.Equal(0UL, Word(region, i) & PageTableEntry.Active);
        }
        // 103 resident: the trial FIFO's limit is 103/128 = 0 pages; it holds 3, so its oldest two go
        // first (pages 2 and 1, in the order they came back), ahead of the FIFO's page 20.
        Assert.Equal(2L * P, region.Reclaim(2L * P));
        Assert.Equal(PageState.Evicted, PageTableEntry.State(Word(region, 2)));
        Assert.Equal(PageState.Evicted, PageTableEntry.State(Word(region, 1)));
        Assert.Equal(PageState.Clean, PageTableEntry.State(Word(region, 0)));
        Assert.Equal(PageState.Dirty, PageTableEntry.State(Word(region, 20)));
        for (int i = 0; i < 2048; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, i is >= 20 and < 120 ? 2 : 1), $"page {i}");
        }
    }

    [Fact]
    public void ActivePages_GoToo_WhenNothingElseIsLeft()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, 512);
        Assert.Equal(256L * P, region.Reclaim(256L * P)); // one batch: each page's distance counts at most 256 + a stamp unit, within 512
        for (int i = 255; i >= 0; i--) // backwards: no readahead; each refaults soon after its eviction: all active
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1));
        }
        Assert.Equal(256, engine.GetStats().WorkingSetActivations);
        Assert.Equal(region.Length, region.Reclaim(region.Length)); // a target that needs them takes them
        Assert.Equal(0, region.GetStats().ResidentBytes);
        Assert.True(engine.GetStats().WorkingSetDemotions > 0);
    }
}
