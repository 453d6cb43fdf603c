using System.Diagnostics;

namespace CramCore.Cli.Commands;

/// <summary>`cram bench faults`: what `cram bench faults --json` prints.</summary>
internal sealed record FaultsBenchResult(
    string Source, int Pages, int Rounds,
    double SwapinP50Us, double SwapinP99Us, double WpP50Us, double WpP99Us,
    double RawUffdP50Us, double RawUffdP99Us, double Lz4DecompressP50Us, double ResidentHitNs,
    double StoredRatio, double SwapinOverRawPlusLz4, string FaultService);

/// <summary>
/// `cram bench faults`: swap-in, write-protect, bare userfaultfd and LZ4 decompression latency on
/// the same pages, measured in one run on the real paths (engine, userfaultfd, liblz4).
/// </summary>
internal static unsafe class BenchFaultsCommand
{
    private const int P = PageSource.PageSize;

    public static int Run(BenchSettings s)
    {
        BenchSupport.Validate(s);
        PageSource source = BenchSupport.Source(s);
        int pages = s.Pages;
        var swapin = new List<long>();
        var raw = new List<long>();
        var wp = new List<long>();
        var decompress = new List<long>();
        double hitNs = double.MaxValue;
        long stored = 0;
        CramFaultService used = s.FaultService;
        byte[] copy = BenchSupport.Copy(source, pages);
        var compressed = new byte[pages][];
        var scratch = new byte[P];
        fixed (byte* src = copy, dst = scratch)
        {
            for (int i = 0; i < pages; i++)
            {
                int n = Interop.Lz4.CompressDefault(src + (long)i * P, dst, P, P);
                compressed[i] = scratch.AsSpan(0, n).ToArray();
            }
        }
        for (int round = 0; round < s.Rounds; round++)
        {
            BenchSupport.Progress($"round {round + 1} of {s.Rounds}: swap-ins and write-protect faults on {pages} pages, then bare userfaultfd and LZ4 alone");
            int[] order = BenchSupport.Shuffled(pages, round);
            // The real path: compressed in the engine's store, decompressed by the fault service.
            using (var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, FaultService = s.FaultService }))
            using (var region = engine.CreateRegion((long)pages * P))
            {
                copy.AsSpan().CopyTo(region.AsSpan<byte>(0, copy.Length));
                region.Reclaim(region.Length);
                stored = engine.GetStats().StoredBytes;
                used = engine.GetStats().FaultService;
                swapin.AddRange(BenchSupport.TimeFirstTouch(region, order, write: false));
                wp.AddRange(BenchSupport.TimeFirstTouch(region, order, write: true));
                // Resident hits: the same accesses with every page mapped.
                long sum = 0;
                long t0 = Stopwatch.GetTimestamp();
                for (int rep = 0; rep < 4; rep++)
                {
                    foreach (int i in order)
                    {
                        sum += *(long*)(region.Pointer + (long)i * P + 64);
                    }
                }
                double ns = Measure.TicksToMicroseconds(Stopwatch.GetTimestamp() - t0) * 1000 / (4.0 * pages);
                hitNs = Math.Min(hitNs, ns);
                GC.KeepAlive(sum);
            }
            // The bare fault: the same pages stored uncompressed and answered with UFFDIO_COPY.
            using (var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, StoreUncompressed = true, FaultService = s.FaultService }))
            using (var region = engine.CreateRegion((long)pages * P))
            {
                copy.AsSpan().CopyTo(region.AsSpan<byte>(0, copy.Length));
                region.Reclaim(region.Length);
                raw.AddRange(BenchSupport.TimeFirstTouch(region, order, write: false));
            }
            // LZ4 alone on the same pages.
            fixed (byte* dst = scratch)
            {
                foreach (int i in order)
                {
                    byte[] c = compressed[i];
                    if (c.Length == 0)
                    {
                        continue;
                    }
                    fixed (byte* src = c)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        Interop.Lz4.DecompressSafe(src, dst, c.Length, P);
                        decompress.Add(Stopwatch.GetTimestamp() - t0);
                    }
                }
            }
        }
        double swapP50 = BenchSupport.P50Us(swapin), rawP50 = BenchSupport.P50Us(raw), lz4P50 = BenchSupport.P50Us(decompress);
        var result = new FaultsBenchResult(
            Source: source.Description,
            Pages: pages,
            Rounds: s.Rounds,
            SwapinP50Us: Math.Round(swapP50, 2),
            SwapinP99Us: Math.Round(BenchSupport.P99Us(swapin), 2),
            WpP50Us: Math.Round(BenchSupport.P50Us(wp), 2),
            WpP99Us: Math.Round(BenchSupport.P99Us(wp), 2),
            RawUffdP50Us: Math.Round(rawP50, 2),
            RawUffdP99Us: Math.Round(BenchSupport.P99Us(raw), 2),
            Lz4DecompressP50Us: Math.Round(lz4P50, 2),
            ResidentHitNs: Math.Round(hitNs, 2),
            StoredRatio: Math.Round((double)pages * P / Math.Max(1, stored), 3),
            SwapinOverRawPlusLz4: Math.Round(swapP50 / (rawP50 + lz4P50), 3),
            FaultService: BenchSupport.Name(used));
        return ResultPrinter.Print(result, s.Json, "cram bench faults");
    }
}
