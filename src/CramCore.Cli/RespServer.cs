using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace CramCore.Cli;

/// <summary>
/// A RESP store of our own on loopback, for `cram bench remote`, `cram demo --remote` and the remote
/// tier's tests: a redis-server process (Debian's redis-server package, which ./build.sh installs)
/// on a free port, bound to 127.0.0.1, in a directory of its own that goes with it; without
/// persistence, or with an append-only file (<paramref name="durable"/>), written before each reply, so a
/// restart after the process is killed keeps every acknowledged write. <see cref="Cluster"/> makes a cluster of
/// masters with replicas through <c>redis-cli --cluster create</c>. With <c>tls</c> it serves TLS
/// only, with certificates of its own (<see cref="RespTls"/>), and asks clients for theirs.
/// </summary>
internal sealed class RespServer : IDisposable
{
    private Process? _process;
    private readonly string _dir;

    private RespServer(int port, string dir, bool cluster, bool durable, bool tls)
    {
        Port = port;
        _dir = dir;
        _cluster = cluster;
        _durable = durable;
        Tls = tls ? RespTls.Create(dir) : null;
        Start();
    }

    private readonly bool _cluster, _durable;

    public int Port { get; }
    public IPEndPoint EndPoint => new(IPAddress.Loopback, Port);
    public override string ToString() => $"127.0.0.1:{Port}";

    /// <summary>The certificates of a TLS server (null: plain TCP).</summary>
    public RespTls? Tls { get; }

    /// <summary>A StackExchange.Redis configuration string for this server (with <c>ssl=true</c> when it serves TLS).</summary>
    public string Configuration => Tls is null ? ToString() : $"{this},ssl=true";

    /// <summary>The redis-server binary, or null when it is not installed.</summary>
    public static string? ServerPath { get; } = Which("redis-server");

    /// <summary>The redis-cli binary, or null.</summary>
    public static string? CliPath { get; } = Which("redis-cli");

    /// <summary>What is missing to start one (null: nothing).</summary>
    public static string? Missing => ServerPath is null || CliPath is null
        ? "redis-server and redis-cli are not installed (Debian packages redis-server and redis-tools; ./build.sh installs them)"
        : null;

    /// <summary>Starts one server (a cluster node when <paramref name="cluster"/>; with an append-only file when <paramref name="durable"/>; TLS only when <paramref name="tls"/>).</summary>
    public static RespServer Start(bool cluster = false, bool durable = false, bool tls = false) =>
        new(FreePort(), Directory.CreateTempSubdirectory("cramcore-resp-").FullName, cluster, durable, tls);

    private void Start()
    {
        var start = new ProcessStartInfo(ServerPath!) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        foreach (string a in Arguments())
        {
            start.ArgumentList.Add(a);
        }
        _process = Launch(start);
        var deadline = Stopwatch.StartNew();
        while (!Ping())
        {
            if (_process.HasExited || deadline.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new InvalidOperationException($"redis-server on port {Port} did not start");
            }
            Thread.Sleep(20);
        }
    }

    private string[] Arguments() => [.. Tls is null ? new[] { "--port", Port.ToString() }
            : ["--port", "0", "--tls-port", Port.ToString(), "--tls-cert-file", Tls.ServerCertificateFile, "--tls-key-file", Tls.ServerKeyFile,
               "--tls-ca-cert-file", Tls.CaFile, "--tls-auth-clients", "yes"],
            "--bind", "127.0.0.1", "--save", "",
            // Durable against a killed process (what the failover tests do), not a crashed machine: redis writes the
            // append-only file before it replies, and the page cache keeps it; fsync per write cost ~1 s a segment here.
            "--appendonly", _durable ? "yes" : "no", "--appendfsync", "no",
            "--dir", _dir, "--protected-mode", "no", .. _cluster ? ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0"] : Array.Empty<string>()];

    /// <summary>
    /// Kills the server (SIGKILL) after <paramref name="after"/> and starts it again <paramref name="down"/>
    /// later, from a shell of its own: nothing in this process takes part, so a garbage collection
    /// that waits for a thread blocked on the dead store (a fault on a remote page waits for the store,
    /// and the runtime for the fault) cannot hold the restart up, as it would a restart run by a
    /// managed thread of the same process.
    /// </summary>
    public void RestartLater(TimeSpan after, TimeSpan down)
    {
        var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(FormattableString.Invariant($"sleep {after.TotalSeconds:F3}; kill -9 {_process!.Id}; sleep {down.TotalSeconds:F3}; exec \"$0\" \"$@\""));
        start.ArgumentList.Add(ServerPath!);
        foreach (string a in Arguments())
        {
            start.ArgumentList.Add(a);
        }
        _restarter = Launch(start);
    }

    /// <summary>Starts a server process (or the shell that becomes one) with its output read and dropped, so a full pipe never blocks it.</summary>
    private static Process Launch(ProcessStartInfo start)
    {
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private Process? _restarter; // the shell of RestartLater, which becomes the new redis-server (exec)

    /// <summary>Whether <see cref="RestartLater"/> did its work: the first server is gone and its successor answers.</summary>
    public bool RestartedLater => _process is { HasExited: true } && _restarter is { HasExited: false } && Ping();

    /// <summary>Kills the server (SIGKILL: a crashed node).</summary>
    public void Kill()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill();
            _process.WaitForExit();
        }
    }

    /// <summary>Runs redis-cli against this server; returns its output.</summary>
    public string Cli(params string[] args) => RunCli(["-p", Port.ToString(),
        .. Tls is null ? [] : new[] { "--tls", "--cacert", Tls.CaFile, "--cert", Tls.ClientCertificateFile, "--key", Tls.ClientKeyFile }, .. args]);

    public static string RunCli(IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(CliPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }
        using var p = Process.Start(start)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return output.Trim();
    }

    private static bool ReplicasOnline(string info, int replicas) =>
        info.Split('\n').Count(line => line.StartsWith("slave", StringComparison.Ordinal) && line.Contains("state=online")) >= replicas;

    private bool Ping()
    {
        try
        {
            using var client = new TcpClient();
            client.Connect(IPAddress.Loopback, Port);
            using Stream stream = Tls is null ? client.GetStream() : Tls.Authenticate(client.GetStream());
            stream.Write("PING\r\n"u8);
            Span<byte> reply = stackalloc byte[7];
            int n = stream.Read(reply);
            return n > 0 && reply[0] == '+';
        }
        catch (Exception e) when (e is SocketException or IOException or System.Security.Authentication.AuthenticationException)
        {
            return false;
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static string? Which(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Append("/usr/sbin").Append("/usr/bin")
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    public void Dispose()
    {
        Kill();
        if (_restarter is { HasExited: false })
        {
            _restarter.Kill();
            _restarter.WaitForExit();
        }
        _restarter?.Dispose();
        _process?.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// A cluster of <paramref name="masters"/> masters with <paramref name="replicas"/> replicas each,
    /// on loopback; returns every node (masters first, as redis-cli assigns them).
    /// </summary>
    public static RespServer[] Cluster(int masters, int replicas)
    {
        var nodes = new RespServer[masters * (1 + replicas)];
        try
        {
            for (int i = 0; i < nodes.Length; i++)
            {
                nodes[i] = Start(cluster: true);
            }
            string output = RunCli(["--cluster", "create", .. nodes.Select(n => n.ToString()), "--cluster-replicas", replicas.ToString(), "--cluster-yes"]);
            if (!output.Contains("[OK] All 16384 slots covered"))
            {
                throw new InvalidOperationException($"redis-cli --cluster create failed: {output}");
            }
            var deadline = Stopwatch.StartNew();
            // Ready once every node sees the cluster whole and every replica has synced (until then WAIT counts 0 replicas).
            while (!nodes.All(n => n.Cli("cluster", "info").Contains("cluster_state:ok")) ||
                   nodes.Take(masters).Any(n => !ReplicasOnline(n.Cli("info", "replication"), replicas)))
            {
                if (deadline.Elapsed > TimeSpan.FromSeconds(20))
                {
                    throw new InvalidOperationException("the cluster never reached cluster_state:ok");
                }
                Thread.Sleep(100);
            }
            return nodes;
        }
        catch
        {
            foreach (RespServer? n in nodes)
            {
                n?.Dispose();
            }
            throw;
        }
    }
}


/// <summary>
/// The certificates of a TLS <see cref="RespServer"/>, made for it and kept in its directory: a CA
/// of its own, a server certificate for 127.0.0.1 and localhost, and a client certificate (the
/// server asks for one, as Redis does by default), all PEM, valid for two days, ECDSA P-256.
/// </summary>
internal sealed class RespTls
{
    public required string CaFile { get; init; }
    public required string ServerCertificateFile { get; init; }
    public required string ServerKeyFile { get; init; }
    public required string ClientCertificateFile { get; init; }
    public required string ClientKeyFile { get; init; }

    /// <summary>Makes a CA and its server and client certificates in <paramref name="dir"/>.</summary>
    public static RespTls Create(string dir)
    {
        DateTimeOffset from = DateTimeOffset.UtcNow.AddHours(-1), until = DateTimeOffset.UtcNow.AddDays(2);
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=CramCore test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using X509Certificate2 ca = caRequest.CreateSelfSigned(from, until);
        var tls = new RespTls
        {
            CaFile = Path.Combine(dir, "ca.crt"),
            ServerCertificateFile = Path.Combine(dir, "server.crt"),
            ServerKeyFile = Path.Combine(dir, "server.key"),
            ClientCertificateFile = Path.Combine(dir, "client.crt"),
            ClientKeyFile = Path.Combine(dir, "client.key"),
        };
        File.WriteAllText(tls.CaFile, ca.ExportCertificatePem());
        Issue(ca, "CN=localhost", "1.3.6.1.5.5.7.3.1", tls.ServerCertificateFile, tls.ServerKeyFile, from, until, serial: 2); // serverAuth
        Issue(ca, "CN=cramcore-client", "1.3.6.1.5.5.7.3.2", tls.ClientCertificateFile, tls.ClientKeyFile, from, until, serial: 3); // clientAuth
        return tls;
    }

    private static void Issue(X509Certificate2 ca, string subject, string usage, string certificateFile, string keyFile, DateTimeOffset from, DateTimeOffset until, byte serial)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(usage)], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        using X509Certificate2 certificate = request.Create(ca, from, until, [serial]);
        File.WriteAllText(certificateFile, certificate.ExportCertificatePem());
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>A TLS client stream on <paramref name="inner"/> that trusts this CA and presents the client certificate.</summary>
    public SslStream Authenticate(Stream inner)
    {
        using var ca = X509Certificate2.CreateFromPem(File.ReadAllText(CaFile));
        var stream = new SslStream(inner, leaveInnerStreamOpen: false);
        var chain = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        chain.CustomTrustStore.Add(ca);
        stream.AuthenticateAsClient(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            CertificateChainPolicy = chain,
            ClientCertificates = [X509Certificate2.CreateFromPemFile(ClientCertificateFile, ClientKeyFile)],
        });
        return stream;
    }

    /// <summary>The options a <c>RedisRemoteStore</c> needs to reach the server: trust this CA, present the client certificate.</summary>
    public Redis.RedisRemoteStoreOptions StoreOptions(Redis.RedisRemoteStoreOptions? options = null) => (options ?? new()) with
    {
        TlsCaFile = CaFile,
        TlsClientCertificateFile = ClientCertificateFile,
        TlsClientKeyFile = ClientKeyFile,
    };
}
