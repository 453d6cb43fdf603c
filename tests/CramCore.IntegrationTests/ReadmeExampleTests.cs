namespace CramCore.Tests;

/// <summary>The API example in README.md, as written there, so the documentation keeps compiling and working.</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed class ReadmeExampleTests
{
    [Fact]
    public void ReadmeExample_Works()
    {
        using var engine = CramEngine.Create(new CramOptions
        {
            ResidentLimitBytes = 64L << 20,   // at most 64 MiB of it stays uncompressed
        });
        using CramRegion region = engine.CreateRegion(1L << 30); // 1 GiB of virtual memory; only touched pages cost

        // Use it like any memory, from any thread: 256 MiB of data, four times the limit.
        Span<long> column = region.AsSpan<long>(byteOffset: 0, count: 32 << 20);
        for (int i = 0; i < column.Length; i++)
            column[i] = i / 16;               // a sorted key column, 16 rows a key; cold pages are compressed as you write

        long sum = 0;
        foreach (long v in column) sum += v;  // evicted pages come back on access

        CramStats s = engine.GetStats();
        Assert.Equal(16L * ((2L << 20) * ((2L << 20) - 1) / 2), sum);
        Assert.Equal(256L << 20, s.LogicalBytes);
        // What the example prints shows the product: the data held in far less memory, pages compressed and read back.
        Assert.True(s.Evictions >= (192L << 20) / 4096 && s.Refaults > 0 && s.Refaults + s.ReadaheadPages >= (192L << 20) / 4096, s.ToString());
        Assert.True(s.MemoryUsedBytes < s.LogicalBytes / 2, $"{s.MemoryUsedBytes >> 20} MiB used for {s.LogicalBytes >> 20} MiB");
        Assert.True(s.StoredBytes > 0 && s.StoredBytes < s.LogicalBytes / 4, s.ToString());
    }

    [Fact]
    public void ReadmeAdviceSnippet_Works()
    {
        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 256L << 20 });
        using CramRegion region = engine.CreateRegion(4L << 30);
        foreach (long offset in new[] { 0L, 1L << 30, 2L << 30, 3L << 30 })
        {
            region.AsSpan<byte>(offset, 1 << 20).Fill(1);
        }
        region.Reclaim(2L << 20);

        region.Advise(0, 64L << 20, CramAdvice.Hot);            // keep resident while the limit allows
        region.Advise(1L << 30, 512L << 20, CramAdvice.Cold);   // evict these first
        region.Advise(2L << 30, 256L << 20, CramAdvice.WillNeed); // swap in ahead, in the background
        region.Advise(3L << 30, 1L << 30, CramAdvice.DontNeed); // discard: reads zeros, nothing compressed

        Assert.Equal(256, engine.GetStats().DiscardedPages);
        Assert.Equal(-1, region.AsSpan<byte>(3L << 30, 1 << 20).IndexOfAnyExcept((byte)0));
        Assert.Equal(-1, region.AsSpan<byte>(2L << 30, 1 << 20).IndexOfAnyExcept((byte)1));
    }
}
