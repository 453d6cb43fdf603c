using CramCore.Tests.Fakes;

namespace CramCore.Tests;

/// <summary>
/// The working set on the in-memory engine (cramnative.h, "Working set"): a page that refaults soon
/// after its eviction comes back ACTIVE and reclaim passes over it; one that refaults from far comes
/// back on TRIAL and goes first.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class WorkingSetOnFakeTests
{
    [Fact]
    public void ANearRefault_ComesBackActive_AndReclaimKeepsIt_WhileAFarOneIsOnTrial()
    {
        using var stack = new FakeStack(new CramOptions());
        stack.Reclaimer.LimitPages = 128; // refaults within 128 evictions are the working set
        RegionMapping hot = ReclaimOnFakeTests.Filled(stack, 64);
        RegionMapping cold = ReclaimOnFakeTests.Filled(stack, 512);
        Assert.Equal(64, stack.Reclaimer.Reclaim(64, hot));

        Assert.True(ReclaimOnFakeTests.Check(stack, hot, 3, 1)); // 64 evictions ago: near
        ulong near = PageTableEntry.Load(hot.PageTableEntries + 3);
        Assert.Equal(PageState.Clean, PageTableEntry.State(near));
        Assert.NotEqual(0UL, near & PageTableEntry.Active);
        Assert.Equal(1UL, stack.Shared->Stats.WorkingsetActivations);

        Assert.Equal(512, stack.Reclaimer.Reclaim(512, cold));
        Assert.True(ReclaimOnFakeTests.Check(stack, hot, 4, 1)); // 576 evictions ago: far
        ulong far = PageTableEntry.Load(hot.PageTableEntries + 4);
        Assert.Equal(0UL, far & PageTableEntry.Active);
        Assert.NotEqual(0UL, far & PageTableEntry.Trial);
        Assert.Equal(1UL, stack.Shared->Stats.WorkingsetActivations);

        // Both resident now; reclaim takes one page of the region: the page on trial, not the active one.
        Assert.Equal(1, stack.Reclaimer.Reclaim(1, hot));
        Assert.Equal(PageState.Evicted, stack.Engine.State(hot, 4));
        Assert.Equal(PageState.Clean, stack.Engine.State(hot, 3));
    }
}
