using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace CramCore.Tests;

/// <summary>
/// A real RESP store for the remote tier's tests: redis-server processes on loopback (installed by
/// ./build.sh from Debian's redis-server package), each on a free port, without persistence, in a
/// directory of their own that goes with them. <see cref="Cluster"/> makes a cluster of masters with
/// replicas through <c>redis-cli --cluster create</c>.
/// </summary>
internal sealed class RespServer : IDisposable
{
    private Process? _process;
    private readonly string _dir;

    private RespServer(int port, string dir, bool cluster)
    {
        Port = port;
        _dir = dir;
        _cluster = cluster;
        Start();
    }

    private readonly bool _cluster;

    public int Port { get; }
    public IPEndPoint EndPoint => new(IPAddress.Loopback, Port);
    public override string ToString() => $"127.0.0.1:{Port}";

    /// <summary>The redis-server binary, or null when it is not installed.</summary>
    public static string? ServerPath { get; } = Which("redis-server");

    /// <summary>The redis-cli binary, or null.</summary>
    public static string? CliPath { get; } = Which("redis-cli");

    /// <summary>Why the tests that need a store skip (null: they run).</summary>
    public static string? Missing => ServerPath is null || CliPath is null
        ? "needs redis-server and redis-cli (Debian packages redis-server, redis-tools; ./build.sh installs them)"
        : null;

    /// <summary>Starts one server (a cluster node when <paramref name="cluster"/>).</summary>
    public static RespServer Start(bool cluster = false) =>
        new(FreePort(), Directory.CreateTempSubdirectory("cramcore-resp-").FullName, cluster);

    private void Start()
    {
        var start = new ProcessStartInfo(ServerPath!) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        foreach (string a in (string[])["--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", _dir, "--protected-mode", "no", .. _cluster ? ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"] : Array.Empty<string>()])
        {
            start.ArgumentList.Add(a);
        }
        _process = Process.Start(start)!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
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

    /// <summary>Kills the server (SIGKILL: a crashed node).</summary>
    public void Kill()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill();
            _process.WaitForExit();
        }
    }

    /// <summary>Starts the server again on the same port, empty (no persistence).</summary>
    public void Restart()
    {
        Kill();
        Start();
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
            while (!nodes.All(n => n.Cli("cluster", "info").Contains("cluster_state:ok")))
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

/// <summary>A <see cref="FactAttribute"/> for a test that needs a RESP store: skipped, with the reason, where redis-server is not installed.</summary>
public sealed class RespStoreFactAttribute : FactAttribute
{
    public RespStoreFactAttribute()
    {
        if (RespServer.Missing is { } missing)
        {
            Skip = missing;
        }
    }
}

/// <summary>The same for a theory.</summary>
public sealed class RespStoreTheoryAttribute : TheoryAttribute
{
    public RespStoreTheoryAttribute()
    {
        if (RespServer.Missing is { } missing)
        {
            Skip = missing;
        }
    }
}
