namespace CramCore.Tests;

/// <summary>The process's threads by name (/proc/self/task/*/comm): what tests count to see CramCore's threads start and stop.</summary>
internal static class ProcessThreads
{
    /// <summary>Threads whose name satisfies <paramref name="name"/>; a thread that exits while it is looked at is not counted.</summary>
    public static int Count(Func<string, bool> name) => Ids(name).Count;

    /// <summary>The ids of the threads whose name satisfies <paramref name="name"/> (to tell a thread started now from another engine's).</summary>
    public static HashSet<string> Ids(Func<string, bool> name) =>
        Directory.GetDirectories("/proc/self/task").Where(t =>
        {
            try
            {
                return name(File.ReadAllText(Path.Combine(t, "comm")).Trim());
            }
            catch (IOException)
            {
                return false; // the thread exited while we looked
            }
        }).Select(t => Path.GetFileName(t)).ToHashSet();
}
