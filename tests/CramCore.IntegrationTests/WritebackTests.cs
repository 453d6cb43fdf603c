using Microsoft.Extensions.Time.Testing;

namespace CramCore.Tests;

/// <summary>The second tier: compressed writeback to the backing file, reading back, releases, segment compaction, ghost mode, write failures, the reaper.</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class WritebackTests : IDisposable
{
    private const int P = TestPages.PageSize;
    private const int Pages = 3000; // ~12 MiB logical, ~3 MiB compressed: three times the pool's limit
    private readonly string _dir = Directory.CreateTempSubdirectory("cramcore-writeback-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private CramOptions Options(string? file = "swap") => new()
    {
        BackingFile = file is null ? null : Path.Combine(_dir, file),
        CompressedPoolLimitBytes = 1 << 20,
        PoolArenaBytes = 1 << 20,
    };

    /// <summary>Writeback runs on its own thread: waits until it has no round running or asked for, so its figures hold still.</summary>
    private static void WaitForWriteback(CramEngine engine) =>
        Assert.True(SpinWait.SpinUntil(() => engine.Parts.Writeback!.Idle, TimeSpan.FromSeconds(30)), "writeback never went idle");

    /// <summary>The slot of an evicted page whose copy is in the file, or null.</summary>
    private static NativeSlot* FileSlot(CramEngine engine, CramRegion region, long page) => EvictedSlots.Of(engine, region, page, SlotBackend.File);

    private static void Fill(CramRegion region, int version = 0)
    {
        for (int i = 0; i < Pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, version);
        }
    }

    /// <summary>A region of <see cref="Pages"/> pages filled (version 0), all evicted, and writeback idle: most copies are in the file.</summary>
    private static CramRegion EvictedThroughThePool(CramEngine engine)
    {
        CramRegion region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        region.Reclaim(region.Length);
        WaitForWriteback(engine);
        return region;
    }

    private static void Verify(CramRegion region, int version = 0)
    {
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, version), $"page {i} differs");
        }
    }

    [Fact]
    public void FullPool_WritesBackCompressed_AndEveryPageReadsBack()
    {
        using var engine = CramEngine.Create(Options());
        using var region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        Assert.Equal((long)Pages * P, region.Reclaim(region.Length));
        WaitForWriteback(engine);

        CramStats s = engine.GetStats();
        Assert.True(s.WritebackPages > Pages / 2 && s.WritebackPages < Pages, $"written back {s.WritebackPages}: the coldest, down to the low watermark");
        Assert.Equal(s.WritebackPages, s.FilePages);
        Assert.True(s.PoolBytes <= 1 << 20);
        // Packed: the file holds about the compressed bytes, not 4 KiB per page.
        Assert.True(s.BackingFileLiveBytes == s.WritebackBytes, $"live {s.BackingFileLiveBytes} written {s.WritebackBytes}");
        Assert.True(s.BackingFileBytes <= s.WritebackBytes * 1.1 + BackingFile.SegmentBytes, $"file {s.BackingFileBytes} for {s.WritebackBytes} stored bytes");
        Assert.False(File.Exists(Path.Combine(_dir, "swap")), "the file is unlinked unless kept");

        Verify(region);
        s = engine.GetStats();
        Assert.True(s.RefaultsFromFile >= s.FilePages / 2, $"from file {s.RefaultsFromFile}");
        Assert.Equal(0, s.ChecksumFailures);
        Assert.Equal(0, s.ServiceErrors);
    }

    [Fact]
    public void PagesEvictedInOrder_LieInOrderInTheFile_AndASequentialReaderReadsThemInWindows()
    {
        using var engine = CramEngine.Create(Options());
        using var region = EvictedThroughThePool(engine);

        // Reclaim stores pages in eviction order (a batch the full pool cut short goes back to the
        // front of the FIFO, not the back); writeback takes entries in store order into consecutive
        // segments, and the entry that does not fit a segment's end opens the next one. Either at the
        // back of its queue would land a pool's worth of entries later: far extents that break
        // readahead windows.
        ulong previous = 0;
        int filePages = 0, outOfOrder = 0;
        for (long i = 0; i < Pages; i++)
        {
            NativeSlot* slot = FileSlot(engine, region, i);
            if (slot == null)
            {
                continue;
            }
            filePages++;
            outOfOrder += slot->Location < previous ? 1 : 0;
            previous = slot->Location;
        }
        Assert.True(filePages > Pages / 2, $"{filePages} pages in the file");
        Assert.True(BackingFile.SegmentBytes < filePages * 500L, "the file pages span several segments");
        Assert.Equal(0, outOfOrder);

        CramStats before = engine.GetStats();
        Verify(region); // in order: readahead windows of up to 128 pages, each one read of the file
        CramStats after = engine.GetStats();
        long fromFile = after.RefaultsFromFile - before.RefaultsFromFile, reads = after.FileReads - before.FileReads;
        Assert.True(fromFile >= filePages - 8, $"{fromFile} of {filePages} from the file");
        Assert.True(reads * 48 <= fromFile, $"{fromFile} pages from the file in {reads} reads");
    }

    [Fact]
    public void ASequentialReader_LeavesAFarExtentToItsOwnRead_AndKeepsItsWindow()
    {
        using var engine = CramEngine.Create(Options());
        using var region = engine.CreateRegion((long)Pages * P);
        using var filler = engine.CreateRegion((long)Pages * P);
        Fill(region);
        region.Reclaim(region.Length);
        WaitForWriteback(engine);
        // Every 200th page rewritten and evicted again, then pushed to the file's end behind other
        // data: its extent lies far from its neighbours'. Readahead leaves it to its own read and the
        // window goes on past it (it once ended there, and the reader's next fault began a new stream).
        var far = new HashSet<long>();
        for (long i = 100; i < Pages; i += 200)
        {
            TestPages.WriteCompressible(region.Pointer + i * P, i, 1);
            far.Add(i);
        }
        region.Reclaim(region.Length);
        Fill(filler);
        filler.Reclaim(filler.Length);
        WaitForWriteback(engine);
        int farInFile = 0;
        foreach (long i in far)
        {
            farInFile += FileSlot(engine, region, i) != null ? 1 : 0;
        }
        Assert.True(farInFile >= far.Count - 1, $"{farInFile} of {far.Count} rewritten pages written back again");

        CramStats before = engine.GetStats();
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, far.Contains(i) ? 1 : 0), $"page {i} differs");
        }
        CramStats after = engine.GetStats();
        long fromFile = after.RefaultsFromFile - before.RefaultsFromFile, reads = after.FileReads - before.FileReads;
        Assert.True(fromFile > Pages / 2, $"{fromFile} pages from the file");
        Assert.True(reads * 40 <= fromFile, $"{fromFile} pages from the file in {reads} reads (far pages: {farInFile})");
    }

    [Fact]
    public void ARandomFault_ReadsOnlyTheBlocksItsExtentCovers()
    {
        // Compressible pages (~1 KiB stored) read back in a scattered order, one fault each: each
        // read covers its extent's direct I/O blocks (512 bytes here), not whole pages (a 4 KiB-aligned
        // read of an extent that straddles a page boundary would be 8 KiB).
        using var engine = CramEngine.Create(Options());
        using var region = EvictedThroughThePool(engine);
        var pages = new List<int>();
        for (int i = Pages - 1; i >= 0; i -= 131) // backwards and far apart: no stream, so no readahead window
        {
            if (FileSlot(engine, region, i) != null)
            {
                pages.Add(i);
            }
        }
        Assert.True(pages.Count >= 10, $"{pages.Count} pages in the file");
        CramStats before = engine.GetStats();
        foreach (int i in pages)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i}");
        }
        CramStats after = engine.GetStats();
        long reads = after.FileReads - before.FileReads, bytes = after.FileReadBytes - before.FileReadBytes;
        Assert.True(reads >= pages.Count, $"{reads} reads for {pages.Count} pages");
        Assert.True(bytes < reads * (long)P, $"{bytes} bytes in {reads} reads: whole pages");
    }

    [Fact]
    public void ReadFault_KeepsTheFileCopy_SoEvictingAgainIsOnlyADrop()
    {
        using var engine = CramEngine.Create(Options());
        using var region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        region.Reclaim(region.Length);
        Verify(region); // read back: CLEAN, slots unchanged
        WaitForWriteback(engine);
        CramStats before = engine.GetStats();
        Assert.Equal((long)Pages * P, region.Reclaim(region.Length));
        WaitForWriteback(engine);
        CramStats after = engine.GetStats();
        Assert.Equal(before.CompressedPages, after.CompressedPages);
        Assert.Equal(before.WritebackPages, after.WritebackPages);
        Assert.Equal(before.FilePages, after.FilePages);
        Verify(region);
    }

    [Fact]
    public void WrittenPages_ReleaseTheirExtents_AndCompactionEmptiesSparseSegments()
    {
        using var engine = CramEngine.Create(Options());
        using var region = EvictedThroughThePool(engine);
        CramStats s = engine.GetStats();
        long live = s.BackingFileLiveBytes, segments = s.BackingFileSegments;
        // Rewrite every other page: their file copies die.
        for (int i = 0; i < Pages; i += 2)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        s = engine.GetStats();
        Assert.True(s.BackingFileLiveBytes < live * 3 / 4, $"live {s.BackingFileLiveBytes} of {live}");
        // Compaction now (writeback's thread may have begun it already: the dead share is over a quarter).
        engine.Maintenance.CompactBackingFile();
        s = engine.GetStats();
        Assert.True(s.BackingFileSegments < segments, $"segments {s.BackingFileSegments} of {segments}");
        Assert.True(s.BackingFileSegmentsCompacted > 0);
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, i % 2 == 0 ? 1 : 0), $"page {i}");
        }
    }

    [Fact]
    public void GhostMode_FullPool_StopsReclaim_RaisesPoolFullOnce_LosesNothing()
    {
        using var engine = CramEngine.Create(Options(file: null));
        var events = new System.Collections.Concurrent.ConcurrentQueue<CramTierEventArgs>();
        engine.TierEvent += (_, e) => events.Enqueue(e);
        using var region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        long evicted = region.Reclaim(region.Length);
        Assert.InRange(evicted, 1, (long)Pages * P - 1);
        region.Reclaim(region.Length);
        CramStats s = engine.GetStats();
        Assert.True(s.PoolFullRejections > 0);
        Assert.Equal(0, s.BackingFileBytes);
        Assert.Single(events, e => e.Kind == CramTierEventKind.PoolFull);
        Assert.Contains("ghost mode", events.First().Message);
        Verify(region);
    }

    /// <summary>A full disk, a broken one, a file made read-only under the engine: each write error is the same story.</summary>
    [Theory]
    [InlineData(28)] // ENOSPC
    [InlineData(5)]  // EIO
    [InlineData(1)]  // EPERM
    public void WriteFailure_LeavesEntriesInThePool_PausesWriteback_ThenResumes(int errno)
    {
        var error = (Errno)errno;
        var clock = new FakeTimeProvider();
        CramOptions options = Options();
        options.TimeProvider = clock; // the pause after a write error ends when the test says a second went by
        FailingFileDevice? disk = null;
        using var engine = CramEngine.CreateWithHooks(options, fileDevice: real => disk = new FailingFileDevice(real) { WriteError = error });
        var events = new System.Collections.Concurrent.ConcurrentQueue<CramTierEventKind>();
        engine.TierEvent += (_, e) => events.Enqueue(e.Kind); // raised on this thread or the engine's
        using var region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        region.Reclaim(region.Length);
        CramStats s = engine.GetStats();
        Assert.True(s.WriteErrors > 0);
        Assert.True(s.WritebackPaused);
        Assert.Equal(0, s.FilePages);
        Assert.Equal(0, s.BackingFileLiveBytes);
        Assert.True(SpinWait.SpinUntil(() => events.Contains(CramTierEventKind.WritebackPaused), 5000), string.Join(", ", events));
        Verify(region);

        Assert.True(disk!.FailedWrites > 0);
        disk.WriteError = Errno.None; // space returns
        region.Reclaim(region.Length);
        Assert.True(engine.GetStats().WritebackPaused); // still within the second's pause: no retry yet
        clock.Advance(TimeSpan.FromSeconds(1.1));      // the pause ends
        region.Reclaim(region.Length);
        s = engine.GetStats();
        Assert.False(s.WritebackPaused);
        Assert.True(s.FilePages > 0);
        Assert.True(SpinWait.SpinUntil(() => events.Contains(CramTierEventKind.WritebackResumed), 5000), string.Join(", ", events));
        Verify(region);
    }

    /// <summary>
    /// Writes that do not return (a frozen file system) stall writeback only: the reclaim worker
    /// goes on compressing into the pool and holds the resident limit, with writeback stuck in its
    /// first write; when the file system thaws, writeback catches up and every page reads back.
    /// </summary>
    [Fact]
    public void AFrozenFileSystem_StallsWritebackOnly_ReclaimGoesOnIntoThePool()
    {
        var options = new CramOptions
        {
            BackingFile = Path.Combine(_dir, "swap"),
            CompressedPoolLimitBytes = 16 << 20,
            PoolArenaBytes = 16 << 20,
            WritebackHighWatermark = 0.2,
            WritebackLowWatermark = 0.1,
            ResidentLimitBytes = 4 << 20,
        };
        FailingFileDevice? disk = null;
        using var engine = CramEngine.CreateWithHooks(options, fileDevice: real => disk = new FailingFileDevice(real));
        disk!.Freeze();
        try
        {
            const int pages = 8192; // 32 MiB, about 8 MiB stored: past the high watermark (3.2 MiB), under the pool's limit
            using var region = engine.CreateRegion((long)pages * P);
            for (int i = 0; i < pages; i++)
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
            }
            Assert.True(disk.WriteWaiting.Wait(TimeSpan.FromSeconds(30)), "writeback never started");
            Assert.True(SpinWait.SpinUntil(() => engine.GetStats().ResidentBytes <= options.ResidentLimitBytes, TimeSpan.FromSeconds(30)),
                $"reclaim stopped with writeback: {engine.GetStats().ResidentBytes >> 20} MiB resident");
            CramStats frozen = engine.GetStats();
            Assert.Equal(0, frozen.FilePages);
            Assert.True(frozen.PoolBytes > 2 * (long)(options.CompressedPoolLimitBytes * options.WritebackHighWatermark),
                $"{frozen.PoolBytes >> 10} KiB in the pool: reclaim did not go on past the high watermark");

            disk.Thaw();
            Assert.True(SpinWait.SpinUntil(() => engine.GetStats().FilePages > 0 &&
                engine.GetStats().PoolBytes <= (long)(options.CompressedPoolLimitBytes * options.WritebackHighWatermark), TimeSpan.FromSeconds(30)),
                $"writeback did not catch up: pool {engine.GetStats().PoolBytes >> 10} KiB");
            for (int i = 0; i < pages; i++)
            {
                Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
            }
        }
        finally
        {
            disk.Thaw(); // Dispose waits for a write in flight
        }
    }

    [Fact]
    public void RateLimit_BoundsWritebackPerSecond()
    {
        const long rate = 1 << 20;
        var options = Options();
        options.CompressedPoolLimitBytes = 64L << 20; // room for everything: only forced writeback moves data
        options.WritebackBytesPerSecond = rate;
        using var engine = CramEngine.Create(options);
        using var region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        region.Reclaim(region.Length);
        Thread.Sleep(300);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        engine.Maintenance.WriteBack(long.MaxValue);
        long first = engine.GetStats().WritebackBytes;
        // The allowance accrued (at most one second's worth) plus the one batch that may overshoot it.
        long batch = (long)Writeback.BatchEntries * P;
        Assert.InRange(first, 1, rate + batch);
        Thread.Sleep(600);
        engine.Maintenance.WriteBack(long.MaxValue);
        long second = engine.GetStats().WritebackBytes;
        Assert.True(second > first, "the allowance refills over time");
        double seconds = clock.Elapsed.TotalSeconds + 0.3;
        Assert.True(second <= rate * seconds + 2 * batch, $"{second} bytes in {seconds:0.00} s at {rate} B/s");
        Verify(region);
    }

    /// <summary>
    /// A real ENOSPC: the backing file on a 512 KiB tmpfs. Writeback fills it, pauses with the
    /// error, loses nothing; when the file system grows (remount), writeback resumes by itself.
    /// Needs root to mount; anyone else sees it skipped (the failure-injection test covers the path).
    /// </summary>
    [RootFact("mount a 512 KiB tmpfs")]
    public void FullFileSystem_PausesWriteback_AndResumesWhenSpaceReturns()
    {
        string mount = Path.Combine(_dir, "small");
        Directory.CreateDirectory(mount);
        Assert.Equal(0, Run("mount", $"-t tmpfs -o size=512k tmpfs {mount}"));
        try
        {
            var clock = new FakeTimeProvider();
            var options = Options();
            options.BackingFile = Path.Combine(mount, "swap");
            options.TimeProvider = clock;
            using var engine = CramEngine.Create(options);
            using var region = engine.CreateRegion((long)Pages * P);
            Fill(region);
            region.Reclaim(region.Length);
            CramStats s = engine.GetStats();
            Assert.True(s.WriteErrors > 0, "the file system filled up");
            Assert.True(s.WritebackPaused);
            Assert.InRange(s.BackingFileLiveBytes, 1, 512 << 10); // what fit went to the file
            Verify(region);

            Assert.Equal(0, Run("mount", $"-o remount,size=64m {mount}"));
            clock.Advance(TimeSpan.FromSeconds(1.1)); // the pause ends
            Fill(region, version: 1);
            region.Reclaim(region.Length);
            // Writeback runs on its own thread: it has resumed and goes on past what the small file held.
            Assert.True(SpinWait.SpinUntil(() => !engine.GetStats().WritebackPaused && engine.GetStats().BackingFileLiveBytes > 512 << 10, TimeSpan.FromSeconds(30)),
                $"live {engine.GetStats().BackingFileLiveBytes}, paused {engine.GetStats().WritebackPaused}");
            Verify(region, version: 1);
        }
        finally
        {
            Run("umount", mount);
        }
    }

    private static int Run(string program, string arguments)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(program, arguments) { RedirectStandardError = true })!;
        process.WaitForExit();
        return process.ExitCode;
    }

    [Fact]
    public void Reaper_FreesSlotsNoPageNames()
    {
        using var engine = CramEngine.Create(Options());
        using var region = engine.CreateRegion((long)Pages * P);
        Fill(region);
        region.Reclaim(region.Length);
        Assert.Equal(0, engine.Maintenance.SweepZombies()); // every slot in use is named
        // A slot a bug forgot: allocated, never named, never pushed stale.
        engine.Parts.Reclaimer.Exclusive(() => engine.Parts.Slots.AllocateSameFilled(0x0101010101010101));
        Assert.Equal(1, engine.Maintenance.SweepZombies());
        Assert.Equal(1, engine.GetStats().ZombiesReaped);
        Verify(region);
        Assert.Equal(0, engine.Maintenance.SweepZombies());
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void BackingFile_IsCreatedPrivate_AndNeverOverwritesAFile()
    {
        string kept = Path.Combine(_dir, "kept");
        var options = Options("kept");
        options.KeepBackingFile = true;
        using (var engine = CramEngine.Create(options))
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(kept));
        }
        var e = Assert.Throws<IOException>(() => CramEngine.Create(options));
        Assert.Contains("already exists", e.Message);
        Assert.Contains(kept, e.Message);
    }
}

/// <summary>Swap-ins racing with writeback and segment compaction of the same entries, with forced GCs.</summary>
[Trait("Category", TestCategory.Stress)]
public sealed unsafe class WritebackRaceTests
{
    private const int P = TestPages.PageSize;

    [Fact]
    public void SwapInsDuringWritebackAndCompaction_ReadTheRightBytes()
    {
        const int pages = 2048, rounds = 6;
        string dir = Directory.CreateTempSubdirectory("cramcore-race-").FullName;
        using var cleanup = new DeleteOnDispose(dir);
        using var engine = CramEngine.Create(new CramOptions
        {
            BackingFile = Path.Combine(dir, "swap"),
            CompressedPoolLimitBytes = 64L << 20, // never full: writeback is forced while readers fault
            PoolArenaBytes = 1L << 20,
            FaultServiceSpin = TimeSpan.Zero,
        });
        using var region = engine.CreateRegion((long)pages * P);
        var failures = new List<string>();
        long fromFile = 0;
        for (int round = 0; round < rounds; round++)
        {
            // Half the pages get a new version each round, so the file has dead extents to compact.
            for (int i = 0; i < pages; i++)
            {
                if (round == 0 || i % 2 == round % 2)
                {
                    TestPages.WriteCompressible(region.Pointer + (long)i * P, i, round);
                }
            }
            region.Reclaim(region.Length); // everything evicted: copies in the pool, or still in the file
            int r = round;
            using var go = new Barrier(3);
            var writer = new Thread(() =>
            {
                go.SignalAndWait();
                engine.Maintenance.WriteBack(long.MaxValue);   // moves pool entries while they are faulted in
                engine.Maintenance.CompactBackingFile();       // moves file entries while they are faulted in
            });
            var reader = new Thread(() =>
            {
                go.SignalAndWait();
                foreach (int i in Enumerable.Range(0, pages).OrderBy(i => (i * 7919) % pages))
                {
                    int version = r == 0 || i % 2 == r % 2 ? r : r - 1;
                    if (!TestPages.CheckCompressible(region.Pointer + (long)i * P, i, version))
                    {
                        lock (failures) { failures.Add($"round {r} page {i}"); }
                    }
                }
            });
            var collector = new Thread(() =>
            {
                go.SignalAndWait();
                for (int k = 0; k < 20; k++)
                {
                    GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                    Thread.Sleep(1);
                }
            });
            writer.Start();
            reader.Start();
            collector.Start();
            Assert.True(writer.Join(60_000) && reader.Join(60_000) && collector.Join(60_000), "a thread hung");
            fromFile = engine.GetStats().RefaultsFromFile;
        }
        CramStats s = engine.GetStats();
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(20)));
        Assert.True(s.WritebackPages > 0 && fromFile > 0, $"writeback {s.WritebackPages}, swap-ins from the file {fromFile}");
        Assert.True(s.BackingFileSegmentsCompacted > 0, $"compacted {s.BackingFileSegmentsCompacted}");
        Assert.Equal(0, s.ChecksumFailures);
        Assert.Equal(0, s.ServiceErrors);
        Assert.Equal(0, engine.Maintenance.SweepZombies());
    }
}
