using System.Reflection;
using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>
/// Finds libCramNative.so, in this order: the user's override (<see cref="CramOptions.NativeLibraryPath"/>
/// or the CRAMCORE_NATIVE_LIBRARY environment variable), the runtime's default resolution
/// (deps.json, the application directory), then runtimes/linux-x64/native/ next to CramCore.dll.
/// Registered once, before the first call into the library (Interop's static constructors).
/// </summary>
internal static class NativeLibraryResolver
{
    public const string EnvironmentVariable = "CRAMCORE_NATIVE_LIBRARY";
    public const string FileName = "libCramNative.so";
    private static readonly Lock s_lock = new();
    private static bool s_registered;
    private static string? s_override;
    private static string? s_loadedFrom;

    public static void EnsureRegistered()
    {
        lock (s_lock)
        {
            if (!s_registered)
            {
                NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
                s_registered = true;
            }
        }
    }

    /// <summary>Applies <see cref="CramOptions.NativeLibraryPath"/>; the library loads once per process.</summary>
    public static void SetOverride(string path)
    {
        lock (s_lock)
        {
            string full = Path.GetFullPath(path);
            if (s_loadedFrom is not null && s_loadedFrom != full)
            {
                throw new ArgumentException($"NativeLibraryPath is '{full}', but the native helper is already loaded from '{s_loadedFrom}'; it loads once per process, so set the path before the first engine is created (or use {EnvironmentVariable}).", nameof(CramOptions.NativeLibraryPath));
            }
            s_override = full;
        }
    }

    public static void ThrowIfUnsupportedPlatform()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            throw new PlatformNotSupportedException(
                $"CramCore supports Linux on x64 only (it is built on userfaultfd); this process runs on {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}.");
        }
    }

    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("SingleFile", "IL3000:Avoid accessing Assembly file path when publishing as a single file",
        Justification = "Assembly.Location is empty in a single-file or Native AOT app; the search then falls back to AppContext.BaseDirectory, which is where such an app's files are.")]
    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != Interop.CramNative.Library)
        {
            return 0; // liblz4.so.1 and anything else: the runtime's default resolution
        }
        ThrowIfUnsupportedPlatform();
        string? custom;
        string source;
        lock (s_lock)
        {
            custom = s_override;
            source = nameof(CramOptions.NativeLibraryPath);
        }
        if (string.IsNullOrEmpty(custom))
        {
            custom = Environment.GetEnvironmentVariable(EnvironmentVariable);
            source = EnvironmentVariable;
        }
        if (!string.IsNullOrEmpty(custom))
        {
            return Load(Path.GetFullPath(custom), $"{source} points to '{custom}', which");
        }
        if (NativeLibrary.TryLoad(name, assembly, searchPath, out nint handle))
        {
            Volatile.Write(ref s_loadedFrom, name);
            return handle;
        }
        var tried = new List<string>();
        foreach (string? dir in new[] { Path.GetDirectoryName(assembly.Location), AppContext.BaseDirectory })
        {
            if (string.IsNullOrEmpty(dir))
            {
                continue;
            }
            string candidate = Path.Combine(dir, "runtimes", "linux-x64", "native", FileName);
            tried.Add(candidate);
            if (File.Exists(candidate))
            {
                return Load(candidate, $"'{candidate}'");
            }
        }
        throw new DllNotFoundException(
            $"CramCore's native helper {FileName} was not found (default resolution, then {string.Join(", ", tried)}). " +
            $"Reinstall the CramCore package, or set {EnvironmentVariable} (or CramOptions.NativeLibraryPath) to the file's path.");
    }

    private static nint Load(string path, string what)
    {
        try
        {
            nint handle = NativeLibrary.Load(path);
            Volatile.Write(ref s_loadedFrom, path);
            return handle;
        }
        catch (DllNotFoundException e)
        {
            string hint = e.Message.Contains("liblz4", StringComparison.Ordinal)
                ? " It needs the system LZ4 library: install liblz4-1 (Debian/Ubuntu) or lz4-libs (Fedora/RHEL)."
                : "";
            throw new DllNotFoundException($"CramCore: {what} could not be loaded: {e.Message.TrimEnd('.')}.{hint}", e);
        }
    }
}
