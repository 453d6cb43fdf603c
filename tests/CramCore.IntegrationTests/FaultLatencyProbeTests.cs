using System.Diagnostics;

namespace CramCore.Tests;

/// <summary>
/// The service thread's fault-latency probe (cramnative.h, "Fault latency"; native/probe.c): under
/// the service thread nothing in user space can time a faulting thread's wait, so the engine's
/// <c>cram-probe</c> thread takes swap-in faults of its own and times them whole into
/// <see cref="CramStats.FaultLatency"/>. It samples only while swap-ins happen, counts in nothing
/// else, sleeps (no wake-ups at all) when the engine swaps nothing in, and stops with the engine even
/// with a probe in flight.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class FaultLatencyProbeTests
{
    private const int P = TestPages.PageSize;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private static CramEngine ServiceThreadEngine(TimeSpan interval) =>
        CramEngine.Create(new CramOptions { FaultAroundPages = 1, FaultService = CramFaultService.ServiceThread, FaultLatencyProbeInterval = interval });

    private static CramRegion EvictedRegion(CramEngine engine, int pages)
    {
        CramRegion region = engine.CreateRegion((long)pages * P);
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Reclaim(region.Length);
        Assert.Equal(pages, engine.GetStats().Evictions);
        return region;
    }

    /// <summary>The probe threads alive now, by thread id (another test's engine may have one of its own).</summary>
    private static HashSet<string> ProbeThreads() => ProcessThreads.Ids(n => n == "cram-probe");

    /// <summary>A thread's voluntary plus involuntary context switches: every time it woke or was woken.</summary>
    private static long Switches(string tid)
    {
        long total = 0;
        foreach (string line in File.ReadAllLines($"/proc/self/task/{tid}/status"))
        {
            if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
            {
                total += long.Parse(line[(line.IndexOf(':') + 1)..].Trim());
            }
        }
        return total;
    }

    [Fact]
    public void ServiceThread_ProbesSwapInLatency_WhileSwapInsHappen_AndCountsNothingElse()
    {
        HashSet<string> before = ProbeThreads();
        using CramEngine engine = ServiceThreadEngine(TimeSpan.FromMilliseconds(1));
        Assert.Equal(before.Count, ProbeThreads().Count); // no probe before the first drop
        const int Pages = 256;
        using CramRegion region = EvictedRegion(engine, Pages);
        string probe = Assert.Single(ProbeThreads().Except(before)); // started with the first drop

        // Swap pages in one at a time, until the probe has sampled a few times among them.
        long sum = 0;
        int read = 0;
        var clock = Stopwatch.StartNew();
        while (engine.GetStats().FaultLatency.Count < 5 && read < Pages)
        {
            Assert.True(clock.Elapsed < Patience, $"only {engine.GetStats().FaultLatency.Count} probes after {read} swap-ins in {clock.Elapsed}");
            sum += *(long*)(region.Pointer + (long)(Pages - 1 - read) * P); // backwards: no readahead, one fault each
            read++;
            Thread.Sleep(1);
        }
        GC.KeepAlive(sum);
        CramStats s = engine.GetStats();
        Assert.True(s.FaultLatency.Count >= 5, $"{s.FaultLatency.Count} probes after all {Pages} swap-ins");
        Assert.Equal(read, s.Refaults); // the probe's faults are not swap-ins...
        Assert.Equal(read, s.FaultServiceTime.Count); // ...nor timed as the service's
        Assert.Equal(0, s.SpuriousFaults);
        Assert.Equal(0, s.ServiceErrors);
        // A probe's wait holds a fault's trip through the kernel, the service and an LZ4 decode: never under a microsecond.
        Assert.True(s.FaultLatency.Quantile(0.5) >= TimeSpan.FromMicroseconds(2), $"probe p50 {s.FaultLatency.Quantile(0.5)}");
        for (int i = 0; i < read; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)(Pages - 1 - i) * P, Pages - 1 - i, 1));
        }

        // No swap-ins: the probe takes at most the one probe it owed, then sleeps without a wake-up.
        long probes = s.FaultLatency.Count;
        Thread.Sleep(50); // 50 intervals
        long owed = engine.GetStats().FaultLatency.Count;
        Assert.InRange(owed, probes, probes + 1);
        long switches = Switches(probe);
        Thread.Sleep(100);
        Assert.Equal(owed, engine.GetStats().FaultLatency.Count);
        Assert.Equal(switches, Switches(probe)); // asleep: not even a timer wakes it

        // The next swap-in wakes it, and it samples again.
        region.Reclaim(region.Length);
        sum += *(long*)region.Pointer;
        clock.Restart();
        while (engine.GetStats().FaultLatency.Count == owed)
        {
            Assert.True(clock.Elapsed < Patience, "the probe did not wake after a swap-in");
            sum += *(long*)(region.Pointer + (long)(1 + clock.ElapsedMilliseconds % 8) * P); // keep a few swap-ins coming
            Thread.Sleep(1);
        }
        GC.KeepAlive(sum);
    }

    [Fact]
    public void NoProbe_WithAZeroInterval_OrWithTheFaultingThread()
    {
        HashSet<string> before = ProbeThreads();
        using (CramEngine engine = ServiceThreadEngine(TimeSpan.Zero))
        using (CramRegion region = EvictedRegion(engine, 16))
        {
            long sum = 0;
            for (int i = 15; i >= 0; i--)
            {
                sum += *(long*)(region.Pointer + (long)i * P);
            }
            GC.KeepAlive(sum);
            Assert.Empty(ProbeThreads().Except(before));
            Assert.Equal(0, engine.GetStats().FaultLatency.Count);
        }
        using (CramEngine engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, FaultService = CramFaultService.FaultingThread }))
        using (CramRegion region = EvictedRegion(engine, 16))
        {
            long sum = 0;
            for (int i = 15; i >= 0; i--)
            {
                sum += *(long*)(region.Pointer + (long)i * P);
            }
            GC.KeepAlive(sum);
            Assert.Empty(ProbeThreads().Except(before)); // every swap-in times itself
            Assert.Equal(16, engine.GetStats().FaultLatency.Count);
        }
    }

    [Fact]
    public void Dispose_WithProbesDue_StopsTheProbe()
    {
        HashSet<string> before = ProbeThreads();
        for (int round = 0; round < 20; round++)
        {
            using CramEngine engine = ServiceThreadEngine(TimeSpan.FromMilliseconds(1));
            using CramRegion region = EvictedRegion(engine, 8);
            long sum = 0;
            for (int i = 7; i >= 0; i--)
            {
                sum += *(long*)(region.Pointer + (long)i * P);
            }
            GC.KeepAlive(sum);
            Thread.Sleep(round % 3); // disposed before, near or after the probe's next fault
        }
        Assert.Empty(ProbeThreads().Except(before));
    }

    [Theory]
    [InlineData(500)]
    [InlineData(10_001_000)]
    public void Interval_OutOfRange_IsRefused(long microseconds)
    {
        var e = Assert.Throws<ArgumentException>(() => CramEngine.Create(new CramOptions { FaultLatencyProbeInterval = TimeSpan.FromMicroseconds(microseconds) }));
        Assert.Equal("FaultLatencyProbeInterval", e.ParamName);
    }
}
