using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Research;

/// <summary>The kinds of page the generator makes, in the proportions real heaps roughly show.</summary>
internal enum PageKind
{
    Zero,
    Text,
    Records,
    Numeric,
    Incompressible,
}

/// <summary>
/// Pages for the demo and the benchmarks: either read from a corpus file of raw 4 KiB pages (such
/// as ../shared/corpus/*.pages) or generated: text, structured records, numeric arrays, zero pages
/// and incompressible blobs. Generation is deterministic in (seed, page index).
/// </summary>
internal sealed class PageSource
{
    public const int PageSize = SharedLayout.PageSize;

    private static readonly string[] s_words =
    [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
        "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
        "memory", "page", "compressed", "region", "kernel", "fault", "thread", "value", "index", "table", "cache",
        "request", "response", "server", "client", "error", "status", "config", "version", "package", "install",
        "document", "section", "function", "return", "string", "number", "object", "array", "true", "false", "null",
        "user", "session", "timestamp", "order", "customer", "product", "price", "quantity", "warehouse", "region",
    ];
    private static readonly string[] s_names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];

    private readonly byte[]? _corpus;

    private PageSource(byte[]? corpus, string description)
    {
        _corpus = corpus;
        Description = description;
    }

    public string Description { get; }

    /// <summary>Pages available from a corpus (0 when generating).</summary>
    public int CorpusPages => _corpus is null ? 0 : _corpus.Length / PageSize;

    public static PageSource Generated() => new(null, "generated mix (text, records, numeric, zero, incompressible)");

    /// <summary>
    /// <paramref name="pages"/> pages of the generated mix, held as a corpus (cycled like one): for
    /// the benches that replay a corpus, when none is given. A user's clone has no ../shared.
    /// </summary>
    public static PageSource GeneratedCorpus(int pages = 8192)
    {
        var bytes = new byte[(long)pages * PageSize];
        PageSource mix = Generated();
        for (int i = 0; i < pages; i++)
        {
            mix.Write(bytes.AsSpan(i * PageSize, PageSize), i);
        }
        return new(bytes, $"generated mix, {pages} pages cycled (text, records, numeric, zero, incompressible; give --corpus FILE for real pages)");
    }

    /// <summary>Loads a corpus file, with errors that say what is wrong and how to fix it.</summary>
    public static PageSource FromCorpus(string path)
    {
        if (!File.Exists(path))
        {
            throw new CorpusException($"--corpus: file '{path}' does not exist. Give a file of raw 4096-byte pages (e.g. ../shared/corpus/dotnet-heap.pages).");
        }
        long length = new FileInfo(path).Length;
        if (length == 0 || length % PageSize != 0)
        {
            throw new CorpusException($"--corpus: '{path}' is {length} bytes, not a positive multiple of 4096; it must hold whole raw pages.");
        }
        if (length > 1L << 30)
        {
            throw new CorpusException($"--corpus: '{path}' is {length >> 20} MiB; use a file of at most 1 GiB.");
        }
        byte[] data;
        try
        {
            data = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CorpusException($"--corpus: cannot read '{path}': {e.Message}");
        }
        return new PageSource(data, $"{Path.GetFileName(path)} ({data.Length / PageSize} pages)");
    }

    /// <summary>The kind page <paramref name="index"/> gets in the generated mix.</summary>
    public static PageKind KindOf(long index, bool compressibleOnly)
    {
        ulong h = Mix((ulong)index * 0x9E3779B97F4A7C15UL) % 100;
        if (compressibleOnly)
        {
            return h < 45 ? PageKind.Text : h < 80 ? PageKind.Records : PageKind.Numeric;
        }
        return h switch
        {
            < 20 => PageKind.Zero,
            < 45 => PageKind.Text,
            < 70 => PageKind.Records,
            < 88 => PageKind.Numeric,
            _ => PageKind.Incompressible,
        };
    }

    /// <summary>Writes page <paramref name="index"/> (version <paramref name="version"/>) into <paramref name="page"/>.</summary>
    public void Write(Span<byte> page, long index, long version = 0, bool compressibleOnly = false)
    {
        if (_corpus is not null)
        {
            long i = index % CorpusPages;
            _corpus.AsSpan((int)(i * PageSize), PageSize).CopyTo(page);
            if (version != 0)
            {
                MemoryMarshal.Write(page, version);
            }
            return;
        }
        var rng = new Xoshiro((ulong)index * 31 + (ulong)version * 1_000_003 + 17);
        switch (KindOf(index, compressibleOnly))
        {
            case PageKind.Zero:
                page.Clear();
                if (version != 0)
                {
                    MemoryMarshal.Write(page, version);
                }
                break;
            case PageKind.Text:
                WriteText(page, ref rng);
                break;
            case PageKind.Records:
                WriteRecords(page, index, ref rng);
                break;
            case PageKind.Numeric:
                WriteNumeric(page, ref rng);
                break;
            default:
                for (int o = 0; o < PageSize; o += 8)
                {
                    MemoryMarshal.Write(page[o..], rng.Next());
                }
                break;
        }
    }

    private static void WriteText(Span<byte> page, ref Xoshiro rng)
    {
        int o = 0;
        int sentence = 0;
        while (o < PageSize)
        {
            string w = s_words[rng.Next() % (ulong)s_words.Length];
            for (int i = 0; i < w.Length && o < PageSize; i++)
            {
                page[o++] = (byte)(sentence == 0 && i == 0 ? char.ToUpperInvariant(w[i]) : w[i]);
            }
            sentence++;
            if (o < PageSize)
            {
                bool end = sentence > 6 && rng.Next() % 5 == 0;
                page[o++] = end ? (byte)'.' : (byte)' ';
                if (end)
                {
                    sentence = 0;
                    if (o < PageSize)
                    {
                        page[o++] = rng.Next() % 4 == 0 ? (byte)'\n' : (byte)' ';
                    }
                }
            }
        }
    }

    private static void WriteRecords(Span<byte> page, long index, ref Xoshiro rng)
    {
        // 64-byte records: id, timestamp, price (cents), quantity, status, name.
        long id = index * 64;
        long ts = 1_700_000_000_000 + index * 1000;
        for (int o = 0; o < PageSize; o += 64)
        {
            var r = page.Slice(o, 64);
            r.Clear();
            MemoryMarshal.Write(r, id++);
            ts += (long)(rng.Next() % 50);
            MemoryMarshal.Write(r[8..], ts);
            MemoryMarshal.Write(r[16..], (long)(rng.Next() % 100_000));
            MemoryMarshal.Write(r[24..], (int)(rng.Next() % 20));
            r[28] = (byte)(rng.Next() % 4);
            string name = s_names[rng.Next() % (ulong)s_names.Length];
            for (int i = 0; i < name.Length; i++)
            {
                r[32 + i] = (byte)name[i];
            }
        }
    }

    private static void WriteNumeric(Span<byte> page, ref Xoshiro rng)
    {
        // Columnar data: a sorted int64 id column with small gaps, then a categorical int32
        // column in runs (as a dictionary-encoded column looks in memory).
        var longs = MemoryMarshal.Cast<byte, long>(page[..(PageSize / 2)]);
        long v = (long)(rng.Next() % 1_000_000_000);
        for (int i = 0; i < longs.Length; i++)
        {
            v += (long)(rng.Next() % 16);
            longs[i] = v;
        }
        var ints = MemoryMarshal.Cast<byte, int>(page[(PageSize / 2)..]);
        for (int i = 0; i < ints.Length;)
        {
            int category = (int)(rng.Next() % 1000);
            for (int run = (int)(rng.Next() % 12) + 1; run > 0 && i < ints.Length; run--)
            {
                ints[i++] = category;
            }
        }
    }

    private static ulong Mix(ulong x)
    {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdUL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53UL;
        return x ^ (x >> 33);
    }

    /// <summary>xoshiro256** seeded with splitmix64: fast and deterministic.</summary>
    internal struct Xoshiro
    {
        private ulong _a, _b, _c, _d;

        public Xoshiro(ulong seed)
        {
            _a = SplitMix(ref seed);
            _b = SplitMix(ref seed);
            _c = SplitMix(ref seed);
            _d = SplitMix(ref seed);
        }

        private static ulong SplitMix(ref ulong s)
        {
            ulong z = s += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        public ulong Next()
        {
            ulong result = ulong.RotateLeft(_b * 5, 7) * 9;
            ulong t = _b << 17;
            _c ^= _a;
            _d ^= _b;
            _b ^= _c;
            _a ^= _d;
            _c ^= t;
            _d = ulong.RotateLeft(_d, 45);
            return result;
        }

        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
    }
}
