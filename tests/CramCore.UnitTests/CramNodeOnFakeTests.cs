using CramCore.Tests.Fakes;
using Microsoft.Extensions.Time.Testing;

namespace CramCore.Tests;

/// <summary>
/// The CRAM node on the in-memory engine (cramnative.h, "CRAM node"): reclaim places very
/// compressible pages, which stay readable in place; writes make them writable within the budget,
/// then promote them; reclaim re-places the writable ones; the reaper frees the promoted frame and
/// the node TRIMs it.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class CramNodeOnFakeTests
{
    /// <summary>A region of <paramref name="pages"/> pages each faulted in for a write and filled with very compressible bytes (what reclaim places on the node).</summary>
    private static RegionMapping VeryCompressibleRegion(FakeStack stack, int pages)
    {
        RegionMapping r = stack.Engine.CreateRegion(pages);
        for (ulong i = 0; i < (ulong)pages; i++)
        {
            stack.Engine.Write(r, i);
            TestPages.WriteVeryCompressible(stack.Engine.Page(r, i), (long)i, 0);
        }
        return r;
    }

    [Fact]
    public void Placed_ReadableInPlace_WritableWithinTheBudget_ThenPromoted_ThenReplacedAndTrimmed()
    {
        var device = new EmulatedCramDevice(1 << 20);
        using var stack = new FakeStack(new CramOptions { CramDevice = device, WritableBudgetPages = 2 });
        const int pages = 16;
        RegionMapping r = VeryCompressibleRegion(stack, pages);

        Assert.Equal(pages, stack.Reclaimer.Reclaim(pages, null));
        Assert.Equal((ulong)pages, stack.Shared->Stats.CramPlacedPages);
        Assert.Equal(0UL, stack.Shared->Stats.ResidentPages); // on the device's account now
        for (ulong i = 0; i < pages; i++)
        {
            Assert.Equal(PageState.Placed, stack.Engine.State(r, i));
            Assert.True(TestPages.CheckVeryCompressible(stack.Engine.Page(r, i), (long)i, 0)); // read in place: no fault
        }

        for (ulong i = 0; i < 3; i++)
        {
            stack.Engine.Write(r, i); // the WP fault on a placed page
            TestPages.WriteVeryCompressible(stack.Engine.Page(r, i), (long)i, 1);
        }
        Assert.Equal(PageState.PlacedWritable, stack.Engine.State(r, 0));
        Assert.Equal(PageState.PlacedWritable, stack.Engine.State(r, 1));
        Assert.Equal(PageState.Dirty, stack.Engine.State(r, 2)); // over the budget of 2: promoted
        Assert.Equal(2UL, stack.Shared->Stats.CramMadeWritable);
        Assert.Equal(1UL, stack.Shared->Stats.CramPromotions);
        Assert.Equal(2UL, stack.Shared->Stats.CramWritablePages);

        stack.Reclaimer.Reclaim(pages, null); // re-places the writable pages, places the promoted one again
        Assert.Equal(0UL, stack.Shared->Stats.CramWritablePages);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.Equal(PageState.Placed, stack.Engine.State(r, i));
            Assert.True(TestPages.CheckVeryCompressible(stack.Engine.Page(r, i), (long)i, i < 3 ? 1 : 0), $"page {i}");
        }

        stack.Reaper.Drain(); // the promoted page's old frame: freed, its TRIM queued
        stack.Node!.Tick(stack.Engine.Regions, stack.Slots, forceScan: true);
        Assert.Equal(1, stack.Node.TrimmedFrames);
        Assert.True(stack.Node.PhysicalUsageBytes > 0);
    }

    [Fact]
    public void WithoutBudget_EveryWritePromotes_AndTheLedgerFollows()
    {
        using var stack = new FakeStack(new CramOptions { CramDevice = new EmulatedCramDevice(1 << 20), WritableBudgetPages = 0 });
        RegionMapping r = VeryCompressibleRegion(stack, 8);
        stack.Reclaimer.Reclaim(8, null);
        ulong placedBytes = stack.Shared->Stats.CramPlacedBytes;
        Assert.InRange(placedBytes, 1UL, 8UL * 4096 / 4);

        stack.Engine.Write(r, 5);

        Assert.Equal(PageState.Dirty, stack.Engine.State(r, 5));
        Assert.Equal(7UL, stack.Shared->Stats.CramPlacedPages);
        Assert.True(stack.Shared->Stats.CramPlacedBytes < placedBytes);
        Assert.Equal(0UL, stack.Shared->Stats.CramMadeWritable);
        Assert.True(TestPages.CheckVeryCompressible(stack.Engine.Page(r, 5), 5, 0)); // promotion keeps the data
    }

    private sealed class ScriptedControlPlane(long pages) : IWriteBudgetSource
    {
        public volatile bool Answers = true;

        public bool TryReadBudget(out long budget)
        {
            budget = pages;
            return Answers;
        }
    }

    [Fact]
    public void AControlPlaneThatStopsAnswering_LosesItsLease_OnTheEnginesClock()
    {
        var clock = new FakeTimeProvider();
        var plane = new ScriptedControlPlane(4);
        using var stack = new FakeStack(new CramOptions
        {
            CramDevice = new EmulatedCramDevice(1 << 20),
            WriteBudgetSource = plane,
            ControlPlaneLease = TimeSpan.FromSeconds(1),
            TimeProvider = clock,
        });
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref stack.Shared->CramWritableLimit) == 4, 5000), "the control plane's first answer");
        stack.Node!.Tick(stack.Engine.Regions, stack.Slots);
        Assert.True(stack.Node.ControlPlaneAlive);
        Assert.Empty(stack.TakeEvents());

        plane.Answers = false;
        clock.Advance(TimeSpan.FromSeconds(0.9)); // within the lease: still alive, budget kept
        stack.Node.Tick(stack.Engine.Regions, stack.Slots);
        Assert.True(stack.Node.ControlPlaneAlive);
        clock.Advance(TimeSpan.FromSeconds(0.2)); // past it
        stack.Node.Tick(stack.Engine.Regions, stack.Slots);

        Assert.False(stack.Node.ControlPlaneAlive);
        Assert.Equal(0UL, stack.Shared->CramWritableLimit); // nothing was writable: no page becomes writable now
        Assert.Equal([CramTierEventKind.CramControlPlaneLost], stack.TakeEvents());
        stack.Node.Tick(stack.Engine.Regions, stack.Slots);
        Assert.Empty(stack.TakeEvents()); // lost once, said once

        plane.Answers = true; // it comes back: the next poll (a quarter lease on) answers
        Assert.True(SpinWait.SpinUntil(() =>
        {
            clock.Advance(TimeSpan.FromMilliseconds(50)); // in steps: the poller sets its next timer when it gets to it
            return Volatile.Read(ref stack.Shared->CramWritableLimit) == 4;
        }, 5000), "the control plane's answer after it came back");
        stack.Node.Tick(stack.Engine.Regions, stack.Slots);
        Assert.True(stack.Node.ControlPlaneAlive);
        Assert.Equal([CramTierEventKind.CramControlPlaneRegained], stack.TakeEvents());
    }

    private sealed class ThrowingControlPlane : IWriteBudgetSource
    {
        public int Calls;

        public bool TryReadBudget(out long pages)
        {
            Interlocked.Increment(ref Calls);
            throw new TimeoutException("the control plane's RPC timed out");
        }
    }

    [Fact]
    public void AControlPlaneThatThrows_IsCountedAndReportedOnce_AndGrantsNothing()
    {
        var plane = new ThrowingControlPlane();
        using var stack = new FakeStack(new CramOptions
        {
            CramDevice = new EmulatedCramDevice(1 << 20),
            WriteBudgetSource = plane,
            ControlPlaneLease = TimeSpan.FromMilliseconds(20),
        });
        Assert.True(SpinWait.SpinUntil(() => stack.Events.CallbackFailures >= 3, 5000), "the poller did not go on asking");
        Assert.Equal(0UL, stack.Shared->CramWritableLimit);
        Assert.Equal([CramTierEventKind.CallbackFailed], stack.TakeEvents()); // once, however many times it threw
    }

    private sealed class TrimFailingDevice(long capacity) : ICramDevice
    {
        private readonly EmulatedCramDevice _inner = new(capacity);
        public long CapacityBytes => _inner.CapacityBytes;
        public long FrameCount => _inner.FrameCount;
        public void Trim(long firstFrame, long count) => throw new NotSupportedException("this device cannot TRIM");
    }

    [Fact]
    public void ADeviceWhoseTrimThrows_IsReportedOnce_AndTheNodeCarriesOn()
    {
        using var stack = new FakeStack(new CramOptions { CramDevice = new TrimFailingDevice(1 << 20), WritableBudgetPages = 0 });
        RegionMapping r = VeryCompressibleRegion(stack, 8);
        stack.Reclaimer.Reclaim(8, null);
        for (ulong i = 0; i < 3; i++)
        {
            stack.Engine.Write(r, i); // promoted: their frames are freed, to be trimmed
            stack.Reaper.Drain();
            stack.Node!.Tick(stack.Engine.Regions, stack.Slots, forceScan: true);
        }

        Assert.Equal(3, stack.Events.CallbackFailures);
        Assert.Equal([CramTierEventKind.CallbackFailed], stack.TakeEvents());
        Assert.Equal(3, stack.Node!.TrimmedFrames); // the frames are free and counted either way
        stack.Reclaimer.Reclaim(8, null);
        Assert.Equal(8UL, stack.Shared->Stats.CramPlacedPages); // and the node keeps placing
    }

    [Fact]
    public void ADeviceThatKeepsFailing_IsTakenOutOfService_AndItsPagesMoveToThePool()
    {
        using var stack = new FakeStack(new CramOptions { CramDevice = new TrimFailingDevice(1 << 20), WritableBudgetPages = 0 });
        const int pages = 16;
        RegionMapping r = VeryCompressibleRegion(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        Assert.Equal((ulong)pages, stack.Shared->Stats.CramPlacedPages);
        for (ulong i = 0; i < CramDeviceTrims.FailuresBeforeOutOfService; i++)
        {
            Assert.False(stack.Node!.OutOfService);
            stack.Engine.Write(r, i); // promoted: its frame is freed ...
            stack.Reaper.Drain();
            stack.Node.Tick(stack.Engine.Regions, stack.Slots, forceScan: true); // ... and its TRIM fails
        }

        Assert.True(stack.Node!.OutOfService);
        Assert.Contains(CramTierEventKind.CramDeviceOutOfService, stack.TakeEvents());
        Assert.Equal(0UL, stack.Shared->CramWritableLimit); // every write to a placed page promotes now
        stack.Reclaimer.Reclaim(pages, null);               // places nothing new: the promoted pages go to the pool
        stack.Node.Tick(stack.Engine.Regions, stack.Slots, forceScan: true); // moves the rest out
        Assert.Equal(0UL, stack.Shared->Stats.CramPlacedPages);
        Assert.Equal((long)pages - CramDeviceTrims.FailuresBeforeOutOfService, stack.Node.MovedOut);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.NotEqual(PageState.Placed, stack.Engine.State(r, i));
            stack.Engine.Read(r, i);
            Assert.True(TestPages.CheckVeryCompressible(stack.Engine.Page(r, i), (long)i, 0), $"page {i}");
        }
    }
}
