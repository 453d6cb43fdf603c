namespace CramCore.Tests;

/// <summary><see cref="CramRegion.GetStats"/>: each region's share, exact on a quiet engine, and cheap on a huge sparse region.</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class RegionStatsTests
{
    private const int P = 4096;

    [Fact]
    public void RegionStats_AddUpToTheEngines_AndMatchThePageTable()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using var a = engine.CreateRegion(256L * P);
        using var b = engine.CreateRegion(128L * P);
        for (int i = 0; i < 256; i++)
        {
            if (i % 16 == 0)
            {
                TestPages.Fill(a.Pointer + (long)i * P, 0);
            }
            else
            {
                TestPages.WriteCompressible(a.Pointer + (long)i * P, i, 1);
            }
        }
        for (int i = 0; i < 100; i++)
        {
            TestPages.WriteCompressible(b.Pointer + (long)i * P, i, 2);
        }
        a.Reclaim(a.Length);
        b.Reclaim(40L * P);
        for (int i = 0; i < 64; i += 2)
        {
            Assert.True(TestPages.CheckCompressible(a.Pointer + (long)(i + 1) * P, i + 1, 1)); // read back: clean copies
        }
        TestPages.WriteCompressible(a.Pointer + 3L * P, 3, 5); // and one written again

        CramStats all = engine.GetStats();
        CramRegionStats sa = a.GetStats(), sb = b.GetStats();
        Assert.Equal(256L * P, sa.LogicalBytes);
        Assert.Equal(100L * P, sb.LogicalBytes);
        Assert.Equal(all.LogicalBytes, sa.LogicalBytes + sb.LogicalBytes);
        Assert.Equal(all.ResidentBytes, sa.ResidentBytes + sb.ResidentBytes);
        Assert.Equal(all.CleanCopyBytes > 0, sa.CleanCopyBytes > 0);
        Assert.Equal(all.CleanCopyPages * P, sa.CleanCopyBytes + sb.CleanCopyBytes);
        Assert.Equal(all.StoredBytes, sa.StoredBytes + sb.StoredBytes); // pool only: no backing file
        Assert.Equal(sa.LogicalBytes, sa.ResidentBytes + sa.EvictedBytes);
        Assert.Equal(40L * P, sb.EvictedBytes);
        Assert.Equal(16, sa.SameFilledPages); // the zero pages, evicted as values
        Assert.Equal(0, sa.PlacedBytes + sb.PlacedBytes);

        long evicted = 0, clean = 0;
        for (long i = 0; i < 256; i++)
        {
            PageState state = PageTableEntry.State(PageTableEntry.Load(a.PageTableEntries + i));
            evicted += state == PageState.Evicted ? 1 : 0;
            clean += state == PageState.Clean ? 1 : 0;
        }
        Assert.Equal((evicted * P, clean * P), (sa.EvictedBytes, sa.CleanCopyBytes));
    }

    [Fact]
    public void LargestRegion_CountsOnlyWhatWasTouched()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using var region = engine.CreateRegion(1L << 46); // 2^34 page-table entries: a full walk would take minutes
        TestPages.WriteCompressible(region.Pointer + 12345L * P, 12345, 1);
        TestPages.WriteCompressible(region.Pointer + (1L << 46) - P, 7, 1);
        region.Reclaim(P);
        CramRegionStats s = region.GetStats();
        Assert.Equal((2L * P, P, P), (s.LogicalBytes, s.ResidentBytes, s.EvictedBytes));
        Assert.True(s.StoredBytes is > 0 and < P);
    }

    [Fact]
    public void EngineStats_PrintReadably()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(64L * P);
        for (int i = 0; i < 64; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 0);
        }
        region.Reclaim(region.Length);
        Assert.True(TestPages.CheckCompressible(region.Pointer, 0, 0));
        string text = engine.GetStats().ToString();
        Assert.DoesNotContain("<>", text); // no compiler-generated collection type names
        Assert.DoesNotContain("System.", text);
        Assert.Contains("PoolClasses = [CramPoolClass { ObjectSize = ", text);
        Assert.Contains("FaultServiceTime = CramLatencyHistogram { Counts = [", text);
    }
}
