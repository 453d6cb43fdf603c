namespace CramCore.Tests;

/// <summary>The checkout the tests run from: the first directory above their binaries that holds CramCore.sln.</summary>
internal static class RepositoryRoot
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "CramCore.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("CramCore.sln not found above " + AppContext.BaseDirectory);
    }
}
