namespace CramCore.Tests;

/// <summary>
/// Readahead windows mapped outside the engine lock (cramnative.h, "Readahead"): the fault that
/// continues a stream decodes and claims the window (EVICTED→INSTALLING), and installers — that
/// thread once it lets the lock go, and <see cref="CramOptions.ReadaheadThreads"/> − 1 helpers —
/// map its chunks at once. Every number of threads, with each fault service: a reader that outruns
/// the installers waits in a page still INSTALLING and reads what was stored; a region torn down
/// right after a window was claimed waits for its installs. Races with writes, eviction, discard
/// and forced GCs are in <see cref="NoLostWriteStressTests"/> (modes Readahead, FileReadahead, Advice).
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class ReadaheadInstallTests
{
    private const int P = TestPages.PageSize;

    public static TheoryData<int, CramFaultService> ThreadsAndServices()
    {
        var data = new TheoryData<int, CramFaultService>();
        foreach (CramFaultService service in new[] { CramFaultService.ServiceThread, CramFaultService.FaultingThread })
        {
            foreach (int threads in new[] { 1, 2, 4 })
            {
                data.Add(threads, service);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(ThreadsAndServices))]
    public void SequentialReadBack_ComesInByWindows_IntactAndClean(int threads, CramFaultService service)
    {
        const int Pages = 2048;
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, FaultService = service, ReadaheadThreads = threads });
        using var region = engine.CreateRegion((long)Pages * P);
        byte* At(int i) => region.Pointer + (long)i * P;
        for (int i = 0; i < Pages; i++)
        {
            if (i % 29 == 4) TestPages.Fill(At(i), 0); // zero pages and same-filled ones ride in the windows too
            else if (i % 31 == 7) TestPages.Fill(At(i), 0x0101010101010101UL * (ulong)(i & 0x7f));
            else TestPages.WriteCompressible(At(i), i, 1);
        }
        Assert.Equal((long)Pages * P, region.Reclaim(region.Length));
        long before = engine.GetStats().Refaults;
        for (int i = 0; i < Pages; i++) // the whole page, at once: the reader runs into pages still being mapped
        {
            bool ok = i % 29 == 4 ? TestPages.CheckFilledZero(At(i))
                : i % 31 == 7 ? new ReadOnlySpan<byte>(At(i), P).IndexOfAnyExcept((byte)(i & 0x7f)) < 0
                : TestPages.CheckCompressible(At(i), i, 1);
            Assert.True(ok, $"page {i}");
        }
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats() is var c && c.Refaults - before + c.ReadaheadPages >= Pages, 5000),
            engine.GetStats().ToString());
        // A page is counted when its window is claimed, and a reader goes on once its page is mapped,
        // a moment before the installer marks it CLEAN: wait for the last installs to be marked.
        Assert.True(SpinWait.SpinUntil(() => !Enumerable.Range(0, Pages).Any(i => region.GetPageState((long)i * P) == PageState.Installing), 5000),
            "a page stayed INSTALLING");
        CramStats s = engine.GetStats();
        Assert.Equal(threads, s.ReadaheadThreads);
        Assert.True(s.Refaults - before <= Pages / 32, $"{s.Refaults - before} faults for {Pages} pages read in order");
        for (int i = 0; i < Pages; i++)
        {
            Assert.Equal(PageState.Clean, region.GetPageState((long)i * P)); // mapped write-protected, copy kept
        }
        Assert.Equal((long)Pages * P, s.ResidentBytes);
        CleanCopyTests.AssertCountersMatchThePageTable(engine, region, $"{threads} threads, {service}");
        // A write into a window's page takes its one write-protect fault and sticks.
        long wp = s.WriteProtectFaults;
        TestPages.WriteCompressible(At(1000), 1000, 2);
        Assert.Equal(wp + 1, engine.GetStats().WriteProtectFaults);
        Assert.Equal((long)Pages * P, region.Reclaim(region.Length));
        Assert.True(TestPages.CheckCompressible(At(1000), 1000, 2));
        Assert.Equal(0, engine.GetStats().ServiceErrors);
    }

    [Theory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void RegionTornDown_RightAfterAWindowWasClaimed_WaitsForItsInstalls(CramFaultService service)
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, FaultService = service, ReadaheadThreads = 4 });
        for (int round = 0; round < 20; round++)
        {
            var region = engine.CreateRegion(1024L * P);
            for (int i = 0; i < 1024; i++)
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * P, i, round);
            }
            region.Reclaim(region.Length);
            long sum = 0;
            for (int i = 0; i < 3 + round * 16; i++) // the last fault claims a window the helpers may still be mapping
            {
                sum += Volatile.Read(ref *(long*)(region.Pointer + (long)i * P));
            }
            GC.KeepAlive(sum);
            region.Dispose();
        }
        CramStats s = engine.GetStats();
        Assert.True(s.ReadaheadPages > 0, s.ToString());
        Assert.Equal(0, s.ServiceErrors);
        Assert.Equal(0, s.ResidentBytes); // every claimed page was counted once and forgotten once
        Assert.Equal(0, s.CleanCopyPages);
    }

    [Fact]
    public void ReadaheadThreads_OutOfRange_IsRefused_NamingTheOption()
    {
        var e = Assert.Throws<ArgumentException>(() => CramEngine.Create(new CramOptions { ReadaheadThreads = 5 }));
        Assert.Equal("ReadaheadThreads", e.ParamName);
        Assert.Throws<ArgumentException>(() => CramEngine.Create(new CramOptions { ReadaheadThreads = -1 }));
        using var engine = CramEngine.Create(new CramOptions());
        Assert.Equal(Environment.ProcessorCount > 1 ? 2 : 1, engine.GetStats().ReadaheadThreads);
    }
}
