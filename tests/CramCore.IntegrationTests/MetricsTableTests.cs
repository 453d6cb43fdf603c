using System.Diagnostics.Metrics;
using System.Text.RegularExpressions;

namespace CramCore.Tests;

/// <summary>
/// The metrics as documented and as injected: README's table names exactly the instruments the
/// code publishes, with their units; an engine created with an <see cref="IMeterFactory"/> reports on
/// that factory's meter, for itself only.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed partial class MetricsTableTests
{
    private static string ApiDocPath() => Path.Combine(RepositoryRoot.Path, "docs", "api.md"); // its "### Metrics" table

    /// <summary>Instrument name → unit, for every instrument of meters named CramCore that <paramref name="accept"/> takes.</summary>
    private static Dictionary<string, string> Published(Func<Meter, bool> accept)
    {
        var published = new Dictionary<string, string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, _) =>
        {
            if (instrument.Meter.Name == "CramCore" && accept(instrument.Meter))
            {
                lock (published)
                {
                    published[instrument.Name] = instrument.Unit ?? "";
                }
            }
        };
        listener.Start(); // calls InstrumentPublished for every instrument already published
        return published;
    }

    [GeneratedRegex(@"^\| (?<names>`cramcore[^|]*) \| (?<kind>gauge|counter|histogram) \| (?<units>[^|]*) \|$", RegexOptions.Multiline)]
    private static partial Regex TableRow();

    [Fact]
    public void ReadmeTable_NamesEveryPublishedInstrument_WithItsUnit()
    {
        using var engine = CramEngine.Create(); // the shared meter exists once an engine did
        Dictionary<string, string> code = Published(m => m.Scope is null);
        string readme = File.ReadAllText(ApiDocPath());
        var documented = new Dictionary<string, string>();
        foreach (Match row in TableRow().Matches(readme))
        {
            string[] names = [.. row.Groups["names"].Value.Split(" / ").Select(n => n.Trim('`'))];
            string units = row.Groups["units"].Value.Trim(); // one unit, or the units of the row's names
            string first = names[0];
            for (int i = 0; i < names.Length; i++)
            {
                string name = names[i];
                if (name.StartsWith('.')) // shorthand: after the first name, or after its parent
                {
                    string appended = first + name, sibling = first[..first.LastIndexOf('.')] + name;
                    name = code.ContainsKey(appended) ? appended : sibling;
                }
                documented[name] = units;
            }
        }
        Assert.Equal(new SortedSet<string>(code.Keys), new SortedSet<string>(documented.Keys));
        foreach ((string name, string unit) in code)
        {
            if (!documented[name].Split(" / ").Contains(unit))
            {
                Assert.Fail($"{name}: docs/api.md says {documented[name]}, the code publishes {unit}");
            }
        }
    }

    [Theory]
    [InlineData(CramFaultService.ServiceThread)]
    [InlineData(CramFaultService.FaultingThread)]
    public unsafe void SwapInTimes_CountEverySwapIn_AndTheMetricsQuantilesAgreeWithTheStats(CramFaultService service)
    {
        using var factory = new TestMeterFactory();
        // No latency probe: its samples would land between the stats read and the collection below (FaultLatencyProbeTests has it).
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, FaultService = service, FaultLatencyProbeInterval = TimeSpan.Zero }, factory);
        using var region = engine.CreateRegion(64 * 4096);
        var recorded = new Dictionary<string, List<double>> { ["cramcore.fault.service_time"] = [], ["cramcore.fault.latency"] = [] };
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Scope == factory && (recorded.ContainsKey(instrument.Name) || instrument.Name == "cramcore.faults.swapin")) // as any exporter would
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((instrument, value, _, _) => { lock (recorded) { recorded[instrument.Name].Add(value); } });
        listener.Start();

        for (int i = 0; i < 64; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * 4096, i, 1);
        }
        region.Reclaim(region.Length);
        long sum = 0;
        for (int i = 63; i >= 0; i--) // backwards: one fault each, no readahead
        {
            sum += *(long*)(region.Pointer + (long)i * 4096);
        }
        GC.KeepAlive(sum);
        CramStats s = engine.GetStats();
        Assert.Equal(64, s.Refaults);
        Assert.Equal(64, s.FaultServiceTime.Count);
        Assert.Equal(service == CramFaultService.FaultingThread ? 64 : 0, s.FaultLatency.Count); // the faulting thread times its own wait; under the service thread only the probe can
        listener.RecordObservableInstruments(); // a collection brings the histograms up to date (this engine has no reclaim worker)
        foreach ((string name, CramLatencyHistogram histogram) in new[] { ("cramcore.fault.service_time", s.FaultServiceTime), ("cramcore.fault.latency", s.FaultLatency) })
        {
            List<double> values = recorded[name];
            Assert.Equal(histogram.Count, values.Count);
            values.Sort();
            foreach (double q in new[] { 0.5, 0.9, 1.0 })
            {
                if (values.Count > 0) // the metric's quantile (nearest rank over what it recorded) is the stats' quantile
                {
                    Assert.Equal(histogram.Quantile(q).TotalSeconds, values[(int)Math.Ceiling(q * values.Count) - 1], 9);
                }
            }
        }
        if (service == CramFaultService.FaultingThread) // each fault's latency contains its service time
        {
            Assert.True(s.FaultLatency.Quantile(0.5) >= s.FaultServiceTime.Quantile(0.5), $"latency p50 {s.FaultLatency.Quantile(0.5)} < service time p50 {s.FaultServiceTime.Quantile(0.5)}");
        }
    }

    private sealed class TestMeterFactory : IMeterFactory
    {
        public List<Meter> Meters { get; } = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options.Name, options.Version, options.Tags, scope: this);
            Meters.Add(meter);
            return meter;
        }

        public void Dispose() => Meters.ForEach(m => m.Dispose());
    }

    [Fact]
    public unsafe void MeterFactory_GetsTheEnginesInstruments_ForThatEngineOnly()
    {
        using var factory = new TestMeterFactory();
        using var other = CramEngine.Create(); // on the shared meter: must not show up on the factory's
        using var otherRegion = other.CreateRegion(1 << 20);
        otherRegion.AsSpan<byte>(0, 1 << 20).Fill(1);
        using var engine = CramEngine.Create(null, factory);
        using var region = engine.CreateRegion(1 << 20);
        region.AsSpan<byte>(0, 8 * 4096).Fill(2);
        Assert.Single(factory.Meters);
        Assert.Equal("CramCore", factory.Meters[0].Name);

        var resident = new List<long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Scope == factory && instrument.Name == "cramcore.memory.resident")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => resident.Add(value));
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.Equal([engine.GetStats().ResidentBytes], resident); // one engine, this one
        Assert.Equal(Published(m => m.Scope is null).Keys.Order(), Published(m => m.Scope == factory).Keys.Order()); // the same instruments
    }
}
