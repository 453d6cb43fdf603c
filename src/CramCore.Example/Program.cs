// CramCore example: keep a large table of records in a compressed region and use it like memory.
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using CramCore;

const int recordCount = 4_000_000; // 4 M records x 64 bytes = 256 MiB of logical data

using var engine = CramEngine.Create(new CramOptions
{
    ResidentLimitBytes = 64L << 20, // keep at most 64 MiB of it uncompressed
});
using CramRegion region = engine.CreateRegion((long)recordCount * Marshal.SizeOf<Order>());
Console.WriteLine($"userfaultfd mode: {engine.UserfaultfdMode}");

// Fill: ordinary stores through a Span. Cold pages are compressed in the background.
Span<Order> orders = region.AsSpan<Order>(0, recordCount);
for (int i = 0; i < orders.Length; i++)
{
    orders[i] = new Order(i, 1_700_000_000 + i, PriceCents: 100 + i % 5_000, Quantity: i % 17, Status: (byte)(i % 4));
}

// Read it back: evicted pages come back transparently on access.
long revenue = 0;
foreach (ref readonly Order o in orders)
{
    revenue += o.PriceCents * o.Quantity;
}

CramStats stats = engine.GetStats();
Console.WriteLine($"revenue {revenue}");
// Pages read back keep their compressed copy (so evicting them again costs no compression):
// count those apart, or a region that was read back looks bigger than its data.
long evicted = stats.LogicalBytes - stats.ResidentBytes;
long evictedStored = stats.StoredBytes - stats.CleanCopyBytes;
Console.WriteLine($"logical {stats.LogicalBytes >> 20} MiB: resident {stats.ResidentBytes >> 20} MiB " +
                  $"(and {stats.CleanCopyBytes >> 20} MiB of compressed copies they keep), " +
                  $"evicted {evicted >> 20} MiB stored in {evictedStored >> 20} MiB" +
                  (evictedStored > 0 ? $" ({(double)evicted / evictedStored:0.0}x)" : ""));
Console.WriteLine($"faults: {stats.ZeroFillFaults} first-touch, {stats.Refaults} swap-ins, {stats.WriteProtectFaults} write-protect; " +
                  $"{stats.Evictions} evictions");

// The same numbers as System.Diagnostics.Metrics instruments (what dotnet-counters shows).
using var listener = new MeterListener();
listener.InstrumentPublished = (instrument, l) =>
{
    if (instrument.Meter.Name == "CramCore")
    {
        l.EnableMeasurementEvents(instrument);
    }
};
listener.SetMeasurementEventCallback<long>((instrument, value, _, _) => Console.WriteLine($"  {instrument.Name} = {value} {instrument.Unit}"));
listener.Start();
listener.RecordObservableInstruments();

/// <summary>A 64-byte record (blittable: regions must never hold object references).</summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal readonly record struct Order(long Id, long Timestamp, long PriceCents, int Quantity, byte Status);
