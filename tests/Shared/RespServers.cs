namespace CramCore.Tests;

/// <summary>Whether a RESP store can be started here (redis-server and redis-cli installed): the same check as CramCore.Cli.RespServer.Missing, for test projects that do not reference the CLI.</summary>
internal static class RespStore
{
    public static string? Missing { get; } =
        new[] { "redis-server", "redis-cli" }.All(name => (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Append("/usr/bin")
            .Any(d => File.Exists(Path.Combine(d, name))))
            ? null
            : "needs redis-server and redis-cli (Debian packages redis-server and redis-tools; ./build.sh installs them)";
}

/// <summary>A <see cref="FactAttribute"/> for a test that needs a RESP store: skipped, with the reason, where redis-server is not installed.</summary>
public sealed class RespStoreFactAttribute : FactAttribute
{
    public RespStoreFactAttribute()
    {
        if (RespStore.Missing is { } missing)
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
        if (RespStore.Missing is { } missing)
        {
            Skip = missing;
        }
    }
}
