using System.Diagnostics;

namespace CramCore.Tests;

/// <summary>Runs a child process to its end, for tests whose subject may crash or be killed (SIGBUS, an OOM kill).</summary>
internal static class ChildProcess
{
    /// <summary>
    /// Runs <paramref name="fileName"/> with <paramref name="arguments"/> (no minidump on a crash),
    /// collecting its output; fails the test, after killing it, if it runs longer than
    /// <paramref name="timeout"/>. <paramref name="what"/> names it in that failure.
    /// </summary>
    public static (int Exit, string Stdout, string Stderr) Run(string fileName, IEnumerable<string> arguments, TimeSpan timeout, string what)
    {
        var start = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        start.Environment["DOTNET_DbgEnableMiniDump"] = "0";
        using var process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{what}: the child hung (still running after {timeout.TotalSeconds} s); stderr: {stderr.Result}");
        }
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
