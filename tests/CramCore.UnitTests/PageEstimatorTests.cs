using System.Runtime.InteropServices;

namespace CramCore.Tests;

/// <summary>
/// The compressibility estimator: every instruction-set kernel forced on every machine and held
/// to a scalar definition, its classes on pages of known kind, and its routing in reclaim.
/// </summary>
public sealed unsafe class PageEstimatorTests : IDisposable
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

    public static TheoryData<string> Kernels => new(Enum.GetNames<PageKernelIsa>());

    /// <summary>The definition: counts over the sample, byte by byte.</summary>
    private static PageSample Reference(byte* page)
    {
        int zero = 0, high = 0, run = 0, lag8 = 0;
        int* nibbles = stackalloc int[32];
        new Span<int>(nibbles, 32).Clear();
        for (int line = 0; line < P; line += PageEstimator.SampleStride)
        {
            for (int i = line; i < line + 64; i++)
            {
                zero += page[i] == 0 ? 1 : 0;
                high += page[i] >= 0x80 ? 1 : 0;
                if (i < line + 16)
                {
                    nibbles[page[i] / 16]++;
                    nibbles[16 + page[i] % 16]++;
                }
                if (i >= line + 32)
                {
                    run += page[i] == page[i - 1] ? 1 : 0;
                    lag8 += page[i] == page[i - 8] ? 1 : 0;
                }
            }
        }
        return new PageSample(zero, high, run, lag8, PageEstimator.NibbleEntropy(nibbles));
    }

    private static List<(string What, byte[] Page)> Pages()
    {
        var pages = new List<(string, byte[])>();
        foreach (string sample in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Samples"), "*.sample.pages"))
        {
            byte[] data = File.ReadAllBytes(sample);
            for (int i = 0; i < data.Length / P; i++)
            {
                pages.Add(($"{Path.GetFileName(sample)} page {i}", data.AsSpan(i * P, P).ToArray()));
            }
        }
        pages.Add(("zero page", new byte[P]));
        byte[] high = new byte[P];
        high.AsSpan().Fill(0x80);
        pages.Add(("0x80 page (every byte high, every lane counter at its maximum)", high));
        byte[] lastByte = new byte[P];
        lastByte[P - 1] = 1;
        pages.Add(("zero page but its last byte", lastByte));
        for (int seed = 0; seed < 8; seed++)
        {
            byte[] random = new byte[P];
            new Random(seed).NextBytes(random);
            pages.Add(($"random page {seed}", random));
        }
        return pages;
    }

    [Trait("Category", TestCategory.Unit)]
    [Theory]
    [MemberData(nameof(Kernels))]
    public void Kernel_CountsWhatTheDefinitionCounts(string kernel)
    {
        var isa = Enum.Parse<PageKernelIsa>(kernel);
        int pages = 0;
        foreach ((string what, byte[] page) in Pages())
        {
            page.CopyTo(new Span<byte>(_page, P));
            Assert.True(Reference(_page) == PageKernels.Sample(_page, isa), $"{isa}, {what}: {PageKernels.Sample(_page, isa)} != {Reference(_page)}");
            // And the whole estimate is the one of the machine's kernel.
            Assert.Equal(PageEstimator.Estimate(_page, Threshold), PageEstimator.Estimate(_page, Threshold, isa));
            pages++;
        }
        Assert.True(pages > 4 * 32, "the shipped samples were found");
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void LaneSums_BothWays_AreTheSumOfTheLanes()
    {
        var random = new Random(11);
        byte[] lanes = new byte[64];
        for (int round = 0; round < 100; round++)
        {
            random.NextBytes(lanes);
            for (int i = 0; i < lanes.Length; i++)
            {
                lanes[i] = (byte)(round == 0 ? 255 : lanes[i] % 33); // counters never exceed 32; 255 checks the widest
            }
            var v512 = System.Runtime.Intrinsics.Vector512.Create(lanes);
            var v256 = System.Runtime.Intrinsics.Vector256.Create(lanes);
            var v128 = System.Runtime.Intrinsics.Vector128.Create(lanes);
            int sum64 = lanes.Sum(b => b), sum32 = lanes.Take(32).Sum(b => b), sum16 = lanes.Take(16).Sum(b => b);
            Assert.Equal(sum64, Vector512PageKernels.LaneSum(v512));
            Assert.Equal(sum64, Vector512PageKernels.LaneSumPortable(v512));
            Assert.Equal(sum32, Vector256PageKernels.LaneSum(v256));
            Assert.Equal(sum32, Vector256PageKernels.LaneSumPortable(v256));
            Assert.Equal(sum16, Vector128PageKernels.LaneSum(v128));
            Assert.Equal(sum16, Vector128PageKernels.LaneSumPortable(v128));
        }
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void NibbleEntropy_IsTheShannonEntropyOfEachNibble_Summed()
    {
        int* counts = stackalloc int[32];
        new Span<int>(counts, 32).Clear();
        counts[3] = counts[16 + 9] = PageEstimator.HistogramBytes; // one value only: 0 bits
        Assert.Equal(0f, PageEstimator.NibbleEntropy(counts), 0.001f);
        for (int i = 0; i < 32; i++)
        {
            counts[i] = PageEstimator.HistogramBytes / 16; // uniform: 4 + 4 bits
        }
        Assert.Equal(8f, PageEstimator.NibbleEntropy(counts), 0.001f);
        new Span<int>(counts, 32).Clear();
        counts[0] = counts[1] = PageEstimator.HistogramBytes / 2; // high nibble 1 bit, low nibble 0 bits
        counts[16] = PageEstimator.HistogramBytes;
        Assert.Equal(1f, PageEstimator.NibbleEntropy(counts), 0.001f);
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void Classes_FollowTheThresholdAndMargins()
    {
        const int m = PageEstimator.CompressibleMargin;
        Assert.Equal(PageClass.VeryCompressible, PageEstimator.Classify(P / 2 - m - 1, 5f, Threshold));
        Assert.Equal(PageClass.Compressible, PageEstimator.Classify(P / 2 - m, 5f, Threshold));
        Assert.Equal(PageClass.Uncertain, PageEstimator.Classify(Threshold - m, 5f, Threshold));
        Assert.Equal(PageClass.Uncertain, PageEstimator.Classify(Threshold + PageEstimator.IncompressibleMargin + 1, 6f, Threshold)); // entropy too low to be sure
        Assert.Equal(PageClass.Incompressible, PageEstimator.Classify(Threshold + PageEstimator.IncompressibleMargin + 1, 7f, Threshold));
        // A low threshold: nothing is called (very) compressible that is not confidently below it.
        Assert.Equal(PageClass.Uncertain, PageEstimator.Classify(P / 2 - m - 1, 5f, 1024));
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void ZeroAndSameFilledPages_AreExact()
    {
        new Span<byte>(_page, P).Clear();
        Assert.Equal(PageClass.Zero, PageEstimator.Estimate(_page, Threshold).Class);
        TestPages.Fill(_page, 0xDEAD_BEEF_0BAD_F00DUL);
        PageEstimate e = PageEstimator.Estimate(_page, Threshold);
        Assert.Equal(PageClass.SameFilled, e.Class);
        Assert.Equal(0xDEAD_BEEF_0BAD_F00DUL, e.FillValue);
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void RandomPages_AreIncompressible_AndLz4Agrees()
    {
        for (int seed = 0; seed < 16; seed++)
        {
            TestPages.WriteRandom(_page, seed);
            Assert.Equal(PageClass.Incompressible, PageEstimator.Estimate(_page, Threshold).Class);
            Assert.Equal(0, Interop.Lz4.CompressDefault(_page, _scratch, P, Threshold));
        }
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void HalfZeroHalfRandom_IsNotCalledIncompressible()
    {
        // LZ4 gets this to about half a page; entropy of the sample alone would say "random".
        new Span<byte>(_page, P).Clear();
        new Random(3).NextBytes(new Span<byte>(_page, P / 2));
        Assert.InRange(Interop.Lz4.CompressDefault(_page, _scratch, P, 2 * P), 1, Threshold);
        Assert.NotEqual(PageClass.Incompressible, PageEstimator.Estimate(_page, Threshold).Class);
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void ShippedSamples_NoFalseIncompressible_AndHeapsPredictedCompressible()
    {
        foreach (string sample in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Samples"), "*.sample.pages"))
        {
            byte[] data = File.ReadAllBytes(sample);
            fixed (byte* pages = data)
            {
                for (int i = 0; i < data.Length / P; i++)
                {
                    PageEstimate e = PageEstimator.Estimate(pages + i * P, Threshold);
                    int lz4 = Interop.Lz4.CompressDefault(pages + i * P, _scratch, P, 2 * P);
                    Assert.False(e.Class == PageClass.Incompressible && lz4 <= Threshold, $"{sample} page {i}: called incompressible, LZ4 gives {lz4}");
                    if (sample.Contains("heap"))
                    {
                        Assert.True(e.PredictsBelow(Threshold), $"{sample} page {i}: {e}, LZ4 gives {lz4}");
                    }
                }
            }
        }
    }
}
