namespace CramCore.Research;

/// <summary>A corpus file that cannot be used (missing, not whole pages, too large, unreadable); the message names the argument and the fix. The CLI prints it as a usage error.</summary>
internal sealed class CorpusException(string message) : Exception(message);
