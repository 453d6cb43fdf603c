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

    [Fact]
    public void PackageWorksInAFreshProject()
    {
        string root = RepoRoot();
        DirectoryInfo work = Directory.CreateTempSubdirectory("cramcore-package-");
        try
        {
            // A version of its own, so no cached package of the same version can stand in for this build.
            string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmssfff}";
            string feed = Path.Combine(work.FullName, "feed");
            const string repository = "https://github.com/example/cramcore"; // as a publish would pass it (or git's origin gives it)
            Run(root, "dotnet", $"pack src/CramCore/CramCore.csproj -c Release --no-build -o \"{feed}\" -p:Version={version} -p:RepositoryUrl={repository} -nologo");

            string nupkg = Path.Combine(feed, $"CramCore.{version}.nupkg");
            Assert.True(File.Exists(nupkg), "package missing: " + nupkg);
            Assert.True(File.Exists(Path.Combine(feed, $"CramCore.{version}.snupkg")), "symbols package missing");
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
                Assert.Equal(repository, metadata.Element(ns + "projectUrl")?.Value);
                Assert.Equal(repository, metadata.Element(ns + "repository")?.Attribute("url")?.Value);
                Assert.Contains("userfaultfd", metadata.Element(ns + "tags")?.Value ?? "");
                Assert.Equal(version, metadata.Element(ns + "version")?.Value);
                Assert.False(string.IsNullOrWhiteSpace(metadata.Element(ns + "description")?.Value));
            }

            string app = Path.Combine(work.FullName, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <add key="local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <Nullable>enable</Nullable>
                    <ImplicitUsings>enable</ImplicitUsings>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="CramCore" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using CramCore;

                using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 4L << 20 });
                using var region = engine.CreateRegion(32L << 20); // 8x the resident limit
                Span<long> words = region.AsSpan<long>(0, (int)(region.Length / 8));
                for (int i = 0; i < words.Length; i++) words[i] = i % 1000;
                long bad = 0;
                for (int i = 0; i < words.Length; i++) if (words[i] != i % 1000) bad++;
                var s = engine.GetStats();
                Console.WriteLine($"mismatches={bad} evictions={s.Evictions} refaults={s.Refaults} resident={s.ResidentBytes} limit={4L << 20} logical={s.LogicalBytes} mode={s.UserfaultfdMode}");
                Console.WriteLine(bad == 0 && s.Evictions > 0 && s.Refaults > 0 ? "CRAMCORE-PACKAGE-OK" : "CRAMCORE-PACKAGE-FAILED");
                """);
            var env = new Dictionary<string, string> { ["NUGET_PACKAGES"] = Path.Combine(work.FullName, "packages") };
            string text = Run(app, "dotnet", "run -c Release", env);
            Assert.Contains("CRAMCORE-PACKAGE-OK", text);
            Assert.Contains("mismatches=0", text);
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
        }
    }
}
