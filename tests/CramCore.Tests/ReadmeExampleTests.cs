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
}
