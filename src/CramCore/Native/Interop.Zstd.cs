using System.Runtime.InteropServices;

namespace CramCore.Native;

internal static partial class Interop
{
    /// <summary>
    /// The system libzstd.so.1, the same library the fault service decodes recompressed copies with
    /// (cramnative.h, "Codecs"): the recompressor's encoder, its dictionary trainer and its decoder
    /// (for a copy it re-encodes with a newer dictionary).
    /// </summary>
    internal static unsafe partial class Zstd
    {
        internal const string Library = "libzstd.so.1";

        /// <summary>ZSTD_c_compressionLevel.</summary>
        internal const int CompressionLevelParameter = 100;
        /// <summary>ZSTD_c_contentSizeFlag.</summary>
        internal const int ContentSizeFlagParameter = 200;
        /// <summary>ZSTD_c_checksumFlag.</summary>
        internal const int ChecksumFlagParameter = 201;
        /// <summary>ZSTD_c_dictIDFlag.</summary>
        internal const int DictionaryIdFlagParameter = 202;
        /// <summary>ZSTD_c_format (ZSTD_c_experimentalParam2).</summary>
        internal const int FormatParameter = 10;
        /// <summary>ZSTD_d_format (ZSTD_d_experimentalParam1).</summary>
        internal const int DecompressionFormatParameter = 1000;
        /// <summary>ZSTD_f_zstd1_magicless: a frame without its 4-byte magic number.</summary>
        internal const int MagiclessFormat = 1;

        [LibraryImport(Library, EntryPoint = "ZSTD_isError")]
        internal static partial uint IsError(nuint code);

        [LibraryImport(Library, EntryPoint = "ZSTD_versionNumber")]
        internal static partial uint VersionNumber();

        [LibraryImport(Library, EntryPoint = "ZSTD_createCCtx")]
        internal static partial nint CreateCCtx();

        [LibraryImport(Library, EntryPoint = "ZSTD_freeCCtx")]
        internal static partial nuint FreeCCtx(nint cctx);

        [LibraryImport(Library, EntryPoint = "ZSTD_CCtx_setParameter")]
        internal static partial nuint CCtxSetParameter(nint cctx, int parameter, int value);

        [LibraryImport(Library, EntryPoint = "ZSTD_CCtx_refCDict")]
        internal static partial nuint CCtxRefCDict(nint cctx, nint cdict);

        [LibraryImport(Library, EntryPoint = "ZSTD_compress2")]
        internal static partial nuint Compress2(nint cctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

        [LibraryImport(Library, EntryPoint = "ZSTD_createCDict")]
        internal static partial nint CreateCDict(byte* dictionary, nuint size, int level);

        [LibraryImport(Library, EntryPoint = "ZSTD_freeCDict")]
        internal static partial nuint FreeCDict(nint cdict);

        [LibraryImport(Library, EntryPoint = "ZSTD_sizeof_CDict")]
        internal static partial nuint SizeofCDict(nint cdict);

        [LibraryImport(Library, EntryPoint = "ZSTD_sizeof_CCtx")]
        internal static partial nuint SizeofCCtx(nint cctx);

        [LibraryImport(Library, EntryPoint = "ZSTD_createDCtx")]
        internal static partial nint CreateDCtx();

        [LibraryImport(Library, EntryPoint = "ZSTD_freeDCtx")]
        internal static partial nuint FreeDCtx(nint dctx);

        [LibraryImport(Library, EntryPoint = "ZSTD_DCtx_setParameter")]
        internal static partial nuint DCtxSetParameter(nint dctx, int parameter, int value);

        [LibraryImport(Library, EntryPoint = "ZSTD_decompress_usingDDict")]
        internal static partial nuint DecompressUsingDDict(nint dctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize, nint ddict);

        [LibraryImport(Library, EntryPoint = "ZSTD_decompressDCtx")]
        internal static partial nuint DecompressDCtx(nint dctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

        [LibraryImport(Library, EntryPoint = "ZSTD_createDDict")]
        internal static partial nint CreateDDict(byte* dictionary, nuint size);

        [LibraryImport(Library, EntryPoint = "ZSTD_freeDDict")]
        internal static partial nuint FreeDDict(nint ddict);

        [LibraryImport(Library, EntryPoint = "ZSTD_sizeof_DDict")]
        internal static partial nuint SizeofDDict(nint ddict);

        /// <summary>Trains a dictionary of up to <paramref name="capacity"/> bytes from samples laid end to end; returns its size, or an error code (<see cref="DictionaryIsError"/>).</summary>
        [LibraryImport(Library, EntryPoint = "ZDICT_trainFromBuffer")]
        internal static partial nuint TrainFromBuffer(byte* dictionary, nuint capacity, byte* samples, nuint* sampleSizes, uint sampleCount);

        [LibraryImport(Library, EntryPoint = "ZDICT_isError")]
        internal static partial uint DictionaryIsError(nuint code);
    }
}
