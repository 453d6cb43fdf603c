using System.Diagnostics;
using System.IO.Compression;
using System.Xml.Linq;
using Xunit.Abstractions;

namespace CramCore.PackageTests;

/// <summary>
/// Packs CramCore, then builds and runs a fresh console project that takes the package from a
/// local folder, the way a user does with `dotnet add package CramCore`: proof that the package
/// (managed assembly + native helper under runtimes/) works outside this repository.
/// </summary>
public sealed class PackageTests(ITestOutputHelper output)
{
    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "CramCore.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("CramCore.sln not found above " + AppContext.BaseDirectory);
    }

    private string Run(string workingDirectory, string fileName, string arguments, IDictionary<string, string>? environment = null, int expectedExit = 0)
    {
        var psi = new ProcessStartInfo(fileName, arguments)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(5)), $"{fileName} {arguments} timed out");
        string text = stdout.Result + stderr.Result;
        output.WriteLine($"$ {fileName} {arguments}\n{text}");
        Assert.True(process.ExitCode == expectedExit, $"{fileName} {arguments} exited with {process.ExitCode}, expected {expectedExit}:\n{text}");
        return text;
    }

    /// <summary>README's package recipe: the shell lines after its "package-recipe" marker, as they stand.</summary>
    private static string[] ReadmeRecipe(string root)
    {
        string readme = File.ReadAllText(Path.Combine(root, "README.md"));
        int marker = readme.IndexOf("<!-- package-recipe", StringComparison.Ordinal);
        Assert.True(marker >= 0, "README.md has no package-recipe marker");
        int open = readme.IndexOf("```sh\n", marker, StringComparison.Ordinal) + "```sh\n".Length;
        int close = readme.IndexOf("```", open, StringComparison.Ordinal);
        return readme[open..close].Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    [Fact]
    public void PackageWorksInAFreshProject_ByTheReadmesRecipe()
    {
        string root = RepoRoot();
        DirectoryInfo work = Directory.CreateTempSubdirectory("cramcore-package-");
        string? version = null;
        try
        {
            string app = Path.Combine(work.FullName, "app");
            Directory.CreateDirectory(app);
            var env = new Dictionary<string, string> { ["NUGET_PACKAGES"] = Path.Combine(work.FullName, "packages") }; // no other test's cache

            // The recipe, line by line, with the paths of this run and the version pack printed.
            string[] recipe = ReadmeRecipe(root);
            Assert.Contains(recipe, l => l.StartsWith("./build.sh pack", StringComparison.Ordinal));
            Assert.Contains(recipe, l => l.StartsWith("dotnet add package CramCore --version ", StringComparison.Ordinal));
            string cwd = root;
            foreach (string raw in recipe)
            {
                string line = raw.Split('#')[0].Trim().Replace("/path/to/cramcore", root).Replace("/path/to/MyApp", app);
                if (version is not null)
                {
                    line = System.Text.RegularExpressions.Regex.Replace(line, @"0\.1\.0-dev\.[0-9A-Za-z.]+", version);
                }
                if (line.StartsWith("cd ", StringComparison.Ordinal))
                {
                    cwd = line[3..];
                    if (cwd == app)
                    {
                        File.WriteAllText(Path.Combine(app, "app.csproj"), AppProject); // the user's project, before the recipe adds the package
                        File.WriteAllText(Path.Combine(app, "Program.cs"), AppProgram);
                    }
                    continue;
                }
                string[] words = line.Split(' ', 2);
                string program = words[0].StartsWith("./", StringComparison.Ordinal) ? Path.Combine(cwd, words[0]) : words[0]; // as a shell in cwd would
                string text = Run(cwd, program, words.Length > 1 ? words[1] : "", env);
                if (line.StartsWith("./build.sh pack", StringComparison.Ordinal))
                {
                    var printed = System.Text.RegularExpressions.Regex.Match(text, @"dotnet add package CramCore --version (\S+)");
                    Assert.True(printed.Success, "pack printed no version:\n" + text);
                    version = printed.Groups[1].Value;
                    Assert.Matches(@"^0\.1\.0-dev\.[0-9]+\.[0-9]+\.g([0-9a-f]{7}|nogit)(\.dirty)?$", version); // nogit: a copy without git history
                    Assert.Contains($"dotnet nuget add source {Path.Combine(root, "artifacts", "packages")} --name cramcore-local --configfile nuget.config", text);
                }
            }
            Assert.NotNull(version);
            string feed = Path.Combine(root, "artifacts", "packages");
            Assert.Contains($"Include=\"CramCore\" Version=\"{version}\"", File.ReadAllText(Path.Combine(app, "app.csproj")));

            string nupkg = Path.Combine(feed, $"CramCore.{version}.nupkg");
            Assert.True(File.Exists(nupkg), "package missing: " + nupkg);
            Assert.True(File.Exists(Path.Combine(feed, $"CramCore.{version}.snupkg")), "symbols package missing");
            Assert.True(File.Exists(Path.Combine(feed, $"CramCore.Redis.{version}.nupkg")), "CramCore.Redis package missing");
            using (ZipArchive zip = ZipFile.OpenRead(nupkg))
            {
                var entries = zip.Entries.Select(e => e.FullName).ToHashSet();
                Assert.Contains("lib/net10.0/CramCore.dll", entries);
                Assert.Contains("lib/net10.0/CramCore.xml", entries);
                Assert.Contains("runtimes/linux-x64/native/libCramNative.so", entries);
                Assert.Contains("README.md", entries);
                using var readme = new StreamReader(zip.GetEntry("README.md")!.Open());
                string readmeText = readme.ReadToEnd();
                Assert.Contains("CramEngine.Create", readmeText);
                Assert.DoesNotMatch(@"\]\((?!https?://)[^)]*\)", readmeText); // no link a package page cannot follow
                using var nuspecReader = new StreamReader(zip.GetEntry("CramCore.nuspec")!.Open());
                XElement nuspec = XDocument.Parse(nuspecReader.ReadToEnd()).Root!;
                XNamespace ns = nuspec.GetDefaultNamespace();
                XElement metadata = nuspec.Element(ns + "metadata")!;
                Assert.Equal("MIT", metadata.Element(ns + "license")?.Value);
                Assert.Equal("expression", metadata.Element(ns + "license")?.Attribute("type")?.Value);
                Assert.Contains("userfaultfd", metadata.Element(ns + "tags")?.Value ?? "");
                Assert.Equal(version, metadata.Element(ns + "version")?.Value);
                Assert.False(string.IsNullOrWhiteSpace(metadata.Element(ns + "description")?.Value));
                Assert.Contains("## 0.1.0", metadata.Element(ns + "releaseNotes")?.Value ?? ""); // CHANGELOG.md

                // Built deterministically: no path of this machine in the assembly (its PDB path is /_/…).
                using var dll = new MemoryStream();
                using (Stream entry = zip.GetEntry("lib/net10.0/CramCore.dll")!.Open())
                {
                    entry.CopyTo(dll);
                }
                string bytes = System.Text.Encoding.Latin1.GetString(dll.ToArray());
                Assert.DoesNotContain(root, bytes);
                Assert.Contains("/_/src/CramCore/", bytes);
            }
            using (ZipArchive symbols = ZipFile.OpenRead(Path.Combine(feed, $"CramCore.{version}.snupkg")))
            {
                using var pdb = new MemoryStream();
                using (Stream entry = symbols.GetEntry("lib/net10.0/CramCore.pdb")!.Open())
                {
                    entry.CopyTo(pdb);
                }
                pdb.Position = 0;
                using var provider = System.Reflection.Metadata.MetadataReaderProvider.FromPortablePdbStream(pdb);
                System.Reflection.Metadata.MetadataReader reader = provider.GetMetadataReader();
                var documents = reader.Documents.Select(d => reader.GetString(reader.GetDocument(d).Name)).ToList();
                Assert.NotEmpty(documents);
                Assert.All(documents, d => Assert.StartsWith("/_/", d)); // source paths mapped, not this checkout's
            }

            // The repository URL, given at pack time (or from git's https origin remote, which this clone may lack).
            const string repository = "https://github.com/example/cramcore";
            string urlFeed = Path.Combine(work.FullName, "url-feed");
            Run(root, "dotnet", $"pack src/CramCore/CramCore.csproj -c Release --no-build -o \"{urlFeed}\" -p:Version={version} -p:RepositoryUrl={repository} -nologo");
            using (ZipArchive zip = ZipFile.OpenRead(Path.Combine(urlFeed, $"CramCore.{version}.nupkg")))
            {
                using var nuspecReader = new StreamReader(zip.GetEntry("CramCore.nuspec")!.Open());
                XElement metadata = XDocument.Parse(nuspecReader.ReadToEnd()).Root!.Elements().First(e => e.Name.LocalName == "metadata");
                XNamespace ns = metadata.Name.Namespace;
                Assert.Equal(repository, metadata.Element(ns + "projectUrl")?.Value);
                Assert.Equal(repository, metadata.Element(ns + "repository")?.Attribute("url")?.Value);
            }

            string output = Run(app, "dotnet", "run -c Release", env);
            Assert.Contains("CRAMCORE-PACKAGE-OK", output);
            Assert.Contains("mismatches=0", output);
            Assert.Contains($"version={version}", output); // the assembly is this build
            string bin = Path.Combine(app, "bin", "Release", "net10.0");
            string helper = Path.Combine(bin, "runtimes", "linux-x64", "native", "libCramNative.so");
            Assert.True(File.Exists(helper), "the native helper did not arrive through the package's runtimes/ folder");

            // The user override comes first: a wrong path is reported as such, a right one works.
            string wrong = Run(bin, "dotnet", "app.dll", new Dictionary<string, string> { ["CRAMCORE_NATIVE_LIBRARY"] = "/nonexistent/libCramNative.so" }, expectedExit: 134);
            Assert.Contains("CRAMCORE_NATIVE_LIBRARY points to '/nonexistent/libCramNative.so'", wrong);
            string right = Run(bin, "dotnet", "app.dll", new Dictionary<string, string> { ["CRAMCORE_NATIVE_LIBRARY"] = helper });
            Assert.Contains("CRAMCORE-PACKAGE-OK", right);
        }
        finally
        {
            work.Delete(recursive: true);
            foreach (string file in version is null ? [] : Directory.GetFiles(Path.Combine(root, "artifacts", "packages"), $"*.{version}.*nupkg"))
            {
                File.Delete(file); // what this run packed: the folder is the user's
            }
        }
    }

    /// <summary>
    /// A consumer published with Native AOT (and trimming) takes the package with no warning at all
    /// (warnings are errors here), and the native executable it makes works: pages evicted and read back.
    /// </summary>
    [Fact]
    public void NativeAotConsumer_PublishesWithoutWarnings_AndRuns()
    {
        string root = RepoRoot();
        DirectoryInfo work = Directory.CreateTempSubdirectory("cramcore-aot-");
        string version = $"0.1.0-aot.{DateTime.UtcNow:yyyyMMddHHmmssfff}";
        string cache = Path.Combine(Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"), "cramcore", version);
        try
        {
            string feed = Path.Combine(work.FullName, "feed");
            Run(root, "dotnet", $"pack src/CramCore/CramCore.csproj -c Release -o \"{feed}\" -p:Version={version} -nologo"); // built with its version: the assembly says which build it is
            string app = Path.Combine(work.FullName, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <add key="local" value="{feed}" />
                    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "app.csproj"), AppProject.Replace("</PropertyGroup>", $"""
                    <PublishAot>true</PublishAot>
                    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                    <InvariantGlobalization>true</InvariantGlobalization>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="CramCore" Version="{version}" />
                  </ItemGroup>
                """));
            File.WriteAllText(Path.Combine(app, "Program.cs"), AppProgram);
            string published = Run(app, "dotnet", "publish -c Release -r linux-x64 -nologo");
            Assert.DoesNotContain("warning", published, StringComparison.OrdinalIgnoreCase);
            string exe = Path.Combine(app, "bin", "Release", "net10.0", "linux-x64", "publish", "app");
            Assert.True(File.Exists(exe), "no native executable: " + exe);
            string output = Run(Path.GetDirectoryName(exe)!, exe, "");
            Assert.Contains("CRAMCORE-PACKAGE-OK", output);
            Assert.Contains($"version={version}", output);
        }
        finally
        {
            work.Delete(recursive: true);
            if (Directory.Exists(cache))
            {
                Directory.Delete(cache, recursive: true); // this run's package, out of the user's NuGet cache
            }
        }
    }

    private const string AppProject = """
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <OutputType>Exe</OutputType>
            <TargetFramework>net10.0</TargetFramework>
            <Nullable>enable</Nullable>
            <ImplicitUsings>enable</ImplicitUsings>
          </PropertyGroup>
        </Project>
        """;

    private const string AppProgram = """
        using System.Reflection;
        using CramCore;

        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 4L << 20 });
        using var region = engine.CreateRegion(32L << 20); // 8x the resident limit
        Span<long> words = region.AsSpan<long>(0, (int)(region.Length / 8));
        for (int i = 0; i < words.Length; i++) words[i] = i % 1000;
        long bad = 0;
        for (int i = 0; i < words.Length; i++) if (words[i] != i % 1000) bad++;
        var s = engine.GetStats();
        string version = typeof(CramEngine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        Console.WriteLine($"mismatches={bad} evictions={s.Evictions} refaults={s.Refaults} resident={s.ResidentBytes} limit={4L << 20} logical={s.LogicalBytes} mode={s.UserfaultfdMode} version={version}");
        Console.WriteLine(bad == 0 && s.Evictions > 0 && s.Refaults > 0 ? "CRAMCORE-PACKAGE-OK" : "CRAMCORE-PACKAGE-FAILED");
        """;
}
