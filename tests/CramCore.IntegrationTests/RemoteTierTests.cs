using CramCore.Redis;

namespace CramCore.Tests;

/// <summary>
/// The remote tier against a real redis-server on loopback: the pool's coldest entries go there
/// sealed and packed, faults fetch them natively (both fault services), nothing is readable by
/// another client, dead segments and every key at dispose are deleted.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class RemoteTierTests
{
    private const int P = TestPages.PageSize;
    private const int Pages = 3000; // ~12 MiB logical, ~3 MiB compressed: three times the pool's limit

    private static CramOptions Options(RedisRemoteStore store, CramFaultService service, bool encrypt = true) => new()
    {
        RemoteStore = store,
        RemoteEncryption = encrypt,
        CompressedPoolLimitBytes = 1 << 20,
        PoolArenaBytes = 1 << 20,
        FaultService = service,
        RemoteReadTimeout = TimeSpan.FromSeconds(2),
    };

    private static void WaitForWriteback(CramEngine engine) =>
        Assert.True(SpinWait.SpinUntil(() => engine.Parts.Writeback!.Idle, TimeSpan.FromSeconds(30)), "writeback never went idle");

    private static CramRegion FillAndEvict(CramEngine engine, int version = 0)
    {
        CramRegion region = engine.CreateRegion((long)Pages * P);
        for (int i = 0; i < Pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, version);
        }
        region.Reclaim(region.Length);
        WaitForWriteback(engine);
        return region;
    }

    private static int RemotePagesOf(CramEngine engine, CramRegion region)
    {
        int n = 0;
        for (int i = 0; i < Pages; i++)
        {
            ulong pte = PageTableEntry.Load(region.PageTableEntries + i);
            if (PageTableEntry.State(pte) == PageState.Evicted && PageTableEntry.Slot(pte) != SharedLayout.ZeroSlot &&
                engine.Parts.Slots.Get(PageTableEntry.Slot(pte))->Backend == SlotBackend.Remote)
            {
                n++;
            }
        }
        return n;
    }

    [RespStoreTheory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void EvictedPages_GoToTheStoreSealed_AndComeBackIntact(CramFaultService service)
    {
        using RespServer server = RespServer.Start();
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.ToString());
        string prefix;
        using (CramEngine engine = CramEngine.Create(Options(store, service)))
        {
            prefix = engine.Options.RemoteKeyPrefix!;
            using CramRegion region = FillAndEvict(engine);
            int remote = RemotePagesOf(engine, region);
            Assert.True(remote > Pages / 2, $"only {remote} of {Pages} pages went to the store");
            CramStats before = engine.GetStats();
            Assert.Equal(remote, before.RemotePages);
            Assert.True(before.RemoteBytesWritten > 0 && before.RemoteStoredBytes > 0);
            long keys = long.Parse(server.Cli("dbsize"));
            Assert.True(keys > 0 && server.Cli("--scan", "--pattern", prefix + ":*").Split('\n').Length == keys, "every key carries the engine's prefix");
            Assert.True(long.Parse(server.Cli("pttl", prefix + ":1")) > 0, "segments carry a lease");

            for (int i = 0; i < Pages; i++)
            {
                Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i} differs");
            }
            CramStats after = engine.GetStats();
            Assert.True(after.RemoteFetches >= remote / 2, $"{after.RemoteFetches} fetches for {remote} remote pages");
            Assert.Equal(0, after.RemoteFetchFailures);
            Assert.Equal(0, after.BadPageFaults);
            Assert.True(after.RemoteOpenMeanMicroseconds > 0, "sealed entries were opened");
        }
        Assert.Equal("0", server.Cli("dbsize")); // Dispose deleted every key
    }

    [RespStoreFact]
    public void AnotherClient_ReadsNothing_ButCiphertext()
    {
        using RespServer server = RespServer.Start();
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.ToString());
        using CramEngine engine = CramEngine.Create(Options(store, CramFaultService.ServiceThread));
        using CramRegion region = FillAndEvict(engine);
        // The plain compressed bytes of a remote page never appear in its segment.
        for (int i = 0; i < Pages; i++)
        {
            ulong pte = PageTableEntry.Load(region.PageTableEntries + i);
            if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == SharedLayout.ZeroSlot)
            {
                continue;
            }
            NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(pte));
            if (slot->Backend != SlotBackend.Remote)
            {
                continue;
            }
            byte[] page = new byte[P];
            fixed (byte* p = page)
            {
                TestPages.WriteCompressible(p, i, 0);
            }
            byte[] compressed = new byte[K4os.Compression.LZ4.LZ4Codec.MaximumOutputSize(P)];
            int length = K4os.Compression.LZ4.LZ4Codec.Encode(page, compressed);
            byte[] value = new byte[RemoteSegmentsBytes];
            int read = store.ReadAsync(engine.Parts.Remote!.KeyOf(RemoteLocation.Segment(slot->Location)), 0, value, default).GetAwaiter().GetResult();
            Assert.True(read > 0);
            Assert.True(value.AsSpan(0, read).IndexOf(compressed.AsSpan(0, Math.Min(length, 64))) < 0, $"page {i}'s compressed bytes are readable on the store");
            return;
        }
        Assert.Fail("no page went to the store");
    }

    private const int RemoteSegmentsBytes = 256 * 1024;

    [RespStoreFact]
    public void Rewritten_Pages_KillTheirSegments_WhichAreDeleted()
    {
        using RespServer server = RespServer.Start();
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.ToString());
        using CramEngine engine = CramEngine.Create(Options(store, CramFaultService.ServiceThread, encrypt: false));
        using CramRegion region = FillAndEvict(engine);
        long keysBefore = long.Parse(server.Cli("dbsize"));
        Assert.True(keysBefore > 0);
        for (int i = 0; i < Pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1); // every copy goes stale
        }
        engine.Maintenance.WriteBack(0); // frees the stale copies and deletes the segments that died
        Assert.True(SpinWait.SpinUntil(() => long.Parse(server.Cli("dbsize")) == 0, TimeSpan.FromSeconds(10)),
            $"dead segments are deleted: {server.Cli("dbsize")} of {keysBefore} keys left");
        Assert.Equal(0, engine.GetStats().RemotePages);
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i} differs");
        }
    }
}
