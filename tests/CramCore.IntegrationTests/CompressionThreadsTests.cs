namespace CramCore.Tests;

/// <summary>
/// Reclaim's compression on more than one thread (<see cref="CramOptions.CompressionThreads"/>): the
/// helpers take pages of the reclaim worker's batches, and what is stored does not depend on who
/// compressed it — the same pages, sizes and bytes read back as with the worker alone.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class CompressionThreadsTests
{
    private const int P = SharedLayout.PageSize;
    private const int Pages = 2048;

    /// <summary>Fills an engine, evicts everything, verifies; returns the stats after the eviction.</summary>
    private static CramStats EvictAndVerify(int threads)
    {
        using var engine = CramEngine.Create(new CramOptions { CompressionThreads = threads });
        using var region = engine.CreateRegion((long)Pages * P);
        for (long i = 0; i < Pages; i++)
        {
            // Compressible, same-filled, zero and incompressible pages: every class the classifier routes.
            byte* page = region.Pointer + i * P;
            switch (i % 8)
            {
                case 5: new Span<byte>(page, P).Fill((byte)(i + 1)); break;
                case 6: new Span<byte>(page, P).Clear(); break;
                case 7: TestPages.WriteRandom(page, (int)i); break;
                default: TestPages.WriteCompressible(page, i, 1); break;
            }
        }
        Assert.True(region.Reclaim(region.Length) > Pages / 2 * (long)P);
        CramStats stats = engine.GetStats();
        var expected = new byte[P];
        for (long i = 0; i < Pages; i++)
        {
            byte* page = region.Pointer + i * P;
            switch (i % 8)
            {
                case 5: Assert.True(new Span<byte>(page, P).IndexOfAnyExcept((byte)(i + 1)) < 0, $"page {i}"); break;
                case 6: Assert.True(new Span<byte>(page, P).IndexOfAnyExcept((byte)0) < 0, $"page {i}"); break;
                case 7: new Random((int)i).NextBytes(expected); Assert.True(new Span<byte>(page, P).SequenceEqual(expected), $"page {i}"); break;
                default: Assert.True(TestPages.CheckCompressible(page, i, 1), $"page {i}"); break;
            }
        }
        Assert.Equal(threads, stats.CompressionThreads);
        Assert.Equal(0, stats.ServiceErrors);
        Assert.Equal(0, stats.ChecksumFailures);
        return stats;
    }

    [Fact]
    public void Helpers_CompressPartOfTheBatches_AndStoreWhatTheWorkerAloneWould()
    {
        CramStats alone = EvictAndVerify(threads: 1);
        CramStats helped = EvictAndVerify(threads: 4);
        for (int attempt = 1; attempt < 20 && helped.HelperClassifiedPages == 0; attempt++)
        {
            helped = EvictAndVerify(threads: 4); // a loaded machine may not schedule a helper in time
        }
        Assert.Equal(0, alone.HelperClassifiedPages);
        Assert.True(helped.HelperClassifiedPages > 0, "no helper took a page in 20 engines");
        Assert.Equal(alone.CompressedPages, helped.CompressedPages);
        Assert.Equal(alone.SameFilledPages, helped.SameFilledPages);
        Assert.Equal(alone.IncompressiblePages, helped.IncompressiblePages);
    }
}
