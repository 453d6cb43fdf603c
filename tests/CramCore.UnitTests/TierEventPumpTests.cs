using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace CramCore.Tests;

/// <summary>
/// The event pump alone (no engine): what layers post comes out in order, once, logged at a level
/// that says how bad; the fault service's counters become events; throttling stops after a quiet
/// second of the engine's clock (a fake one here: no sleeping).
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class TierEventPumpTests : IDisposable
{
    private readonly NativeShared* _shared = (NativeShared*)NativeMemory.AllocZeroed((nuint)sizeof(NativeShared));
    private readonly FakeTimeProvider _clock = new();
    private readonly TierEventChannel _channel = new();
    private readonly ListLogger _logger = new();
    private readonly List<CramTierEventKind> _raised = [];

    public void Dispose() => NativeMemory.Free(_shared);

    private TierEventPump Pump() =>
        new(_shared, _channel, new CramOptions { Logger = _logger, TimeProvider = _clock }, () => 64L << 20);

    private void Raise(TierEventPump pump) => pump.Raise(this, (_, e) => _raised.Add(e.Kind), wait: true);

    [Fact]
    public void PostedEvents_ComeOutInOrder_Once_AndAreLoggedByHowBadTheyAre()
    {
        TierEventPump pump = Pump();
        _channel.Post(CramTierEventKind.PoolFull, "full");
        _channel.Post(CramTierEventKind.PoolAvailable, "available");
        _channel.Post(CramTierEventKind.ChecksumFailure, "bad");
        Raise(pump);
        Raise(pump);
        Assert.Equal([CramTierEventKind.PoolFull, CramTierEventKind.PoolAvailable, CramTierEventKind.ChecksumFailure], _raised);
        Assert.Equal([LogLevel.Warning, LogLevel.Information, LogLevel.Error], _logger.Entries.Select(e => e.Level));
    }

    [Fact]
    public void Throttling_StartsOnce_AndStopsAfterAQuietSecondOfTheEnginesClock()
    {
        TierEventPump pump = Pump();
        _shared->Stats.ThrottleWaits = 3;
        Raise(pump);
        _shared->Stats.ThrottleWaits = 5;
        Raise(pump); // still throttling: no second start
        Assert.Equal([CramTierEventKind.ThrottlingStarted], _raised);
        _clock.Advance(TimeSpan.FromMilliseconds(TierEventPump.ThrottleQuietMilliseconds - 1));
        Raise(pump);
        Assert.Single(_raised);
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Raise(pump);
        Assert.Equal([CramTierEventKind.ThrottlingStarted, CramTierEventKind.ThrottlingStopped], _raised);
    }

    [Fact]
    public void TheServicesCounters_BecomeEvents_ForWhatIsNewSinceTheLastLook()
    {
        TierEventPump pump = Pump();
        _shared->Stats.ChecksumFailures = 2;
        _shared->Stats.ReadErrors = 1;
        Raise(pump);
        Raise(pump);
        _shared->Stats.ServiceErrors = 1;
        Raise(pump);
        Assert.Equal([CramTierEventKind.ChecksumFailure, CramTierEventKind.ReadError, CramTierEventKind.ServiceError], _raised);
        Assert.Contains("2 stored page(s)", _logger.Entries[0].Message);
    }

    [Fact]
    public void AfterStop_NothingIsRaised()
    {
        TierEventPump pump = Pump();
        _channel.Post(CramTierEventKind.PoolFull, "full");
        pump.Stop();
        Raise(pump);
        Assert.Empty(_raised);
    }

    [Fact]
    public void AThrowingHandler_IsCaughtCountedAndReportedOnce_AndLaterEventsStillCome()
    {
        TierEventPump pump = Pump();
        var seen = new List<CramTierEventKind>();
        EventHandler<CramTierEventArgs> handler = (_, e) =>
        {
            seen.Add(e.Kind);
            throw new InvalidOperationException("handler bug");
        };
        _channel.Post(CramTierEventKind.PoolFull, "full");
        _channel.Post(CramTierEventKind.PoolAvailable, "available");
        pump.Raise(this, handler, wait: true); // nothing escapes

        Assert.Equal([CramTierEventKind.PoolFull, CramTierEventKind.PoolAvailable, CramTierEventKind.CallbackFailed], seen); // in order: the report queues after what was pending
        Assert.Equal(3, _channel.CallbackFailures);   // every throw counted
        var reports = _logger.Entries.Where(e => e.Id.Name == nameof(CramTierEventKind.CallbackFailed)).ToList();
        Assert.Single(reports);                       // reported once for the handler
        Assert.Equal(LogLevel.Error, reports[0].Level);
        Assert.Contains("handler bug", reports[0].Message);
    }
}
