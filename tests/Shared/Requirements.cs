namespace CramCore.Tests;

/// <summary>
/// A <see cref="FactAttribute"/> for a test that needs root (to mount a file system, say): as
/// anyone else the runner reports it skipped, with the reason, instead of passing it unchecked.
/// </summary>
public sealed class RootFactAttribute : FactAttribute
{
    /// <param name="needsRootTo">What the test does that only root may, e.g. "mount a 512 KiB tmpfs".</param>
    public RootFactAttribute(string needsRootTo)
    {
        if (!IsRoot)
        {
            Skip = $"needs root to {needsRootTo}; run the tests as root (sudo ./build.sh test) to include it";
        }
    }

    /// <summary>Whether this process runs as root (effective uid 0).</summary>
    public static bool IsRoot => Environment.UserName == "root";
}
