using System.Text.RegularExpressions;

namespace CramCore.Tests;

/// <summary>The README stays a newcomer's page (at most 250 lines; the rest in docs/), and no relative link in it or in docs/ points at nothing.</summary>
[Trait("Category", TestCategory.Unit)]
public sealed partial class DocsTests
{
    [Fact]
    public void Readme_IsShort_AndEveryRelativeLinkResolves()
    {
        string root = RepositoryRoot.Path;
        int lines = File.ReadAllLines(Path.Combine(root, "README.md")).Length;
        Assert.True(lines <= 250, $"README.md has {lines} lines: move detail to docs/");
        var files = new[] { "README.md", "CHANGELOG.md" }.Select(f => Path.Combine(root, f))
            .Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md")).ToList();
        Assert.True(files.Count >= 6, string.Join(", ", files));
        var broken = new List<string>();
        foreach (string file in files)
        {
            foreach (Match m in Link().Matches(File.ReadAllText(file)))
            {
                string target = m.Groups[1].Value;
                if (target.StartsWith("http", StringComparison.Ordinal) || target.StartsWith('#'))
                {
                    continue;
                }
                string path = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(file)!, target.Split('#')[0]));
                if (!File.Exists(path) && !Directory.Exists(path))
                {
                    broken.Add($"{Path.GetRelativePath(root, file)}: {target}");
                }
            }
        }
        Assert.True(broken.Count == 0, "links to nothing:\n" + string.Join("\n", broken));
    }

    [GeneratedRegex(@"\]\(([^)\s]+)\)")]
    private static partial Regex Link();
}
