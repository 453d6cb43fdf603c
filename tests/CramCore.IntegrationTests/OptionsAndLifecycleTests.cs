using System.Diagnostics.Metrics;

namespace CramCore.Tests;

public sealed unsafe class OptionsAndLifecycleTests
{
    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void BadRegionSize_Throws()
    {
        using var engine = CramEngine.Create();
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.CreateRegion(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.CreateRegion(-4096));
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void AsSpanOutsideRegion_Throws()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(8192);
        Assert.Equal(8192, region.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => region.AsSpan<long>(8192 - 8, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => region.AsSpan<byte>(-1, 1));
        Assert.Equal(1024, region.AsSpan<long>(0, 1024).Length);
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void UseAfterDispose_ThrowsObjectDisposed()
    {
        var engine = CramEngine.Create();
        var region = engine.CreateRegion(1 << 20);
        var other = engine.CreateRegion(1 << 20);
        region.Dispose();
        Assert.Throws<ObjectDisposedException>(() => region.AsSpan<byte>(0, 1));
        Assert.Throws<ObjectDisposedException>(() => region.Reclaim(4096));
        Assert.Equal(1, engine.GetStats().Regions);
        engine.Dispose();
        Assert.Throws<ObjectDisposedException>(() => other.AsSpan<byte>(0, 1)); // engine took its regions along
        Assert.Throws<ObjectDisposedException>(() => engine.CreateRegion(4096));
        Assert.Throws<ObjectDisposedException>(() => engine.GetStats());
        engine.Dispose(); // idempotent
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void Dispose_WithThreadsIdleInTheRegion_StopsEverything()
    {
        var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 1 << 20 });
        var region = engine.CreateRegion(8 << 20);
        using var go = new ManualResetEventSlim();
        using var written = new CountdownEvent(3);
        var threads = new Thread[3];
        for (int t = 0; t < threads.Length; t++)
        {
            int id = t;
            threads[t] = new Thread(() =>
            {
                for (int i = id; i < 2048; i += 3)
                {
                    TestPages.WriteCompressible(region.Pointer + (long)i * 4096, i, 1);
                }
                written.Signal();
                go.Wait(); // idle, holding pointers into the region, not touching it
            });
            threads[t].Start();
        }
        Assert.True(written.Wait(TimeSpan.FromSeconds(60)));
        engine.Dispose();
        go.Set();
        foreach (var t in threads)
        {
            Assert.True(t.Join(TimeSpan.FromSeconds(10)));
        }
        Assert.Throws<ObjectDisposedException>(() => region.AsSpan<byte>(0, 1).Length);
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void ManyEnginesAndRegions_CreateAndDisposeCleanly()
    {
        for (int round = 0; round < 3; round++)
        {
            using var engine = CramEngine.Create();
            var regions = Enumerable.Range(0, 8).Select(_ => engine.CreateRegion(1 << 20)).ToArray();
            foreach (var (r, i) in regions.Select((r, i) => (r, i)))
            {
                TestPages.WriteCompressible(r.Pointer, i, round);
            }
            foreach (var r in regions)
            {
                r.Reclaim(r.Length);
            }
            foreach (var (r, i) in regions.Select((r, i) => (r, i)))
            {
                Assert.True(TestPages.CheckCompressible(r.Pointer, i, round));
            }
            regions[3].Dispose();
            var s = engine.GetStats();
            Assert.Equal(7, s.Regions);
            Assert.Equal(7L * 4096, s.LogicalBytes); // one page per region: a lone first touch is not faulted around
        }
    }

    [Trait("Category", TestCategory.Userfaultfd)]
    [Fact]
    public void Meter_PublishesEngineCounters()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(1 << 20);
        region.AsSpan<long>(0, 1)[0] = 1;
        var seen = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) =>
        {
            if (i.Meter.Name == "CramCore")
            {
                l.EnableMeasurementEvents(i);
            }
        };
        listener.SetMeasurementEventCallback<long>((i, value, tags, _) =>
        {
            lock (seen)
            {
                seen[i.Name] = Math.Max(seen.GetValueOrDefault(i.Name), value);
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.True(seen["cramcore.memory.resident"] >= 4096);
        Assert.True(seen["cramcore.faults.zero_fill"] >= 1);
        Assert.Contains("cramcore.memory.stored", seen.Keys);
    }
}
