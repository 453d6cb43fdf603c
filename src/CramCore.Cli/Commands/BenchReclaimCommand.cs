using System.Diagnostics;
using System.Runtime.InteropServices;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench reclaim --json` prints.</summary>
internal sealed record ReclaimBenchResult(
    string Source, int Pages, int Rounds,
    double ReclaimMibS, double ReclaimColdMibS, double Lz4CompressMibS, double ReclaimOverLz4, double StoredRatio,
    long CompressedPages, long IncompressiblePages, long EstimatorSkippedPages,
    double ReclaimWithoutEstimatorMibS, double RoutingSpeedup, double ZeroReclaimMibS, double ZeroReclaimOverLz4);

/// <summary>
/// `cram bench reclaim`: reclaim throughput against LZ4 compression alone on the same pages, with
/// and without the compressibility estimator, and for zero pages, measured in one run.
/// </summary>
internal static unsafe class BenchReclaimCommand
{
    private const int P = PageSource.PageSize;

    public static int Run(BenchSettings s)
    {
        BenchSupport.Validate(s);
        PageSource source = BenchSupport.Source(s);
        int pages = s.Pages;
        byte[] copy = BenchSupport.Copy(source, pages, s.Mixed);
        double reclaimBest = 0, reclaimCold = 0, zeroBest = 0, lz4Best = 0;
        long stored = 0, compressedPages = 0, incompressible = 0, estimatedIncompressible = 0;
        int threshold = new CramOptions().CompressionThresholdBytes;
        var scratch = (byte*)NativeMemory.Alloc(P);
        // One engine for all rounds: round 0 is a cold start (fresh storage memory is faulted in);
        // later rounds rewrite every page and reclaim again, the steady state a long-running
        // process sees. reclaim_mib_s is the best steady-state round.
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        using var region = engine.CreateRegion((long)pages * P);
        // The same path without the compressibility estimator (every page that is not same-filled
        // is compressed), on the same pages in the same rounds.
        using var unroutedEngine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, EstimateCompressibility = false });
        using var unroutedRegion = unroutedEngine.CreateRegion((long)pages * P);
        double unroutedBest = 0;

        // Writes the pages into the region (so they are dirty) and times reclaiming all of them.
        double TimedReclaim(CramRegion target, out long evicted)
        {
            copy.AsSpan().CopyTo(target.AsSpan<byte>(0, copy.Length));
            long start = Stopwatch.GetTimestamp();
            evicted = target.Reclaim(target.Length);
            return BenchSupport.MBps(pages, Stopwatch.GetTimestamp() - start);
        }
        using var zeroEngine = CramEngine.Create(new CramOptions { FaultAroundPages = 16 });
        using var zeroRegion = zeroEngine.CreateRegion((long)pages * P);
        try
        {
            for (int round = 0; round <= s.Rounds; round++)
            {
                BenchSupport.Progress(round == 0 ? $"cold start: reclaiming {pages} pages once before the timed rounds" : $"round {round} of {s.Rounds}: LZ4 alone, reclaim with and without the estimator, zero pages");
                // LZ4 alone: the same pages, the same output bound as the engine's threshold.
                fixed (byte* src = copy)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    for (int i = 0; i < pages; i++)
                    {
                        Interop.Lz4.CompressDefault(src + (long)i * P, scratch, P, threshold);
                    }
                    lz4Best = Math.Max(lz4Best, BenchSupport.MBps(pages, Stopwatch.GetTimestamp() - t0));
                }
                // The real path: write-protect, same-filled check, LZ4, store, publish, MADV_DONTNEED.
                var before = engine.GetStats();
                double mbps = TimedReclaim(region, out long evicted);
                var after = engine.GetStats();
                if (round == 0)
                {
                    reclaimCold = mbps;
                }
                else
                {
                    reclaimBest = Math.Max(reclaimBest, mbps);
                }
                double unroutedMbps = TimedReclaim(unroutedRegion, out _);
                if (round > 0)
                {
                    unroutedBest = Math.Max(unroutedBest, unroutedMbps);
                }
                stored = after.StoredBytes;
                estimatedIncompressible = after.EstimatedIncompressiblePages - before.EstimatedIncompressiblePages;
                compressedPages = after.CompressedPages - before.CompressedPages;
                incompressible = after.IncompressiblePages - before.IncompressiblePages;
                if (evicted == 0)
                {
                    throw new CliException("--corpus: no page of this corpus compresses below the threshold; nothing to reclaim.");
                }
                // Zero pages: written (so they are dirty), found same-filled, never compressed.
                for (long i = 0; i < pages; i++)
                {
                    *(long*)(zeroRegion.Pointer + i * P) = 0;
                }
                long t2 = Stopwatch.GetTimestamp();
                zeroRegion.Reclaim(zeroRegion.Length);
                if (round > 0)
                {
                    zeroBest = Math.Max(zeroBest, BenchSupport.MBps(pages, Stopwatch.GetTimestamp() - t2));
                }
            }
        }
        finally
        {
            NativeMemory.Free(scratch);
        }
        var result = new ReclaimBenchResult(
            Source: source.Description + (s.Mixed ? (source.CorpusPages > 0 ? ", 1 in 4 pages random" : ", mixed") : ""),
            Pages: pages,
            Rounds: s.Rounds,
            ReclaimMibS: Math.Round(reclaimBest, 1),
            ReclaimColdMibS: Math.Round(reclaimCold, 1),
            Lz4CompressMibS: Math.Round(lz4Best, 1),
            ReclaimOverLz4: Math.Round(reclaimBest / lz4Best, 3),
            StoredRatio: Math.Round((double)compressedPages * P / Math.Max(1, stored), 3),
            CompressedPages: compressedPages,
            IncompressiblePages: incompressible,
            EstimatorSkippedPages: estimatedIncompressible,
            ReclaimWithoutEstimatorMibS: Math.Round(unroutedBest, 1),
            RoutingSpeedup: Math.Round(reclaimBest / unroutedBest, 3),
            ZeroReclaimMibS: Math.Round(zeroBest, 1),
            ZeroReclaimOverLz4: Math.Round(zeroBest / lz4Best, 2));
        return ResultPrinter.Print(result, s.Json, "cram bench reclaim");
    }
}
