using System.Text.Json;

namespace CramCore.Tests;

/// <summary>
/// <see cref="CramOptions.MemoryLimitBytes"/> against the kernel: `cram bench memory-limit` runs in a
/// child process inside a memory cgroup the test creates (cgroup v2 where the memory controller is
/// there, else v1 at /sys/fs/cgroup/memory; needs root), limited to the memory limit plus
/// <see cref="RuntimeAllowance"/> for the .NET runtime, with no swap. The child writes 1 GiB and
/// reads every page back: (a) compressible corpus pages (the shipped sample) in ghost mode,
/// (b) random bytes with a backing file; neither may be OOM-killed, and the cgroup's own peak must
/// stay under its limit. (c) random bytes in ghost mode cannot be held: the event fires and every
/// page added past the limit waits MemoryLimitWait once (README, "Memory bounds").
/// </summary>
[Trait("Category", TestCategory.Cgroup)]
public sealed class MemoryCgroupTests
{
    /// <summary>
    /// What the process needs besides CramCore's memory: the .NET host, runtime, JIT and GC heap,
    /// the loaded assemblies and native libraries (measured: a peak RSS 46-51 MiB over the memory
    /// limit in these runs), with room for the kernel's page tables and page cache.
    /// </summary>
    private const long RuntimeAllowance = 128L << 20;

    private static string Sample(string name) => Path.Combine(AppContext.BaseDirectory, "Samples", $"{name}.sample.pages");

    [CgroupFact]
    public void CompressibleCorpus_InGhostMode_IsNeverOomKilled_AndReadsBack()
    {
        const long limit = 512L << 20; // the sample compresses about 2.6x: 1 GiB needs about 400 MiB of pool
        Run(limit, limit + RuntimeAllowance, $"--corpus {Sample("dotnet-heap")} --size 1g --memory-limit {limit} --backing-file none", out JsonElement r, out long peak);
        Assert.Equal(0, r.GetProperty("exceeded_events").GetInt64());
        Assert.True(r.GetProperty("peak_memory_used_bytes").GetInt64() <= limit + (8L << 20));
        Assert.True(peak <= limit + RuntimeAllowance);
    }

    [CgroupFact]
    public void RandomBytes_WithABackingFile_AreNeverOomKilled_AndReadBack()
    {
        const long limit = 256L << 20;
        string file = Path.Combine(Path.GetTempPath(), $"cram-cgroup-{Guid.NewGuid():N}");
        Run(limit, limit + RuntimeAllowance, $"--data random --size 1g --memory-limit {limit} --backing-file {file}", out JsonElement r, out _);
        Assert.Equal(0, r.GetProperty("exceeded_events").GetInt64());
        Assert.True(r.GetProperty("uncompressed_stored_pages").GetInt64() > r.GetProperty("pages").GetInt64() / 2);
        Assert.True(r.GetProperty("file_pages").GetInt64() > r.GetProperty("pages").GetInt64() / 2);
        Assert.True(r.GetProperty("peak_memory_used_bytes").GetInt64() <= limit + (8L << 20));
        Assert.False(File.Exists(file)); // unlinked at once
    }

    [CgroupFact]
    public void RandomBytes_InGhostMode_RaiseTheEvent_AndEveryPageAddedWaitsOnce()
    {
        const long limit = 128L << 20;
        const long size = 160L << 20; // 32 MiB past the limit, at one wait a page
        const double waitMs = 1;
        Run(limit, size + RuntimeAllowance, $"--data random --size {size} --memory-limit {limit} --wait-ms {waitMs} --backing-file none", out JsonElement r, out _);
        Assert.Equal(1, r.GetProperty("exceeded_events").GetInt64());
        Assert.True(r.GetProperty("exceeded_at_end").GetBoolean());
        long written = r.GetProperty("pages_written_while_exceeded").GetInt64();
        long waits = r.GetProperty("memory_limit_waits").GetInt64();
        Assert.True(written > (16L << 20) / 4096, $"{written} pages written while exceeded");
        Assert.InRange(waits, written * 9 / 10, written * 2); // one wait per page added (fault-around is off)
        Assert.True(r.GetProperty("write_ms_while_exceeded").GetDouble() >= waits * waitMs * 0.9);
    }

    /// <summary>Runs the verb in a fresh memory cgroup of <paramref name="cgroupLimit"/> bytes; asserts it exited 0 without an OOM kill. Returns its JSON and the cgroup's peak usage (0 where the kernel does not report it).</summary>
    private static void Run(long memoryLimit, long cgroupLimit, string arguments, out JsonElement result, out long peak)
    {
        using MemoryCgroup? cgroup = MemoryCgroup.TryCreate(cgroupLimit, out string why);
        Assert.True(cgroup is not null, $"a memory cgroup could be made when the tests were discovered, not now: {why}");
        string cram = Path.Combine(AppContext.BaseDirectory, "cram.dll");
        // The shell joins the group, then becomes the child: everything it allocates is charged there.
        (int exit, string stdout, string stderr) = ChildProcess.Run("sh",
            ["-c", $"echo $$ > {cgroup.ProcsFile} && exec dotnet {cram} bench memory-limit {arguments} --json"],
            TimeSpan.FromMinutes(5), $"cram bench memory-limit {arguments}");
        long oomKills = cgroup.OomKills();
        Assert.True(exit == 0 && oomKills == 0,
            $"exit {exit}, {oomKills} OOM kill(s) in a cgroup of {cgroupLimit >> 20} MiB (memory limit {memoryLimit >> 20} MiB); stderr: {stderr}");
        result = JsonDocument.Parse(stdout).RootElement.Clone();
        Assert.Equal(0, result.GetProperty("mismatches").GetInt64());
        peak = cgroup.PeakBytes();
        Assert.True(peak <= cgroupLimit, $"the cgroup peaked at {peak} bytes");
    }

    /// <summary>
    /// A test that needs a memory cgroup of its own: skipped, saying why, where none can be made
    /// (not root, no memory controller, a read-only /sys/fs/cgroup); as root on a machine that has one,
    /// it runs. The probe makes and removes one cgroup when the tests are discovered.
    /// </summary>
    private sealed class CgroupFactAttribute : FactAttribute
    {
        public CgroupFactAttribute()
        {
            using MemoryCgroup? probe = MemoryCgroup.TryCreate(64L << 20, out string why);
            if (probe is null)
            {
                Skip = $"needs a memory cgroup the test can create (root, cgroup v2 with the memory controller or v1): {why}";
            }
        }
    }

    /// <summary>A memory cgroup of its own, removed on dispose (once its process has exited).</summary>
    private sealed class MemoryCgroup : IDisposable
    {
        private readonly string _dir;
        private readonly bool _v2;

        private MemoryCgroup(string dir, bool v2)
        {
            _dir = dir;
            _v2 = v2;
        }

        public string ProcsFile => Path.Combine(_dir, "cgroup.procs");

        public static MemoryCgroup? TryCreate(long limitBytes, out string why)
        {
            const string v2Root = "/sys/fs/cgroup";
            const string v1Root = "/sys/fs/cgroup/memory";
            string name = $"cramcore-test-{Environment.ProcessId}-{Guid.NewGuid():N}";
            try
            {
                string controllers = Path.Combine(v2Root, "cgroup.controllers");
                if (File.Exists(controllers) && File.ReadAllText(controllers).Split(' ', '\n').Contains("memory"))
                {
                    File.WriteAllText(Path.Combine(v2Root, "cgroup.subtree_control"), "+memory");
                    var group = new MemoryCgroup(Directory.CreateDirectory(Path.Combine(v2Root, name)).FullName, v2: true);
                    File.WriteAllText(Path.Combine(group._dir, "memory.max"), limitBytes.ToString());
                    string swap = Path.Combine(group._dir, "memory.swap.max");
                    if (File.Exists(swap))
                    {
                        File.WriteAllText(swap, "0");
                    }
                    why = "";
                    return group;
                }
                if (Directory.Exists(v1Root))
                {
                    var group = new MemoryCgroup(Directory.CreateDirectory(Path.Combine(v1Root, name)).FullName, v2: false);
                    File.WriteAllText(Path.Combine(group._dir, "memory.limit_in_bytes"), limitBytes.ToString());
                    string memsw = Path.Combine(group._dir, "memory.memsw.limit_in_bytes");
                    if (File.Exists(memsw))
                    {
                        File.WriteAllText(memsw, limitBytes.ToString()); // no swap to escape to
                    }
                    why = "";
                    return group;
                }
                why = "no cgroup v2 memory controller and no v1 hierarchy at /sys/fs/cgroup/memory";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                why = e.Message;
            }
            return null;
        }

        /// <summary>OOM kills in the group (v2 memory.events, v1 memory.oom_control).</summary>
        public long OomKills() => Field(_v2 ? "memory.events" : "memory.oom_control", "oom_kill");

        /// <summary>The group's peak usage (v2 memory.peak where the kernel has it, v1 memory.max_usage_in_bytes); 0 if not reported.</summary>
        public long PeakBytes()
        {
            string path = Path.Combine(_dir, _v2 ? "memory.peak" : "memory.max_usage_in_bytes");
            return File.Exists(path) ? long.Parse(File.ReadAllText(path).Trim()) : 0;
        }

        private long Field(string file, string key)
        {
            foreach (string line in File.ReadLines(Path.Combine(_dir, file)))
            {
                string[] parts = line.Split(' ');
                if (parts.Length == 2 && parts[0] == key)
                {
                    return long.Parse(parts[1]);
                }
            }
            return 0;
        }

        public void Dispose()
        {
            for (int attempt = 0; attempt < 50; attempt++)
            {
                try
                {
                    Directory.Delete(_dir); // rmdir: the kernel removes the control files with it
                    return;
                }
                catch (IOException)
                {
                    Thread.Sleep(100); // the exited process may still be leaving the group
                }
            }
        }
    }
}
