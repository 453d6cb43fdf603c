using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace CramCore.Tests;

/// <summary>
/// dotnet-counters reads meters through the runtime's "System.Diagnostics.Metrics" EventSource.
/// This subscribes to it in-process with the same arguments `dotnet-counters monitor --counters
/// CramCore` sends, and checks that CramCore's instruments are published.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed class MetricsEventSourceTests
{
    private sealed class MetricsListener : EventListener
    {
        public readonly ConcurrentDictionary<string, string> Seen = new();

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == "System.Diagnostics.Metrics")
            {
                EnableEvents(source, EventLevel.Informational, (EventKeywords)0x3, new Dictionary<string, string?>
                {
                    ["SessionId"] = "cramcore-test",
                    ["Metrics"] = "CramCore",
                    ["RefreshInterval"] = "0.2",
                    ["MaxTimeSeries"] = "1000",
                    ["MaxHistograms"] = "10",
                });
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventName is "GaugeValuePublished" or "CounterRateValuePublished" or "HistogramValuePublished" && e.Payload is not null && e.PayloadNames is not null)
            {
                int meter = e.PayloadNames.IndexOf("meterName"), instrument = e.PayloadNames.IndexOf("instrumentName"), unit = e.PayloadNames.IndexOf("unit");
                if (meter >= 0 && instrument >= 0 && e.Payload[meter] as string == "CramCore")
                {
                    Seen[(string)e.Payload[instrument]!] = unit >= 0 ? e.Payload[unit] as string ?? "" : "";
                }
            }
        }
    }

    [Fact]
    public void InstrumentsReachTheMetricsEventSource()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(1 << 20);
        region.AsSpan<long>(0, 1)[0] = 1;
        using var listener = new MetricsListener();
        long sum = 0;
        Assert.True(SpinWait.SpinUntil(() =>
        {
            region.Reclaim(region.Length); // swap-ins while the listener listens, for the histogram
            sum += region.AsSpan<long>(0, 1)[0];
            return listener.Seen.ContainsKey("cramcore.memory.resident") && listener.Seen.ContainsKey("cramcore.faults.swapin") &&
                listener.Seen.ContainsKey("cramcore.fault.service_time");
        }, TimeSpan.FromSeconds(20)), "seen: " + string.Join(", ", listener.Seen.Keys));
        Assert.Equal("By", listener.Seen["cramcore.memory.resident"]);
        Assert.Equal("s", listener.Seen["cramcore.fault.service_time"]);
        GC.KeepAlive(sum);
    }
}
