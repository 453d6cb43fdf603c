using FsCheck;
using FsCheck.Fluent;

namespace CramCore.Tests;

public sealed unsafe class CompressedPoolTests
{
    private const int P = SharedLayout.PageSize;

    private static byte[] Object(int seed, int length)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>Random store / free / compact sequences: every live object reads back intact, accounting is exact.</summary>
    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void RandomStoreFreeCompact_KeepsEveryObjectIntact()
    {
        var programs = Gen.ListOf(Gen.Choose(0, int.MaxValue)).Select(l => l.ToArray());
        Prop.ForAll(programs.ToArbitrary(), program =>
        {
            using var pool = new CompressedPool(1L << 20, 0, lockMemory: false, engine: 0);
            var live = new Dictionary<uint, byte[]>();
            var buffer = new byte[P];
            foreach (int op in program)
            {
                switch (op % 10)
                {
                    case < 6:
                        int length = op % 7 == 0 ? P : 1 + (op >> 4) % 3000;
                        byte[] data = Object(op, length);
                        fixed (byte* d = data)
                        {
                            uint h = pool.Store(d, length);
                            if (h == 0 || live.ContainsKey(h))
                            {
                                return false;
                            }
                            live[h] = data;
                        }
                        break;
                    case < 9 when live.Count > 0:
                        uint victim = live.Keys.ElementAt((op >> 4) % live.Count);
                        pool.Free(victim);
                        live.Remove(victim);
                        break;
                    default:
                        pool.Compact();
                        break;
                }
            }
            pool.Compact();
            foreach (var (h, data) in live)
            {
                if (pool.Load(h, buffer) != data.Length || !buffer.AsSpan(0, data.Length).SequenceEqual(data))
                {
                    return false;
                }
            }
            if (pool.ObjectBytes != live.Values.Sum(d => (long)d.Length))
            {
                return false;
            }
            foreach (uint h in live.Keys)
            {
                pool.Free(h);
            }
            pool.Compact(); // emptied zspages may keep resident pages for reuse until compaction
            return pool.UsedBytes == 0 && pool.ObjectBytes == 0;
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(200));
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void Compaction_GivesBackTheSpaceOfFreedObjects()
    {
        using var pool = new CompressedPool(16L << 20, 0, lockMemory: false, engine: 0);
        var handles = new List<uint>();
        var rng = new Random(5);
        for (int i = 0; i < 8000; i++)
        {
            byte[] data = Object(i, 800 + rng.Next(1600));
            fixed (byte* d = data)
            {
                handles.Add(pool.Store(d, data.Length));
            }
        }
        Assert.True(pool.GetStats().Density > 0.95, $"density {pool.GetStats().Density}");
        foreach (uint h in handles.Where((_, i) => i % 2 == 0))
        {
            pool.Free(h);
        }
        long slack = pool.SlackBytes;
        long recovered = pool.Compact();
        Assert.True(recovered >= 0.9 * slack, $"recovered {recovered} of {slack} slack bytes");
        var stats = pool.GetStats();
        Assert.True(stats.CompactedPages > 0 && stats.MovedObjects > 0);
        var buffer = new byte[P];
        rng = new Random(5);
        for (int i = 0; i < 8000; i++)
        {
            int length = 800 + rng.Next(1600);
            if (i % 2 == 1)
            {
                Assert.Equal(length, pool.Load(handles[i], buffer));
                Assert.True(buffer.AsSpan(0, length).SequenceEqual(Object(i, length)), $"object {i}");
            }
        }
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void DoubleFree_IsRefused()
    {
        using var pool = new CompressedPool(1L << 20, 0, lockMemory: false, engine: 0);
        byte b = 7;
        uint h = pool.Store(&b, 1);
        pool.Free(h);
        Assert.Throws<InvalidOperationException>(() => pool.Free(h));
    }

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
            using var region = engine.CreateRegion(1L << 20);
            TestPages.WriteCompressible(region.Pointer, 0, 1);
            Assert.Equal(P, region.Reclaim(P));
            Assert.True(TestPages.CheckCompressible(region.Pointer, 0, 1));
        }
    }
}
