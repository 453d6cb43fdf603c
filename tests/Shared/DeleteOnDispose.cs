namespace CramCore.Tests;

/// <summary>Deletes a test's temporary directory, with everything in it, on dispose.</summary>
internal sealed class DeleteOnDispose(string directory) : IDisposable
{
    public void Dispose() => Directory.Delete(directory, recursive: true);
}
