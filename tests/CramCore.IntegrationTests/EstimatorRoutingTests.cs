using System.Runtime.InteropServices;

namespace CramCore.Tests;

/// <summary>
/// The compressibility estimator: every instruction-set kernel forced on every machine and held
/// to a scalar definition, its classes on pages of known kind, and its routing in reclaim.
/// </summary>
public sealed unsafe class EstimatorRoutingTests : IDisposable
{
    private const int P = TestPages.PageSize;
    private const int Threshold = 3072;
    private readonly byte* _page = (byte*)NativeMemory.AlignedAlloc(P, 64);
    private readonly byte* _scratch = (byte*)NativeMemory.Alloc(2 * P);

    public void Dispose()
    {
        NativeMemory.AlignedFree(_page);
        NativeMemory.Free(_scratch);
    }

    /// <summary>Two random kilobytes twice: the sample looks random, yet LZ4 finds the repeat.</summary>
    private static void WriteRepeatedRandom(byte* page, int seed)
    {
        new Random(seed).NextBytes(new Span<byte>(page, P / 2));
        new Span<byte>(page, P / 2).CopyTo(new Span<byte>(page + P / 2, P / 2));
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void Reclaim_KeepsPredictedIncompressiblePagesResidentWithoutCompressing_AndStoresTheRest()
    {
        foreach (bool estimate in new[] { true, false })
        {
            using var engine = CramEngine.Create(new CramOptions { EstimateCompressibility = estimate });
            using var region = engine.CreateRegion(512L * P);
            for (int i = 0; i < 512; i++)
            {
                if (i % 2 == 0)
                {
                    TestPages.WriteRandom(region.Pointer + i * P, i);
                }
                else
                {
                    TestPages.WriteCompressible(region.Pointer + i * P, i, 1);
                }
            }
            region.Reclaim(region.Length);
            CramStats s = engine.GetStats();
            Assert.Equal(256, s.IncompressiblePages);
            Assert.Equal(256, s.CompressedPages);
            // One in AuditInterval predicted-incompressible pages is compressed anyway.
            Assert.Equal(estimate ? 256 / EvictionPipeline.AuditInterval : 0, s.EstimatorAudits);
            Assert.Equal(estimate ? 256 - 256 / EvictionPipeline.AuditInterval : 0, s.EstimatedIncompressiblePages);
            Assert.Equal(0, s.FalseIncompressiblePages);
            Assert.Equal(0, s.MispredictedCompressiblePages);
            for (int i = 0; i < 512; i++)
            {
                Assert.Equal(i % 2 == 0 ? PageState.Incompressible : PageState.Evicted, region.GetPageState(i * (long)P));
            }
            var expected = new byte[P];
            for (int i = 0; i < 512; i += 2)
            {
                new Random(i).NextBytes(expected);
                Assert.True(expected.AsSpan().SequenceEqual(new ReadOnlySpan<byte>(region.Pointer + i * P, P)), $"page {i}");
                Assert.True(TestPages.CheckCompressible(region.Pointer + (i + 1) * P, i + 1, 1), $"page {i + 1}");
            }
            Assert.Equal(0, engine.GetStats().ServiceErrors);
        }
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void Audit_CountsFalseIncompressible_AndStoresTheAuditedPage()
    {
        WriteRepeatedRandom(_page, 1);
        Assert.Equal(PageClass.Incompressible, PageEstimator.Estimate(_page, Threshold).Class); // the estimator's blind spot
        Assert.InRange(Interop.Lz4.CompressDefault(_page, _scratch, P, 2 * P), 1, Threshold);

        const int pages = 3 * EvictionPipeline.AuditInterval;
        int predicted = 0;
        for (int i = 0; i < pages; i++)
        {
            WriteRepeatedRandom(_page, i);
            predicted += PageEstimator.Estimate(_page, Threshold).Class == PageClass.Incompressible ? 1 : 0;
        }
        Assert.True(predicted >= 2 * EvictionPipeline.AuditInterval, $"only {predicted} of {pages} pages fall in the blind spot");
        int audits = predicted / EvictionPipeline.AuditInterval;
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(pages * (long)P);
        for (int i = 0; i < pages; i++)
        {
            WriteRepeatedRandom(region.Pointer + i * P, i);
        }
        region.Reclaim(region.Length);
        CramStats s = engine.GetStats();
        Assert.Equal(audits, s.EstimatorAudits);
        Assert.Equal(audits, s.FalseIncompressiblePages); // every audited page did compress ...
        Assert.Equal(audits + pages - predicted, s.CompressedPages); // ... and was stored, as were the ones not predicted
        Assert.Equal(predicted - audits, s.EstimatedIncompressiblePages);
        for (int i = 0; i < pages; i++)
        {
            WriteRepeatedRandom(_page, i);
            Assert.True(new ReadOnlySpan<byte>(_page, P).SequenceEqual(new ReadOnlySpan<byte>(region.Pointer + i * P, P)), $"page {i}");
        }
    }
}
