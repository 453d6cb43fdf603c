namespace CramCore.Tests;

/// <summary>
/// A stored copy that fails its checksum, or a backing-file read that fails, is never mapped: the
/// faulting thread gets SIGBUS (the page is poisoned), as the kernel does on a swap read error. The
/// process dies of it (the .NET runtime turns SIGBUS in managed code into a fatal
/// AccessViolationException, exit 134), so each case runs in a child process (CramCore.FaultChild)
/// and the test checks how it ended, with each fault service (with the faulting thread, CramCore's
/// SIGBUS handler poisons the page and passes the poisoned page's SIGBUS on to the runtime). The damage: a bit flipped in the pool or in the file, the file
/// truncated, and writes a lying disk acknowledged but never stored.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed class CorruptionTests
{
    [Theory]
    [InlineData("corrupt-pool", "stored copy in the pool failed its checksum", false)]
    [InlineData("corrupt-file", "stored copy in the backing file failed its checksum", false)]
    [InlineData("truncate-file", "backing-file read failed twice", false)]
    [InlineData("dropped-write", "stored copy in the backing file failed its checksum", false)]
    [InlineData("corrupt-pool", "stored copy in the pool failed its checksum", true)]
    [InlineData("corrupt-file", "stored copy in the backing file failed its checksum", true)]
    [InlineData("truncate-file", "backing-file read failed twice", true)]
    public void BadStoredCopy_IsNeverMapped_TheReaderGetsSigbus(string scenario, string reason, bool faultingThread)
    {
        string dir = Directory.CreateTempSubdirectory("cramcore-corrupt-").FullName;
        try
        {
            (int exit, string stdout, string stderr) = RunChild(scenario, dir, faultingThread);
            Assert.True(exit != 0, $"the child exited normally:\n{stdout}\n{stderr}");
            Assert.DoesNotContain("read returned", stdout); // no garbage, no zeros: the read never completed
            Assert.Contains("cramcore: page at 0x", stderr);
            Assert.Contains(reason, stderr);
            Assert.Contains("SIGBUS", stderr);
            if (scenario is not ("truncate-file" or "dropped-write"))
            {
                Assert.Contains("reading", stdout); // the healthy page before it read back fine
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (int Exit, string Stdout, string Stderr) RunChild(string scenario, string dir, bool faultingThread) =>
        ChildProcess.Run("dotnet", [Path.Combine(AppContext.BaseDirectory, "CramCore.FaultChild.dll"), scenario, dir, .. faultingThread ? ["faulting-thread"] : Array.Empty<string>()],
            TimeSpan.FromSeconds(60), scenario);
}
