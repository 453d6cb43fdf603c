namespace CramCore.Cli;

/// <summary>A user error (a bad argument, a missing file): printed once as "cram VERB: message" without a stack trace, exit code 2. The message names the argument and the fix.</summary>
internal sealed class CliException(string message) : Exception(message);
