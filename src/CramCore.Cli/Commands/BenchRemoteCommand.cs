using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using CramCore.Redis;
using CramCore.Remote;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench remote --json` prints (the issue's keys first).</summary>
internal sealed record RemoteBenchResult(
    double FillMibS, double RemoteSwapinP50Us, double RemoteSwapinP99Us, double StoreGetP50Us, double Lz4DecompressUs, double DecryptUs,
    double LocalSwapinP50Us, double LocalSwapinP50WithRemoteUs, [property: Figure(FigureUnit.Times)] double BytesSentPerEvictedByte, long[] NodeBytes,
    long FailoverPagesLost, long Mismatches,
    double RemoteOverFloor, double LocalWithRemoteOverAlone, double RemoteSeqMibS, [property: Figure(FigureUnit.Number)] double RemoteSeqPagesPerRequest, [property: Figure(FigureUnit.Percent)] double NodeBytesMaxDeviation, double FailoverRecoverMs, string Failover,
    double SealUs, double RemoteFetchMeanUs, long RemoteFetchRetries, long RemoteFetchFailures,
    string Source, long SizeBytes, long LimitBytes, long PoolLimitBytes, string Store, bool Cluster, int Replicas, bool Encrypted, bool Tls, long RemoteTlsFailures,
    long RemotePagesAfterFill, long RemoteBytesWritten, long WritebackPages, int SamplesRemote, int SamplesLocal, int SamplesStore,
    string FaultService);

/// <summary>
/// `cram bench remote`: the remote tier on a RESP store, measured in one run. Fill SIZE of pages
/// under a resident limit with a small pool, so the pool's coldest entries go to the store (fill
/// rate, bytes sent per evicted byte, per-node bytes); the limit lifted, random swap-ins of pages
/// whose copy is remote (p50/p99) beside the store's own floor for the same extents (GETRANGE over a
/// plain socket from this process, p50), LZ4 and AES-GCM per page (the fetches' own means); random
/// swap-ins from the pool alone and again while another thread keeps remote fetches in flight (the
/// floor over TLS too when the store is reached over TLS: --tls, or ssl=true in --store); then
/// a failover: the store (a self-started durable one) killed and restarted — or, with --cluster, the
/// busiest master killed and its replica promoted — while a remote page is read: time to recover,
/// every remote extent checked on the store (pages lost), every page verified.
/// </summary>
internal static unsafe class BenchRemoteCommand
{
    private const int P = PageSource.PageSize;

    public static int Run(string? corpus, long size, long limit, long poolLimit, int samples, string? storeAddress, bool cluster, bool json,
        CramFaultService faultService, bool encrypt, bool tls)
    {
        if (size < 16L << 20 || size > 64L << 30)
        {
            throw new CliException($"--size: {Measure.Bytes(size)} must be between 16m and 64g.");
        }
        if (limit < 4L << 20 || limit >= size)
        {
            throw new CliException($"--limit: {Measure.Bytes(limit)} must be at least 4m and below --size ({Measure.Bytes(size)}).");
        }
        if (poolLimit < 1L << 20 || poolLimit > limit / 2)
        {
            throw new CliException($"--pool-limit: {Measure.Bytes(poolLimit)} must be at least 1m and at most half of --limit ({Measure.Bytes(limit)}).");
        }
        if (samples is < 100 or > 100_000)
        {
            throw new CliException($"--samples: {samples} must be between 100 and 100000.");
        }
        if (tls && (storeAddress is not null || cluster))
        {
            throw new CliException("--tls starts a single TLS store of its own; for a given store add ssl=true to --store (its certificate is verified against the system's trust store), and --cluster runs plain TCP.");
        }
        if (storeAddress is not null && cluster)
        {
            throw new CliException("--cluster starts a cluster of its own; with --store, give the cluster's nodes instead (any one will do).");
        }
        if (storeAddress is null && RespServer.Missing is { } missing)
        {
            throw new CliException($"--store: not given, and no local store can be started: {missing}. Install them, or give --store HOST:PORT.", ExitCode.Environment);
        }
        PageSource source = corpus is null ? PageSource.Generated() : PageSource.FromCorpus(corpus);
        RespServer[] servers = [];
        try
        {
            if (storeAddress is null)
            {
                BenchSupport.Progress(cluster ? "starting a local cluster: 3 masters, 1 replica each (redis-server on loopback)"
                    : tls ? "starting a local store (redis-server on loopback, append-only file, TLS only, with certificates of its own)"
                    : "starting a local store (redis-server on loopback, append-only file)");
                servers = cluster ? RespServer.Cluster(masters: 3, replicas: 1) : [RespServer.Start(durable: true, tls: tls)];
            }
            string configuration = storeAddress ?? (cluster ? string.Join(',', servers.Take(3)) : servers[0].Configuration);
            int replicas = cluster ? 1 : 0;
            var storeOptions = new RedisRemoteStoreOptions { Replicas = replicas };
            using RedisRemoteStore store = RedisRemoteStore.Connect(configuration, servers.FirstOrDefault()?.Tls?.StoreOptions(storeOptions) ?? storeOptions);
            return RunOn(source, size, limit, poolLimit, samples, store, configuration, servers, replicas, json, faultService, encrypt);
        }
        finally
        {
            foreach (RespServer server in servers)
            {
                server.Dispose();
            }
        }
    }

    private static int RunOn(PageSource source, long size, long limit, long poolLimit, int samples, RedisRemoteStore store, string configuration,
        RespServer[] servers, int replicas, bool json, CramFaultService faultService, bool encrypt)
    {
        long pages = size / P;
        using var engine = CramEngine.Create(new CramOptions
        {
            ResidentLimitBytes = limit - poolLimit, CompressedPoolLimitBytes = poolLimit, PoolArenaBytes = Math.Min(poolLimit, 64L << 20),
            RemoteStore = store, RemoteEncryption = encrypt, FaultService = faultService, RemoteReadTimeout = TimeSpan.FromSeconds(30),
        });
        using var region = engine.CreateRegion(pages * P);

        BenchSupport.Progress($"fill: {Measure.Bytes(size)} of {source.Description}, resident limit {Measure.Bytes(limit - poolLimit)}, pool {Measure.Bytes(poolLimit)}, the rest to {configuration}");
        long t0 = Stopwatch.GetTimestamp();
        for (long i = 0; i < pages; i++)
        {
            source.Write(new Span<byte>(region.Pointer + i * P, P), i);
        }
        double fillSeconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        SpinWait.SpinUntil(() => engine.Parts.Writeback!.Idle, TimeSpan.FromSeconds(60));
        engine.ResidentLimitBytes = 0; // nothing is evicted while swap-ins are timed
        CramStats afterFill = engine.GetStats();
        long[] nodeBytes = engine.Parts.Remote!.NodeBytes();

        List<long> remotePages = PagesIn(engine, region, pages, SlotBackend.Remote), localPages = PagesIn(engine, region, pages, SlotBackend.Pool);
        var rng = new Random(20261202);
        Shuffle(remotePages, rng);
        Shuffle(localPages, rng);
        int remoteSamples = Math.Min(samples, remotePages.Count / 3), localSamples = Math.Min(samples, localPages.Count / 2);
        if (remoteSamples < 50 || localSamples < 50)
        {
            if (engine.Parts.Remote!.LastError is { } error)
            {
                throw new CliException($"--store: writes to {configuration} failed: {error}", ExitCode.Environment);
            }
            throw new CliException($"--size/--limit/--pool-limit: the fill left {remotePages.Count} pages on the store and {localPages.Count} in the pool; both need at least 150 (a larger --size, or a smaller --pool-limit).");
        }

        // Interleaved, so both see the same host: the store's own answer for a page's extent, then the swap-in of that page.
        BenchSupport.Progress($"remote: {remoteSamples} random swap-ins of pages on the store, each after a GETRANGE of its extent over a {(store.Tls is null ? "plain" : "TLS")} socket (the store's floor)");
        long mismatches = 0;
        var storeTicks = new List<long>(remoteSamples);
        var remoteTicks = new List<long>(remoteSamples);
        using (var floor = new StoreFloor(engine, store))
        {
            foreach (long page in remotePages.Take(remoteSamples))
            {
                storeTicks.Add(floor.Time(region, page));
                remoteTicks.AddRange(Sample(region, source, [page], ref mismatches));
            }
        }
        CramStats afterRemote = engine.GetStats();

        // In alternating blocks, so both see the same host: local swap-ins alone, then while another thread keeps remote fetches in flight.
        const int Blocks = 10;
        BenchSupport.Progress($"local: {localSamples} random swap-ins from the pool, in {Blocks} blocks alone and {Blocks} beside remote fetches in flight");
        List<long> background = remotePages.Skip(remoteSamples).Take(remoteSamples).ToList();
        int stop = 0;
        long acc = 0;
        using var running = new ManualResetEventSlim(false, spinCount: 0); // blocked between blocks: the alone blocks run without it on a CPU
        var reader = new Thread(() =>
        {
            using var pages = background.GetEnumerator();
            while (Volatile.Read(ref stop) == 0)
            {
                if (!running.IsSet)
                {
                    running.Wait();
                    continue;
                }
                if (!pages.MoveNext())
                {
                    break; // out of remote pages: the rest of the blocks run without
                }
                acc += Volatile.Read(ref *(long*)(region.Pointer + pages.Current * P)); // one load: a fault, as light as the reader can make it (the final pass verifies the page)
            }
        }) { IsBackground = true, Name = "remote reader" };
        reader.Start();
        var localAlone = new List<long>();
        var localWithRemote = new List<long>();
        int block = localSamples / 2 / Blocks;
        for (int b = 0; b < Blocks; b++)
        {
            localAlone.AddRange(Sample(region, source, localPages.Skip(2 * b * block).Take(block), ref mismatches));
            running.Set();
            localWithRemote.AddRange(Sample(region, source, localPages.Skip((2 * b + 1) * block).Take(block), ref mismatches));
            running.Reset();
        }
        Volatile.Write(ref stop, 1);
        running.Set();
        reader.Join();
        GC.KeepAlive(acc);

        // The rest of the remote pages but a few (the failover's), read in order: readahead brings a window a request.
        List<long> rest = remotePages.Skip(2 * remoteSamples).ToList();
        List<long> forFailover = rest.TakeLast(Math.Min(256, rest.Count / 2)).ToList();
        List<long> sequential = rest.SkipLast(forFailover.Count).Order().ToList();
        BenchSupport.Progress($"sequential: {sequential.Count} remote pages read in order");
        CramStats beforeSeq = engine.GetStats();
        long ts = Stopwatch.GetTimestamp();
        long seqAcc = 0;
        foreach (long page in sequential)
        {
            seqAcc += Volatile.Read(ref *(long*)(region.Pointer + page * P));
        }
        double seqSeconds = Stopwatch.GetElapsedTime(ts).TotalSeconds;
        GC.KeepAlive(seqAcc);
        CramStats afterSeq = engine.GetStats();
        long seqRequests = afterSeq.RemoteRequests - beforeSeq.RemoteRequests;

        (long lost, double recoverMs, string failover) = Failover(engine, region, source, store, servers, forFailover, ref mismatches);

        BenchSupport.Progress("verify every page");
        var scratch = new byte[P];
        for (long i = 0; i < pages; i++)
        {
            source.Write(scratch, i);
            if (!new ReadOnlySpan<byte>(region.Pointer + i * P, P).SequenceEqual(scratch))
            {
                mismatches++;
            }
        }
        CramStats s = engine.GetStats();
        double mean = nodeBytes.Length == 0 ? 0 : nodeBytes.Average();
        double decode = afterRemote.RemoteDecodeMeanMicroseconds, open = afterRemote.RemoteOpenMeanMicroseconds;
        double storeP50 = BenchSupport.P50Us(storeTicks), remoteP50 = BenchSupport.P50Us(remoteTicks);
        double localP50 = BenchSupport.P50Us(localAlone), localWithP50 = BenchSupport.P50Us(localWithRemote);
        var result = new RemoteBenchResult(
            FillMibS: Math.Round(size / (double)(1 << 20) / fillSeconds, 1),
            RemoteSwapinP50Us: Math.Round(remoteP50, 1),
            RemoteSwapinP99Us: Math.Round(BenchSupport.P99Us(remoteTicks), 1),
            StoreGetP50Us: Math.Round(storeP50, 1),
            Lz4DecompressUs: Math.Round(decode, 2),
            DecryptUs: Math.Round(open, 2),
            LocalSwapinP50Us: Math.Round(localP50, 1),
            LocalSwapinP50WithRemoteUs: Math.Round(localWithP50, 1),
            BytesSentPerEvictedByte: afterFill.WritebackPages == 0 ? 0 : Math.Round((double)afterFill.RemoteBytesWritten / (afterFill.WritebackPages * (double)P), 3),
            NodeBytes: nodeBytes,
            FailoverPagesLost: lost,
            Mismatches: mismatches,
            RemoteOverFloor: Math.Round(remoteP50 / (storeP50 + decode + open), 2),
            LocalWithRemoteOverAlone: Math.Round(localWithP50 / localP50, 2),
            RemoteSeqMibS: seqSeconds == 0 ? 0 : Math.Round(sequential.Count * (double)P / (1 << 20) / seqSeconds, 1),
            RemoteSeqPagesPerRequest: seqRequests == 0 ? 0 : Math.Round((double)(afterSeq.RemoteFetches - beforeSeq.RemoteFetches) / seqRequests, 2),
            NodeBytesMaxDeviation: mean == 0 ? 0 : Math.Round(nodeBytes.Max(b => Math.Abs(b - mean)) / mean, 3),
            FailoverRecoverMs: Math.Round(recoverMs, 1),
            Failover: failover,
            SealUs: Math.Round(engine.Parts.Remote!.SealMicroseconds((int)(afterFill.RemoteLiveBytes / Math.Max(1, afterFill.RemotePages))), 2),
            RemoteFetchMeanUs: Math.Round(afterRemote.RemoteFetchMeanMicroseconds, 1),
            RemoteFetchRetries: s.RemoteFetchRetries,
            RemoteFetchFailures: s.RemoteFetchFailures,
            Source: source.Description,
            SizeBytes: pages * P,
            LimitBytes: limit,
            PoolLimitBytes: poolLimit,
            Store: configuration,
            Cluster: store.IsCluster,
            Replicas: replicas,
            Encrypted: encrypt,
            Tls: store.Tls is not null,
            RemoteTlsFailures: s.RemoteTlsFailures,
            RemotePagesAfterFill: afterFill.RemotePages,
            RemoteBytesWritten: afterFill.RemoteBytesWritten,
            WritebackPages: afterFill.WritebackPages,
            SamplesRemote: remoteTicks.Count,
            SamplesLocal: localAlone.Count + localWithRemote.Count,
            SamplesStore: storeTicks.Count,
            FaultService: BenchSupport.Name(s.FaultService));
        ResultPrinter.Print(result, json, "cram bench remote");
        return mismatches == 0 && lost == 0 ? ExitCode.Success : ExitCode.IntegrityFailure;
    }

    /// <summary>Evicted pages whose copy is in <paramref name="backend"/>.</summary>
    private static List<long> PagesIn(CramEngine engine, CramRegion region, long pages, SlotBackend backend)
    {
        var list = new List<long>();
        for (long i = 0; i < pages; i++)
        {
            if (IsIn(engine, region, i, backend))
            {
                list.Add(i);
            }
        }
        return list;
    }

    /// <summary>Whether <paramref name="page"/> is evicted with its copy in <paramref name="backend"/>.</summary>
    private static bool IsIn(CramEngine engine, CramRegion region, long page, SlotBackend backend)
    {
        ulong pte = PageTableEntry.Load(region.PageTableEntries + page);
        return PageTableEntry.State(pte) == PageState.Evicted && PageTableEntry.Slot(pte) != SharedLayout.ZeroSlot &&
            engine.Parts.Slots.Get(PageTableEntry.Slot(pte))->Backend == backend;
    }

    private static void Shuffle(List<long> list, Random rng)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }

    /// <summary>One timed 8-byte load of each page (evicted before it), checked.</summary>
    private static List<long> Sample(CramRegion region, PageSource source, IEnumerable<long> pages, ref long mismatches)
    {
        var ticks = new List<long>();
        Span<byte> expected = stackalloc byte[P];
        foreach (long page in pages)
        {
            byte* p = region.Pointer + page * P;
            long a = Stopwatch.GetTimestamp();
            long value = Volatile.Read(ref *(long*)(p + 64));
            long b = Stopwatch.GetTimestamp();
            source.Write(expected, page);
            if (value != BitConverter.ToInt64(expected[64..]))
            {
                mismatches++;
            }
            ticks.Add(b - a);
        }
        return ticks;
    }

    private static bool Check(CramRegion region, PageSource source, long page)
    {
        Span<byte> expected = stackalloc byte[P];
        source.Write(expected, page);
        return new ReadOnlySpan<byte>(region.Pointer + page * P, P).SequenceEqual(expected);
    }

    /// <summary>The store's floor: GETRANGE of a page's extent, one request at a time over a plain socket to its node (TCP_NODELAY), as the native read half sends it.</summary>
    private sealed class StoreFloor(CramEngine engine, RedisRemoteStore store) : IDisposable
    {
        private readonly Dictionary<int, Stream> _streams = [];
        private readonly byte[] _reply = new byte[64 * 1024];

        public long Time(CramRegion region, long page)
        {
            NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(PageTableEntry.Load(region.PageTableEntries + page)));
            int node = RemoteLocation.Node(slot->Location);
            if (!_streams.TryGetValue(node, out Stream? stream))
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                socket.Connect(store.Nodes[node]);
                stream = store.Tls is { } tls ? Secure(new NetworkStream(socket, ownsSocket: true), tls, store.Nodes[node]) : new NetworkStream(socket, ownsSocket: true);
                if (store.Password is { } password)
                {
                    Exchange(stream, _reply, "AUTH", password);
                }
                _streams[node] = stream;
            }
            int start = RemoteLocation.Offset(slot->Location), end = start + slot->Length + RemoteLocation.TagBytes - 1;
            string key = engine.Parts.Remote!.KeyOf(RemoteLocation.Segment(slot->Location));
            long a = Stopwatch.GetTimestamp();
            Exchange(stream, _reply, "GETRANGE", key, start.ToString(), end.ToString());
            return Stopwatch.GetTimestamp() - a;
        }

        /// <summary>TLS as the read half makes it: the CA file (or the system's store), the server name (or the node's address), the client certificate.</summary>
        private static SslStream Secure(Stream inner, CramRemoteTls tls, IPEndPoint node)
        {
            var chain = new X509ChainPolicy { RevocationMode = X509RevocationMode.NoCheck };
            if (tls.CaFile is not null)
            {
                chain.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.CustomTrustStore.ImportFromPemFile(tls.CaFile);
            }
            var stream = new SslStream(inner, leaveInnerStreamOpen: false);
            stream.AuthenticateAsClient(new SslClientAuthenticationOptions
            {
                TargetHost = tls.ServerName ?? node.Address.ToString(),
                CertificateChainPolicy = chain,
                ClientCertificates = tls.ClientCertificateFile is null ? null : [X509Certificate2.CreateFromPemFile(tls.ClientCertificateFile, tls.ClientKeyFile)],
            });
            return stream;
        }

        public void Dispose()
        {
            foreach (Stream stream in _streams.Values)
            {
                stream.Dispose();
            }
        }
    }

    /// <summary>Sends one RESP command and reads its whole reply (a simple line, or a bulk string).</summary>
    private static void Exchange(Stream stream, byte[] reply, params string[] command)
    {
        var request = new StringBuilder($"*{command.Length}\r\n");
        foreach (string part in command)
        {
            request.Append($"${Encoding.UTF8.GetByteCount(part)}\r\n{part}\r\n");
        }
        stream.Write(Encoding.UTF8.GetBytes(request.ToString()));
        int have = 0, need = -1;
        while (need < 0 || have < need)
        {
            int n = stream.Read(reply, have, reply.Length - have);
            if (n <= 0)
            {
                throw new IOException("the store closed the connection");
            }
            have += n;
            int line = reply.AsSpan(0, have).IndexOf("\r\n"u8);
            if (need < 0 && line > 0)
            {
                need = reply[0] == '$' && reply[1] != '-' ? line + 2 + int.Parse(Encoding.ASCII.GetString(reply, 1, line - 1)) + 2 : line + 2;
            }
        }
    }

    /// <summary>
    /// The store dies while a remote page is read: a self-started single store is killed (SIGKILL)
    /// and restarted 300 ms later from its append-only file; in a self-started cluster the
    /// master holding the most bytes is killed and its replica promoted. Returns the extents that no
    /// longer read back intact (pages lost), the time the read took (recovery), and what was done.
    /// </summary>
    private static (long Lost, double RecoverMs, string What) Failover(CramEngine engine, CramRegion region, PageSource source, RedisRemoteStore store,
        RespServer[] servers, List<long> remaining, ref long mismatches)
    {
        // Pages still evicted with their copy on the store (readahead of the sequential phase brought in some of them).
        remaining = remaining.Where(page => IsIn(engine, region, page, SlotBackend.Remote)).ToList();
        if (servers.Length == 0 || remaining.Count < 2)
        {
            return (0, 0, servers.Length == 0 ? "skipped: an external store is not killed" : "skipped: no remote page left");
        }
        long victimPage = remaining[0];
        NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(PageTableEntry.Load(region.PageTableEntries + victimPage)));
        IPEndPoint holder = store.Nodes[RemoteLocation.Node(slot->Location)];
        RespServer victim = servers.Single(s => s.Port == holder.Port);
        string what;
        if (!store.IsCluster)
        {
            what = "the store killed (SIGKILL) and restarted 300 ms later from its append-only file, during a remote read";
            BenchSupport.Progress("failover: " + what);
            victim.Kill();
            // Restarted by a shell of its own: a thread of this process could be held up by a GC waiting for the read.
            victim.RestartLater(TimeSpan.FromMilliseconds(300), TimeSpan.Zero);
        }
        else
        {
            what = "the master holding the read page killed (SIGKILL); its replica promoted, during a remote read";
            BenchSupport.Progress("failover: " + what);
            victim.Kill();
        }
        long t0 = Stopwatch.GetTimestamp();
        if (!Check(region, source, victimPage))
        {
            mismatches++;
        }
        double recoverMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        // Every extent still on the store must read back intact (a lost one would be SIGBUS when read).
        var extents = new List<(ulong, int, uint)>();
        foreach (long page in remaining.Skip(1))
        {
            ulong pte = PageTableEntry.Load(region.PageTableEntries + page);
            if (PageTableEntry.State(pte) == PageState.Evicted)
            {
                NativeSlot* s = engine.Parts.Slots.Get(PageTableEntry.Slot(pte));
                if (s->Backend == SlotBackend.Remote)
                {
                    extents.Add((s->Location, s->Length, s->Checksum));
                }
            }
        }
        int lost = engine.Parts.Remote!.CountUnreadable(extents);
        if (lost > 0)
        {
            throw new CliException($"failover: {lost} of {extents.Count} remote extents no longer read back from the store; reading them would end this process with SIGBUS.", ExitCode.IntegrityFailure);
        }
        return (lost, recoverMs, what);
    }
}
