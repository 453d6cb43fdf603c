namespace CramCore.Tests;

/// <summary>The CRAM node's state machine (cramnative.h, "CRAM node"), budget accounting, control plane and pressure.</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class CramNodeTests
{
    private const int P = TestPages.PageSize;

    private static (CramEngine Engine, CramRegion Region, EmulatedCramDevice Device) Create(int pages, long budget, long capacity = 1 << 20,
        IWriteBudgetSource? source = null, long frames = 0)
    {
        var device = new EmulatedCramDevice(capacity, frames);
        var engine = CramEngine.Create(new CramOptions
        {
            CramDevice = device,
            WritableBudgetPages = budget,
            WriteBudgetSource = source,
            ControlPlaneLease = TimeSpan.FromMilliseconds(50),
            FaultAroundPages = 1,
        });
        var region = engine.CreateRegion((long)pages * P);
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 0);
        }
        return (engine, region, device);
    }

    [Fact]
    public void Placed_ReadOnlyInPlace_WritableWithinBudget_ThenPromoted_TrimmedAndReplaced()
    {
        (CramEngine engine, CramRegion region, EmulatedCramDevice device) = Create(16, budget: 2);
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        Assert.Equal(16L * P, region.Reclaim(region.Length));
        CramStats s = engine.GetStats();
        Assert.Equal(16, s.CramPlacedPages);
        Assert.Equal(0, s.ResidentBytes); // on the device's account now
        Assert.InRange(s.CramLedgerBytes, 16, 16L * P / 2);
        for (int i = 0; i < 16; i++)
        {
            Assert.Equal(PageState.Placed, region.GetPageState((long)i * P));
        }
        long faults = s.ZeroFillFaults + s.Refaults + s.WriteProtectFaults;
        for (int i = 0; i < 16; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, 0)); // reads never fault
        }
        s = engine.GetStats();
        Assert.Equal(faults, s.ZeroFillFaults + s.Refaults + s.WriteProtectFaults);

        // Two writes within the budget: writable in place. The third: promoted.
        for (int i = 0; i < 3; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 1);
        }
        Assert.Equal(PageState.PlacedWritable, region.GetPageState(0));
        Assert.Equal(PageState.PlacedWritable, region.GetPageState(P));
        Assert.Equal(PageState.Dirty, region.GetPageState(2 * P));
        s = engine.GetStats();
        Assert.Equal(2, s.CramMadeWritable);
        Assert.Equal(2, s.CramWritablePages);
        Assert.Equal(1, s.CramPromotions);
        Assert.Equal(15, s.CramPlacedPages);
        Assert.Equal(P, s.ResidentBytes); // the promoted page is host memory again

        // The promoted page's frame is freed by the reaper and trimmed.
        engine.Maintenance.TickCramNode();
        Assert.Equal(1, device.TrimmedFrames);
        Assert.Equal(1, engine.GetStats().CramTrimmedFrames);

        // Reclaim re-places the writable pages (budget released) and places the promoted one again.
        region.Reclaim(region.Length);
        s = engine.GetStats();
        Assert.Equal(0, s.CramWritablePages);
        Assert.Equal(2, s.CramReplacements);
        Assert.Equal(16, s.CramPlacedPages);
        Assert.Equal(PageState.Placed, region.GetPageState(0));
        TestPages.WriteVeryCompressible(region.Pointer + 3L * P, 3, 1); // the budget is free again
        Assert.Equal(PageState.PlacedWritable, region.GetPageState(3 * P));
        for (int i = 0; i < 16; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, i < 4 ? 1 : 0), $"page {i}");
        }
        Assert.Equal(0, engine.GetStats().CramOverflowBytes);
        Assert.Equal(0, engine.Maintenance.SweepZombies());
        region.Dispose();
        s = engine.GetStats();
        Assert.Equal(0, s.CramPlacedPages);
        Assert.Equal(0, s.CramLedgerBytes);
        Assert.Equal(0, s.CramWritablePages);
    }

    [Fact]
    public void WritableCount_NeverExceedsTheBudget_UnderConcurrentWriteFaults()
    {
        const int pages = 256, budget = 8;
        (CramEngine engine, CramRegion region, _) = Create(pages, budget);
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        region.Reclaim(region.Length);
        Assert.Equal(pages, engine.GetStats().CramPlacedPages);
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            for (int i = t; i < pages; i += 4)
            {
                TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 1);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        CramStats s = engine.GetStats();
        Assert.Equal(budget, s.CramMaxWritablePages);
        Assert.Equal(budget, s.CramMadeWritable);
        Assert.Equal(pages - budget, s.CramPromotions);
        for (int i = 0; i < pages; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }

    private sealed class ControlPlane(long budget) : IWriteBudgetSource
    {
        public volatile bool Dead;
        public volatile int DelayMs;
        public bool TryReadBudget(out long pages)
        {
            if (DelayMs > 0)
            {
                Thread.Sleep(DelayMs);
            }
            pages = budget;
            return !Dead;
        }
    }

    [Fact]
    public void ControlPlane_SuppliesTheBudget_AndWhenItDies_EveryWritePromotes()
    {
        var plane = new ControlPlane(4);
        (CramEngine engine, CramRegion region, _) = Create(64, budget: 0, source: plane);
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        var events = new System.Collections.Concurrent.ConcurrentQueue<CramTierEventKind>();
        engine.TierEvent += (_, e) => events.Enqueue(e.Kind);
        region.Reclaim(region.Length);
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().CramWritableBudgetPages == 4, 5000), "the control plane's budget arrives");
        for (int i = 0; i < 2; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 1);
        }
        Assert.Equal(2, engine.GetStats().CramWritablePages);

        plane.Dead = true;
        Assert.True(SpinWait.SpinUntil(() => !engine.GetStats().CramControlPlaneAlive, 5000));
        engine.Maintenance.TickCramNode(); // the lease ran out: the host keeps what is writable, grants nothing more
        Assert.True(SpinWait.SpinUntil(() => events.Contains(CramTierEventKind.CramControlPlaneLost), 5000));
        for (int i = 2; i < 10; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 1);
        }
        CramStats s = engine.GetStats();
        Assert.Equal(2, s.CramWritablePages);
        Assert.Equal(8, s.CramPromotions);
        Assert.True(s.CramMaxWritablePages <= 4);

        plane.Dead = false; // it comes back
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().CramWritableBudgetPages == 4, 5000));
        TestPages.WriteVeryCompressible(region.Pointer + 20L * P, 20, 1);
        Assert.Equal(PageState.PlacedWritable, region.GetPageState(20 * P));
        for (int i = 0; i < 64; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, i < 10 || i == 20 ? 1 : 0), $"page {i}");
        }
    }

    [Fact]
    public void SlowControlPlane_NeverLetsWritableExceedWhatItGranted()
    {
        var plane = new ControlPlane(3) { DelayMs = 120 }; // slower than the 50 ms lease
        (CramEngine engine, CramRegion region, _) = Create(64, budget: 0, source: plane);
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        region.Reclaim(region.Length);
        for (int i = 0; i < 64; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 1);
            Thread.Sleep(2);
        }
        CramStats s = engine.GetStats();
        Assert.True(s.CramMaxWritablePages <= 3, $"max writable {s.CramMaxWritablePages}");
        Assert.Equal(64, s.CramMadeWritable + s.CramPromotions);
        for (int i = 0; i < 64; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }

    [Fact]
    public void FullNode_LeavesPagesToThePool_TheBalloonHoldsFramesBack()
    {
        (CramEngine engine, CramRegion region, _) = Create(2048, budget: 0, capacity: 256 << 10); // 256 frames
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        region.Reclaim(region.Length);
        CramStats s = engine.GetStats();
        Assert.InRange(s.CramPlacedPages, 1, 2047);
        Assert.True(s.StoredBytes > 0, "pages the node could not take went to the pool");
        Assert.True(s.CramLedgerBytes <= s.CramCapacityBytes);
        for (int i = 0; i < 2048; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, 0), $"page {i}");
        }

        // A device with more frames than capacity × ratio × margin: the balloon holds the rest.
        var device = new EmulatedCramDevice(256 << 10, frameCount: 1 << 16);
        using var big = CramEngine.Create(new CramOptions { CramDevice = device, FaultAroundPages = 1 });
        using var r2 = big.CreateRegion(16384L * P);
        for (int i = 0; i < 16384; i++)
        {
            TestPages.WriteVeryCompressible(r2.Pointer + (long)i * P, i, 0);
        }
        r2.Reclaim(r2.Length);
        s = big.GetStats();
        Assert.True(s.CramBalloonFrames > 0, s.ToString());
        Assert.True(s.CramPlacedPages <= (1 << 16) - s.CramBalloonFrames + 1);
        Assert.True(s.StoredBytes > 0);
    }

    [Fact]
    public void HighPressure_ClosesTheNode_UntilItFalls()
    {
        (CramEngine engine, CramRegion region, _) = Create(1024, budget: 60, capacity: 256 << 10, frames: 4096);
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        var events = new System.Collections.Concurrent.ConcurrentQueue<CramTierEventKind>();
        engine.TierEvent += (_, e) => events.Enqueue(e.Kind);
        region.Reclaim(512L * P);
        Assert.Equal(512, engine.GetStats().CramPlacedPages);
        // Writable pages count at a whole page each in the ledger (they may become incompressible).
        for (int i = 0; i < 60; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 1);
        }
        engine.Maintenance.TickCramNode();
        CramStats s = engine.GetStats();
        Assert.True(s.CramPressureHigh, s.ToString());
        Assert.True(s.CramMovedOut > 0, "the oldest read-only entries left through virtual swap");
        Assert.True(s.StoredBytes > 0);
        Assert.True(SpinWait.SpinUntil(() => events.Contains(CramTierEventKind.CramPressureHigh), 5000));
        long placed = s.CramPlacements;
        region.Reclaim(region.Length - 512L * P); // the rest: not to the node while it is closed
        Assert.True(engine.GetStats().CramPlacements - placed <= 60, "only re-placements of the writable pages");
        Assert.True(engine.GetStats().StoredBytes > 0);
        region.Reclaim(region.Length); // re-places the writable pages: the ledger falls, the node reopens
        engine.Maintenance.TickCramNode();
        Assert.False(engine.GetStats().CramPressureHigh);
        Assert.True(SpinWait.SpinUntil(() => events.Contains(CramTierEventKind.CramPressureLow), 5000));
        Assert.Equal(0, engine.GetStats().CramOverflowBytes);
        for (int i = 0; i < 1024; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, i < 60 ? 1 : 0), $"page {i}");
        }
    }

    [Fact]
    public void IncompressibleReplacedPages_AreTheFirstToMoveOut_ThroughVirtualSwap()
    {
        (CramEngine engine, CramRegion region, _) = Create(1024, budget: 50, capacity: 256 << 10, frames: 4096);
        using var owner = engine;
        using var regionOwner = region; // a region nobody holds is finalized (CramRegion remarks)
        region.Reclaim(region.Length);
        Assert.Equal(1024, engine.GetStats().CramPlacedPages);
        // 50 pages become incompressible (random bytes, writable within the budget), then are
        // re-placed: measured at a whole page each, they fill the ledger past the high threshold.
        var noise = new byte[50 * P];
        new Random(3).NextBytes(noise);
        noise.CopyTo(region.AsSpan<byte>(0, noise.Length));
        region.Reclaim(region.Length);
        Assert.Equal(50, engine.GetStats().CramReplacements);
        engine.Maintenance.TickCramNode();
        CramStats s = engine.GetStats();
        Assert.True(s.CramMovedOut >= 50, s.ToString());
        Assert.False(s.CramPressureHigh);
        Assert.True(s.CramPlacedPages <= 1024 - 50);
        Assert.True(s.CramPlacedPages <= (long)4096 - s.CramBalloonFrames, "no more frames in use than the balloon leaves");
        Assert.Equal(0, s.CramOverflowBytes);
        Assert.True(noise.AsSpan().SequenceEqual(region.AsSpan<byte>(0, noise.Length)), "the moved-out pages read back from the pool");
        for (int i = 50; i < 1024; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, 0), $"page {i}");
        }
        Assert.Equal(0, engine.Maintenance.SweepZombies());
    }

    /// <summary>A device whose Trim calls back into the engine: each call throws InvalidOperationException, the engine is left whole.</summary>
    private sealed class ReentrantDevice(long capacity) : ICramDevice
    {
        private readonly EmulatedCramDevice _inner = new(capacity);
        public CramEngine? Engine { get; set; }
        public CramRegion? Region { get; set; }
        public List<string> Outcomes { get; } = [];
        public long CapacityBytes => _inner.CapacityBytes;
        public long FrameCount => _inner.FrameCount;
        public long TrimmedFrames() => _inner.TrimmedFrames;

        public void Trim(long firstFrame, long count)
        {
            Try("GetStats", () => Engine!.GetStats());
            Try("ResidentLimitBytes", () => Engine!.ResidentLimitBytes = 1 << 20);
            Try("CreateRegion", () => Engine!.CreateRegion(P).Dispose());
            Try("Reclaim", () => Region!.Reclaim(P));
            Try("Advise", () => Region!.Advise(0, P, CramAdvice.Cold));
            Try("region.Dispose", () => Region!.Dispose());
            Try("Dispose", () => Engine!.Dispose());
            _inner.Trim(firstFrame, count);
        }

        private void Try(string member, Action call)
        {
            try
            {
                call();
                Outcomes.Add($"{member}: completed");
            }
            catch (Exception e)
            {
                Outcomes.Add($"{member}: {e.GetType().Name}");
            }
        }
    }

    [Fact]
    public void ADeviceCallingTheEngineFromTrim_GetsInvalidOperationException_AndTheEngineCarriesOn()
    {
        var device = new ReentrantDevice(1 << 20);
        using var engine = CramEngine.Create(new CramOptions { CramDevice = device, WritableBudgetPages = 0, FaultAroundPages = 1 });
        using var region = engine.CreateRegion(16L * P);
        for (int i = 0; i < 16; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 0);
        }
        device.Engine = engine;
        device.Region = region;
        Assert.Equal(16L * P, region.Reclaim(region.Length));
        TestPages.WriteVeryCompressible(region.Pointer, 0, 1); // promoted: its frame is freed, to be trimmed
        engine.Maintenance.TickCramNode();

        Assert.Equal(["GetStats", "ResidentLimitBytes", "CreateRegion", "Reclaim", "Advise", "region.Dispose", "Dispose"],
            device.Outcomes.Select(o => o.Split(':')[0]));
        Assert.All(device.Outcomes, o => Assert.EndsWith(": InvalidOperationException", o));
        Assert.Equal(1, device.TrimmedFrames());
        Assert.Equal(0, engine.ResidentLimitBytes);
        Assert.Equal(16L * P, region.Length);
        for (int i = 0; i < 16; i++)
        {
            Assert.True(TestPages.CheckVeryCompressible(region.Pointer + (long)i * P, i, i == 0 ? 1 : 0), $"page {i}");
        }
        Assert.Equal(0, engine.GetStats().CallbackFailures); // the device caught what it caused
    }
}
