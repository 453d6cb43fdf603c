using Microsoft.Extensions.Time.Testing;
using Microsoft.Extensions.Logging;

namespace CramCore.Tests;

/// <summary>What the engine tells an operator: tier events, including throttling and service errors, and the same through an <see cref="ILogger"/>.</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class EngineEventTests
{
    private const int P = 4096;

    [Fact]
    public void PoolFull_IsRaisedAndLoggedAsAWarning()
    {
        var logger = new ListLogger();
        using var engine = CramEngine.Create(new CramOptions { CompressedPoolLimitBytes = 1 << 20, PoolArenaBytes = 1 << 20, Logger = logger });
        var events = new List<CramTierEventKind>();
        engine.TierEvent += (_, e) => events.Add(e.Kind);
        using var region = engine.CreateRegion(8192L * P);
        for (int i = 0; i < 8192; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1); // about 8 MiB compressed: cannot fit in 1 MiB
        }
        region.Reclaim(region.Length);
        Assert.Contains(CramTierEventKind.PoolFull, events);
        (LogLevel level, EventId id, string message) = Assert.Single(logger.Entries, e => e.Id.Name == nameof(CramTierEventKind.PoolFull));
        Assert.Equal(LogLevel.Warning, level);
        Assert.Contains("ghost mode", message);
    }

    [Fact]
    public void ThrottlingAndServiceErrors_StartAndStop_AsTheServiceCountsThem()
    {
        // The counters are the fault service's (tested where it throttles); here, what the engine
        // makes of them: one event when faults start waiting, one a quiet second after they stop.
        var logger = new ListLogger();
        var clock = new FakeTimeProvider();
        using var engine = CramEngine.Create(new CramOptions { Logger = logger, TimeProvider = clock });
        var events = new List<CramTierEventKind>();
        engine.TierEvent += (_, e) => { lock (events) { events.Add(e.Kind); } };
        ref NativeStats stats = ref engine.Parts.Shared->Stats;

        Interlocked.Add(ref stats.ThrottleWaits, 3);
        engine.RaisePendingEvents();
        Interlocked.Add(ref stats.ThrottleWaits, 2);
        engine.RaisePendingEvents(); // still throttling: no second "started"
        Assert.Equal([CramTierEventKind.ThrottlingStarted], events);
        clock.Advance(TimeSpan.FromMilliseconds(TierEventPump.ThrottleQuietMilliseconds)); // a quiet second on the engine's clock
        engine.RaisePendingEvents();
        Assert.Equal([CramTierEventKind.ThrottlingStarted, CramTierEventKind.ThrottlingStopped], events);

        Interlocked.Increment(ref stats.ServiceErrors);
        engine.RaisePendingEvents();
        Assert.Equal(CramTierEventKind.ServiceError, events[^1]);
        Interlocked.Decrement(ref stats.ServiceErrors); // the engine's own checks at Dispose expect none

        Assert.Equal([LogLevel.Warning, LogLevel.Information, LogLevel.Error], logger.Entries.Select(e => e.Level));
        Assert.Equal([nameof(CramTierEventKind.ThrottlingStarted), nameof(CramTierEventKind.ThrottlingStopped), nameof(CramTierEventKind.ServiceError)],
            logger.Entries.Select(e => e.Id.Name));
    }
}
