using Xunit.Abstractions;

namespace CramCore.Tests;

/// <summary>
/// Writers, readers, continuous reclaim and forced GCs on one region; every page carries a version
/// its owner thread also keeps outside the region. Any lost or torn write fails the test. The
/// writeback variant adds a backing file with a pool limit far below the data, so pages move to
/// the file and back while they are written and read, plus a thread that keeps compacting the
/// file's segments, forcing writeback and sweeping for zombies; every copy is checksummed. The
/// readahead variant reads in sequential sweeps, so evicted runs come back through swap readahead
/// while writers write into them and reclaim evicts them again. The advice variant has owners
/// discard their own pages now and then (the page must then read zeros, and take writes again)
/// while a reader advises random ranges cold, hot, will-need (prefetch) and normal. The memory-limit
/// variant holds MemoryLimitBytes (16 MiB, the data's size) with a backing file, one page in five
/// random bytes: those are stored as they are and written back while they are written and read.
/// Readahead windows are mapped by one thread (Plain), four (Readahead) or the default (two on a
/// machine with more than one CPU). Each mode runs with both fault services. CI runs a few seconds each; set CRAMCORE_STRESS_SECONDS
/// for a long soak.
/// </summary>
[Trait("Category", TestCategory.Stress)]
public sealed unsafe class NoLostWriteStressTests(ITestOutputHelper output)
{
    /// <summary>The most metadata a populated page may cost beyond the fixed part (slot, handle, page-table and queue entries).</summary>
    private const long MetadataBytesPerPage = 128;

    private const int P = TestPages.PageSize;

    private static int StressSeconds => int.TryParse(Environment.GetEnvironmentVariable("CRAMCORE_STRESS_SECONDS"), out int s) && s > 0 ? s : 3;
    private static int SoakSeconds => int.TryParse(Environment.GetEnvironmentVariable("CRAMCORE_SOAK_SECONDS"), out int s) && s > 0 ? s : 30;

    public enum Mode
    {
        Plain,
        ResidentLimit,
        Writeback,
        Cram,
        Readahead,
        CleanCopies,
        Advice,
        MemoryLimit,
        FileReadahead,
        /// <summary>The remote tier on a real redis-server (durable), killed and restarted once mid-run; sweeps read windows back.</summary>
        Remote,
        /// <summary>The same over TLS (a TLS-only server asking for client certificates): each node's reader owns its session, faults queue for it.</summary>
        RemoteTls,
        /// <summary>
        /// Every tier at once — pool, backing file (with a limit, so it spills its oldest segments to the store), CRAM node,
        /// remote store — with writers, readers and sweeps, hints (discards among them), reclaim, forced GCs and one store
        /// restart, for CRAMCORE_SOAK_SECONDS (30 s a fault service by default; ten minutes by hand: 600).
        /// </summary>
        Soak,
        /// <summary>
        /// Recompression at a whole CPU (every other mode has it at the default share) racing writes, reads,
        /// reclaim, writeback to a file, segment and pool compaction, with the dictionary retrained every
        /// 300 ms, so dictionaries retire (their copies re-encoded) while faults decode with them.
        /// </summary>
        Recompression,
    }

    /// <summary>Every mode with each fault service: the service thread, and the faulting thread (faults resolved in CramCore's SIGBUS handler, racing eviction, writeback, hints and forced GCs).</summary>
    public static TheoryData<Mode, CramFaultService> Modes()
    {
        var data = new TheoryData<Mode, CramFaultService>();
        foreach (CramFaultService service in new[] { CramFaultService.ServiceThread, CramFaultService.FaultingThread })
        {
            foreach (Mode mode in Enum.GetValues<Mode>())
            {
                if (mode is not (Mode.Remote or Mode.RemoteTls or Mode.Soak) || RespStore.Missing is null) // no store here: the mode is left out (RemoteTierTests say why they skip)
                {
                    data.Add(mode, service);
                }
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void ConcurrentWritesReadsReclaimAndGc_LoseNothing(Mode mode, CramFaultService faultService)
    {
        const int pages = 4096, writers = 2;
        int seconds = mode == Mode.Soak ? SoakSeconds : StressSeconds;
        bool advice = mode is Mode.Advice or Mode.Soak, cram = mode is Mode.Cram or Mode.Soak;
        string dir = Directory.CreateTempSubdirectory("cramcore-stress-").FullName;
        using var cleanup = new DeleteOnDispose(dir);
        using CramCore.Cli.RespServer? server = mode is Mode.Remote or Mode.RemoteTls or Mode.Soak ? CramCore.Cli.RespServer.Start(durable: true, tls: mode == Mode.RemoteTls) : null;
        using CramCore.Redis.RedisRemoteStore? store = server is null ? null : CramCore.Redis.RedisRemoteStore.Connect(server.Configuration, server.Tls?.StoreOptions());
        using var engine = CramEngine.Create(new CramOptions
        {
            RemoteStore = store,
            RemoteReadTimeout = TimeSpan.FromSeconds(20), // the restart takes a moment: reads wait for it
            ResidentLimitBytes = mode is not (Mode.Plain or Mode.Readahead or Mode.CleanCopies or Mode.MemoryLimit or Mode.FileReadahead or Mode.Remote or Mode.RemoteTls or Mode.Soak) ? 2L << 20 : 0,
            // Advice: with the limit too, so prefetch meets it and hot pages have to go when it needs them.
            FaultServiceSpin = TimeSpan.Zero,
            FaultService = faultService,
            // Compression: the reclaim worker alone (Plain), or with three helpers on a 2-CPU machine
            // (ResidentLimit, Writeback: the helpers compress pages writes race), or the default.
            CompressionThreads = mode is Mode.Plain ? 1 : mode is Mode.ResidentLimit or Mode.Writeback ? 4 : 0,
            RecompressionCpuShare = mode == Mode.Recompression ? 1 : 0.1,
            // Readahead windows: mapped by the faulting (or service) thread alone (Plain), by it and
            // three helpers (Readahead: more installers than CPUs), or the default.
            ReadaheadThreads = mode is Mode.Plain ? 1 : mode is Mode.Readahead ? 4 : 0,
            BackingFile = mode is Mode.Writeback or Mode.MemoryLimit or Mode.FileReadahead or Mode.Soak or Mode.Recompression ? Path.Combine(dir, "swap") : null,
            BackingFileLimitBytes = mode == Mode.Soak ? 4L * BackingFile.SegmentBytes : 0, // the file spills its oldest segments to the store
            MemoryLimitBytes = mode == Mode.MemoryLimit ? 16L << 20 : 0, // the pool gets a quarter
            // CleanCopies: ghost mode with a pool of a quarter of the data, so reclaim keeps letting go
            // of the copies read-back pages keep while writers and readers race it.
            // FileReadahead: most copies in the file, read back by sweeps through the file window.
            CompressedPoolLimitBytes = mode is Mode.Writeback or Mode.Recompression ? 2L << 20 : mode is Mode.CleanCopies or Mode.FileReadahead or Mode.Remote or Mode.RemoteTls or Mode.Soak ? 1L << 20 : 0,
            PoolArenaBytes = mode is Mode.Writeback or Mode.Recompression or Mode.CleanCopies or Mode.MemoryLimit or Mode.FileReadahead or Mode.Remote or Mode.RemoteTls or Mode.Soak ? 1L << 20 : 64L << 20,
            CramDevice = cram ? new EmulatedCramDevice(1L << 20) : null, // room for part of the placeable pages
            WritableBudgetPages = cram ? 16 : 0,
        });
        if (mode == Mode.Recompression)
        {
            engine.Parts.Recompressor!.StartDelay = TimeSpan.Zero; // rounds at once, so they race everything else
        }
        // In the CRAM variant two pages in five are very compressible: the node places them, writes
        // make them writable within the budget or promote them, reclaim re-places or moves them out.
        bool VeryCompressible(int page) => cram && page % 5 is 2 or 3;
        bool IsRandom(int page) => mode == Mode.MemoryLimit && page % 5 == 1;
        void Write(byte* p, int page, long v)
        {
            if (IsRandom(page))
            {
                TestPages.WriteRandom(p, page * 1_000_003 + (int)v);
                ((long*)p)[0] = page;
                ((long*)p)[1] = v;
            }
            else if (VeryCompressible(page))
            {
                TestPages.WriteVeryCompressible(p, page, v);
            }
            else
            {
                TestPages.WriteCompressible(p, page, v);
            }
        }
        bool Check(byte* p, int page, long v) =>
            v < 0 ? TestPages.CheckFilledZero(p) : IsRandom(page) ? CheckRandom(p, page, v)
            : VeryCompressible(page) ? TestPages.CheckVeryCompressible(p, page, v) : TestPages.CheckCompressible(p, page, v);
        static bool CheckRandom(byte* p, int page, long v)
        {
            var expected = new byte[P];
            new Random(page * 1_000_003 + (int)v).NextBytes(expected);
            return ((long*)p)[0] == page && ((long*)p)[1] == v && new ReadOnlySpan<byte>(p + 16, P - 16).SequenceEqual(expected.AsSpan(16));
        }
        using var region = engine.CreateRegion((long)pages * P);
        long[] versions = new long[pages]; // owned per page by writer (page % writers)
        for (int i = 0; i < pages; i++)
        {
            if (i % 5 == 4)
            {
                TestPages.Fill(region.Pointer + (long)i * P, 0); // zero pages take another path
                versions[i] = -1;
            }
            else
            {
                Write(region.Pointer + (long)i * P, i, 0);
            }
        }
        var stop = DateTime.UtcNow.AddSeconds(seconds);
        var failures = new List<string>();
        long writes = 0, reads = 0, reclaimed = 0, gcs = 0, discards = 0, hints = 0;

        void Writer(int id)
        {
            var rng = new Random(id);
            while (DateTime.UtcNow < stop)
            {
                int page = rng.Next(pages / writers) * writers + id;
                byte* p = region.Pointer + (long)page * P;
                long v = versions[page];
                bool ok = Check(p, page, v);
                if (!ok)
                {
                    lock (failures) { failures.Add($"page {page}: expected version {v}, found {((long*)p)[1]} (index {((long*)p)[0]})"); }
                    return;
                }
                if (advice && rng.Next(8) == 0)
                {
                    region.Advise((long)page * P, P, CramAdvice.DontNeed); // whatever state it is in
                    versions[page] = -1;
                    Interlocked.Increment(ref discards);
                    continue;
                }
                v = v < 0 ? 1 : v + 1;
                if (rng.Next(4) == 0)
                {
                    ((long*)p)[1] = v; // partial write: only one word first, the rest must follow
                }
                Write(p, page, v);
                versions[page] = v;
                Interlocked.Increment(ref writes);
            }
        }

        void Reader(int seed)
        {
            var rng = new Random(seed);
            long sum = 0;
            while (DateTime.UtcNow < stop)
            {
                if (mode is Mode.Readahead or Mode.FileReadahead or Mode.Remote or Mode.RemoteTls || (advice && rng.Next(64) == 0))
                {
                    // A sweep: every page of a run in order, the pattern readahead follows (Advice: now
                    // and then, so windows are claimed and mapped while owners discard their pages).
                    int first = rng.Next(pages), length = advice ? rng.Next(16, 128) : rng.Next(16, 1024);
                    for (int i = first; i < Math.Min(pages, first + length); i++)
                    {
                        sum += ((long*)(region.Pointer + (long)i * P))[0];
                    }
                    Interlocked.Add(ref reads, length);
                    if (!advice)
                    {
                        continue;
                    }
                }
                else
                {
                    sum += ((long*)(region.Pointer + (long)rng.Next(pages) * P))[0];
                    Interlocked.Increment(ref reads);
                }
                if (advice && rng.Next(64) == 0)
                {
                    int first = rng.Next(pages), length = rng.Next(1, 256);
                    var advice = (CramAdvice)rng.Next((int)CramAdvice.WillNeed + 1); // every hint but DontNeed, which only owners give
                    region.Advise((long)first * P, (long)Math.Min(length, pages - first) * P, advice);
                    Interlocked.Increment(ref hints);
                }
            }
            GC.KeepAlive(sum);
        }

        void Reclaim()
        {
            var rng = new Random(99);
            while (DateTime.UtcNow < stop)
            {
                Interlocked.Add(ref reclaimed, region.Reclaim((long)rng.Next(1, 512) * P));
            }
        }

        void Collect()
        {
            while (DateTime.UtcNow < stop)
            {
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                Interlocked.Increment(ref gcs);
                Thread.Sleep(5);
            }
        }

        long maintenance = 0;
        // Halfway through, the store is killed and started again from its append-only file (by a shell of its own:
        // a managed thread here could be held up by a GC that waits for a fault that waits for the store): writes pause, reads wait.
        server?.RestartLater(TimeSpan.FromSeconds(seconds / 2.0), TimeSpan.FromMilliseconds(300));
        void Maintain()
        {
            while (DateTime.UtcNow < stop)
            {
                engine.Maintenance.CompactBackingFile();
                engine.Maintenance.WriteBack(256 << 10);
                if (engine.Maintenance.SweepZombies() != 0)
                {
                    lock (failures) { failures.Add("the reaper found a zombie slot during the run"); }
                }
                Interlocked.Increment(ref maintenance);
                Thread.Sleep(2);
            }
        }

        void Retrain()
        {
            while (DateTime.UtcNow < stop)
            {
                engine.Parts.Recompressor!.Retrain();
                engine.CompactPool(); // moves objects behind their handles while the recompressor rewrites slots
                Thread.Sleep(300);
            }
        }

        var threads = new List<Thread>();
        if (mode is Mode.Writeback or Mode.FileReadahead or Mode.Remote or Mode.RemoteTls or Mode.Soak or Mode.Recompression)
        {
            threads.Add(new Thread(Maintain));
        }
        if (mode == Mode.Recompression)
        {
            threads.Add(new Thread(Retrain));
        }
        for (int w = 0; w < writers; w++)
        {
            int id = w;
            threads.Add(new Thread(() => Writer(id)));
        }
        threads.Add(new Thread(() => Reader(7)));
        if (mode is Mode.Readahead or Mode.FileReadahead or Mode.Remote or Mode.RemoteTls or Mode.Soak)
        {
            threads.Add(new Thread(() => Reader(8)));
        }
        threads.Add(new Thread(Reclaim));
        threads.Add(new Thread(Collect));
        threads.ForEach(t => t.Start());
        foreach (var t in threads)
        {
            Assert.True(t.Join(TimeSpan.FromSeconds(seconds + 60)), "a thread hung");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures) + "\n" + engine.GetStats());
        bool restarted = server?.RestartedLater == true;

        region.Reclaim(region.Length); // and one last full eviction before verifying
        for (int i = 0; i < pages; i++)
        {
            byte* p = region.Pointer + (long)i * P;
            Assert.True(Check(p, i, versions[i]), $"page {i} version {versions[i]}");
        }
        CleanCopyTests.AssertCountersMatchThePageTable(engine, region, $"{mode}, at the end");
        var s = engine.GetStats();
        output.WriteLine($"writes {writes} reads {reads} reclaimed {reclaimed / P} pages, gcs {gcs}, maintenance rounds {maintenance}, discards {discards}, hints {hints}; {s}");
        Assert.Equal(0, s.ServiceErrors);
        Assert.Equal(0, s.ChecksumFailures);
        Assert.Equal(0, s.BadPageFaults);
        // Metadata follows what it describes (issue 24): the fixed part (the fault-in log, reclaim's two
        // chunk buffers; with a backing file its two segment buffers; with a remote store its segment buffer; the
        // recompressor's buffers, zstd contexts and dictionaries; writeback's buffers and encoder) and at most MetadataBytesPerPage
        // per populated page, whatever the mode hammered (measured 80-93 bytes a page here).
        long fixedBytes = (long)SharedLayout.FaultLogSize * sizeof(ulong) + EvictionPipeline.MetadataBytes +
            (engine.Parts.File is null ? 0 : 2L * BackingFile.SegmentBytes) + (engine.Parts.Remote is null ? 0 : RemoteSegments.SegmentBytes) +
            (engine.Parts.Recompressor?.MemoryBytes ?? 0) + (engine.Parts.Writeback?.MemoryBytes ?? 0);
        long populatedPages = s.LogicalBytes / P;
        Assert.True(s.MetadataBytes <= fixedBytes + MetadataBytesPerPage * populatedPages + (64 << 10),
            $"{mode}: metadata {s.MetadataBytes} bytes for {populatedPages} pages: {(s.MetadataBytes - fixedBytes) / Math.Max(1, populatedPages)} a page beyond the fixed {fixedBytes}");
        if (mode == Mode.Recompression) // the race was run: copies were rewritten and faults decoded them (a dictionary retiring under load: RecompressionTests)
        {
            Assert.True(s.RefaultsZstd > 0, $"{s.RefaultsZstd} zstd swap-ins, {s.ZstdDictionariesTrained} dictionaries trained");
        }
        Assert.Equal(0, engine.Maintenance.SweepZombies());
        if (mode == Mode.Cram)
        {
            Assert.True(s.CramPlacements > 0 && s.CramPromotions > 0 && s.CramMadeWritable > 0, s.ToString());
            Assert.True(s.CramMaxWritablePages <= 16);
            Assert.Equal(0, s.CramOverflowBytes);
        }
        if (mode is Mode.Readahead or Mode.Advice)
        {
            Assert.True(s.ReadaheadPages > 0, $"readahead {s.ReadaheadPages}");
        }
        if (mode == Mode.Advice)
        {
            Assert.True(s.DiscardedPages > 0 && s.DiscardedPages <= discards && hints > 0, $"discarded {s.DiscardedPages} of {discards} asked, hints {hints}");
        }
        if (mode == Mode.CleanCopies)
        {
            Assert.True(s.CleanCopiesReleasedBytes > 0, $"clean copies released {s.CleanCopiesReleasedBytes}");
        }
        if (mode == Mode.MemoryLimit)
        {
            Assert.True(s.UncompressedStoredPages > 0 && s.WritebackPages > 0 && s.RefaultsFromFile > 0,
                $"stored as they are {s.UncompressedStoredPages}, writeback {s.WritebackPages}, from file {s.RefaultsFromFile}");
            Assert.True(s.MemoryUsedBytes <= (16L << 20) + (4L << 20), $"memory used {s.MemoryUsedBytes}");
        }
        if (mode == Mode.Writeback)
        {
            Assert.True(s.WritebackPages > 0 && s.RefaultsFromFile > 0, $"writeback {s.WritebackPages}, from file {s.RefaultsFromFile}");
        }
        if (mode == Mode.Soak)
        {
            Assert.True(restarted && s.CramPlacements > 0 && s.WritebackPages > 0 && s.FilePages + s.RefaultsFromFile > 0 && s.RemoteFetches > 0 &&
                s.RemoteFetchFailures == 0 && s.DiscardedPages > 0 && hints > 0 && s.CramOverflowBytes == 0,
                $"restarted {restarted}, placed {s.CramPlacements}, writeback {s.WritebackPages}, file pages {s.FilePages} (refaults {s.RefaultsFromFile}), " +
                $"remote {s.RemotePages} (fetched {s.RemoteFetches}, failed {s.RemoteFetchFailures}), discarded {s.DiscardedPages}, hints {hints}");
        }
        if (mode is Mode.Remote or Mode.RemoteTls)
        {
            Assert.True(restarted && s.WritebackPages > 0 && s.RemoteFetches > 0 && s.RemoteFetchFailures == 0 && s.RemoteTlsFailures == 0,
                $"restarted {restarted} (maintenance rounds {maintenance}), to the store {s.WritebackPages}, fetched {s.RemoteFetches} in {s.RemoteRequests} requests, failed {s.RemoteFetchFailures}, retries {s.RemoteFetchRetries}, TLS failures {s.RemoteTlsFailures}");
        }
        if (mode == Mode.FileReadahead)
        {
            // Pages came back from the file ahead of the sweeps, several to a read.
            Assert.True(s.RefaultsFromFile > 0 && s.ReadaheadPages > 0 && s.FileReads < s.RefaultsFromFile,
                $"from file {s.RefaultsFromFile} in {s.FileReads} reads, readahead {s.ReadaheadPages}");
        }
        // The soak did real work (floors low enough for a loaded 2-core CI machine: these are not speed checks).
        Assert.True(s.Evictions > pages / 4, $"evictions {s.Evictions}");
        Assert.True(s.Refaults > 0);
        Assert.True(writes > 200, $"writes {writes}");
        Assert.True(gcs > 3, $"gcs {gcs}");
    }
}
