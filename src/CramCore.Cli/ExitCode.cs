namespace CramCore.Cli;

/// <summary>What `cram` returns (documented in `cram --help` and README).</summary>
internal static class ExitCode
{
    /// <summary>The verb ran and everything it checked held.</summary>
    public const int Success = 0;

    /// <summary>A page read back differs, or the engine counted a service error or a checksum failure.</summary>
    public const int IntegrityFailure = 1;

    /// <summary>Unknown verb or option, or a bad value: the message names the argument and the fix.</summary>
    public const int Usage = 2;

    /// <summary>The machine cannot run it: userfaultfd unavailable, no permission, a native library missing.</summary>
    public const int Environment = 3;
}
