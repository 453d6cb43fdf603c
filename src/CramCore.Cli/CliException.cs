namespace CramCore.Cli;

/// <summary>
/// An error the user can act on (a bad argument, a missing file or program): printed once as
/// "cram VERB: message" without a stack trace. The message names the argument and the fix; the exit
/// code is 2 (usage) unless the machine lacks something (3) or the data failed a check (1).
/// </summary>
internal sealed class CliException(string message, int exitCode = ExitCode.Usage) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
