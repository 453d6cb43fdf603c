using Xunit.Abstractions;

namespace CramCore.Tests;

/// <summary>
/// Writers, readers, continuous reclaim and forced GCs on one region; every page carries a version
/// its owner thread also keeps outside the region. Any lost or torn write fails the test.
/// CI runs a few seconds; set CRAMCORE_STRESS_SECONDS for a long soak.
/// </summary>
[Trait("Category", TestCategory.Stress)]
public sealed unsafe class NoLostWriteStressTests(ITestOutputHelper output)
{
    private const int P = TestPages.PageSize;

    private static int Seconds => int.TryParse(Environment.GetEnvironmentVariable("CRAMCORE_STRESS_SECONDS"), out int s) && s > 0 ? s : 4;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ConcurrentWritesReadsReclaimAndGc_LoseNothing(bool withResidentLimit)
    {
        const int pages = 4096, writers = 2;
        using var engine = CramEngine.Create(new CramOptions
        {
            ResidentLimitBytes = withResidentLimit ? 2L << 20 : 0,
            FaultServiceSpinMicroseconds = 0,
        });
        using var region = engine.CreateRegion((long)pages * P);
        long[] versions = new long[pages]; // owned per page by writer (page % writers)
        for (int i = 0; i < pages; i++)
        {
            if (i % 5 == 4)
            {
                TestPages.Fill(region.Pointer + (long)i * P, 0); // zero pages take another path
                versions[i] = -1;
            }
            else
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 0);
            }
        }
        var stop = DateTime.UtcNow.AddSeconds(Seconds);
        var failures = new List<string>();
        long writes = 0, reads = 0, reclaimed = 0, gcs = 0;

        void Writer(int id)
        {
            var rng = new Random(id);
            while (DateTime.UtcNow < stop)
            {
                int page = rng.Next(pages / writers) * writers + id;
                byte* p = region.Pointer + (long)page * P;
                long v = versions[page];
                bool ok = v < 0 ? TestPages.CheckFilledZero(p) : TestPages.CheckCompressible(p, page, v);
                if (!ok)
                {
                    lock (failures) { failures.Add($"page {page}: expected version {v}, found {((long*)p)[1]} (index {((long*)p)[0]})"); }
                    return;
                }
                v = v < 0 ? 1 : v + 1;
                if (rng.Next(4) == 0)
                {
                    ((long*)p)[1] = v; // partial write: only the version word, rest must follow
                    TestPages.WriteCompressible(p, page, v);
                }
                else
                {
                    TestPages.WriteCompressible(p, page, v);
                }
                versions[page] = v;
                Interlocked.Increment(ref writes);
            }
        }

        void Reader(int seed)
        {
            var rng = new Random(seed);
            long sum = 0;
            while (DateTime.UtcNow < stop)
            {
                sum += ((long*)(region.Pointer + (long)rng.Next(pages) * P))[0];
                Interlocked.Increment(ref reads);
            }
            GC.KeepAlive(sum);
        }

        void Reclaim()
        {
            var rng = new Random(99);
            while (DateTime.UtcNow < stop)
            {
                Interlocked.Add(ref reclaimed, region.Reclaim((long)rng.Next(1, 512) * P));
            }
        }

        void Collect()
        {
            while (DateTime.UtcNow < stop)
            {
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                Interlocked.Increment(ref gcs);
                Thread.Sleep(5);
            }
        }

        var threads = new List<Thread>();
        for (int w = 0; w < writers; w++)
        {
            int id = w;
            threads.Add(new Thread(() => Writer(id)));
        }
        threads.Add(new Thread(() => Reader(7)));
        threads.Add(new Thread(Reclaim));
        threads.Add(new Thread(Collect));
        threads.ForEach(t => t.Start());
        foreach (var t in threads)
        {
            Assert.True(t.Join(TimeSpan.FromSeconds(Seconds + 60)), "a thread hung");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures) + "\n" + engine.GetStats());

        region.Reclaim(region.Length); // and one last full eviction before verifying
        for (int i = 0; i < pages; i++)
        {
            byte* p = region.Pointer + (long)i * P;
            Assert.True(versions[i] < 0 ? TestPages.CheckFilledZero(p) : TestPages.CheckCompressible(p, i, versions[i]), $"page {i} version {versions[i]}");
        }
        var s = engine.GetStats();
        output.WriteLine($"writes {writes} reads {reads} reclaimed {reclaimed / P} pages, gcs {gcs}; {s}");
        Assert.Equal(0, s.ServiceErrors);
        Assert.True(s.Evictions > pages, $"evictions {s.Evictions}");
        Assert.True(s.Refaults > 0);
        Assert.True(writes > 1000, $"writes {writes}");
        Assert.True(gcs > 3, $"gcs {gcs}");
    }
}
