using System.Net;
using System.Net.Sockets;
using CramCore.Remote;
using StackExchange.Redis;

namespace CramCore.Redis;

/// <summary>
/// CramCore's remote tier on a RESP store — Redis, Valkey or Garnet, one node or a cluster — through
/// StackExchange.Redis (the write half of <see cref="ICramRemoteStore"/>); CramCore's native fault
/// path reads the same nodes with GETRANGE. Give it to <see cref="CramOptions.RemoteStore"/>:
/// <code>
/// using var store = RedisRemoteStore.Connect("10.0.0.5:6379,password=…");
/// using var engine = CramEngine.Create(new CramOptions { MemoryLimitBytes = 1L &lt;&lt; 30, RemoteStore = store });
/// </code>
/// In a cluster each segment goes to the master of its key's hash slot; the node of each shard is
/// followed through failovers (<see cref="NodesChanged"/>). With <see cref="RedisRemoteStoreOptions.Replicas"/>
/// a write returns only once <c>WAIT</c> reports that many replicas have it.
/// </summary>
public sealed class RedisRemoteStore : ICramRemoteStore, IDisposable
{
    private readonly ConnectionMultiplexer _redis;
    private readonly RedisRemoteStoreOptions _options;
    private readonly bool _cluster;
    private readonly int[] _shardSlots; // a hash slot each shard serves: node i is the master of _shardSlots[i]
    private readonly Lock _nodesLock = new();
    private IPEndPoint[] _nodes;
    private int _watching;

    private RedisRemoteStore(ConnectionMultiplexer redis, RedisRemoteStoreOptions options, string? password, CramRemoteTls? tls)
    {
        _redis = redis;
        _options = options;
        Password = password;
        Tls = tls;
        ClusterConfiguration? cluster = FirstMaster(redis)?.ClusterConfiguration;
        _cluster = cluster is not null && cluster.Nodes.Any(n => n.Slots.Count > 0);
        if (_cluster)
        {
            _shardSlots = [.. cluster!.Nodes.Where(n => !n.IsReplica && n.Slots.Count > 0).Select(n => n.Slots[0].From).Order()];
        }
        else
        {
            _shardSlots = [0];
        }
        _nodes = ResolveNodes();
        redis.ConfigurationChanged += (_, _) => Refresh();
        redis.ConnectionRestored += (_, _) => Refresh();
        redis.ConnectionFailed += (_, _) => WatchForFailover();
    }

    /// <summary>
    /// Connects to a store given as a StackExchange.Redis configuration string: one or more
    /// <c>host:port</c> endpoints (any node of a cluster will do), <c>password=…</c>, <c>ssl=true</c>
    /// for TLS (with <c>sslHost=…</c> when the certificate names a host other than the one
    /// connected to), and the client's other options. With TLS both halves — this client and the
    /// native read half — verify the server's certificate against
    /// <see cref="RedisRemoteStoreOptions.TlsCaFile"/> (or the system's trust store) and present
    /// <see cref="RedisRemoteStoreOptions.TlsClientCertificateFile"/> when the server asks for one.
    /// </summary>
    /// <exception cref="ArgumentException">The configuration cannot be parsed, or TLS files are given without <c>ssl=true</c>.</exception>
    /// <exception cref="FileNotFoundException">A TLS file the options name does not exist.</exception>
    /// <exception cref="RedisConnectionException">No endpoint could be reached (with TLS: or none presented a certificate that verifies).</exception>
    public static RedisRemoteStore Connect(string configuration, RedisRemoteStoreOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(configuration);
        options ??= new RedisRemoteStoreOptions();
        ConfigurationOptions config = ConfigurationOptions.Parse(configuration);
        config.AbortOnConnectFail = true;
        CramRemoteTls? tls = null;
        if (config.Ssl)
        {
            tls = new CramRemoteTls
            {
                ServerName = config.SslHost ?? HostNameOf(config.EndPoints),
                CaFile = ExistingFile(options.TlsCaFile, nameof(options.TlsCaFile)),
                ClientCertificateFile = ExistingFile(options.TlsClientCertificateFile, nameof(options.TlsClientCertificateFile)),
                ClientKeyFile = ExistingFile(options.TlsClientKeyFile, nameof(options.TlsClientKeyFile)),
            };
            if (tls.CaFile is not null)
            {
                config.TrustIssuer(tls.CaFile);
            }
            if (tls.ClientCertificateFile is not null)
            {
                config.SetUserPemCertificate(tls.ClientCertificateFile, tls.ClientKeyFile);
            }
        }
        else if (options.TlsCaFile is not null || options.TlsClientCertificateFile is not null || options.TlsClientKeyFile is not null)
        {
            throw new ArgumentException("TLS files are given in the options but the configuration does not ask for TLS: add ssl=true to it (or drop the files).", nameof(configuration));
        }
        return new RedisRemoteStore(ConnectionMultiplexer.Connect(config), options, config.Password, tls);
    }

    /// <summary>The host name the endpoints were given by (what a certificate names), or null when they are IP addresses.</summary>
    private static string? HostNameOf(EndPointCollection endpoints) =>
        endpoints.OfType<DnsEndPoint>().Select(e => e.Host).FirstOrDefault(h => !IPAddress.TryParse(h, out _));

    private static string? ExistingFile(string? path, string name) =>
        path is null ? null
        : File.Exists(path) ? Path.GetFullPath(path)
        : throw new FileNotFoundException($"RedisRemoteStoreOptions.{name}: {Path.GetFullPath(path)} does not exist.", path);

    /// <inheritdoc/>
    public IReadOnlyList<IPEndPoint> Nodes
    {
        get
        {
            lock (_nodesLock)
            {
                return _nodes;
            }
        }
    }

    /// <inheritdoc/>
    public event EventHandler? NodesChanged;

    /// <inheritdoc/>
    public string? Password { get; }

    /// <inheritdoc/>
    public CramRemoteTls? Tls { get; }

    /// <inheritdoc/>
    public long CapacityBytes => _options.CapacityBytes;

    /// <summary>Whether the store is a cluster (segments spread over its masters by hash slot).</summary>
    public bool IsCluster => _cluster;

    /// <inheritdoc/>
    public int NodeOf(string key)
    {
        if (!_cluster)
        {
            return 0;
        }
        int slot = _redis.HashSlot(key);
        int shard = Array.BinarySearch(_shardSlots, slot);
        return shard >= 0 ? shard : ~shard - 1; // the shard whose range starts at or before the slot
    }

    /// <inheritdoc/>
    public async Task WriteAsync(string key, ReadOnlyMemory<byte> value, TimeSpan lease, CancellationToken cancellationToken)
    {
        IDatabase db = _redis.GetDatabase();
        if (!await db.StringSetAsync(key, value, lease).WaitAsync(cancellationToken).ConfigureAwait(false))
        {
            throw new RedisException($"SET {key} was not acknowledged.");
        }
        if (_options.Replicas > 0)
        {
            // WAIT counts the replicas that have every write this connection made to the node: the SET above included.
            IServer server = _redis.GetServer(EndPointOf(key));
            RedisResult acked = await server.ExecuteAsync("WAIT", _options.Replicas, (long)_options.ReplicaTimeout.TotalMilliseconds)
                .WaitAsync(cancellationToken).ConfigureAwait(false);
            if ((long)acked < _options.Replicas)
            {
                throw new RedisException($"WAIT after SET {key}: {(long)acked} of {_options.Replicas} replicas acknowledged within {_options.ReplicaTimeout.TotalMilliseconds} ms.");
            }
        }
    }

    /// <inheritdoc/>
    public async Task<int> ReadAsync(string key, long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        if (destination.IsEmpty)
        {
            return 0;
        }
        RedisValue value = await _redis.GetDatabase().StringGetRangeAsync(key, offset, offset + destination.Length - 1).WaitAsync(cancellationToken).ConfigureAwait(false);
        byte[]? bytes = value;
        if (bytes is null)
        {
            return 0;
        }
        bytes.CopyTo(destination);
        return bytes.Length;
    }

    /// <inheritdoc/>
    public Task DeleteAsync(IReadOnlyList<string> keys, CancellationToken cancellationToken)
    {
        IDatabase db = _redis.GetDatabase();
        // One DEL per key: a cluster refuses one DEL of keys in different hash slots.
        return Task.WhenAll(keys.Select(k => db.KeyDeleteAsync(k))).WaitAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public Task RenewAsync(IReadOnlyList<string> keys, TimeSpan lease, CancellationToken cancellationToken)
    {
        IDatabase db = _redis.GetDatabase();
        return Task.WhenAll(keys.Select(k => db.KeyExpireAsync(k, lease))).WaitAsync(cancellationToken);
    }

    /// <summary>Closes the connections (the engine deletes its keys when it is disposed, before this).</summary>
    public void Dispose() => _redis.Dispose();

    private static IServer? FirstMaster(ConnectionMultiplexer redis) =>
        redis.GetServers().FirstOrDefault(s => s.IsConnected && !s.IsReplica) ?? redis.GetServers().FirstOrDefault();

    private EndPoint EndPointOf(string key) =>
        (_cluster ? FirstMaster(_redis)?.ClusterConfiguration?.GetBySlot(key)?.EndPoint : FirstMaster(_redis)?.EndPoint)
        ?? throw new RedisConnectionException(ConnectionFailureType.UnableToConnect, $"No master holds {key} now.");

    /// <summary>Each shard's master, as IPv4 endpoints (node i serves <c>_shardSlots[i]</c>).</summary>
    private IPEndPoint[] ResolveNodes()
    {
        if (!_cluster)
        {
            return [ToIPv4(FirstMaster(_redis)?.EndPoint ?? throw new RedisConnectionException(ConnectionFailureType.UnableToConnect, "No server is connected."))];
        }
        ClusterConfiguration cluster = FirstMaster(_redis)!.ClusterConfiguration!;
        return [.. _shardSlots.Select(slot => ToIPv4(cluster.GetBySlot(slot)?.EndPoint ?? throw new RedisException($"No master serves hash slot {slot}.")))];
    }

    private void Refresh()
    {
        try
        {
            IPEndPoint[] nodes = ResolveNodes();
            lock (_nodesLock)
            {
                if (nodes.SequenceEqual(_nodes))
                {
                    return;
                }
                _nodes = nodes;
            }
            NodesChanged?.Invoke(this, EventArgs.Empty);
        }
        catch (Exception e) when (e is RedisException or SocketException or InvalidOperationException)
        {
            // Mid-failover: the next configuration change tries again.
        }
    }

    /// <summary>
    /// A connection failed: a node may be gone. In a cluster its replica is promoted within the
    /// cluster's node timeout, but the client learns of it only when it next asks; the fault path's
    /// fetches retry meanwhile, so ask now — every half second for up to a minute — until the
    /// masters change or every node is reachable again.
    /// </summary>
    private void WatchForFailover()
    {
        if (!_cluster || Interlocked.Exchange(ref _watching, 1) == 1)
        {
            return;
        }
        _ = Task.Run(async () =>
        {
            try
            {
                IPEndPoint[] before = (IPEndPoint[])Nodes;
                for (int i = 0; i < 120; i++)
                {
                    await Task.Delay(500).ConfigureAwait(false);
                    try
                    {
                        await _redis.ConfigureAsync().ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is RedisException or SocketException or InvalidOperationException)
                    {
                    }
                    Refresh();
                    if (!Nodes.SequenceEqual(before) || _redis.GetServers().All(s => s.IsConnected))
                    {
                        break;
                    }
                }
            }
            finally
            {
                Volatile.Write(ref _watching, 0);
            }
        });
    }

    private static IPEndPoint ToIPv4(EndPoint endPoint) => endPoint switch
    {
        IPEndPoint { AddressFamily: AddressFamily.InterNetwork } ip => ip,
        IPEndPoint ip when ip.Address.IsIPv4MappedToIPv6 => new IPEndPoint(ip.Address.MapToIPv4(), ip.Port),
        DnsEndPoint dns => new IPEndPoint(Dns.GetHostAddresses(dns.Host).First(a => a.AddressFamily == AddressFamily.InterNetwork), dns.Port),
        _ => throw new NotSupportedException($"The store's endpoint {endPoint} is not IPv4; CramCore's native read half connects over IPv4."),
    };
}

/// <summary>How <see cref="RedisRemoteStore"/> writes.</summary>
public sealed record RedisRemoteStoreOptions
{
    /// <summary>Replicas that must have each segment (<c>WAIT</c>) before CramCore frees its local copy (0, the default: the master's acknowledgement).</summary>
    public int Replicas { get; init; }

    /// <summary>How long <c>WAIT</c> waits for <see cref="Replicas"/> (default 2 s); fewer in time fails the write, and the entries stay local.</summary>
    public TimeSpan ReplicaTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Most bytes CramCore may store there (0, the default: no limit of its own).</summary>
    public long CapacityBytes { get; init; }

    /// <summary>With <c>ssl=true</c>: a PEM file of the certificate authorities the servers' certificates must chain to (null, the default: the system's trust store).</summary>
    public string? TlsCaFile { get; init; }

    /// <summary>With <c>ssl=true</c>: a PEM client certificate for servers that require one (Redis's <c>tls-auth-clients yes</c>, its default), or null.</summary>
    public string? TlsClientCertificateFile { get; init; }

    /// <summary>The PEM private key of <see cref="TlsClientCertificateFile"/>, or null when that file holds it.</summary>
    public string? TlsClientKeyFile { get; init; }
}
