namespace CramCore.Tests;

/// <summary>Deterministic page contents for tests: compressible, same-filled and incompressible.</summary>
internal static unsafe class TestPages
{
    public const int PageSize = SharedLayout.PageSize;

    /// <summary>A new region of <paramref name="pages"/> pages, each written compressible (version 1) in order: all DIRTY, in fault-in order.</summary>
    public static CramRegion FilledRegion(CramEngine engine, int pages)
    {
        CramRegion region = engine.CreateRegion((long)pages * PageSize);
        for (int i = 0; i < pages; i++)
        {
            WriteCompressible(region.Pointer + (long)i * PageSize, i, 1);
        }
        return region;
    }

    /// <summary>Text-like compressible content determined by (page, version).</summary>
    public static void WriteCompressible(byte* page, long index, long version)
    {
        var words = (long*)page;
        words[0] = index;
        words[1] = version;
        ulong x = (ulong)(index * 7919 + version * 104729 + 1);
        for (int i = 2; i < PageSize / 8; i++)
        {
            // A few distinct words in runs: LZ4 compresses it to roughly a quarter.
            if (i % 8 == 0)
            {
                x = x * 6364136223846793005UL + 1442695040888963407UL;
            }
            words[i] = (long)(x >> 40) + i % 8;
        }
    }

    public static bool CheckCompressible(byte* page, long index, long version)
    {
        var words = (long*)page;
        if (words[0] != index || words[1] != version)
        {
            return false;
        }
        ulong x = (ulong)(index * 7919 + version * 104729 + 1);
        for (int i = 2; i < PageSize / 8; i++)
        {
            if (i % 8 == 0)
            {
                x = x * 6364136223846793005UL + 1442695040888963407UL;
            }
            if (words[i] != (long)(x >> 40) + i % 8)
            {
                return false;
            }
        }
        return true;
    }

    public static void WriteRandom(byte* page, int seed) => new Random(seed).NextBytes(new Span<byte>(page, PageSize));

    public static void Fill(byte* page, ulong value)
    {
        var words = (ulong*)page;
        for (int i = 0; i < PageSize / 8; i++)
        {
            words[i] = value;
        }
    }

    public static bool CheckFilledZero(byte* page) => new ReadOnlySpan<byte>(page, PageSize).IndexOfAnyExcept((byte)0) < 0;

    /// <summary>Very compressible (LZ4 to ~100 bytes), never same-filled, determined by (page, version).</summary>
    public static void WriteVeryCompressible(byte* page, long index, long version)
    {
        var words = (long*)page;
        for (int i = 0; i < PageSize / 8; i++)
        {
            words[i] = i % 8 == 0 ? index * 1000 + version : 0x2020202020202020;
        }
    }

    public static bool CheckVeryCompressible(byte* page, long index, long version)
    {
        var words = (long*)page;
        for (int i = 0; i < PageSize / 8; i++)
        {
            if (words[i] != (i % 8 == 0 ? index * 1000 + version : 0x2020202020202020))
            {
                return false;
            }
        }
        return true;
    }
}
