using CramCore.Tests.Fakes;

namespace CramCore.Tests;

/// <summary>
/// Reclaim (victim clock, eviction pipeline, store, publish, drop) on the in-memory engine: every
/// page it evicts reads back, a write racing an eviction cancels it without losing the write, clean
/// copies are dropped again without a second compression, and the counters follow.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class ReclaimOnFakeTests
{
    private const int P = SharedLayout.PageSize;

    /// <summary>Faults every page in for a write and fills it: compressible pages, with every eighth a zero page and every eighth+1 same-filled.</summary>
    internal static RegionMapping Filled(FakeStack stack, int pages, long version = 1)
    {
        RegionMapping r = stack.Engine.CreateRegion(pages);
        for (ulong i = 0; i < (ulong)pages; i++)
        {
            stack.Engine.Write(r, i);
            Fill(stack, r, i, version);
        }
        return r;
    }

    internal static void Fill(FakeStack stack, RegionMapping r, ulong i, long version)
    {
        byte* page = stack.Engine.Page(r, i);
        switch (i % 8)
        {
            case 0:
                new Span<byte>(page, P).Clear();
                break;
            case 1:
                new Span<ulong>(page, P / 8).Fill(0x0101010101010101UL * (byte)(i + (ulong)version));
                break;
            default:
                TestPages.WriteCompressible(page, (long)i, version);
                break;
        }
    }

    internal static bool Check(FakeStack stack, RegionMapping r, ulong i, long version)
    {
        stack.Engine.Read(r, i);
        byte* page = stack.Engine.Page(r, i);
        return (i % 8) switch
        {
            0 => TestPages.CheckFilledZero(page),
            1 => new ReadOnlySpan<ulong>(page, P / 8).IndexOfAnyExcept(0x0101010101010101UL * (byte)(i + (ulong)version)) < 0,
            _ => TestPages.CheckCompressible(page, (long)i, version),
        };
    }

    [Fact]
    public void ReleaseCleanCopies_LooksOnlyAtTheColdestEntries_AndNotAtAllWithoutCopies()
    {
        using var stack = new FakeStack(new CramOptions());
        int deep = VictimClock.ReleaseScanLimit;
        // zeros: pages whose copy is slot 0 (nothing to let go); a, b: compressible pages (pool copies).
        RegionMapping zeros = stack.Engine.CreateRegion(deep);
        for (ulong i = 0; i < (ulong)deep; i++)
        {
            stack.Engine.Write(zeros, i); // first touch: zeros
        }
        RegionMapping a = Filled(stack, 256), b = Filled(stack, 256);
        int all = deep + 512;
        Assert.Equal(all, stack.Reclaimer.Reclaim(all, null));
        stack.Shared->ActivateDistancePages = 0; // swap-ins come back on trial, none into the working set (whose copies stay)
        var clock = new VictimClock(stack.Engine, stack.Shared, stack.Engine.Regions);
        Assert.Equal(0UL, stack.Shared->Stats.CleanCopyPages);
        Assert.Equal(0, clock.ReleaseCleanCopies(long.MaxValue, stack.Slots)); // no copy anywhere: no walk

        // The coldest entries keep no pool copy (zero pages), then a's 256 pages keep theirs.
        for (ulong i = 0; i < (ulong)deep; i++)
        {
            stack.Engine.Read(zeros, i);
        }
        for (ulong i = 0; i < 256; i++)
        {
            stack.Engine.Read(a, i);
        }
        clock.PullFaultLog();
        Assert.Equal(0, clock.ReleaseCleanCopies(long.MaxValue, stack.Slots)); // beyond the entries a call looks at

        // b's copies right behind the coldest: released, and only theirs.
        var younger = new VictimClock(stack.Engine, stack.Shared, stack.Engine.Regions);
        for (ulong i = 0; i < 256; i++)
        {
            stack.Engine.Read(b, i);
        }
        younger.PullFaultLog();
        Assert.True(younger.ReleaseCleanCopies(long.MaxValue, stack.Slots) > 0);
        for (ulong i = 2; i < 256; i += 8)
        {
            Assert.Equal(PageState.Dirty, stack.Engine.State(b, i)); // CLEAN -> DIRTY, its copy freed
            Assert.Equal(PageState.Clean, stack.Engine.State(a, i)); // out of reach: kept
        }
        for (ulong i = 0; i < 256; i++)
        {
            Assert.True(Check(stack, a, i, 1), $"a {i}");
            Assert.True(Check(stack, b, i, 1), $"b {i}");
        }
    }

    [Fact]
    public void Reclaim_EvictsEveryPage_AndEachReadsBack()
    {
        using var stack = new FakeStack(new CramOptions());
        const int pages = 256;
        RegionMapping r = Filled(stack, pages);
        Assert.Equal((ulong)pages, stack.Shared->Stats.ResidentPages);

        long evicted = stack.Reclaimer.Reclaim(pages, null);

        Assert.Equal(pages, evicted);
        Assert.Equal(0UL, stack.Shared->Stats.ResidentPages);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.Equal(PageState.Evicted, stack.Engine.State(r, i));
        }
        ReclaimCounters c = stack.Reclaimer.Counters;
        Assert.Equal(pages - pages / 4, c.CompressedPages); // zero and same-filled pages never reach LZ4
        Assert.Equal(pages / 8, c.ZeroCopiesPublished);   // zero pages name slot 0
        Assert.Equal(pages / 8, stack.Slots.SameFilledSlots); // same-filled pages keep their value in the slot
        Assert.Equal(pages - pages / 4, stack.Slots.PoolSlots);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(Check(stack, r, i, 1), $"page {i}");
            Assert.Equal(PageState.Clean, stack.Engine.State(r, i));
        }
        Assert.Equal(0, stack.Engine.ChecksumFailures);
        Assert.Equal((ulong)pages, stack.Shared->Stats.ResidentPages);
    }

    [Fact]
    public void CleanCopies_AreDroppedAgain_WithoutASecondCompression()
    {
        using var stack = new FakeStack(new CramOptions());
        const int pages = 64;
        RegionMapping r = Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(Check(stack, r, i, 1));
        }
        long compressed = stack.Reclaimer.Counters.CompressedPages;
        Assert.Equal((ulong)pages, stack.Shared->Stats.CleanCopyPages);

        Assert.Equal(pages, stack.Reclaimer.Reclaim(pages, null));

        Assert.Equal(compressed, stack.Reclaimer.Counters.CompressedPages); // the kept copies were dropped, not rebuilt
        Assert.Equal(0UL, stack.Shared->Stats.CleanCopyPages);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(Check(stack, r, i, 1), $"page {i}");
        }
    }

    [Fact]
    public void AWriteToACleanPage_MakesItsCopyStale_AndTheReaperFreesIt()
    {
        using var stack = new FakeStack(new CramOptions());
        RegionMapping r = Filled(stack, 16);
        stack.Reclaimer.Reclaim(16, null);
        Assert.True(Check(stack, r, 5, 1)); // CLEAN, write-protected, copy kept
        long slots = stack.Slots.Count;
        stack.Engine.Write(r, 5);           // the WP fault: CLEAN -> UNPROTECTING -> DIRTY, copy stale
        Fill(stack, r, 5, version: 2);
        Assert.Equal(PageState.Dirty, stack.Engine.State(r, 5));
        stack.Reaper.Drain();
        Assert.Equal(slots - 1, stack.Slots.Count);
        stack.Reclaimer.Reclaim(16, null);
        Assert.True(Check(stack, r, 5, 2));
    }

    /// <summary>Reclaim's page operations with a write to one page right after the batch is write-protected: the write lands while the page is EVICTING.</summary>
    private sealed class WriteDuringEviction(IPageOperations inner, Action write) : IPageOperations
    {
        public int Writes { get; private set; }

        public Errno WriteProtect(uint regionId, ulong* pages, int count)
        {
            Errno e = inner.WriteProtect(regionId, pages, count);
            if (Writes++ == 0)
            {
                write();
            }
            return e;
        }

        public Errno Drop(uint regionId, ulong* pages, int count, out int dropped) => inner.Drop(regionId, pages, count, out dropped);
        public bool TryStore(bool raw, byte* source, int length, out ulong slot) => inner.TryStore(raw, source, length, out slot);
        public Errno Place(uint regionId, NativeCramPlace* places, int count, out int placed) => inner.Place(regionId, places, count, out placed);
    }

    [Fact]
    public void AWriteDuringEviction_CancelsIt_AndLosesNothing()
    {
        FakeStack? stack = null;
        RegionMapping? r = null;
        WriteDuringEviction? racing = null;
        stack = new FakeStack(new CramOptions(), inner => racing = new WriteDuringEviction(inner, () =>
        {
            Assert.Equal(PageState.Evicting, stack!.Engine.State(r!, 10));
            stack.Engine.Write(r!, 10); // the WP fault on an EVICTING page
            Fill(stack, r!, 10, version: 2);
        }));
        using (stack)
        {
            r = Filled(stack, 32);
            long evicted = stack.Reclaimer.Reclaim(32, null);

            Assert.Equal(31, evicted);
            Assert.Equal(PageState.Dirty, stack.Engine.State(r, 10));
            Assert.Equal(1UL, stack.Shared->Stats.FaultsWpCancel);
            Assert.True(Check(stack, r, 10, 2), "the write that raced the eviction");
            for (ulong i = 0; i < 32; i++)
            {
                Assert.True(Check(stack, r, i, i == 10 ? 2 : 1), $"page {i}");
            }
            stack.Reaper.Drain();
            Assert.Equal(24 - 1, stack.Slots.PoolSlots); // 24 compressible pages; the torn copy of page 10 was freed
        }
    }

    [Fact]
    public void DuplicatesInTheFaultLog_NeverGrowTheQueuesPastTwiceTheResidentPages()
    {
        using var stack = new FakeStack(new CramOptions());
        const int pages = 64;
        RegionMapping r = Filled(stack, pages);
        long most = 0;
        for (int round = 0; round < 200; round++)
        {
            for (ulong i = 0; i < pages; i++)
            {
                stack.Engine.LogAgain(r, i); // 64 more entries a round for the same resident pages
            }
            stack.Reclaimer.Reclaim(0, null); // a pass pulls the log
            most = Math.Max(most, stack.Reclaimer.PendingPages);
            Assert.True(stack.Reclaimer.PendingPages <= stack.Reclaimer.MaxQueuedPages,
                $"round {round}: {stack.Reclaimer.PendingPages} queued for {stack.Shared->Stats.ResidentPages} resident pages");
        }
        Assert.True(stack.Reclaimer.QueueRebuilds > 0);
        Assert.Equal(2L * pages + SharedLayout.FaultLogSize / 16, stack.Reclaimer.MaxQueuedPages);
        Assert.Equal(pages, stack.Reclaimer.Reclaim(pages, null)); // and the rebuilt FIFO still finds every page
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(Check(stack, r, i, 1), $"page {i}");
        }
    }
}
