using System.Net;
using CramCore.Cli;
using CramCore.Redis;
using CramCore.Remote;

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

    private static CramOptions Options(ICramRemoteStore store, CramFaultService service, bool encrypt = true) => new()
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

    /// <summary>The slot of an evicted page whose copy is on the store, or null.</summary>
    private static NativeSlot* RemoteSlot(CramEngine engine, CramRegion region, int page) => EvictedSlots.Of(engine, region, page, SlotBackend.Remote);

    private static int RemotePagesOf(CramEngine engine, CramRegion region)
    {
        int n = 0;
        for (int i = 0; i < Pages; i++)
        {
            if (RemoteSlot(engine, region, i) != null)
            {
                n++;
            }
        }
        return n;
    }

    /// <summary>Copies recompressed in the pool keep their codec on the store: the native fetchers decode zstd with the engine's dictionary (cramnative.h, "Codecs").</summary>
    [RespStoreTheory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void RecompressedCopies_GoToTheStore_AndTheFetchersDecodeThem(CramFaultService service)
    {
        using RespServer server = RespServer.Start();
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.ToString());
        CramOptions options = Options(store, service);
        options.CompressedPoolLimitBytes = 4L << 20; // room for the first half, recompressed, before writeback
        options.RecompressionCpuShare = 1;
        using CramEngine engine = CramEngine.Create(options);
        engine.Parts.Recompressor!.StartDelay = TimeSpan.Zero;
        using CramRegion region = engine.CreateRegion((long)Pages * P);
        for (int i = 0; i < Pages / 2; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 0);
        }
        region.Reclaim(region.Length);
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().RecompressedPages > Pages / 4 && engine.Parts.Recompressor.Idle, TimeSpan.FromSeconds(60)), "nothing was recompressed");
        for (int i = Pages / 2; i < Pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 0);
        }
        region.Reclaim(region.Length);
        engine.Maintenance.WriteBack(long.MaxValue); // the oldest copies, recompressed, go to the store
        WaitForWriteback(engine);
        int zstdRemote = 0;
        for (int i = 0; i < Pages; i++)
        {
            NativeSlot* slot = RemoteSlot(engine, region, i);
            zstdRemote += slot != null && (NativeSlot.LoadFlags(slot) & SlotFlags.Zstd) != 0 ? 1 : 0;
        }
        Assert.True(zstdRemote > 0, "no recompressed copy went to the store");
        for (int i = Pages - 1; i >= 0; i--)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i}");
        }
        CramStats s = engine.GetStats();
        Assert.True(s.RemoteFetches >= zstdRemote && s.RefaultsZstd >= zstdRemote, $"{s.RemoteFetches} fetches, {s.RefaultsZstd} zstd swap-ins for {zstdRemote} zstd copies on the store");
        Assert.Equal(0, s.ServiceErrors + s.ChecksumFailures + s.BadPageFaults + s.RemoteFetchFailures);
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
            // Read in order: a request brings a page and the pages after it whose extents follow it on the store (readahead).
            Assert.True(after.ReadaheadPages > 0 && after.RemoteRequests * 4 <= after.RemoteFetches,
                $"{after.RemoteRequests} requests for {after.RemoteFetches} remote pages read in order ({after.ReadaheadPages} read ahead)");
            Assert.Equal(0, after.RemoteFetchFailures);
            Assert.Equal(0, after.BadPageFaults);
            Assert.True(after.RemoteOpenMeanMicroseconds > 0, "sealed entries were opened");
        }
        Assert.Equal("0", server.Cli("dbsize")); // Dispose deleted every key
    }

    [RespStoreTheory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void WillNeed_FetchesRemotePages_AWindowARequest_AndReadsThenDoNotFault(CramFaultService service)
    {
        using RespServer server = RespServer.Start();
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.ToString());
        using CramEngine engine = CramEngine.Create(Options(store, service));
        using CramRegion region = FillAndEvict(engine);
        int remote = RemotePagesOf(engine, region);
        Assert.True(remote > Pages / 2);
        CramStats before = engine.GetStats();

        region.Advise(0, region.Length, CramAdvice.WillNeed);
        engine.Regions.PrefetchIdle().Wait();
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().RemoteFetchesInFlight == 0, TimeSpan.FromSeconds(10)));

        CramStats after = engine.GetStats();
        long requests = after.RemoteRequests - before.RemoteRequests, fetched = after.RemoteFetches - before.RemoteFetches;
        Assert.True(fetched >= remote * 9 / 10 && requests * 4 <= fetched, $"{fetched} of {remote} remote pages prefetched in {requests} requests");
        Assert.True(after.PrefetchedPages - before.PrefetchedPages >= fetched);
        Assert.Equal(0, RemotePagesOf(engine, region) - (remote - (int)fetched)); // what was fetched is resident now
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i} differs");
        }
        Assert.True(engine.GetStats().Refaults - after.Refaults < Pages - fetched + 64, "the prefetched pages read without a fault");
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
            NativeSlot* slot = RemoteSlot(engine, region, i);
            if (slot == null)
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
        // Frees the stale copies and deletes the segments that died, once no fetch can still be reading them (the read timeout and a second).
        Assert.True(SpinWait.SpinUntil(() => engine.Maintenance.WriteBack(0) >= 0 && long.Parse(server.Cli("dbsize")) == 0, TimeSpan.FromSeconds(15)),
            $"dead segments are deleted: {server.Cli("dbsize")} of {keysBefore} keys left");
        Assert.Equal(0, engine.GetStats().RemotePages);
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i} differs");
        }
    }

    [RespStoreTheory]
    [InlineData("remote-down", "the store did not answer within the read timeout", false)]
    [InlineData("remote-down", "the store did not answer within the read timeout", true)]
    [InlineData("remote-tampered", "failed its AES-GCM tag", false)]
    [InlineData("remote-tampered", "failed its AES-GCM tag", true)]
    public void UnreadableRemoteCopy_IsNeverMapped_TheReaderGetsSigbus(string scenario, string reason, bool faultingThread)
    {
        using RespServer server = RespServer.Start();
        (int exit, string stdout, string stderr) = ChildProcess.Run("dotnet",
            [Path.Combine(AppContext.BaseDirectory, "CramCore.FaultChild.dll"), scenario, server.Port.ToString(), .. faultingThread ? ["faulting-thread"] : Array.Empty<string>()],
            TimeSpan.FromSeconds(60), scenario);
        Assert.True(exit != 0, $"the child exited normally:\n{stdout}\n{stderr}");
        Assert.Contains("page 3 reads", stdout); // a healthy remote page read back first (the store was up)
        Assert.Contains("reading", stdout);
        Assert.DoesNotContain("read returned", stdout); // no garbage, no zeros: the read never completed
        Assert.Contains("cramcore: remote fetch of page at 0x", stderr);
        Assert.Contains(reason, stderr);
        Assert.Contains("SIGBUS", stderr);
    }

    [RespStoreFact]
    public void Cluster_SpreadsSegmentsOverItsMasters_AndAFailoverLosesNothing()
    {
        RespServer[] nodes = RespServer.Cluster(masters: 3, replicas: 1);
        try
        {
            using RedisRemoteStore store = RedisRemoteStore.Connect(string.Join(',', nodes.Take(3)), new RedisRemoteStoreOptions { Replicas = 1 });
            Assert.True(store.IsCluster);
            Assert.Equal(3, store.Nodes.Count);
            CramOptions options = Options(store, CramFaultService.ServiceThread);
            options.RemoteReadTimeout = TimeSpan.FromSeconds(20); // a failover takes a few seconds: reads wait for it
            using CramEngine engine = CramEngine.Create(options);
            using CramRegion region = FillAndEvict(engine);
            long[] nodeBytes = engine.Parts.Remote!.NodeBytes();
            Assert.True(nodeBytes.All(b => b > 0), $"every master holds segments: {string.Join(", ", nodeBytes)}");
            int remote = RemotePagesOf(engine, region);
            Assert.True(remote > Pages / 2);

            // The master holding the most segments dies; its replica takes over (cluster-node-timeout 1 s).
            int victim = Array.IndexOf(nodeBytes, nodeBytes.Max());
            System.Net.IPEndPoint master = store.Nodes[victim];
            nodes.Single(n => n.Port == master.Port).Kill();
            for (int i = 0; i < Pages; i++)
            {
                Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i} differs");
            }
            CramStats stats = engine.GetStats();
            Assert.Equal(0, stats.RemoteFetchFailures);
            Assert.Equal(0, stats.BadPageFaults);
            // The read half followed the promoted replica: by itself (-MOVED from a surviving master), or told by the client.
            Assert.True(stats.RemoteRedirects > 0 || !store.Nodes[victim].Equals(master), $"redirects {stats.RemoteRedirects}, node {store.Nodes[victim]}");
        }
        finally
        {
            foreach (RespServer node in nodes)
            {
                node.Dispose();
            }
        }
    }

    [RespStoreTheory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void PoolFileAndStore_TheFullFileSpillsItsOldestSegments_AndEveryPageReadsBack(CramFaultService service)
    {
        using RespServer server = RespServer.Start();
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.ToString());
        string dir = Directory.CreateTempSubdirectory("cramcore-spill-").FullName;
        try
        {
            CramOptions options = Options(store, service);
            options.BackingFile = Path.Combine(dir, "swap");
            options.BackingFileLimitBytes = 2L * BackingFile.SegmentBytes; // far less than the ~3 MiB the pool gives up
            using CramEngine engine = CramEngine.Create(options);
            using CramRegion region = FillAndEvict(engine);
            engine.Maintenance.WriteBack(long.MaxValue);
            Assert.True(SpinWait.SpinUntil(() => engine.Parts.Writeback!.Idle, TimeSpan.FromSeconds(30)));
            CramStats stats = engine.GetStats();
            Assert.True(stats.FilePages > 0 && stats.RemotePages > 0, $"file {stats.FilePages}, remote {stats.RemotePages}, pool {engine.Parts.Slots.PoolSlots}");
            Assert.True(stats.BackingFileBytes <= options.BackingFileLimitBytes);
            for (int i = 0; i < Pages; i++)
            {
                Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i} differs");
            }
            stats = engine.GetStats();
            Assert.True(stats.RefaultsFromFile > 0 && stats.RemoteFetches > 0, $"from the file {stats.RefaultsFromFile}, from the store {stats.RemoteFetches}");
            Assert.Equal(0, stats.BadPageFaults);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [RespStoreTheory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public void OverTls_PagesGoAndComeBackIntact(CramFaultService service)
    {
        using RespServer server = RespServer.Start(tls: true); // TLS only (no plain port), client certificates required
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.Configuration, server.Tls!.StoreOptions());
        Assert.Equal(server.Tls.CaFile, store.Tls?.CaFile);
        Assert.Null(store.Tls!.ServerName); // connected by address: the certificate must name 127.0.0.1
        using CramEngine engine = CramEngine.Create(Options(store, service));
        using CramRegion region = FillAndEvict(engine);
        int remote = RemotePagesOf(engine, region);
        Assert.True(remote > Pages / 2, $"only {remote} of {Pages} pages went to the store");
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 0), $"page {i} differs");
        }
        CramStats after = engine.GetStats();
        Assert.True(after.RemoteFetches >= remote / 2, $"{after.RemoteFetches} fetches for {remote} remote pages");
        Assert.True(after.RemoteRequests * 4 <= after.RemoteFetches, $"{after.RemoteRequests} requests for {after.RemoteFetches} pages read in order");
        Assert.Equal(0, after.RemoteTlsFailures);
        Assert.Equal(0, after.RemoteFetchFailures);
        Assert.Equal(0, after.BadPageFaults);
    }

    /// <summary>
    /// The native read half verifies the server on its own: the writes go through a client that
    /// trusts the server, and the read half is given TLS settings it cannot verify the server with
    /// (another CA, a name the certificate does not carry, no client certificate). A prefetch
    /// (no access, so no SIGBUS in the test host) must fail every fetch, counted, and map nothing.
    /// </summary>
    [RespStoreTheory]
    [InlineData("another CA")]
    [InlineData("another name")]
    [InlineData("no client certificate")]
    public void OverTls_AServerTheReadHalfCannotVerify_IsNeverRead(string setting)
    {
        using RespServer server = RespServer.Start(tls: true);
        using RedisRemoteStore store = RedisRemoteStore.Connect(server.Configuration, server.Tls!.StoreOptions());
        string otherDir = Directory.CreateTempSubdirectory("cramcore-tls-").FullName;
        try
        {
            CramRemoteTls tls = setting switch
            {
                "another CA" => store.Tls! with { CaFile = RespTls.Create(otherDir).CaFile },
                "another name" => store.Tls! with { ServerName = "not-this-server.example" },
                _ => store.Tls! with { ClientCertificateFile = null, ClientKeyFile = null },
            };
            CramOptions options = Options(new TlsAs(store, tls), CramFaultService.ServiceThread);
            options.RemoteReadTimeout = TimeSpan.FromSeconds(1);
            using CramEngine engine = CramEngine.Create(options);
            using CramRegion region = FillAndEvict(engine);
            int remote = RemotePagesOf(engine, region);
            Assert.True(remote > Pages / 2);

            region.Advise(0, region.Length, CramAdvice.WillNeed);
            engine.Regions.PrefetchIdle().Wait();
            Assert.True(SpinWait.SpinUntil(() => engine.GetStats().RemoteFetchesInFlight == 0, TimeSpan.FromSeconds(20)), "fetches still in flight");
            CramStats stats = engine.GetStats();
            Assert.True(stats.RemoteTlsFailures > 0, setting);
            Assert.True(stats.RemoteFetchFailures > 0, setting);
            Assert.Equal(0, stats.RemoteFetches);
            Assert.Equal(remote, RemotePagesOf(engine, region)); // every remote page still evicted: nothing mapped
        }
        finally
        {
            Directory.Delete(otherDir, recursive: true);
        }
    }

    /// <summary>A store whose read half is told other TLS settings than its client uses.</summary>
    private sealed class TlsAs(RedisRemoteStore inner, CramRemoteTls tls) : ICramRemoteStore
    {
        public IReadOnlyList<IPEndPoint> Nodes => inner.Nodes;
        public event EventHandler? NodesChanged { add => inner.NodesChanged += value; remove => inner.NodesChanged -= value; }
        public string? Password => inner.Password;
        public CramRemoteTls? Tls => tls;
        public long CapacityBytes => inner.CapacityBytes;
        public int NodeOf(string key) => inner.NodeOf(key);
        public Task WriteAsync(string key, ReadOnlyMemory<byte> value, TimeSpan lease, CancellationToken cancellationToken) => inner.WriteAsync(key, value, lease, cancellationToken);
        public Task<int> ReadAsync(string key, long offset, Memory<byte> destination, CancellationToken cancellationToken) => inner.ReadAsync(key, offset, destination, cancellationToken);
        public Task DeleteAsync(IReadOnlyList<string> keys, CancellationToken cancellationToken) => inner.DeleteAsync(keys, cancellationToken);
        public Task RenewAsync(IReadOnlyList<string> keys, TimeSpan lease, CancellationToken cancellationToken) => inner.RenewAsync(keys, lease, cancellationToken);
    }
}
