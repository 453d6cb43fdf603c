using System.Runtime.InteropServices;

namespace CramCore.Native;

internal static partial class Interop
{
    /// <summary>The system liblz4.so.1, the same library the fault service decompresses with.</summary>
    internal static unsafe partial class Lz4
    {
        internal const string Library = "liblz4.so.1";

        /// <summary>Returns the compressed size, or 0 when the result would not fit in <paramref name="dstCapacity"/>.</summary>
        [LibraryImport(Library, EntryPoint = "LZ4_compress_default")]
        internal static partial int CompressDefault(byte* src, byte* dst, int srcSize, int dstCapacity);

        /// <summary>Returns the decompressed size, or a negative value for malformed input.</summary>
        [LibraryImport(Library, EntryPoint = "LZ4_decompress_safe")]
        internal static partial int DecompressSafe(byte* src, byte* dst, int compressedSize, int dstCapacity);

        /// <summary>LZ4HC (same format, decoded by <see cref="DecompressSafe"/>) at <paramref name="level"/> (1..12); the compressed size, or 0 when it would not fit.</summary>
        [LibraryImport(Library, EntryPoint = "LZ4_compress_HC")]
        internal static partial int CompressHC(byte* src, byte* dst, int srcSize, int dstCapacity, int level);

        [LibraryImport(Library, EntryPoint = "LZ4_versionNumber")]
        internal static partial int VersionNumber();
    }
}
