using CramCore.Tests.Fakes;
using Microsoft.Extensions.Time.Testing;

namespace CramCore.Tests;

/// <summary>
/// The remote tier's write half on the in-memory engine, against the public contract implemented in
/// memory (<see cref="InMemoryRemoteStore"/>): writeback packs the pool's entries into sealed
/// segments, one value each; a segment whose entries all died is deleted; a store that refuses writes
/// pauses writeback and loses nothing; leases are renewed; a failover republishes the nodes;
/// nothing is left on the store at dispose.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class RemoteTierOnFakeTests
{
    private static CramOptions Options(InMemoryRemoteStore store, bool encrypt = true, TimeProvider? time = null) => new()
    {
        RemoteStore = store,
        RemoteEncryption = encrypt,
        PoolArenaBytes = 1 << 20,
        CompressedPoolLimitBytes = 1 << 20,
        TimeProvider = time ?? TimeProvider.System,
    };

    /// <summary>The remote slots of the region's evicted pages: location, length, checksum.</summary>
    private static List<(ulong, int, uint)> RemoteExtents(FakeStack stack, RegionMapping r, ulong pages)
    {
        var extents = new List<(ulong, int, uint)>();
        for (ulong i = 0; i < pages; i++)
        {
            ulong pte = PageTableEntry.Load(r.PageTableEntries + i);
            if (PageTableEntry.State(pte) == PageState.Evicted && PageTableEntry.Slot(pte) != SharedLayout.ZeroSlot)
            {
                NativeSlot* s = stack.Slots.Get(PageTableEntry.Slot(pte));
                if (s->Backend == SlotBackend.Remote)
                {
                    extents.Add((s->Location, s->Length, s->Checksum));
                }
            }
        }
        return extents;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PoolEntries_MoveToSealedSegments_OneValueEach(bool encrypt)
    {
        var store = new InMemoryRemoteStore(nodes: 3);
        using var stack = new FakeStack(Options(store, encrypt));
        const int pages = 512;
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        long pooled = stack.Slots.PoolSlots, stored = stack.Slots.StoredBytes;

        long moved = stack.Writeback!.Run(force: long.MaxValue);

        Assert.Equal(pooled, moved);
        Assert.Equal(pooled, stack.Slots.RemoteSlots);
        Assert.Equal(0, stack.Slots.PoolSlots);
        int tag = encrypt ? RemoteLocation.TagBytes : 0;
        Assert.Equal(stored + pooled * tag, stack.Remote!.LiveBytes); // compressed bytes (and a tag each), not pages
        Assert.Equal(store.Keys.Count, store.Writes); // a segment is one value, written once
        Assert.True(store.Keys.Count >= 2 && store.Keys.All(k => k.StartsWith(stack.Options.RemoteKeyPrefix + ":", StringComparison.Ordinal)));
        Assert.Equal(stack.Remote.UsedBytes, store.Keys.Sum(k => (long)store.Value(k).Length));
        List<(ulong, int, uint)> extents = RemoteExtents(stack, r, pages);
        Assert.Equal(pooled, extents.Count);
        Assert.Equal(0, stack.Remote.CountUnreadable(extents)); // each opens under its nonce and matches its checksum
        Assert.All(extents, e => Assert.Equal(stack.Remote.KeyOf(RemoteLocation.Segment(e.Item1)) is var key ? store.NodeOf(key) : -1, RemoteLocation.Node(e.Item1)));
        Assert.Equal(3, stack.PublishedNodes.Count);

        // Another engine's key (or a flipped byte) opens nothing: a sealed extent is refused like a bad checksum.
        (ulong location, _, _) = extents[0];
        byte[] value = store.Value(stack.Remote.KeyOf(RemoteLocation.Segment(location)));
        value[RemoteLocation.Offset(location) + 3] ^= 0x10;
        Assert.Equal(1, stack.Remote.CountUnreadable([extents[0]]));
    }

    [Fact]
    public void SegmentsWhoseEntriesAllDied_AreDeleted_AndDisposeLeavesNothing()
    {
        var time = new FakeTimeProvider();
        var store = new InMemoryRemoteStore(time: time);
        using (var stack = new FakeStack(Options(store, time: time)))
        {
            const int pages = 512;
            RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
            stack.Reclaimer.Reclaim(pages, null);
            stack.Writeback!.Run(force: long.MaxValue);
            int keys = store.Keys.Count;
            Assert.True(keys >= 2);
            for (ulong i = 0; i < pages / 2; i++) // the first half's pages are written: their copies die
            {
                stack.Engine.Write(r, i);
                ReclaimOnFakeTests.Fill(stack, r, i, version: 2);
            }
            stack.Reaper.Drain();
            Assert.Equal(0, stack.Writeback.PunchDeadSegments()); // not yet: a fetch that began before a move may still read them
            time.Advance(stack.Options.RemoteReadTimeout + TimeSpan.FromSeconds(2));
            Assert.True(stack.Writeback.PunchDeadSegments() > 0);
            Assert.InRange(store.Keys.Count, 1, keys - 1);
            Assert.Equal(0, stack.Remote!.CountUnreadable(RemoteExtents(stack, r, pages)));
        }
        Assert.Empty(store.Keys); // Dispose deleted the rest
    }

    [Fact]
    public void MostlyDeadSegments_AreCompacted_OnTheStore_AndTheLiveEntriesStillReadBack()
    {
        var time = new FakeTimeProvider();
        var store = new InMemoryRemoteStore(time: time);
        using var stack = new FakeStack(Options(store, time: time));
        const int pages = 768;
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        stack.Writeback!.Run(force: long.MaxValue);
        for (ulong i = 0; i < pages; i += 4) // three in four entries die: their pages are written
        {
            for (ulong k = i + 1; k < i + 4; k++)
            {
                stack.Engine.Write(r, k);
                ReclaimOnFakeTests.Fill(stack, r, k, version: 2);
            }
        }
        stack.Reaper.Drain();
        Assert.True(stack.Remote!.DeadBytes > stack.Remote.LiveBytes);
        long remoteBefore = stack.Slots.RemoteSlots;

        int emptied = stack.Writeback.CompactSegments(force: true);

        Assert.True(emptied > 0);
        Assert.Equal(remoteBefore, stack.Slots.RemoteSlots); // moved within the store, not lost
        time.Advance(stack.Options.RemoteReadTimeout + TimeSpan.FromSeconds(2));
        stack.Writeback.PunchDeadSegments();
        Assert.True(stack.Remote.DeadBytes < stack.Remote.LiveBytes, $"dead {stack.Remote.DeadBytes}, live {stack.Remote.LiveBytes}");
        Assert.Equal(stack.Remote.UsedBytes, store.Keys.Sum(k => (long)store.Value(k).Length)); // the emptied segments are gone from the store
        Assert.Equal(0, stack.Remote.CountUnreadable(RemoteExtents(stack, r, pages)));
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, i % 4 == 0 ? 1 : 2), $"page {i}");
        }
    }

    [Fact]
    public void AStoreThatRefusesWrites_PausesWriteback_AndLosesNothing()
    {
        var store = new InMemoryRemoteStore { FailWrites = true };
        var time = new FakeTimeProvider();
        using var stack = new FakeStack(Options(store, time: time));
        const int pages = 256;
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        long pooled = stack.Slots.PoolSlots;

        Assert.Equal(0, stack.Writeback!.Run(force: long.MaxValue));

        Assert.Equal(pooled, stack.Slots.PoolSlots); // every entry stayed in the pool
        Assert.Equal(0, stack.Slots.RemoteSlots);
        Assert.Equal(Errno.EIO, stack.Writeback.PausedBy);
        Assert.Contains("unreachable", stack.Remote!.LastError);
        Assert.Contains(CramTierEventKind.WritebackPaused, stack.TakeEvents());

        store.FailWrites = false;
        time.Advance(TimeSpan.FromSeconds(2)); // the pause ends
        Assert.Equal(pooled, stack.Writeback.Run(force: long.MaxValue));
        Assert.Equal(Errno.None, stack.Writeback.PausedBy);
        Assert.Contains(CramTierEventKind.WritebackResumed, stack.TakeEvents());
        for (ulong i = 0; i < pages; i++)
        {
            Assert.True(ReclaimOnFakeTests.Check(stack, r, i, 1), $"page {i}"); // from the store, through the read half's stand-in
        }
    }

    [Fact]
    public void Leases_AreRenewed_AndAFailover_IsPublishedAtOnce()
    {
        var time = new FakeTimeProvider();
        var store = new InMemoryRemoteStore(nodes: 2, time);
        using var stack = new FakeStack(Options(store, time: time));
        RegionMapping r = ReclaimOnFakeTests.Filled(stack, 256);
        stack.Reclaimer.Reclaim(256, null);
        stack.Writeback!.Run(force: long.MaxValue);
        int keys = store.Keys.Count;
        Assert.True(keys > 0);
        Assert.False(stack.Remote!.UpkeepDue);

        time.Advance(stack.Options.RemoteLease / 3 + TimeSpan.FromSeconds(1));
        Assert.True(stack.Remote.UpkeepDue);
        stack.Remote.Upkeep(stack.Maintenance);
        Assert.Equal(keys, store.Renewals);
        time.Advance(stack.Options.RemoteLease - TimeSpan.FromSeconds(1)); // past the first lease: renewed keys live on
        Assert.Equal(keys, store.Keys.Count);

        var promoted = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 7999);
        store.MoveNode(1, promoted);
        Assert.Equal(promoted, stack.PublishedNodes[1]);
        GC.KeepAlive(r);
    }

    [Fact]
    public void ACapacity_StopsWriteback_AtIt()
    {
        var store = new InMemoryRemoteStore { CapacityBytes = RemoteSegments.SegmentBytes };
        using var stack = new FakeStack(Options(store));
        const int pages = 1024; // more than one segment's worth
        ReclaimOnFakeTests.Filled(stack, pages);
        stack.Reclaimer.Reclaim(pages, null);
        stack.Writeback!.Run(force: long.MaxValue);
        Assert.True(stack.Writeback.FileFull);
        Assert.True(stack.Remote!.UsedBytes <= store.CapacityBytes);
        Assert.True(stack.Slots.PoolSlots > 0); // the rest stayed in the pool
    }

    [Fact]
    public void AFullFile_SpillsItsOldestSegments_ToTheStore_AndEveryPageReadsBack()
    {
        string dir = Directory.CreateTempSubdirectory("cram-fake-spill-").FullName;
        try
        {
            var store = new InMemoryRemoteStore();
            CramOptions options = Options(store);
            options.BackingFile = Path.Combine(dir, "swap");
            options.BackingFileLimitBytes = 4L * BackingFile.SegmentBytes;
            using var stack = new FakeStack(options);
            const int pages = 2048;
            RegionMapping r = ReclaimOnFakeTests.Filled(stack, pages);
            for (int round = 0; round == 0 || (round < 8 && stack.Slots.PoolSlots > 0); round++)
            {
                stack.Reclaimer.Reclaim(pages, null);
                stack.Writeback!.Run(force: long.MaxValue); // into the file, until it is full
                stack.Writeback.Spill();                    // its oldest segments to the store
            }
            Assert.True(stack.Slots.FileSlots > 0 && stack.Slots.RemoteSlots > 0, $"file {stack.Slots.FileSlots}, remote {stack.Slots.RemoteSlots}, pool {stack.Slots.PoolSlots}");
            Assert.True(stack.Writeback!.SpilledPages == stack.Slots.RemoteSlots, $"spilled {stack.Writeback.SpilledPages}, remote {stack.Slots.RemoteSlots}");
            Assert.True(stack.File!.FileBytes <= options.BackingFileLimitBytes);
            Assert.Equal(0, stack.Remote!.CountUnreadable(RemoteExtents(stack, r, pages)));
            for (ulong i = 0; i < pages; i++)
            {
                Assert.True(ReclaimOnFakeTests.Check(stack, r, i, 1), $"page {i}");
            }
            Assert.Equal(0, stack.Engine.ChecksumFailures);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
