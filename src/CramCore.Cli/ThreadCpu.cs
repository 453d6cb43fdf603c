namespace CramCore.Cli;

/// <summary>
/// CPU time of this process's threads, grouped by what they do (Linux /proc/self/task/*/stat): the
/// caller's own thread, CramCore's reclaim worker, writeback thread and compression helpers, and the
/// rest — so a benchmark can say which stage a phase's time went to.
/// </summary>
internal static class ThreadCpu
{
    /// <summary>Seconds of CPU (user + system) per group: "caller", "fault_service", "reclaim", "writeback", "compress", "recompress", "other".</summary>
    public static Dictionary<string, double> Sample()
    {
        int caller = CallerTid();
        const double tick = 1.0 / ClockTicksPerSecond;
        var groups = new Dictionary<string, double> { ["caller"] = 0, ["fault_service"] = 0, ["reclaim"] = 0, ["writeback"] = 0, ["compress"] = 0, ["recompress"] = 0, ["other"] = 0 };
        foreach (string task in Directory.GetDirectories("/proc/self/task"))
        {
            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(task, "stat"));
            }
            catch (IOException)
            {
                continue; // the thread exited while we looked
            }
            int close = stat.LastIndexOf(')');
            string comm = stat[(stat.IndexOf('(') + 1)..close];
            string[] fields = stat[(close + 2)..].Split(' '); // fields[0] is the state (field 3 of stat)
            double seconds = (long.Parse(fields[11]) + long.Parse(fields[12])) * tick; // utime, stime: fields 14, 15
            string group = int.Parse(Path.GetFileName(task)) == caller ? "caller"
                : comm switch { "cram-fault" => "fault_service", "cram-reclaim" => "reclaim", "cram-writeback" => "writeback", "cram-compress" => "compress", "cram-recompress" => "recompress", _ => "other" };
            groups[group] += seconds;
        }
        return groups;
    }

    /// <summary><paramref name="after"/> − <paramref name="before"/>, per group, rounded to 10 ms.</summary>
    public static Dictionary<string, double> Since(Dictionary<string, double> before, Dictionary<string, double> after) =>
        after.ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value - before.GetValueOrDefault(kv.Key), 2));

    private static int CallerTid() => int.Parse(Path.GetFileName(new FileInfo("/proc/thread-self").LinkTarget ?? "0"));

    private const int ClockTicksPerSecond = 100; // USER_HZ: 100 on Linux x64
}
