using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace CramCore.Cli;

/// <summary>
/// A RESP store of our own on loopback, for `cram bench remote`, `cram demo --remote` and the remote
/// tier's tests: a redis-server process (Debian's redis-server package, which ./build.sh installs)
/// on a free port, bound to 127.0.0.1, in a directory of its own that goes with it; without
/// persistence, or with an append-only file (<paramref name="durable"/>), written before each reply, so a
/// restart after the process is killed keeps every acknowledged write. <see cref="Cluster"/> makes a cluster of
/// masters with replicas through <c>redis-cli --cluster create</c>.
/// </summary>
internal sealed class RespServer : IDisposable
{
    private Process? _process;
    private readonly string _dir;

    private RespServer(int port, string dir, bool cluster, bool durable)
    {
        Port = port;
        _dir = dir;
        _cluster = cluster;
        _durable = durable;
        Start();
    }

    private readonly bool _cluster, _durable;

    public int Port { get; }
    public IPEndPoint EndPoint => new(IPAddress.Loopback, Port);
    public override string ToString() => $"127.0.0.1:{Port}";

    /// <summary>The redis-server binary, or null when it is not installed.</summary>
    public static string? ServerPath { get; } = Which("redis-server");

    /// <summary>The redis-cli binary, or null.</summary>
    public static string? CliPath { get; } = Which("redis-cli");

    /// <summary>What is missing to start one (null: nothing).</summary>
    public static string? Missing => ServerPath is null || CliPath is null
        ? "redis-server and redis-cli are not installed (Debian packages redis-server and redis-tools; ./build.sh installs them)"
        : null;

    /// <summary>Starts one server (a cluster node when <paramref name="cluster"/>; with an append-only file when <paramref name="durable"/>).</summary>
    public static RespServer Start(bool cluster = false, bool durable = false) =>
        new(FreePort(), Directory.CreateTempSubdirectory("cramcore-resp-").FullName, cluster, durable);

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

    private string[] Arguments() => ["--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "",
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
    public string Cli(params string[] args) => RunCli(["-p", Port.ToString(), .. args]);

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
            using NetworkStream stream = client.GetStream();
            stream.Write("PING\r\n"u8);
            Span<byte> reply = stackalloc byte[7];
            int n = stream.Read(reply);
            return n > 0 && reply[0] == '+';
        }
        catch (SocketException)
        {
            return false;
        }
        catch (IOException)
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

