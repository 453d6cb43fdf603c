using FsCheck;
using FsCheck.Fluent;

namespace CramCore.Tests;

public sealed unsafe class CompressedPoolEngineTests
{
    private const int P = SharedLayout.PageSize;

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void PoolFull_LeavesPagesResident_AndLosesNothing()
    {
        using var engine = CramEngine.Create(new CramOptions { PoolArenaBytes = 1L << 20, CompressedPoolLimitBytes = 1L << 20, FaultAroundPages = 1 });
        using var region = engine.CreateRegion(16L << 20);
        long pages = region.Length / P;
        for (long i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + i * P, i, 1);
        }
        long evicted = region.Reclaim(region.Length);
        var s = engine.GetStats();
        Assert.True(s.PoolFullRejections > 0, s.ToString());
        Assert.True(evicted > 0 && evicted < region.Length, $"evicted {evicted}");
        Assert.True(s.PoolBytes <= 1L << 20);
        for (long i = 0; i < pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + i * P, i, 1), $"page {i}");
        }
        // Pages left behind were only write-protected: writing them works and they evict later.
        for (long i = 0; i < pages; i++)
        {
            ((long*)(region.Pointer + i * P))[1] = 2;
        }
        Assert.Equal(0, engine.GetStats().ServiceErrors);
    }

    /// <summary>The fault service decompresses objects through their handles while compaction moves them.</summary>
    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void SwapInsRaceWithCompaction_ReadCorrectBytes()
    {
        using var engine = CramEngine.Create(new CramOptions { PoolArenaBytes = 4L << 20, FaultAroundPages = 1 });
        using var region = engine.CreateRegion(32L << 20);
        long pages = region.Length / P;
        long moved = 0;
        for (int round = 1; round <= 4; round++)
        {
            for (long i = 0; i < pages; i++)
            {
                TestPages.WriteCompressible(region.Pointer + i * P, i, round);
            }
            region.Reclaim(region.Length);
            // Rewrite every other page: their copies go stale and leave holes in the pool.
            for (long i = 0; i < pages; i += 2)
            {
                ((long*)(region.Pointer + i * P))[1] = -round;
                TestPages.WriteCompressible(region.Pointer + i * P, i, round + 100);
            }
            engine.GetStats(); // frees the stale copies
            using var stop = new CancellationTokenSource();
            var compactor = new Thread(() =>
            {
                do // at least once per round, however fast the reads finish
                {
                    Interlocked.Add(ref moved, engine.CompactPool());
                }
                while (!stop.IsCancellationRequested);
            });
            compactor.Start();
            for (long i = 1; i < pages; i += 2) // swap-ins of pages whose copies are being moved
            {
                Assert.True(TestPages.CheckCompressible(region.Pointer + i * P, i, round), $"round {round} page {i}");
            }
            stop.Cancel();
            compactor.Join();
        }
        var s = engine.GetStats();
        Assert.True(s.PoolCompactedPages > 0, s.ToString());
        Assert.Equal(0, s.ServiceErrors);
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void LockPoolMemory_LocksArenasOrSaysHowToAllowIt()
    {
        CramEngine engine;
        try
        {
            engine = CramEngine.Create(new CramOptions { LockPoolMemory = true, PoolArenaBytes = 1L << 20 });
        }
        catch (InvalidOperationException e)
        {
            // Not allowed to lock 1 MiB here: the error must name the limit and the way out.
            Assert.Contains("RLIMIT_MEMLOCK", e.Message);
            Assert.Contains("LockPoolMemory = false", e.Message);
            return;
        }
        using (engine)
        {
            // Locked arena memory is resident from Create: the memory limit's sum counts all of it (issue 24).
            Assert.True(engine.GetStats().MemoryUsedBytes >= 1L << 20, $"memory used {engine.GetStats().MemoryUsedBytes} with a locked 1 MiB arena");
            using var region = engine.CreateRegion(1L << 20);
            TestPages.WriteCompressible(region.Pointer, 0, 1);
            Assert.Equal(P, region.Reclaim(P));
            Assert.True(TestPages.CheckCompressible(region.Pointer, 0, 1));
        }
    }
}
