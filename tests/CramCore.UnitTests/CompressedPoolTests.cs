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
            using var pool = new CompressedPool(1L << 20, 0, lockMemory: false, NativeEngine.Detached);
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
        using var pool = new CompressedPool(16L << 20, 0, lockMemory: false, NativeEngine.Detached);
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
        using var pool = new CompressedPool(1L << 20, 0, lockMemory: false, NativeEngine.Detached);
        byte b = 7;
        uint h = pool.Store(&b, 1);
        pool.Free(h);
        Assert.Throws<InvalidOperationException>(() => pool.Free(h));
    }
}
