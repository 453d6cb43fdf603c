using CramCore.Tests.Fakes;
using Microsoft.Extensions.Time.Testing;

namespace CramCore.Tests;

/// <summary>
/// Writeback on the in-memory engine with a real backing file: stored entries move to the file
/// still compressed (one slot rewrite each), read back from it, and segments whose entries died are
/// compacted; a failed write pauses writeback and loses nothing.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class WritebackOnFakeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cram-fake-writeback-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private CramOptions Options() => new()
    {
        BackingFile = Path.Combine(_dir, "swap"),
        PoolArenaBytes = 1 << 20,
        CompressedPoolLimitBytes = 1 << 20,
    };

    [Fact]
    public void StoredEntries_MoveToTheFileCompressed_AndReadBackFromIt()
    {
        using var stack = new FakeStack(Options());
        const int pages = 256;
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        long pooled = stack.Slots.PoolSlots, stored = stack.Slots.StoredBytes;
        Assert.Equal(pages - pages / 4, pooled);

        long moved = stack.Writeback!.Run(force: long.MaxValue);

        Assert.Equal(pooled, moved);
        Assert.Equal(pooled, stack.Slots.FileSlots);
        Assert.Equal(0, stack.Slots.PoolSlots);
        Assert.InRange(stack.File!.LiveBytes, stored, stored); // the compressed bytes, not pages
        Assert.True(stack.File.LiveBytes < pooled * SharedLayout.PageSize, $"{stack.File.LiveBytes} bytes for {pooled} pages");
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, 1), $"page {i}");
        }
        Assert.Equal((ulong)pooled, stack.Shared->Stats.FaultsSwapinFile);
        Assert.Equal(0, stack.Engine.ChecksumFailures);
    }

    [Fact]
    public void OnlyTheBackgroundRound_ReencodesCopies_AReclaimPassWaitingForRoomOrACallerMovesThemAsTheyAre()
    {
        CramOptions options = Options();
        options.RecompressionCpuShare = 1; // no budget: only the policy decides
        using var stack = new FakeStack(options, null, null, recompressor: true);
        const int pages = 1024; // a batch (256 entries) for room, one for the caller, the rest for the background
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        Writeback w = stack.Writeback!;

        Assert.True(w.MakeRoom()); // a reclaim pass waiting for room (no thread here: the caller writes back)
        long forRoom = w.Pages;
        Assert.True(w.Run(force: 8 << 10) > 0); // a caller of CramMaintenance.WriteBack
        Assert.Equal(0, w.RecompressedPages);

        long moved = w.RunInBackground(force: long.MaxValue); // the writeback thread's own round
        Assert.True(moved > 0);
        Assert.Equal(moved, w.RecompressedPages); // every one an LZ4 copy that zstd made smaller
        Assert.Equal(moved, stack.Slots.ZstdSlots);
        Assert.True(w.RecompressedBytesSaved > 0);
        Assert.True(forRoom > 0);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, 1), $"page {i}");
        }
        Assert.Equal(0, stack.Engine.ChecksumFailures);
    }

    [Fact]
    public void SegmentsWhoseEntriesDied_AreCompacted_AndTheLiveOnesStillReadBack()
    {
        using var stack = new FakeStack(Options());
        const int pages = 512;
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        stack.Writeback!.Run(force: long.MaxValue);
        long segments = stack.File!.Segments;
        Assert.True(segments >= 2, $"{segments} segments");
        for (ulong i = 0; i < pages; i += 4) // three in four entries die: their pages are written
        {
            for (ulong k = i + 1; k < i + 4; k++)
            {
                stack.Engine.Write(r, k);
                ReclaimOnFakeTests.Fill(stack, r, k, version: 2);
            }
        }
        stack.Reaper.Drain();
        Assert.True(stack.File.DeadBytes > stack.File.LiveBytes);

        int emptied = stack.Writeback.CompactSegments(force: true);

        Assert.True(emptied > 0);
        Assert.True(stack.File.DeadBytes < stack.File.LiveBytes, $"dead {stack.File.DeadBytes}, live {stack.File.LiveBytes}");
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, i % 4 == 0 ? 1 : 2), $"page {i}");
        }
        Assert.Equal(0, stack.Engine.ChecksumFailures);
    }

    /// <summary>
    /// The write runs without the maintenance lock: while it is in flight, a quarter of the entries
    /// being written die (their pages are rewritten), the reaper frees their slots and pool objects,
    /// and the rewritten pages are evicted again into slots and pool objects that may be the very
    /// ones freed. Nothing that changed may be moved to the bytes written for what was there before.
    /// </summary>
    [Fact]
    public void EntriesThatChangeWhileTheWriteIsInFlight_StayWhereTheyAre_AndEveryPageReadsBack()
    {
        var disk = new FailingFileDevice(NativeFileDevice.Instance);
        using var stack = new FakeStack(Options(), pageOperations: null, disk);
        const int pages = 256;
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        long pooled = stack.Slots.PoolSlots;
        disk.Freeze();
        long moved = 0;
        var writer = new Thread(() => moved = stack.Writeback!.Run(force: long.MaxValue));
        writer.Start();
        Assert.True(disk.WriteWaiting.Wait(TimeSpan.FromSeconds(30)), "writeback never wrote");

        for (ulong i = 2; i < pages; i += 4)
        {
            stack.Engine.Write(r, i);
            ReclaimOnFakeTests.Fill(stack, r, i, version: 2);
        }
        stack.Reclaimer.Reclaim(pages, null); // frees the dead entries (the reaper), then stores the rewritten pages anew
        disk.Thaw();
        Assert.True(writer.Join(TimeSpan.FromSeconds(30)), "writeback did not finish after the thaw");

        // Every rewritten entry the blocked batch held was left where it was; the later batches
        // wrote the new entries (the rewritten pages' second eviction) like any other.
        Assert.True(stack.Writeback!.SkippedMoves > 0, "no entry changed under the write");
        Assert.Equal(pooled, moved);
        Assert.Equal(0, stack.Slots.PoolSlots);
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, i % 4 == 2 ? 2 : 1), $"page {i}");
        }
        Assert.Equal(0, stack.Engine.ChecksumFailures);
    }

    [Fact]
    public void AFailedWrite_PausesWriteback_ForASecondOfTheEnginesClock_ThenItResumes()
    {
        var clock = new FakeTimeProvider();
        CramOptions options = Options();
        options.TimeProvider = clock;
        var disk = new FailingFileDevice(NativeFileDevice.Instance) { WriteError = Errno.EIO };
        using var stack = new FakeStack(options, pageOperations: null, disk);
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, 128);
        stack.Reclaimer.Reclaim(128, null);

        Assert.Equal(0, stack.Writeback!.Run(force: long.MaxValue));
        Assert.Equal(Errno.EIO, stack.Writeback.PausedBy);
        Assert.Contains(CramTierEventKind.WritebackPaused, stack.TakeEvents());
        disk.WriteError = Errno.None; // the device works again, but the pause holds for a second
        Assert.Equal(0, stack.Writeback.Run(force: long.MaxValue));
        clock.Advance(TimeSpan.FromSeconds(0.9));
        Assert.Equal(0, stack.Writeback.Run(force: long.MaxValue));

        clock.Advance(TimeSpan.FromSeconds(0.2));
        long pooled = stack.Slots.PoolSlots;
        Assert.Equal(pooled, stack.Writeback.Run(force: long.MaxValue));
        Assert.Equal(pooled, stack.Slots.FileSlots);
        Assert.Equal(Errno.None, stack.Writeback.PausedBy);
        Assert.Equal([CramTierEventKind.WritebackResumed], stack.TakeEvents());
        for (ulong i = 0; i < 128; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, 1), $"page {i}");
        }
    }
}
