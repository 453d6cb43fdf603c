using System.Runtime.InteropServices;

namespace CramCore;

/// <summary>P/Invoke declarations, one partial class per native library (dotnet/runtime style).</summary>
internal static partial class Interop
{
    internal static unsafe partial class CramNative
    {
        internal const string Library = "CramNative";

        static CramNative() => NativeLibraryResolver.EnsureRegistered();

        [LibraryImport(Library, EntryPoint = "CramNative_GetLayout", SetLastError = true)]
        internal static partial int GetLayout(NativeLayoutInfo* layout);

        [LibraryImport(Library, EntryPoint = "CramNative_EngineCreate", SetLastError = true)]
        internal static partial int EngineCreate(NativeEngineConfig* config, nint* engine, NativeShared** shared);

        [LibraryImport(Library, EntryPoint = "CramNative_EngineDestroy", SetLastError = true)]
        internal static partial int EngineDestroy(nint engine);

        [LibraryImport(Library, EntryPoint = "CramNative_RegionCreate", SetLastError = true)]
        internal static partial int RegionCreate(nint engine, ulong length, uint* regionId);

        [LibraryImport(Library, EntryPoint = "CramNative_RegionDeactivate", SetLastError = true)]
        internal static partial int RegionDeactivate(nint engine, uint regionId);

        [LibraryImport(Library, EntryPoint = "CramNative_RegionDestroy", SetLastError = true)]
        internal static partial int RegionDestroy(nint engine, uint regionId);

        /// <summary>Write-protects pages; sorts <paramref name="pages"/> in place.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_WriteProtectPages", SetLastError = true)]
        internal static partial int WriteProtectPages(nint engine, uint regionId, ulong* pages, int count);

        /// <summary>Drops pages still CLEAN; the first <paramref name="dropped"/> entries are those dropped.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_DropPages", SetLastError = true)]
        internal static partial int DropPages(nint engine, uint regionId, ulong* pages, int count, int* dropped);

        [LibraryImport(Library, EntryPoint = "CramNative_WaitReclaimSignal", SetLastError = true)]
        internal static partial int WaitReclaimSignal(nint engine, int timeoutMs, int* signalled);

        [LibraryImport(Library, EntryPoint = "CramNative_SignalReclaim", SetLastError = true)]
        internal static partial int SignalReclaim(nint engine);

        /// <summary>Moves pool objects and repoints their handles, under the engine's lock when given one.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_PoolMove", SetLastError = true)]
        internal static partial int PoolMove(nint engine, ulong handleDirectory, NativePoolMove* moves, int count);

        [LibraryImport(Library, EntryPoint = "CramNative_ArenaMap", SetLastError = true)]
        internal static partial int ArenaMap(ulong bytes, int lockMemory, ulong* address);

        [LibraryImport(Library, EntryPoint = "CramNative_ArenaUnmap", SetLastError = true)]
        internal static partial int ArenaUnmap(ulong address, ulong bytes);

        [LibraryImport(Library, EntryPoint = "CramNative_Discard", SetLastError = true)]
        internal static partial int Discard(ulong address, ulong bytes);
    }

    internal static unsafe partial class Lz4
    {
        internal const string Library = "liblz4.so.1";

        /// <summary>Returns the compressed size, or 0 when the result would not fit in <paramref name="dstCapacity"/>.</summary>
        [LibraryImport(Library, EntryPoint = "LZ4_compress_default")]
        internal static partial int CompressDefault(byte* src, byte* dst, int srcSize, int dstCapacity);

        /// <summary>Returns the decompressed size, or a negative value for malformed input.</summary>
        [LibraryImport(Library, EntryPoint = "LZ4_decompress_safe")]
        internal static partial int DecompressSafe(byte* src, byte* dst, int compressedSize, int dstCapacity);

        [LibraryImport(Library, EntryPoint = "LZ4_versionNumber")]
        internal static partial int VersionNumber();
    }


    internal const int EPERM = 1, ENOENT = 2, ENOMEM = 12, EACCES = 13, EINVAL = 22, EMFILE = 24,
        ENOSYS = 38, EPROTONOSUPPORT = 93;

    /// <summary>Turns the errno of the last failed CramNative_* call into an exception.</summary>
    internal static Exception GetExceptionForLastError(string operation)
    {
        int errno = Marshal.GetLastPInvokeError();
        string message = $"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).";
        return errno switch
        {
            ENOMEM => new OutOfMemoryException(message),
            EINVAL => new ArgumentException(message),
            _ => new IOException(message, errno),
        };
    }

    internal static void ThrowIfFailed(int result, string operation)
    {
        if (result != 0)
        {
            throw GetExceptionForLastError(operation);
        }
    }
}
