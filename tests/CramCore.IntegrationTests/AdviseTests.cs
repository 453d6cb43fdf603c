namespace CramCore.Tests;

/// <summary>
/// <see cref="CramRegion.Advise"/>: cold pages go first, hot pages stay while the limit allows,
/// will-need prefetches in the background without faults, don't-need discards from every state
/// (cramnative.h, "discard" and "prefetch" transitions) with the counters fixed. The races
/// (discards and hints against writers, readers, reclaim and GCs) are the Advice mode of
/// <see cref="NoLostWriteStressTests"/>.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class AdviseTests
{
    private const int P = TestPages.PageSize;

    private static PageState State(CramRegion region, long page) => region.GetPageState(page * P);

    private static bool IsResident(CramRegion region, long page) =>
        State(region, page) is PageState.Dirty or PageState.Clean or PageState.Incompressible;

    [Fact]
    public void Cold_IsReclaimedFirst_WithoutASecondChance()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, 512);
        // Fault-in order alone would take pages 0..63 first.
        region.Advise(400L * P, 64L * P, CramAdvice.Cold);
        Assert.Equal(64L * P, region.Reclaim(64L * P));
        for (int i = 0; i < 512; i++)
        {
            Assert.True(i is >= 400 and < 464 ? State(region, i) == PageState.Evicted : IsResident(region, i), $"page {i}: {State(region, i)}");
        }
        for (int i = 0; i < 512; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }

    [Fact]
    public void Hot_StaysResident_UntilNothingElseCanGo_AndNormalClearsIt()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, 512);
        region.Advise(0, 128L * P, CramAdvice.Hot); // the oldest pages: fault-in order would take them first
        Assert.Equal(256L * P, region.Reclaim(256L * P));
        for (int i = 0; i < 128; i++)
        {
            Assert.True(IsResident(region, i), $"hot page {i}: {State(region, i)}");
        }

        region.Advise(0, 64L * P, CramAdvice.Normal);
        Assert.Equal(192L * P, region.Reclaim(192L * P)); // the 128 left that were never hot, and the 64 no longer hot
        for (int i = 0; i < 512; i++)
        {
            Assert.True(i is >= 64 and < 128 ? IsResident(region, i) : State(region, i) == PageState.Evicted, $"page {i}: {State(region, i)}");
        }

        // The target cannot be met otherwise: hot pages go too.
        Assert.Equal(64L * P, region.Reclaim(region.Length));
        Assert.Equal(0, region.GetStats().ResidentBytes);
        for (int i = 0; i < 512; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }

    [Fact]
    public void Hot_SurvivesBackgroundReclaim_WhileOtherPagesCycleThroughTheLimit()
    {
        const int pages = 1024, hot = 128;
        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 256L * P, FaultAroundPages = 1 });
        using var region = engine.CreateRegion((long)pages * P);
        for (int i = 0; i < hot; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Advise(0, (long)hot * P, CramAdvice.Hot);
        for (int round = 0; round < 3; round++) // 3 × 896 cold pages through a limit with room for 128 of them
        {
            for (int i = hot; i < pages; i++)
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * P, i, round + 1);
            }
        }
        CramStats s = engine.GetStats();
        Assert.True(s.Evictions > 1000, $"evictions {s.Evictions}: the limit was not exercised");
        for (int i = 0; i < hot; i++)
        {
            Assert.True(IsResident(region, i), $"hot page {i}: {State(region, i)}");
        }
    }

    [Fact]
    public void WillNeed_SwapsInInTheBackground_SoReadsDoNotFault()
    {
        const int pages = 1024;
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, pages);
        TestPages.Fill(region.Pointer + 7L * P, 0); // a zero page: slot 0
        region.Reclaim(region.Length);
        Assert.Equal(0, region.GetStats().ResidentBytes);

        region.Advise(0, region.Length, CramAdvice.WillNeed);
        WaitForPrefetch(engine);
        CramStats before = engine.GetStats();
        Assert.Equal(pages, before.PrefetchedPages);
        Assert.Equal(region.Length, region.GetStats().ResidentBytes);
        CleanCopyTests.AssertCountersMatchThePageTable(engine, region, "after prefetch");

        for (int i = 0; i < pages; i++)
        {
            byte* p = region.Pointer + (long)i * P;
            Assert.True(i == 7 ? TestPages.CheckFilledZero(p) : TestPages.CheckCompressible(p, i, 1), $"page {i}");
        }
        Assert.Equal(before.Refaults, engine.GetStats().Refaults); // no page needed a fault
        Assert.Equal(0, region.GetStats().SwapInFaults);
    }

    [Fact]
    public void WillNeed_BringsPagesBackFromTheBackingFile()
    {
        string dir = Directory.CreateTempSubdirectory("cramcore-advise-").FullName;
        using var cleanup = new DeleteOnDispose(dir);
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, BackingFile = Path.Combine(dir, "swap"), CompressedPoolLimitBytes = 64L << 20 });
        using CramRegion region = TestPages.FilledRegion(engine, 256);
        region.Reclaim(region.Length);
        Assert.True(engine.Maintenance.WriteBack(long.MaxValue) > 0);
        Assert.True(engine.GetStats().FilePages > 0);

        long filePages = engine.GetStats().FilePages, readsBefore = engine.GetStats().FileReads;
        region.Advise(0, region.Length, CramAdvice.WillNeed);
        WaitForPrefetch(engine);
        long refaults = engine.GetStats().Refaults;
        for (int i = 0; i < 256; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
        Assert.Equal(refaults, engine.GetStats().Refaults);
        Assert.Equal(256, engine.GetStats().PrefetchedPages);
        // A chunk's extents, written back together, come in one read (not one read a page).
        long reads = engine.GetStats().FileReads - readsBefore;
        Assert.True(reads * 4 <= filePages, $"{filePages} pages from the file in {reads} reads");
    }

    [Fact]
    public void WillNeed_StopsAtTheResidentLimit()
    {
        const int limitPages = 128;
        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = limitPages * P, FaultAroundPages = 1 });
        using CramRegion region = TestPages.FilledRegion(engine, 1024);
        region.Reclaim(region.Length);
        region.Advise(0, region.Length, CramAdvice.WillNeed);
        WaitForPrefetch(engine);
        CramStats s = engine.GetStats();
        Assert.InRange(s.PrefetchedPages, 1, limitPages);
        Assert.True(s.ResidentBytes <= (long)limitPages * P, $"resident {s.ResidentBytes >> 12} pages past the limit of {limitPages}");
    }

    [Fact]
    public void DontNeed_DiscardsFromEveryState_ReadsZeros_AndFixesTheCounters()
    {
        const int pages = 256;
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using var region = engine.CreateRegion((long)pages * P);
        for (int i = 0; i < 224; i++) // 224..255 never touched
        {
            byte* p = region.Pointer + (long)i * P;
            if (i is >= 192 and < 208)
            {
                TestPages.WriteRandom(p, i); // incompressible: stays resident
            }
            else if (i is >= 208)
            {
                TestPages.Fill(p, 0); // zero pages: slot 0
            }
            else
            {
                TestPages.WriteCompressible(p, i, 1);
            }
        }
        region.Reclaim(region.Length);
        for (int i = 0; i < 64; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 2); // DIRTY again
        }
        long sum = 0;
        for (int i = 191; i >= 128; i--) // backwards, so no readahead: CLEAN
        {
            sum += *(long*)(region.Pointer + (long)i * P);
        }
        GC.KeepAlive(sum);
        var states = Enumerable.Range(0, pages).Select(i => State(region, i)).ToHashSet();
        Assert.Superset(new HashSet<PageState> { PageState.Dirty, PageState.Clean, PageState.Evicted, PageState.Incompressible, PageState.Empty }, states);
        Assert.Equal(5, states.Count);

        // From byte 100 of page 10 to byte 50 of page 250: whole pages 11..249 discarded, the rest zeroed in place.
        long from = 10L * P + 100, to = 250L * P + 50;
        long populatedInside = Enumerable.Range(11, 239).Count(i => State(region, i) != PageState.Empty);
        CramStats before = engine.GetStats();
        region.Advise(from, to - from, CramAdvice.DontNeed);
        CramStats after = engine.GetStats();

        for (int i = 11; i < 250; i++)
        {
            Assert.Equal(PageState.Empty, State(region, i));
        }
        Assert.Equal(populatedInside, after.DiscardedPages);
        Assert.Equal(before.LogicalBytes - populatedInside * P, after.LogicalBytes);
        CleanCopyTests.AssertCountersMatchThePageTable(engine, region, "after the discard");
        AssertResidentMatchesThePageTable(engine, region);
        Assert.True(after.StoredBytes < before.StoredBytes, $"stored {before.StoredBytes} -> {after.StoredBytes}: discarded copies not freed");
        Assert.Equal(0, engine.Maintenance.SweepZombies());

        for (int i = 0; i < pages; i++)
        {
            byte* p = region.Pointer + (long)i * P;
            var bytes = new ReadOnlySpan<byte>(p, P);
            if (i == 10)
            {
                Assert.True(bytes[100..].IndexOfAnyExcept((byte)0) < 0, "the tail of page 10 was not zeroed");
                var expected = new byte[P];
                fixed (byte* e = expected)
                {
                    TestPages.WriteCompressible(e, 10, 2);
                }
                Assert.True(bytes[..100].SequenceEqual(expected.AsSpan(0, 100)), "the head of page 10 changed");
            }
            else if (i == 250)
            {
                Assert.True(bytes[..50].IndexOfAnyExcept((byte)0) < 0, "the head of page 250 was not zeroed");
            }
            else if (i is > 10 and < 250 || i >= 208)
            {
                Assert.True(TestPages.CheckFilledZero(p), $"page {i} was not discarded");
            }
            else
            {
                Assert.True(TestPages.CheckCompressible(p, i, i < 64 ? 2 : 1), $"page {i} outside the range changed");
            }
        }

        // A discarded page is an ordinary page again.
        TestPages.WriteCompressible(region.Pointer + 100L * P, 100, 3);
        region.Reclaim(region.Length);
        Assert.True(TestPages.CheckCompressible(region.Pointer + 100L * P, 100, 3));
        CleanCopyTests.AssertCountersMatchThePageTable(engine, region, "after reuse");
    }

    [Fact]
    public void DontNeed_OnPlacedPages_GivesTheNodeItsRoomBack()
    {
        var device = new EmulatedCramDevice(1 << 20);
        using var engine = CramEngine.Create(new CramOptions { CramDevice = device, WritableBudgetPages = 2, FaultAroundPages = 1 });
        using var region = engine.CreateRegion(16L * P);
        for (int i = 0; i < 16; i++)
        {
            TestPages.WriteVeryCompressible(region.Pointer + (long)i * P, i, 0);
        }
        region.Reclaim(region.Length);
        CramStats placed = engine.GetStats();
        Assert.Equal(16, placed.CramPlacedPages);
        TestPages.WriteVeryCompressible(region.Pointer, 0, 1); // one made writable in place

        region.Advise(0, 8L * P, CramAdvice.DontNeed);
        CramStats s = engine.GetStats();
        Assert.Equal(8, s.CramPlacedPages);
        Assert.Equal(0, s.CramWritablePages);
        Assert.True(s.CramLedgerBytes < placed.CramLedgerBytes);
        for (int i = 0; i < 16; i++)
        {
            byte* p = region.Pointer + (long)i * P;
            Assert.True(i < 8 ? TestPages.CheckFilledZero(p) : TestPages.CheckVeryCompressible(p, i, 0), $"page {i}");
        }
        engine.Maintenance.TickCramNode();
        Assert.Equal(0, engine.Maintenance.SweepZombies());
    }

    [Fact]
    public void Advise_ChecksItsArguments_AndCostsWhatWasTouched()
    {
        using var engine = CramEngine.Create();
        using var huge = engine.CreateRegion(1L << 46); // 64 TiB: hints walk only the touched blocks
        TestPages.WriteCompressible(huge.Pointer + (1L << 45), 1, 1);
        foreach (CramAdvice advice in Enum.GetValues<CramAdvice>())
        {
            huge.Advise(0, huge.Length, advice);
        }
        WaitForPrefetch(engine);
        Assert.True(TestPages.CheckFilledZero(huge.Pointer + (1L << 45)));
        Assert.Equal(1, engine.GetStats().DiscardedPages);

        using var region = engine.CreateRegion(16L * P);
        Assert.Throws<ArgumentOutOfRangeException>("byteOffset", () => region.Advise(-1, P, CramAdvice.Cold));
        Assert.Throws<ArgumentOutOfRangeException>("byteOffset", () => region.Advise(0, region.Length + 1, CramAdvice.Cold));
        Assert.Throws<ArgumentOutOfRangeException>("byteOffset", () => region.Advise(long.MaxValue, long.MaxValue, CramAdvice.Hot));
        Assert.Throws<ArgumentOutOfRangeException>("advice", () => region.Advise(0, P, (CramAdvice)42));
        region.Advise(region.Length, 0, CramAdvice.DontNeed); // an empty range at the end is fine
    }

    /// <summary>Waits (bounded) for the background prefetch of every range advised so far.</summary>
    private static void WaitForPrefetch(CramEngine engine) =>
        Assert.True(engine.Regions.PrefetchIdle().Wait(TimeSpan.FromSeconds(30)), "prefetch did not finish in 30 s");

    /// <summary>ResidentBytes against a walk of the page table (a single-region engine).</summary>
    private static void AssertResidentMatchesThePageTable(CramEngine engine, CramRegion region)
    {
        long resident = 0;
        for (long i = 0; i < region.Length / P; i++)
        {
            if (State(region, i) is not (PageState.Empty or PageState.Evicted or PageState.Placed or PageState.PlacedWritable))
            {
                resident++;
            }
        }
        Assert.Equal(resident * P, engine.GetStats().ResidentBytes);
        Assert.Equal(resident * P, region.GetStats().ResidentBytes);
    }

    /// <summary>Issue 24: ghost mode with a full pool, Advise(Cold) over and over; reclaim's queues grew ~312 entries a call before, without bound.</summary>
    [Fact]
    public void ColdAdviceOverAndOver_WithAFullPool_KeepsReclaimsQueuesBounded()
    {
        using var engine = CramEngine.Create(new CramOptions
        {
            ResidentLimitBytes = 16 << 20,
            PoolArenaBytes = 1 << 20,
            CompressedPoolLimitBytes = 1 << 20,
            FaultAroundPages = 1,
        });
        using CramRegion region = engine.CreateRegion(64L << 20);
        for (long i = 0; i < (64L << 20) / P; i++)
        {
            TestPages.WriteCompressible(region.Pointer + i * P, i, 1);
        }
        Reclaimer reclaimer = engine.Parts.Reclaimer;
        for (int call = 0; call < 200; call++)
        {
            region.Advise(0, region.Length, CramAdvice.Cold);
            region.Reclaim(1 << 20);
            Assert.True(reclaimer.PendingPages <= reclaimer.MaxQueuedPages,
                $"call {call}: {reclaimer.PendingPages} queued for {engine.GetStats().ResidentBytes / P} resident pages");
        }
        for (long i = 0; i < (64L << 20) / P; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + i * P, i, 1), $"page {i}");
        }
    }
}
