using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The recompressor's zstd (system libzstd.so.1): pages encoded as the fault service decodes them
/// (cramnative.h, "Codecs": magicless frames with no checksum, content size or dictionary id)
/// with one of up to three trained dictionaries (indexes 1..3; 0 is none), the dictionaries trained
/// from sampled pages, and a decoder for a copy re-encoded with a newer dictionary. One thread uses
/// a codec (not thread-safe); a second codec may share the first one's dictionaries (writeback's
/// encoder shares the recompressor's: a dictionary is read-only once made, and zstd lets any number
/// of contexts use it at once), and only the first one loads, unloads and frees them.
/// </summary>
internal sealed unsafe class ZstdCodec : IDisposable
{
    /// <summary>zstd's level for recompression (decoding costs the same at every level; encoding runs under the recompressor's CPU budget).</summary>
    public const int Level = 6;

    /// <summary>The size a trained dictionary is given (16 KiB: measured +70–86 % over LZ4 on the heap corpora against +53–60 % without).</summary>
    public const int DictionaryBytes = 32 << 10;

    private readonly nint _cctx, _dctx;
    private readonly int _level;
    private readonly nint[] _cdicts = new nint[SlotFlags.ZstdDictionaries];
    private readonly nint[] _ddicts = new nint[SlotFlags.ZstdDictionaries];
    private readonly long[] _dictionaryMemory = new long[SlotFlags.ZstdDictionaries];
    private readonly bool _ownsDictionaries = true;
    private bool _disposed;

    /// <param name="level">The compression level (<see cref="Level"/> for recompression; `cram bench ratio` computes its zstd-3 bound with 3).</param>
    /// <param name="dictionariesOf">A codec whose dictionaries this one encodes with (same level), or null for dictionaries of its own.</param>
    public ZstdCodec(int level = Level, ZstdCodec? dictionariesOf = null)
    {
        _level = level;
        if (dictionariesOf is not null)
        {
            ArgumentOutOfRangeException.ThrowIfNotEqual(level, dictionariesOf._level);
            _cdicts = dictionariesOf._cdicts;
            _ddicts = dictionariesOf._ddicts;
            _dictionaryMemory = new long[SlotFlags.ZstdDictionaries]; // counted once, by their owner
            _ownsDictionaries = false;
        }
        _cctx = Interop.Zstd.CreateCCtx();
        _dctx = Interop.Zstd.CreateDCtx();
        if (_cctx == 0 || _dctx == 0)
        {
            Dispose();
            throw new OutOfMemoryException("libzstd could not allocate a compression context.");
        }
        Check(Interop.Zstd.CCtxSetParameter(_cctx, Interop.Zstd.CompressionLevelParameter, level));
        Check(Interop.Zstd.CCtxSetParameter(_cctx, Interop.Zstd.FormatParameter, Interop.Zstd.MagiclessFormat));
        Check(Interop.Zstd.CCtxSetParameter(_cctx, Interop.Zstd.ContentSizeFlagParameter, 0));
        Check(Interop.Zstd.CCtxSetParameter(_cctx, Interop.Zstd.ChecksumFlagParameter, 0));
        Check(Interop.Zstd.CCtxSetParameter(_cctx, Interop.Zstd.DictionaryIdFlagParameter, 0));
        Check(Interop.Zstd.DCtxSetParameter(_dctx, Interop.Zstd.DecompressionFormatParameter, Interop.Zstd.MagiclessFormat));
    }

    private static void Check(nuint code)
    {
        if (Interop.Zstd.IsError(code) != 0)
        {
            throw new InvalidOperationException($"libzstd refused a parameter CramCore needs (error {(long)code}); libzstd.so.1 1.4 or later is required.");
        }
    }

    /// <summary>The encoder's own memory and that of the dictionaries it holds.</summary>
    public long MemoryBytes => (long)Interop.Zstd.SizeofCCtx(_cctx) + _dictionaryMemory.Sum();

    /// <summary>Whether dictionary <paramref name="index"/> is loaded.</summary>
    public bool Has(int index) => _cdicts[index] != 0;

    /// <summary>Loads <paramref name="dictionary"/> at <paramref name="index"/> (1..3), or unloads it (empty).</summary>
    public void SetDictionary(int index, ReadOnlySpan<byte> dictionary)
    {
        if (!_ownsDictionaries)
        {
            throw new InvalidOperationException("This codec shares another codec's dictionaries; that codec loads them.");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(index, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, SlotFlags.ZstdDictionaries);
        if (_cdicts[index] != 0)
        {
            Interop.Zstd.FreeCDict(_cdicts[index]);
            Interop.Zstd.FreeDDict(_ddicts[index]);
            _cdicts[index] = _ddicts[index] = 0;
            _dictionaryMemory[index] = 0;
        }
        if (dictionary.IsEmpty)
        {
            return;
        }
        fixed (byte* d = dictionary)
        {
            _cdicts[index] = Interop.Zstd.CreateCDict(d, (nuint)dictionary.Length, _level);
            _ddicts[index] = Interop.Zstd.CreateDDict(d, (nuint)dictionary.Length);
        }
        if (_cdicts[index] == 0 || _ddicts[index] == 0)
        {
            SetDictionary(index, default);
            throw new OutOfMemoryException("libzstd could not load a dictionary.");
        }
        _dictionaryMemory[index] = (long)Interop.Zstd.SizeofCDict(_cdicts[index]) + (long)Interop.Zstd.SizeofDDict(_ddicts[index]);
    }

    /// <summary>Encodes a page with dictionary <paramref name="index"/> (0: none) into <paramref name="destination"/>; the size, or 0 if it does not fit in <paramref name="capacity"/>.</summary>
    public int Compress(byte* page, int index, byte* destination, int capacity)
    {
        Check(Interop.Zstd.CCtxRefCDict(_cctx, _cdicts[index]));
        nuint n = Interop.Zstd.Compress2(_cctx, destination, (nuint)capacity, page, SharedLayout.PageSize);
        return Interop.Zstd.IsError(n) != 0 ? 0 : (int)n;
    }

    /// <summary>Decodes a copy made with dictionary <paramref name="index"/> into a page; false if it is not one.</summary>
    public bool Decompress(byte* source, int length, int index, byte* page)
    {
        if (index != 0 && _ddicts[index] == 0)
        {
            return false;
        }
        nuint n = index == 0
            ? Interop.Zstd.DecompressDCtx(_dctx, page, SharedLayout.PageSize, source, (nuint)length)
            : Interop.Zstd.DecompressUsingDDict(_dctx, page, SharedLayout.PageSize, source, (nuint)length, _ddicts[index]);
        return Interop.Zstd.IsError(n) == 0 && (int)n == SharedLayout.PageSize;
    }

    /// <summary>A dictionary trained from <paramref name="pages"/> whole pages laid end to end at <paramref name="samples"/>, or null if zstd's trainer could not make one (too few or too alike samples).</summary>
    public static byte[]? Train(byte* samples, int pages)
    {
        var sizes = new nuint[pages];
        Array.Fill(sizes, (nuint)SharedLayout.PageSize);
        byte* dictionary = (byte*)NativeMemory.Alloc(DictionaryBytes);
        try
        {
            nuint n;
            fixed (nuint* s = sizes)
            {
                n = Interop.Zstd.TrainFromBuffer(dictionary, DictionaryBytes, samples, s, (uint)pages);
            }
            return Interop.Zstd.DictionaryIsError(n) != 0 || n == 0 ? null : new ReadOnlySpan<byte>(dictionary, (int)n).ToArray();
        }
        finally
        {
            NativeMemory.Free(dictionary);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        for (int i = 1; i < SlotFlags.ZstdDictionaries && _ownsDictionaries; i++)
        {
            if (_cdicts[i] != 0)
            {
                Interop.Zstd.FreeCDict(_cdicts[i]);
                Interop.Zstd.FreeDDict(_ddicts[i]);
            }
        }
        if (_cctx != 0)
        {
            Interop.Zstd.FreeCCtx(_cctx);
        }
        if (_dctx != 0)
        {
            Interop.Zstd.FreeDCtx(_dctx);
        }
    }
}
