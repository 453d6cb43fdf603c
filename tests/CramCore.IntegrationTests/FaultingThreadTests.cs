namespace CramCore.Tests;

/// <summary>
/// The faulting-thread fault service (<see cref="CramFaultService.FaultingThread"/>): each fault is
/// resolved by the thread that took it, in CramCore's SIGBUS handler — every fault kind, from the pool
/// and the file, with reclaim, forced GCs and other engines coming and going; system calls on evicted
/// pages are handled by the region's I/O helpers; every SIGBUS and SIGSEGV that is not CramCore's
/// still reaches the .NET runtime.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class FaultingThreadTests : IDisposable
{
    private const int P = TestPages.PageSize;
    private readonly string _dir = Directory.CreateTempSubdirectory("cram-faulting-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CramOptions Options(Action<CramOptions>? more = null)
    {
        var options = new CramOptions { FaultService = CramFaultService.FaultingThread };
        more?.Invoke(options);
        return options;
    }

    private static int CramFaultThreads() => Directory.GetDirectories("/proc/self/task")
        .Count(t => File.ReadAllText(Path.Combine(t, "comm")).StartsWith("cram-fault", StringComparison.Ordinal));

    [Fact]
    public void EveryFaultKind_IsResolvedOnTheFaultingThread()
    {
        int before = CramFaultThreads();
        using var engine = CramEngine.Create(Options());
        Assert.Equal(CramFaultService.FaultingThread, engine.GetStats().FaultService);
        Assert.Equal(before, CramFaultThreads()); // no service thread
        const int pages = 512;
        using CramRegion region = engine.CreateRegion((long)pages * P);
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1); // first touch, written
        }
        Assert.Equal((long)pages * P, region.Reclaim(region.Length));
        for (int i = 0; i < pages; i += 2)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}"); // read swap-in: CLEAN, write-protected
        }
        for (int i = 0; i < pages; i += 4)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 2); // write-protect faults on CLEAN pages
        }
        for (int i = 1; i < pages; i += 2)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 3); // write swap-in
        }
        for (int i = 0; i < pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, i % 2 == 1 ? 3 : i % 4 == 0 ? 2 : 1), $"page {i}");
        }
        CramStats s = engine.GetStats();
        Assert.True(s.ZeroFillFaults > 0);
        Assert.True(s.Refaults + s.ReadaheadPages >= pages, $"{s.Refaults} refaults, {s.ReadaheadPages} read ahead");
        Assert.True(s.WriteProtectFaults >= pages / 4, $"{s.WriteProtectFaults} write-protect faults");
        Assert.Equal(0, s.ChecksumFailures);
    }
}
