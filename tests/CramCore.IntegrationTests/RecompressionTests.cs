using System.Diagnostics;
using CramCore.Storage;

namespace CramCore.Tests;

/// <summary>
/// Recompression (cramnative.h, "Codecs"; Storage/Recompressor.cs): the pool's cold LZ4 copies are
/// rewritten with zstd and a trained dictionary where that saves a size class, and every reader —
/// the service thread, the faulting thread's SIGBUS handler, the backing file's reads — decodes them;
/// a page that came back keeps its copy, a write frees it; a dictionary retires under load and is
/// removed once no copy names it. Races with faults, writes, eviction, writeback and compaction are in
/// <see cref="NoLostWriteStressTests"/> (mode Recompression).
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class RecompressionTests
{
    private const int P = TestPages.PageSize;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private static CramEngine Engine(CramFaultService service, string? backingFile = null)
    {
        CramEngine engine = CramEngine.Create(backingFile is null
            ? new CramOptions { FaultAroundPages = 1, FaultService = service, RecompressionCpuShare = 1 }
            : new CramOptions { FaultAroundPages = 1, FaultService = service, RecompressionCpuShare = 1, BackingFile = backingFile, CompressedPoolLimitBytes = 4L << 20, PoolArenaBytes = 1L << 20 });
        engine.Parts.Recompressor!.StartDelay = TimeSpan.Zero; // rounds at once: the tests wait for them
        return engine;
    }

    [Fact]
    public void ARound_WaitsItsStartDelay_SoAPageEvictedAndReadBackAtOnceKeepsItsLz4Copy()
    {
        using CramEngine engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, RecompressionCpuShare = 1 });
        Assert.Equal(TimeSpan.FromSeconds(1), engine.Parts.Recompressor!.StartDelay);
        using CramRegion region = engine.CreateRegion(256L * P);
        Fill(region, 256, 1);
        region.Reclaim(region.Length); // asks for a round, which waits a second
        AssertIntact(region, 256, 1);
        CramStats s = engine.GetStats();
        Assert.Equal(256, s.RefaultsLz4);
        Assert.Equal(0, s.RefaultsZstd);
    }

    /// <summary>Waits until the recompressor has nothing left to do (a round ended with no request pending) and returns the stats then.</summary>
    private static CramStats Settled(CramEngine engine)
    {
        Recompressor r = engine.Parts.Recompressor!;
        var clock = Stopwatch.StartNew();
        while (!r.Idle || r.Due)
        {
            Assert.True(clock.Elapsed < Patience, $"the recompressor did not settle: {engine.GetStats().RecompressedPages} recompressed");
            if (r.Idle && r.Due)
            {
                r.Request();
            }
            Thread.Sleep(5);
        }
        return engine.GetStats();
    }

    private static void Fill(CramRegion region, int pages, long version)
    {
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, version);
        }
    }

    /// <summary>A region of <paramref name="pages"/> compressible pages (version 1), every one evicted: LZ4 copies for the recompressor.</summary>
    private static CramRegion FilledAndEvicted(CramEngine engine, int pages)
    {
        CramRegion region = engine.CreateRegion((long)pages * P);
        Fill(region, pages, 1);
        region.Reclaim(region.Length);
        return region;
    }

    /// <summary>Every page read back and checked, last to first (one fault each: no readahead window).</summary>
    private static void AssertIntact(CramRegion region, int pages, long version)
    {
        for (int i = pages - 1; i >= 0; i--)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, version), $"page {i} differs");
        }
    }

    [Theory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void ColdCopies_AreRecompressed_SmallerAndIntact(CramFaultService service)
    {
        const int Pages = 2048;
        using CramEngine engine = Engine(service);
        using CramRegion region = FilledAndEvicted(engine, Pages);
        long lz4Bytes = engine.GetStats().StoredBytes;
        CramStats s = Settled(engine);
        Assert.Equal(1, s.ZstdDictionariesTrained);
        Assert.Equal(1, s.ZstdDictionaries);
        Assert.True(s.RecompressedPages > Pages / 2, $"{s.RecompressedPages} of {Pages} recompressed, {s.RecompressionKeptPages} kept");
        Assert.True(s.StoredBytes < lz4Bytes, $"stored {s.StoredBytes} B after against {lz4Bytes} B of LZ4");
        Assert.True(s.RecompressionBusyTime > TimeSpan.Zero);

        AssertIntact(region, Pages, 1); // every copy decoded by the fault service (the handler's static zstd context with the faulting thread)
        CramStats after = engine.GetStats();
        Assert.True(s.RecompressedPages == after.RefaultsZstd && after.Refaults == Pages, $"{after.RefaultsZstd} zstd swap-ins of {s.RecompressedPages} recompressed, {after.Refaults} swap-ins of {Pages} pages");
        Assert.Equal(0, after.ServiceErrors + after.ChecksumFailures + after.BadPageFaults);
    }

    [Fact]
    public void AWrittenPage_FreesItsZstdCopy_AndItsNextEvictionIsLz4()
    {
        const int Pages = 1024;
        using CramEngine engine = Engine(CramFaultService.ServiceThread);
        using CramRegion region = FilledAndEvicted(engine, Pages);
        long recompressed = Settled(engine).RecompressedPages;
        Assert.True(recompressed > 0);
        engine.Parts.Recompressor!.Suspended = true; // what follows is the fault service's and reclaim's alone
        Fill(region, Pages, 2); // write swap-ins: every copy goes stale, and the reaper frees it
        region.Reclaim(region.Length); // a pass drains the stale list first
        CramStats s = engine.GetStats();
        Assert.Equal(0, s.RecompressedPages); // no zstd copy left: the dictionary's count is back to 0
        Assert.Equal(recompressed, s.RefaultsZstd);
        AssertIntact(region, Pages, 2);
        CramStats after = engine.GetStats();
        Assert.Equal(recompressed, after.RefaultsZstd);
        Assert.Equal(Pages, after.RefaultsLz4 - s.RefaultsLz4); // the written pages' next eviction stored LZ4
    }

    [Fact]
    public void RecompressedCopies_GoToTheBackingFile_AndComeBackIntact()
    {
        string file = Path.Combine(Path.GetTempPath(), $"cramcore-recompress-{Guid.NewGuid():N}.swap");
        string directory = Directory.CreateTempSubdirectory("cramcore-recompress-").FullName;
        using var delete = new DeleteOnDispose(directory);
        file = Path.Combine(directory, "swap");
        const int Pages = 4096; // 16 MiB: far more than the 4 MiB pool holds
        using CramEngine engine = Engine(CramFaultService.ServiceThread, file);
        using CramRegion region = engine.CreateRegion((long)Pages * P);
        Fill(region, Pages / 2, 1);
        region.Reclaim(region.Length);
        Settled(engine); // the first half recompressed in the pool...
        for (int i = Pages / 2; i < Pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Reclaim(region.Length); // ...then written back to the file with the second half
        engine.Maintenance.WriteBack(long.MaxValue);
        CramStats s = engine.GetStats();
        Assert.True(s.FilePages > 0 && s.RecompressedPages > 0, $"file pages {s.FilePages}, recompressed {s.RecompressedPages}");
        AssertIntact(region, Pages, 1);
        CramStats after = engine.GetStats();
        Assert.True(after.RefaultsZstd > 0 && after.RefaultsFromFile > 0);
        Assert.Equal(0, after.ServiceErrors + after.ChecksumFailures + after.BadPageFaults);
    }

    [Theory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void Writeback_ReencodesTheLz4CopiesItMoves_FewerBytesToTheFile_AndTheyComeBackIntact(CramFaultService service)
    {
        string directory = Directory.CreateTempSubdirectory("cramcore-recompress-").FullName;
        using var delete = new DeleteOnDispose(directory);
        const int Pages = 4096; // 16 MiB: far more than the 4 MiB pool holds
        using CramEngine engine = CramEngine.Create(new CramOptions
        {
            FaultAroundPages = 1, FaultService = service, RecompressionCpuShare = 1, BackingFile = Path.Combine(directory, "swap"),
            CompressedPoolLimitBytes = 4L << 20, PoolArenaBytes = 1L << 20,
        });
        engine.Parts.Recompressor!.Suspended = true; // the pool's copies stay LZ4: every zstd copy here is writeback's
        using CramRegion region = FilledAndEvicted(engine, Pages);
        Assert.True(engine.GetStats().WritebackPages > 0, "the fill never filled the pool"); // (which rounds re-encode: WritebackOnFakeTests)
        // A round the fill asked for (for room) may still be pending: while a reclaim pass's request stands,
        // writeback re-encodes nothing. Wait for the thread to be idle, so the round below is the background's.
        Assert.True(SpinWait.SpinUntil(() => engine.Parts.Writeback!.Idle, Patience), "writeback never went idle");
        long pooled = engine.Parts.Slots.PoolSlots;
        Assert.True(pooled > 256, $"{pooled} pages left in the pool");
        engine.Parts.Writeback!.RunInBackground(long.MaxValue); // the writeback thread's own round, here for the whole pool
        CramStats s = engine.GetStats();
        Assert.True(s.WritebackRecompressedPages > pooled / 2, $"{s.WritebackRecompressedPages} of the {pooled} pooled pages written back re-encoded");
        int zstdInFile = 0, lz4InFile = 0;
        for (int i = 0; i < Pages; i++)
        {
            NativeSlot* slot = EvictedSlots.Of(engine, region, i, SlotBackend.File);
            if (slot != null)
            {
                bool zstd = (NativeSlot.LoadFlags(slot) & SlotFlags.Zstd) != 0;
                zstdInFile += zstd ? 1 : 0;
                lz4InFile += zstd ? 0 : 1;
            }
        }
        Assert.Equal(s.WritebackRecompressedPages, zstdInFile);
        Assert.Equal(s.WritebackRecompressedPages, s.RecompressedPages); // the slot table's count: nothing in the pool is zstd
        Assert.Equal(s.FilePages, zstdInFile + lz4InFile);
        Assert.True(s.WritebackRecompressionSavedBytes > 0 && s.WritebackBytes > 0, $"saved {s.WritebackRecompressionSavedBytes} B, wrote {s.WritebackBytes} B");
        Assert.True(s.RecompressionBusyTime > TimeSpan.Zero); // writeback's encoding is recompression's time

        AssertIntact(region, Pages, 1);
        CramStats after = engine.GetStats();
        Assert.Equal(zstdInFile, after.RefaultsZstd); // every one decoded from the file by the fault service
        Assert.Equal(Pages, after.Refaults);
        Assert.Equal(0, after.ServiceErrors + after.ChecksumFailures + after.BadPageFaults);
    }

    [Fact]
    public void Writeback_MovesAResidentPagesCleanCopy_AsItIs_AndTheCleanCopyCountsHold()
    {
        string directory = Directory.CreateTempSubdirectory("cramcore-recompress-").FullName;
        using var delete = new DeleteOnDispose(directory);
        const int Pages = 512;
        using CramEngine engine = Engine(CramFaultService.ServiceThread, Path.Combine(directory, "swap"));
        engine.Parts.Recompressor!.Suspended = true;
        using CramRegion region = FilledAndEvicted(engine, Pages);
        AssertIntact(region, Pages, 1); // read back: every page keeps its LZ4 copy as its clean copy
        CramStats before = engine.GetStats();
        Assert.Equal(Pages, before.CleanCopyPages);
        Assert.True(before.CleanCopyBytes > 0);

        engine.Maintenance.WriteBack(long.MaxValue); // read back since stored: each copy's second chance...
        engine.Maintenance.WriteBack(long.MaxValue); // ...then written back
        CramStats s = engine.GetStats();
        Assert.True(s.WritebackPages > 0, "nothing was written back");
        Assert.Equal(0, s.WritebackRecompressedPages); // a copy a resident page keeps keeps its codec and length
        Assert.Equal(before.CleanCopyBytes, s.CleanCopyBytes);

        Fill(region, Pages, 2); // writes: every clean copy released
        CramStats written = engine.GetStats();
        Assert.Equal(0, written.CleanCopyPages);
        Assert.Equal(0, written.CleanCopyBytes);
        region.Reclaim(region.Length);
        AssertIntact(region, Pages, 2);
        Assert.Equal(0, engine.GetStats().ServiceErrors);
    }

    [Fact]
    public void SlotsRecode_NamingNoPage_RefusesASlotAResidentPageKeeps()
    {
        using CramEngine engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, RecompressionCpuShare = 0 });
        using CramRegion region = FilledAndEvicted(engine, 2);
        Assert.True(TestPages.CheckCompressible(region.Pointer, 0, 1)); // page 0 back: CLEAN, keeping its copy; page 1 EVICTED
        ulong kept = PageTableEntry.Slot(PageTableEntry.Load(region.PageTableEntries));
        ulong evicted = PageTableEntry.Slot(PageTableEntry.Load(region.PageTableEntries + 1));
        long cleanBytes = engine.GetStats().CleanCopyBytes;
        NativeSlotRecode* recodes = stackalloc NativeSlotRecode[2];
        int i = 0;
        foreach (ulong id in new[] { kept, evicted })
        {
            NativeSlot* slot = engine.Parts.Slots.Get(id);
            Assert.Equal(SlotBackend.Pool, slot->Backend);
            recodes[i++] = new NativeSlotRecode // the same bytes, rewritten in place: only the refusal is under test
            {
                Slot = id, FromBackend = SlotBackend.Pool, FromLocation = slot->Location, ToBackend = SlotBackend.Pool, ToLocation = slot->Location,
                Region = SlotFlags.AnyPage, Checksum = slot->Checksum, Length = slot->Length, Flags = 0,
            };
        }
        Assert.Equal(Errno.None, engine.Parts.Engine.SlotsRecode(recodes, 2, out int recoded));
        Assert.Equal(1, recoded);
        Assert.Equal(0, recodes[0].Recoded); // a resident page's clean copy
        Assert.Equal(1, recodes[1].Recoded);
        Assert.Equal(cleanBytes, engine.GetStats().CleanCopyBytes);
        Assert.True(TestPages.CheckCompressible(region.Pointer + P, 1, 1));
        TestPages.WriteCompressible(region.Pointer, 0, 2);
        CramStats s = engine.GetStats();
        Assert.Equal(1, s.CleanCopyPages); // page 1 only
        Assert.Equal(engine.Parts.Slots.Get(evicted)->Length, s.CleanCopyBytes);
    }

    [Theory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void ADictionaryRetiresUnderLoad_ItsCopiesReencoded_NoPageDecodedWrong(CramFaultService service)
    {
        const int Pages = 2048;
        using CramEngine engine = Engine(service);
        using CramRegion region = FilledAndEvicted(engine, Pages);
        Assert.True(Settled(engine).RecompressedPages > 0);

        // Readers and a writer fault pages in while the dictionary is replaced and the old one retired.
        using var stop = new CancellationTokenSource();
        long[] versions = new long[Pages];
        Array.Fill(versions, 1);
        Exception? failure = null;
        var writer = new Thread(() =>
        {
            try
            {
                var rng = new Random(7);
                while (!stop.IsCancellationRequested)
                {
                    int i = rng.Next(Pages / 2); // the writer owns the first half
                    long v = versions[i] + 1;
                    TestPages.WriteCompressible(region.Pointer + (long)i * P, i, v);
                    Volatile.Write(ref versions[i], v);
                    if (rng.Next(64) == 0)
                    {
                        region.Reclaim(region.Length);
                    }
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        var reader = new Thread(() =>
        {
            try
            {
                var rng = new Random(11);
                while (!stop.IsCancellationRequested)
                {
                    int i = Pages / 2 + rng.Next(Pages / 2); // the reader checks the second half, never written
                    if (!TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1))
                    {
                        throw new InvalidOperationException($"page {i} read back wrong");
                    }
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        writer.Start();
        reader.Start();
        engine.Parts.Recompressor!.Retrain();
        var clock = Stopwatch.StartNew();
        while (engine.GetStats().ZstdDictionariesRetired == 0 && failure is null)
        {
            Assert.True(clock.Elapsed < Patience, $"no dictionary retired: {engine.GetStats()}");
            engine.Parts.Recompressor.Request();
            GC.Collect(); // forced GCs while native threads decode and rewrite
            Thread.Sleep(10);
        }
        stop.Cancel();
        writer.Join();
        reader.Join();
        Assert.Null(failure);
        CramStats s = engine.GetStats();
        Assert.Equal(2, s.ZstdDictionariesTrained);
        Assert.Equal(1, s.ZstdDictionaries); // the new one; the retired one is gone from the fault service and the encoder
        Assert.Equal(0, s.ServiceErrors + s.ChecksumFailures + s.BadPageFaults);
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, i < Pages / 2 ? versions[i] : 1), $"page {i}");
        }
    }

    [Fact]
    public void AdvisedCold_IsRecompressed_WithoutWaitingForTheDistance()
    {
        const int Pages = 2048;
        using CramEngine engine = Engine(CramFaultService.ServiceThread);
        using CramRegion region = engine.CreateRegion((long)Pages * P);
        Fill(region, Pages, 1);
        region.Reclaim(512L * P); // a quarter evicted, three quarters resident: within the working set's distance, none is cold yet
        CramStats s = Settled(engine);
        Assert.Equal(0, s.RecompressedPages);
        region.Advise(0, 256L * P, CramAdvice.Cold); // the application says these are cold
        s = Settled(engine);
        int zstd = 0, lz4 = 0;
        for (int i = 0; i < 512; i++)
        {
            NativeSlot* slot = EvictedSlots.Of(engine, region, i, SlotBackend.Pool);
            if (slot != null && (NativeSlot.LoadFlags(slot) & SlotFlags.Zstd) != 0)
            {
                Assert.True(i < 256, $"page {i}, not advised cold, was recompressed");
                zstd++;
            }
            else if (slot != null && i >= 256)
            {
                lz4++;
            }
        }
        Assert.True(zstd > 128 && lz4 > 128, $"{zstd} advised pages recompressed, {lz4} others left LZ4; stats {s.RecompressedPages}");
        AssertIntact(region, Pages, 1);
    }

    [Theory]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void CpuShare_OutOfRange_IsRefused(double share)
    {
        var e = Assert.Throws<ArgumentException>(() => CramEngine.Create(new CramOptions { RecompressionCpuShare = share }));
        Assert.Equal("RecompressionCpuShare", e.ParamName);
    }

    [Fact]
    public void ZeroShare_NoRecompressor()
    {
        using CramEngine engine = CramEngine.Create(new CramOptions { RecompressionCpuShare = 0 });
        Assert.Null(engine.Parts.Recompressor);
        using CramRegion region = TestPages.FilledRegion(engine, 256);
        region.Reclaim(region.Length);
        Assert.Equal(0, engine.GetStats().RecompressedPages);
    }
}
