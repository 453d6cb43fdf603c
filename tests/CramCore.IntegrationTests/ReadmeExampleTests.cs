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
            ResidentLimitBytes = 256L << 20,   // background reclaim holds 256 MiB resident
        });
        using CramRegion region = engine.CreateRegion(4L << 30); // 4 GiB of virtual memory

        // Use it like any memory, from any thread.
        Span<long> column = region.AsSpan<long>(byteOffset: 0, count: 1 << 20);
        for (int i = 0; i < column.Length; i++)
            column[i] = i * 7;

        region.Reclaim(64L << 20);           // evict 64 MiB now (coldest first)
        long sum = 0;
        foreach (long v in column) sum += v; // evicted pages come back on access

        CramStats s = engine.GetStats();
        Assert.Equal(7L * ((1L << 20) * ((1L << 20) - 1) / 2), sum);
        Assert.Equal(8L << 20, s.LogicalBytes);
        // All 8 MiB went out and came back: a few faults, the rest by swap readahead.
        Assert.True(s.Evictions == 2048 && s.Refaults + s.ReadaheadPages == 2048 && s.Refaults < 64, s.ToString());
        Assert.True(s.StoredBytes > 0 && s.StoredBytes < 8L << 20, s.ToString());
        // Every page was read back, so every copy is a clean copy and nothing is evicted: the
        // figures the example prints say so instead of a ratio below 1.
        long evicted = s.LogicalBytes - s.ResidentBytes;
        long evictedStored = s.StoredBytes - s.CleanCopyBytes;
        Assert.Equal((2048, s.StoredBytes, 0L, 0L), (s.CleanCopyPages, s.CleanCopyBytes, evicted, evictedStored));
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
