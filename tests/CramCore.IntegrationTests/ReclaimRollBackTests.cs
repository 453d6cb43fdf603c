namespace CramCore.Tests;

/// <summary>
/// Every roll-back path of the eviction pipeline (Reclaim/EvictionPipeline.cs), driven by injected
/// failures through the page-operations seam: a failed write-protect, a failed or partial drop, a
/// full pool, an exception while storing, and a write that cancels an eviction between protect and
/// publish. Each test checks what the pipeline promises: no page left EVICTING, no write lost, no
/// copy leaked, every page still reclaimable once the failure is gone (it was requeued).
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class ReclaimRollBackTests : IDisposable
{
    private const int P = TestPages.PageSize;
    private const int Pages = 64;
    private readonly FaultInjector _injector = new();
    private readonly CramEngine _engine;
    private readonly CramRegion _region;

    public ReclaimRollBackTests()
    {
        _engine = CramEngine.CreateWithHooks(new CramOptions { FaultAroundPages = 1 }, pageOperations: inner => _injector.Wrap(inner));
        _region = _engine.CreateRegion(Pages * P);
        for (int i = 0; i < Pages; i++)
        {
            TestPages.WriteCompressible(Page(i), i, 1);
        }
    }

    public void Dispose() => _engine.Dispose();

    private byte* Page(int i) => _region.Pointer + (long)i * P;

    private int Count(PageState state, CramRegion? region = null)
    {
        region ??= _region;
        int n = 0;
        for (long i = 0; i < region.Length / P; i++)
        {
            n += region.GetPageState(i * P) == state ? 1 : 0;
        }
        return n;
    }

    /// <summary>With the failure gone, every page is evicted (so every one was requeued) and reads back intact.</summary>
    private void AssertRecovers(int version = 1)
    {
        _injector.Clear();
        _region.Reclaim(_region.Length);
        Assert.Equal(Pages, Count(PageState.Evicted));
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(Page(i), i, version), $"page {i}");
        }
    }

    [Fact]
    public void WriteProtectFails_ClaimedPagesGoBackToDirty_NothingStored()
    {
        _injector.WriteProtectError = Errno.EIO;
        Assert.Throws<IOException>(() => _region.Reclaim(_region.Length));
        Assert.Equal(Pages, Count(PageState.Dirty));
        var s = _engine.GetStats();
        Assert.Equal(0, s.StoredBytes);
        Assert.Equal(0, s.Evictions);
        Assert.Equal(1, _engine.Parts.Reclaimer.Counters.Errors);
        AssertRecovers();
    }

    [Fact]
    public void WriteProtectFails_EveryRegionOfTheBatchRollsBack()
    {
        using CramRegion second = _engine.CreateRegion(Pages * P);
        for (int i = 0; i < Pages; i++)
        {
            TestPages.WriteCompressible(second.Pointer + (long)i * P, 1000 + i, 1);
        }
        _injector.WriteProtectError = Errno.EIO;
        Assert.Throws<IOException>(() => _engine.Parts.Reclaimer.Reclaim(2 * Pages, null));
        Assert.Equal(Pages, Count(PageState.Dirty));
        Assert.Equal(Pages, Count(PageState.Dirty, second));
        _injector.Clear();
        Assert.Equal(2 * Pages, _engine.Parts.Reclaimer.Reclaim(2 * Pages, null));
        Assert.Equal(Pages, Count(PageState.Evicted, second));
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(second.Pointer + (long)i * P, 1000 + i, 1));
        }
    }

    [Fact]
    public void DropFails_PublishedPagesStayClean_AndResident()
    {
        _injector.DropError = Errno.EIO;
        Assert.Throws<IOException>(() => _region.Reclaim(_region.Length));
        Assert.Equal(Pages, Count(PageState.Clean));
        var s = _engine.GetStats();
        Assert.Equal((long)Pages * P, s.ResidentBytes);
        Assert.Equal(Pages, s.CompressedPages);
        Assert.InRange(s.StoredBytes, 1, (long)Pages * 3072);
        AssertRecovers();
        Assert.Equal(Pages, _engine.GetStats().CompressedPages); // the CLEAN copies were reused, not stored again
    }

    [Fact]
    public void DropFailsHalfway_FirstPagesEvicted_RestStayClean()
    {
        _injector.DropError = Errno.EIO;
        _injector.DropBeforeError = 10;
        Assert.Throws<IOException>(() => _region.Reclaim(_region.Length));
        Assert.Equal(10, Count(PageState.Evicted));
        Assert.Equal(Pages - 10, Count(PageState.Clean));
        Assert.Equal(10, _engine.GetStats().Evictions);
        AssertRecovers();
    }

    [Fact]
    public void PoolFull_RestOfBatchGoesBackToDirty_StoredPagesStillDropped()
    {
        _injector.StoresBeforePoolFull = 10;
        Assert.Equal(10L * P, _region.Reclaim(_region.Length)); // no exception: a full pool ends the pass
        Assert.Equal(10, Count(PageState.Evicted));
        Assert.Equal(Pages - 10, Count(PageState.Dirty));
        Assert.Equal(0, _engine.Parts.Reclaimer.Counters.Errors);
        AssertRecovers();
    }

    [Fact]
    public void PoolFull_CleanVictimsOfTheBatchAreStillDropped()
    {
        Assert.Equal((long)Pages * P, _region.Reclaim(_region.Length));
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(Page(i), i, 1)); // read back: CLEAN
        }
        for (int i = 0; i < Pages; i += 2)
        {
            TestPages.WriteCompressible(Page(i), i, 2); // even pages DIRTY again
        }
        _injector.StoresBeforePoolFull = 0;
        Assert.Equal(Pages / 2L * P, _region.Reclaim(_region.Length));
        for (int i = 0; i < Pages; i++)
        {
            Assert.Equal(i % 2 == 0 ? PageState.Dirty : PageState.Evicted, _region.GetPageState((long)i * P));
        }
        _injector.Clear();
        _region.Reclaim(_region.Length);
        Assert.Equal(Pages, Count(PageState.Evicted));
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(Page(i), i, i % 2 == 0 ? 2 : 1), $"page {i}");
        }
    }

    [Fact]
    public void StoreThrows_PublishedPagesStayClean_RestDirty_Rethrown()
    {
        _injector.StoresBeforeThrow = 5;
        Assert.Throws<InvalidOperationException>(() => _region.Reclaim(_region.Length));
        Assert.Equal(5, Count(PageState.Clean));
        Assert.Equal(Pages - 5, Count(PageState.Dirty));
        Assert.Equal(0, Count(PageState.Evicting));
        Assert.Equal(1, _engine.Parts.Reclaimer.Counters.Errors);
        AssertRecovers();
    }

    [Fact]
    public void WriteBetweenProtectAndPublish_CancelsEviction_CopyFreed_WriteKept()
    {
        using CramRegion one = _engine.CreateRegion(2 * P);
        TestPages.WriteCompressible(one.Pointer, 7, 1);
        new Span<byte>(one.Pointer + P, P).Clear(); // a zero page: the slot-0 path
        _injector.AfterWriteProtect = () =>
        {
            ((long*)one.Pointer)[1] = 2;          // version 2 of page 0: a WP fault cancels its eviction
            *(one.Pointer + P + 17) = 0;          // a write of the same byte to the zero page cancels it too
        };
        Assert.Equal(0, one.Reclaim(one.Length));
        Assert.Equal(PageState.Dirty, one.GetPageState(0));
        Assert.Equal(PageState.Dirty, one.GetPageState(P));
        var s = _engine.GetStats();
        Assert.Equal(2, s.CancelledEvictions);
        Assert.Equal(0, s.SameFilledPages);      // the zero copy was released
        Assert.Equal(0, s.StoredBytes);          // the LZ4 copy was freed
        _injector.Clear();
        Assert.Equal(2L * P, one.Reclaim(one.Length));
        Assert.Equal(2, ((long*)one.Pointer)[1]);
        Assert.True(TestPages.CheckFilledZero(one.Pointer + P));
        Assert.Equal(1, _engine.GetStats().SameFilledPages);
    }

    [Fact]
    public void BackgroundReclaim_SurvivesFailures_AndHoldsTheLimitOnceTheyStop()
    {
        var injector = new FaultInjector { WriteProtectError = Errno.EIO };
        using var engine = CramEngine.CreateWithHooks(
            new CramOptions { ResidentLimitBytes = 1 << 20, ThrottleMax = TimeSpan.Zero }, inner => injector.Wrap(inner));
        using var region = engine.CreateRegion(4 << 20);
        for (int i = 0; i < 1024; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        SpinWait.SpinUntil(() => engine.Parts.Reclaimer.Counters.Errors > 0, TimeSpan.FromSeconds(10));
        Assert.True(engine.Parts.Reclaimer.Counters.Errors > 0);
        Assert.Equal(0, engine.GetStats().Evictions);
        injector.Clear();
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().ResidentBytes <= (1 << 20), TimeSpan.FromSeconds(20)),
            $"resident {engine.GetStats().ResidentBytes}");
        for (int i = 0; i < 1024; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1));
        }
    }

    /// <summary>Wraps the real page operations and fails them on demand.</summary>
    private sealed class FaultInjector
    {
        public Errno WriteProtectError { get; set; }
        public Errno DropError { get; set; }
        public int DropBeforeError { get; set; }
        public int StoresBeforePoolFull { get; set; } = -1;
        public int StoresBeforeThrow { get; set; } = -1;
        public Action? AfterWriteProtect { get; set; }

        public void Clear()
        {
            WriteProtectError = DropError = Errno.None;
            DropBeforeError = 0;
            StoresBeforePoolFull = StoresBeforeThrow = -1;
            AfterWriteProtect = null;
        }

        public IPageOperations Wrap(IPageOperations inner) => new Operations(this, inner);

        private sealed class Operations(FaultInjector f, IPageOperations inner) : IPageOperations
        {
            public Errno WriteProtect(uint regionId, ulong* pages, int count)
            {
                if (f.WriteProtectError != Errno.None)
                {
                    return f.WriteProtectError;
                }
                Errno e = inner.WriteProtect(regionId, pages, count);
                f.AfterWriteProtect?.Invoke();
                return e;
            }

            public Errno Drop(uint regionId, ulong* pages, int count, out int dropped)
            {
                if (f.DropError == Errno.None)
                {
                    return inner.Drop(regionId, pages, count, out dropped);
                }
                dropped = 0;
                if (f.DropBeforeError > 0)
                {
                    inner.Drop(regionId, pages, Math.Min(count, f.DropBeforeError), out dropped);
                }
                return f.DropError;
            }

            public bool TryStore(bool raw, byte* source, int length, out ulong slot)
            {
                if (f.StoresBeforeThrow == 0)
                {
                    throw new InvalidOperationException("injected: the slot table is full");
                }
                if (f.StoresBeforePoolFull == 0)
                {
                    slot = 0;
                    return false;
                }
                f.StoresBeforeThrow -= f.StoresBeforeThrow > 0 ? 1 : 0;
                f.StoresBeforePoolFull -= f.StoresBeforePoolFull > 0 ? 1 : 0;
                return inner.TryStore(raw, source, length, out slot);
            }

            public Errno Place(uint regionId, NativeCramPlace* places, int count, out int placed) =>
                inner.Place(regionId, places, count, out placed);
        }
    }
}
