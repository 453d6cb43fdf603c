namespace CramCore.Tests;

/// <summary>
/// Copies that resident pages keep (CLEAN pages, cramnative.h "Clean copies"): counted exactly at
/// every transition, and let go first when the pool is full.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class CleanCopyTests
{
    private const int P = 4096;

    /// <summary>The counters against a walk of the page table: CLEAN and DROPPING pages and their slots' stored lengths.</summary>
    internal static void AssertCountersMatchThePageTable(CramEngine engine, CramRegion region, string when) =>
        AssertCountersMatchThePageTable(engine, [region], when);

    /// <summary>The same over every region of the engine (the counters are the engine's).</summary>
    internal static void AssertCountersMatchThePageTable(CramEngine engine, CramRegion[] regions, string when)
    {
        engine.Regions.PrefetchIdle().Wait();
        // A remote fetch counts its pages before it publishes them (FETCHING -> CLEAN) and wakes their
        // readers: a sequential read's last window may still be landing. Wait for every fetch to be published.
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().RemoteFetchesInFlight == 0, TimeSpan.FromSeconds(30)), $"{when}: remote fetches still in flight");
        // No reclaim pass (background or a caller's) may move a page into or out of CLEAN between the
        // walk and the counters: a publish counts its copy just before its CAS, a drop just before its.
        using Lock.Scope paused = engine.Parts.Reclaimer.Pause();
        long pages = 0, bytes = 0;
        foreach (CramRegion region in regions)
        {
            for (long i = 0; i < region.Length / P; i++)
            {
                ulong pte = PageTableEntry.Load(region.PageTableEntries + i);
                if (PageTableEntry.State(pte) is PageState.Clean or PageState.Dropping or PageState.Installing) // a claimed window page is counted at its claim
                {
                    pages++;
                    ulong slot = PageTableEntry.Slot(pte);
                    bytes += slot == SharedLayout.ZeroSlot ? 0 : engine.Parts.Slots.Get(slot)->Length;
                    Assert.True(slot == SharedLayout.ZeroSlot || (NativeSlot.LoadFlags(engine.Parts.Slots.Get(slot)) & SlotFlags.CleanCopy) != 0,
                        $"{when}: page {i} keeps slot {slot}, which is not marked a clean copy");
                }
            }
        }
        CramStats s = engine.GetStats();
        Assert.True((pages, bytes) == (s.CleanCopyPages, s.CleanCopyBytes),
            $"{when}: page table has {pages} clean pages / {bytes} bytes, counters say {s.CleanCopyPages} / {s.CleanCopyBytes}");
    }

    [Fact]
    public void Counters_FollowEveryTransitionInAndOutOfClean()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        const int Pages = 512;
        using var region = engine.CreateRegion(Pages * P);
        for (int i = 0; i < Pages; i++)
        {
            if (i % 16 == 5)
            {
                TestPages.Fill(region.Pointer + (long)i * P, 0); // zero pages: slot 0, no bytes
            }
            else
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
            }
        }
        AssertCountersMatchThePageTable(engine, region, "after the fill");
        Assert.Equal(0, engine.GetStats().CleanCopyPages);

        region.Reclaim(region.Length); // publish (+) then drop (-)
        AssertCountersMatchThePageTable(engine, region, "after reclaim");
        Assert.Equal(0, engine.GetStats().CleanCopyPages);

        long sum = 0;
        for (int i = 0; i < Pages; i += 2) // read swap-ins, and readahead on this stream (+)
        {
            sum += *(long*)(region.Pointer + (long)i * P);
        }
        AssertCountersMatchThePageTable(engine, region, "after reads");
        CramStats read = engine.GetStats();
        Assert.True(read.CleanCopyPages >= Pages / 2 && read.CleanCopyBytes > 0, $"{read.CleanCopyPages} clean pages");
        Assert.True(read.CleanCopyBytes <= read.StoredBytes);

        for (int i = 0; i < Pages; i += 8) // writes to clean pages: the copy goes stale (-)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 2);
        }
        AssertCountersMatchThePageTable(engine, region, "after writes");
        Assert.True(engine.GetStats().CleanCopyPages < read.CleanCopyPages);

        region.Reclaim(region.Length / 2); // some clean pages dropped (-), some dirty ones published and dropped
        AssertCountersMatchThePageTable(engine, region, "after a partial reclaim");

        for (int i = 0; i < Pages; i++)
        {
            Assert.True(i % 16 == 5 ? TestPages.CheckFilledZero(region.Pointer + (long)i * P)
                : TestPages.CheckCompressible(region.Pointer + (long)i * P, i, i % 8 == 0 ? 2 : 1), $"page {i}");
        }
        AssertCountersMatchThePageTable(engine, region, "after verifying");
        GC.KeepAlive(sum);
    }

    [Fact]
    public void RegionDestroy_TakesItsCleanCopiesOffTheCounters()
    {
        using var engine = CramEngine.Create();
        var region = engine.CreateRegion(256 * P);
        for (int i = 0; i < 256; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Reclaim(region.Length);
        for (int i = 0; i < 256; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1));
        }
        Assert.True(engine.GetStats().CleanCopyPages > 0);
        region.Dispose();
        CramStats s = engine.GetStats();
        Assert.Equal((0, 0, 0), (s.CleanCopyPages, s.CleanCopyBytes, s.StoredBytes));
    }

    [Fact]
    public void FullPool_LetsGoOfCleanCopiesFirst_AndLosesNothing()
    {
        // Ghost mode, a 1 MiB pool: the first region's copies fill most of it; read back, they stay
        // as clean copies. The second region can only be stored if those copies are let go.
        using var engine = CramEngine.Create(new CramOptions { CompressedPoolLimitBytes = 1 << 20, PoolArenaBytes = 1 << 20 });
        const int Pages = 768;
        using var first = engine.CreateRegion(Pages * P);
        using var second = engine.CreateRegion(Pages * P);
        for (int i = 0; i < Pages; i++)
        {
            TestPages.WriteCompressible(first.Pointer + (long)i * P, i, 1);
            TestPages.WriteCompressible(second.Pointer + (long)i * P, i, 2);
        }
        long firstEvicted = first.Reclaim(first.Length);
        Assert.True(firstEvicted > 0);
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(first.Pointer + (long)i * P, i, 1), $"first page {i}");
        }
        CramStats before = engine.GetStats();
        Assert.True(before.CleanCopyBytes > 0);
        Assert.Equal(0, before.CleanCopiesReleasedBytes);

        long secondEvicted = second.Reclaim(second.Length);
        CramStats after = engine.GetStats();
        Assert.True(after.CleanCopiesReleasedBytes > 0, "no clean copy was let go");
        Assert.True(secondEvicted >= firstEvicted / 2, $"only {secondEvicted} bytes of the second region evicted (the first: {firstEvicted})");
        Assert.True(after.CleanCopyBytes < before.CleanCopyBytes);
        AssertCountersMatchThePageTable(engine, [first, second], "after the pool filled");

        for (int i = 0; i < Pages; i++) // nothing lost: the released pages are resident, the others come back
        {
            Assert.True(TestPages.CheckCompressible(first.Pointer + (long)i * P, i, 1), $"first page {i}");
            Assert.True(TestPages.CheckCompressible(second.Pointer + (long)i * P, i, 2), $"second page {i}");
        }
        for (int i = 0; i < Pages; i += 3) // and their next writes are ordinary (a stray protection cleared)
        {
            TestPages.WriteCompressible(first.Pointer + (long)i * P, i, 3);
            Assert.True(TestPages.CheckCompressible(first.Pointer + (long)i * P, i, 3));
        }
        first.Reclaim(first.Length); // released pages are compressed again when their turn comes
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(first.Pointer + (long)i * P, i, i % 3 == 0 ? 3 : 1), $"first page {i} at the end");
        }
        AssertCountersMatchThePageTable(engine, [first, second], "at the end");
    }
}
