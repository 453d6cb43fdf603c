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

    private static int CramFaultThreads() => ProcessThreads.Count(n => n == "cram-fault");

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

    [Fact]
    public void ANullDereference_StillBecomesNullReferenceException_WithTheHandlerInstalled()
    {
        using var engine = CramEngine.Create(Options());
        using CramRegion region = engine.CreateRegion(16L * P);
        region.Pointer[0] = 1; // a fault through the handler first: it is installed
        string? text = Environment.GetEnvironmentVariable("CRAMCORE_NOT_SET_ANYWHERE_" + Guid.NewGuid());
        Assert.Throws<NullReferenceException>(() => text!.Length);
        Assert.Equal(1, region.Pointer[0]);
    }

    /// <summary>
    /// Threads read and write random pages under a resident limit (so faults throttle in the handler
    /// and race eviction) while another thread forces GCs, another creates, faults in and disposes
    /// engines of its own (the handler's registry changing under it) and regions of the same engine,
    /// and another starts short-lived threads whose first act is a fault; every page keeps its last write.
    /// </summary>
    [Fact]
    public void FaultsRacingEvictionGcsAndOtherEngines_LoseNothing()
    {
        const int pages = 4096, workers = 2;
        using var engine = CramEngine.Create(Options(o => o.ResidentLimitBytes = 4 << 20));
        using CramRegion region = engine.CreateRegion((long)pages * P);
        var versions = new long[pages];
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 0);
        }
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        Exception? failure = null;
        var threads = new List<Thread>();
        for (int w = 0; w < workers; w++)
        {
            int worker = w;
            threads.Add(new Thread(() =>
            {
                var random = new Random(worker);
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        int page = random.Next(pages / workers) * workers + worker; // each page has one writer
                        byte* p = region.Pointer + (long)page * P;
                        if (random.Next(3) == 0)
                        {
                            TestPages.WriteCompressible(p, page, ++versions[page]);
                        }
                        else if (!TestPages.CheckCompressible(p, page, versions[page]))
                        {
                            throw new InvalidOperationException($"page {page} lost version {versions[page]}");
                        }
                    }
                }
                catch (Exception e)
                {
                    failure ??= e;
                }
            }));
        }
        threads.Add(new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                Thread.Sleep(5);
            }
        }));
        int others = 0;
        threads.Add(new Thread(() =>
        {
            try
            {
                do // at least once: on a loaded machine the thread may start after the stop
                {
                    using var other = CramEngine.Create(Options());
                    using CramRegion r = other.CreateRegion(64L * P);
                    using CramRegion sibling = engine.CreateRegion(64L * P); // a region of the engine under test, created and disposed
                    for (int i = 0; i < 64; i++)
                    {
                        r.Pointer[(long)i * P] = (byte)i;
                        sibling.Pointer[(long)i * P] = (byte)i;
                    }
                    others++;
                }
                while (!stop.IsCancellationRequested);
            }
            catch (Exception e)
            {
                failure ??= e;
            }
        }));
        int shortLived = 0;
        using CramRegion fresh = engine.CreateRegion(1024L * P); // the short-lived threads' own pages
        threads.Add(new Thread(() =>
        {
            do
            {
                int n = shortLived;
                byte* page = fresh.Pointer + (long)(n % 1024) * P;
                bool ok = false;
                var t = new Thread(() =>
                {
                    TestPages.WriteCompressible(page, n % 1024, n); // a fault first thing: first touch, or a swap-in of an evicted page
                    ok = TestPages.CheckCompressible(page, n % 1024, n);
                });
                t.Start();
                t.Join();
                if (!ok)
                {
                    failure ??= new InvalidOperationException($"a short-lived thread lost its write to page {n % 1024}");
                }
                shortLived++;
            }
            while (!stop.IsCancellationRequested);
        }));
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Null(failure);
        Assert.True(others > 0 && shortLived > 0, $"{others} other engines, {shortLived} short-lived threads");
        for (int i = 0; i < pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, versions[i]), $"page {i}");
        }
        CramStats s = engine.GetStats();
        Assert.True(s.Evictions > 0 && s.Refaults > 0, $"{s.Evictions} evictions, {s.Refaults} refaults");
        Assert.Equal(0, s.ChecksumFailures);
        Assert.Equal(0, s.ServiceErrors);
    }

    [Fact]
    public void TheFileTier_WorksOnTheFaultingThread()
    {
        using var engine = CramEngine.Create(Options(o =>
        {
            o.BackingFile = Path.Combine(_dir, "swap");
            o.CompressedPoolLimitBytes = 1 << 20;
            o.PoolArenaBytes = 1 << 20;
        }));
        const int pages = 2048;
        using CramRegion region = engine.CreateRegion((long)pages * P);
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Reclaim(region.Length);
        Assert.True(engine.GetStats().FilePages > 0);
        for (int i = 0; i < pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }

    /// <summary>The kernel cannot run a SIGBUS handler for its own accesses: a read(2) into an evicted page fails with EFAULT; the region's I/O helpers and MakeResident are the way.</summary>
    [Fact]
    public void SystemCallsOnEvictedPages_FailWithEfault_AndTheRegionsIoHelpersWork()
    {
        string path = Path.Combine(_dir, "data");
        byte[] data = new byte[16 * P];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(path, data);
        using var engine = CramEngine.Create(Options());
        using CramRegion region = engine.CreateRegion(16L * P);
        new Span<byte>(region.Pointer, 16 * P).Fill(1);
        region.Reclaim(region.Length);

        using (var file = File.OpenHandle(path))
        {
            Assert.ThrowsAny<IOException>(() => RandomAccess.Read(file, region.AsSpan<byte>(0, P), 0)); // EFAULT: the kernel met an evicted page
            region.MakeResident(0, P, forWrite: true);
            Assert.Equal(P, RandomAccess.Read(file, region.AsSpan<byte>(0, P), 0)); // resident now: the kernel writes it
        }
        using (var stream = File.OpenRead(path))
        {
            Assert.Equal(16 * P, region.ReadFrom(stream, 0, 16 * P)); // through a buffer
        }
        Assert.True(region.AsSpan<byte>(0, 16 * P).SequenceEqual(data));
        region.Reclaim(region.Length);
        var copy = new MemoryStream();
        region.WriteTo(copy, 0, 16 * P);
        Assert.Equal(data, copy.ToArray());
    }

    [Fact]
    public void Auto_TakesTheFaultingThreadWhereSystemCallsFaultAnyway_TheServiceThreadElsewhere()
    {
        using (var auto = CramEngine.Create())
        {
            CramStats s = auto.GetStats(); // a full userfaultfd where the process may have one
            Assert.Equal(s.UserfaultfdMode == UserfaultfdMode.UserModeOnly ? CramFaultService.FaultingThread : CramFaultService.ServiceThread, s.FaultService);
        }
        using var userModeOnly = CramEngine.Create(new CramOptions { Userfaultfd = UserfaultfdMode.UserModeOnly });
        Assert.Equal(CramFaultService.FaultingThread, userModeOnly.GetStats().FaultService);
        using CramRegion region = userModeOnly.CreateRegion(64L * P);
        for (int i = 0; i < 64; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Reclaim(region.Length);
        for (int i = 0; i < 64; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }
}
