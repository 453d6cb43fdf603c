using System.Diagnostics;
using System.Text.Json;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench swap --json` prints: the kernel anchor's keys first (../shared/anchors/kernel-zram.sh), then the engine's own figures.</summary>
internal sealed record SwapBenchResult(
    double FillMibS, double SwapinAtLimitP50Us, double SwapinAtLimitP99Us, double SwapinP50Us, double SwapinP99Us, double SeqSwapinMibS,
    long Mismatches,
    string Source, long SizeBytes, long LimitBytes, int SamplesAtLimit, int SamplesNoLimit, int ZeroPageSamples, long ResidentSkipped,
    string EvictedTest, [property: Figure(FigureUnit.Times, Label = "logical ÷ memory used at the end (every page read back: resident, and the copies kept)")] double EffectiveRatio, long Evictions, long ZeroFillFaults, long Refaults, long WriteProtectFaults,
    long ThrottledFaults, long SeqPages, double PeakResidentOverLimit,
    double PrefetchMibS, double PrefetchOverSeqSwapin, long PrefetchedPages, long PrefetchEvictedPages, long RefaultsAfterPrefetch,
    string FaultService, int CompressionThreads, int ReadaheadThreads, double FillHelperCompressedShare, double FillElapsedS,
    double FillCpuWriterS, double FillCpuFaultServiceS, double FillCpuReclaimS, double FillCpuCompressS, double FillCpuWritebackS, double FillCpuOtherS,
    bool BackingFile, long PoolLimitBytes, long FileBytesWritten, long FileSegments, long FilePagesAfterFill, long RefaultsFromFile,
    [property: Figure(FigureUnit.Bytes, Label = "file written per page")] double FileBytesWrittenPerPage, long FileReads, [property: Figure(FigureUnit.Bytes, Label = "file read per page read back")] double FileReadBytesPerPageReadBack, [property: Figure(FigureUnit.Number)] double PagesPerFileRead,
    [property: Figure(FigureUnit.Number, Label = "sequential: pages per file read")] double SeqPagesPerFileRead, double SeqFileReadsSequentialShare,
    [property: Figure(FigureUnit.Microseconds, Label = "B: fault latency p50 the engine saw (CramStats.FaultLatency, bucket bound)")] double EngineFaultLatencyP50Us,
    [property: Figure(FigureUnit.Number, Label = "B: fault latency samples the engine took (probes under the service thread)")] long EngineFaultLatencySamples,
    [property: Figure(FigureUnit.Microseconds, Label = "B: fault service time p50 (CramStats.FaultServiceTime, bucket bound)")] double EngineFaultServiceTimeP50Us,
    long RecompressedPages, long RefaultsZstd,
    [property: Figure(FigureUnit.Number, Label = "pages writeback re-encoded with zstd on their way to the file")] long FileRecompressedPages,
    [property: Figure(FigureUnit.Bytes, Label = "file bytes that re-encoding saved (against the LZ4 copies)")] long FileBytesSavedByRecompression);

/// <summary>
/// `cram bench swap`: the kernel's own swap workload (../shared/anchors/swaptest.c) through the
/// public API, so the figures stand beside kernel-zram.sh's: SIZE of corpus pages written in order
/// under a resident limit (fill); random reads of evicted pages at the limit (A); the limit lifted
/// and the same again (B); the pages still evicted read in order (seq); every page verified. As
/// swaptest, latencies are of non-zero pages (all-zero pages are counted apart) and a sample counts
/// only if its page was evicted when sampled: swaptest asks mincore(); this asks the engine's page
/// table (state EVICTED), which is the same fact for a region.
/// </summary>
internal static unsafe class BenchSwapCommand
{
    private const int P = PageSource.PageSize;

    /// <param name="backingFile">With a path, the file tier: --limit holds resident memory plus the pool (a resident limit of limit - poolLimit, a pool of poolLimit), and what the pool cannot hold is written back to the file.</param>
    /// <param name="plot">An SVG file to draw the swap-in latency distribution of phases A and B into (null: none).</param>
    /// <param name="kernelJson">The JSON a kernel anchor printed for the same workload (kernel-zram.sh, kernel-swapfile.sh): its p50 and p99 go beside ours in the plot.</param>
    public static int Run(string? corpus, long size, long limit, int samples, bool json, CramFaultService faultService = CramFaultService.Auto,
        string? backingFile = null, long poolLimit = 64L << 20, int compressionThreads = 0, int readaheadThreads = 0, string? plot = null, string? kernelJson = null,
        double recompressionShare = 0.1)
    {
        if (!(recompressionShare is >= 0 and <= 1))
        {
            throw new CliException($"--recompression-cpu-share: {recompressionShare} must be between 0 (no recompression) and 1 (a whole CPU).");
        }
        JsonElement? kernel = BenchSupport.PlotArguments(plot, kernelJson, "kernel-zram.sh or kernel-swapfile.sh");
        if (size < 16L << 20 || size > 1L << 40)
        {
            throw new CliException($"--size: {Measure.Bytes(size)} must be between 16m and 1t.");
        }
        if (limit < 1L << 20 || limit >= size)
        {
            throw new CliException($"--limit: {Measure.Bytes(limit)} must be at least 1m and below --size ({Measure.Bytes(size)}).");
        }
        if (samples is < 100 or > 1_000_000)
        {
            throw new CliException($"--samples: {samples} must be between 100 and 1000000.");
        }
        if (backingFile is not null && (poolLimit < 1L << 20 || poolLimit > limit / 2))
        {
            throw new CliException($"--pool-limit: {Measure.Bytes(poolLimit)} must be at least 1m and at most half of --limit ({Measure.Bytes(limit)}).");
        }
        if (compressionThreads is < 0 or > 16)
        {
            throw new CliException($"--compression-threads: {compressionThreads} must be between 1 and 16, or 0 for one per CPU (at most 4).");
        }
        if (readaheadThreads is < 0 or > SharedLayout.ReadaheadHelpersMax + 1)
        {
            throw new CliException($"--readahead-threads: {readaheadThreads} must be between 1 and {SharedLayout.ReadaheadHelpersMax + 1}, or 0 for the default (2 with more than one CPU).");
        }
        if (backingFile is not null && File.Exists(backingFile))
        {
            throw new CliException($"--backing-file: '{backingFile}' exists; CramCore never overwrites a file: choose another path.");
        }
        PageSource source = corpus is null ? PageSource.GeneratedCorpus() : PageSource.FromCorpus(corpus); // compare with the kernel anchor on the same corpus
        long pages = size / P;
        var zero = new bool[source.CorpusPages];
        var scratch = new byte[P];
        for (int i = 0; i < zero.Length; i++)
        {
            source.Write(scratch, i);
            zero[i] = scratch.AsSpan().IndexOfAnyExcept((byte)0) < 0;
        }
        using var engine = CramEngine.Create(backingFile is null
            ? new CramOptions { ResidentLimitBytes = limit, FaultService = faultService, CompressionThreads = compressionThreads, ReadaheadThreads = readaheadThreads, RecompressionCpuShare = recompressionShare }
            : new CramOptions
            {
                ResidentLimitBytes = limit - poolLimit, CompressedPoolLimitBytes = poolLimit, PoolArenaBytes = Math.Min(poolLimit, 64L << 20),
                BackingFile = backingFile, FaultService = faultService, CompressionThreads = compressionThreads, ReadaheadThreads = readaheadThreads,
                RecompressionCpuShare = recompressionShare,
            });
        using var region = engine.CreateRegion(pages * P);

        BenchSupport.Progress($"fill: {Measure.Bytes(size)} of {source.Description} under a {Measure.Bytes(limit)} resident limit");
        Dictionary<string, double> cpuBeforeFill = ThreadCpu.Sample();
        long t0 = Stopwatch.GetTimestamp();
        for (long i = 0; i < pages; i++)
        {
            source.Write(new Span<byte>(region.Pointer + i * P, P), i);
        }
        double fillSeconds = (Stopwatch.GetTimestamp() - t0) / (double)Stopwatch.Frequency;
        Dictionary<string, double> fillCpu = ThreadCpu.Since(cpuBeforeFill, ThreadCpu.Sample());
        CramStats afterFill = engine.GetStats();
        long peakAfterFill = afterFill.PeakResidentBytes;
        long filePagesAfterFill = afterFill.FilePages;

        BenchSupport.Progress("A: random swap-ins at the limit");
        var rng = new Random(88172645);
        (List<long> atLimit, List<long> zeroA, long skippedA, long badA) = Phase(region, source, zero, pages, samples, rng);
        engine.ResidentLimitBytes = 0; // the limit lifted, as swaptest writes -1 to memory.limit_in_bytes
        BenchSupport.Progress("B: random swap-ins, no limit");
        CramStats beforeB = engine.GetStats();
        (List<long> noLimit, List<long> zeroB, long skippedB, long badB) = Phase(region, source, zero, pages, samples, rng);
        CramStats afterB = engine.GetStats(); // the engine's own view of B, beside the bench's timing of each access
        CramLatencyHistogram latencyB = afterB.FaultLatency.Since(beforeB.FaultLatency), serviceB = afterB.FaultServiceTime.Since(beforeB.FaultServiceTime);

        BenchSupport.Progress("seq: the rest in order");
        var evicted = new List<long>();
        for (long i = 0; i < pages; i++)
        {
            if (region.GetPageState(i * P) == PageState.Evicted)
            {
                evicted.Add(i);
            }
        }
        long acc = 0;
        CramStats beforeSeq = engine.GetStats();
        long ts = Stopwatch.GetTimestamp();
        foreach (long i in evicted)
        {
            acc += Volatile.Read(ref *(long*)(region.Pointer + i * P));
        }
        double seqSeconds = (Stopwatch.GetTimestamp() - ts) / (double)Stopwatch.Frequency;
        CramStats afterSeq = engine.GetStats();
        long seqFileReads = afterSeq.FileReads - beforeSeq.FileReads;
        GC.KeepAlive(acc);

        // Beyond swaptest: everything evicted again, then brought back by a WillNeed hint (the
        // background prefetch, no faults); the verify pass then reads what prefetch installed.
        BenchSupport.Progress("prefetch: everything evicted again, then CramAdvice.WillNeed over the region");
        region.Reclaim(region.Length);
        long evictedForPrefetch = region.GetStats().EvictedBytes;
        long refaultsBefore = engine.GetStats().Refaults, prefetchedBefore = engine.GetStats().PrefetchedPages;
        long tp = Stopwatch.GetTimestamp();
        region.Advise(0, region.Length, CramAdvice.WillNeed);
        engine.Regions.PrefetchIdle().Wait();
        double prefetchSeconds = (Stopwatch.GetTimestamp() - tp) / (double)Stopwatch.Frequency;
        long prefetched = engine.GetStats().PrefetchedPages - prefetchedBefore;

        if (plot is not null)
        {
            static double[] Us(List<long> ticks) => [.. ticks.Select(t => t * 1e6 / Stopwatch.Frequency)];
            string svg = LatencyPlot.Svg($"cram bench swap: {source.Description.Split(',')[0]}, {Measure.Bytes(size)} under {Measure.Bytes(limit)}",
                [
                    new LatencyPlot.Panel("A: random swap-ins at the limit", Us(atLimit), kernel is { } k1 ? LatencyPlot.KernelPoint(k1, "swapin_at_limit") : null),
                    new LatencyPlot.Panel("B: random swap-ins, no limit", Us(noLimit), kernel is { } k2 ? LatencyPlot.KernelPoint(k2, "swapin") : null),
                ],
                $"CramCore ({BenchSupport.Name(engine.GetStats().FaultService)})", kernel is null ? null : "the kernel (anchor)");
            File.WriteAllText(plot, svg);
            BenchSupport.Progress($"plot: {plot}");
        }

        BenchSupport.Progress("verify");
        long mismatches = badA + badB;
        for (long i = 0; i < pages; i++)
        {
            source.Write(scratch, i);
            if (!new ReadOnlySpan<byte>(region.Pointer + i * P, P).SequenceEqual(scratch))
            {
                mismatches++;
            }
        }
        CramStats s = engine.GetStats();
        double seqMibS = evicted.Count * (double)P / (1 << 20) / seqSeconds, prefetchMibS = prefetched * (double)P / (1 << 20) / prefetchSeconds;
        var result = new SwapBenchResult(
            FillMibS: Math.Round(size / (double)(1 << 20) / fillSeconds, 1),
            SwapinAtLimitP50Us: Math.Round(BenchSupport.P50Us(atLimit), 2),
            SwapinAtLimitP99Us: Math.Round(BenchSupport.P99Us(atLimit), 2),
            SwapinP50Us: Math.Round(BenchSupport.P50Us(noLimit), 2),
            SwapinP99Us: Math.Round(BenchSupport.P99Us(noLimit), 2),
            SeqSwapinMibS: Math.Round(seqMibS, 1),
            Mismatches: mismatches,
            Source: source.Description,
            SizeBytes: pages * P,
            LimitBytes: limit,
            SamplesAtLimit: atLimit.Count,
            SamplesNoLimit: noLimit.Count,
            ZeroPageSamples: zeroA.Count + zeroB.Count,
            ResidentSkipped: skippedA + skippedB,
            EvictedTest: "page-table state EVICTED when sampled (swaptest: mincore)",
            EffectiveRatio: Math.Round(s.EffectiveRatio, 3),
            Evictions: s.Evictions,
            ZeroFillFaults: s.ZeroFillFaults,
            Refaults: s.Refaults,
            WriteProtectFaults: s.WriteProtectFaults,
            ThrottledFaults: s.ThrottledFaults,
            SeqPages: evicted.Count,
            PeakResidentOverLimit: Math.Round((double)peakAfterFill / limit, 4),
            PrefetchMibS: Math.Round(prefetchMibS, 1),
            PrefetchOverSeqSwapin: Math.Round(prefetchMibS / seqMibS, 2),
            PrefetchedPages: prefetched,
            PrefetchEvictedPages: evictedForPrefetch / P,
            RefaultsAfterPrefetch: s.Refaults - refaultsBefore,
            FaultService: BenchSupport.Name(engine.GetStats().FaultService),
            CompressionThreads: afterFill.CompressionThreads,
            ReadaheadThreads: afterFill.ReadaheadThreads,
            FillHelperCompressedShare: afterFill.Evictions == 0 ? 0 : Math.Round((double)afterFill.HelperClassifiedPages / afterFill.Evictions, 3),
            FillElapsedS: Math.Round(fillSeconds, 2),
            FillCpuWriterS: fillCpu["caller"], FillCpuFaultServiceS: fillCpu["fault_service"], FillCpuReclaimS: fillCpu["reclaim"],
            FillCpuCompressS: fillCpu["compress"], FillCpuWritebackS: fillCpu["writeback"], FillCpuOtherS: fillCpu["other"],
            BackingFile: backingFile is not null,
            PoolLimitBytes: backingFile is null ? 0 : poolLimit,
            FileBytesWritten: s.WritebackBytes,
            FileSegments: s.BackingFileSegments,
            FilePagesAfterFill: filePagesAfterFill,
            RefaultsFromFile: s.RefaultsFromFile,
            FileBytesWrittenPerPage: s.WritebackPages == 0 ? 0 : Math.Round((double)s.WritebackBytes / s.WritebackPages, 1),
            FileReads: s.FileReads,
            FileReadBytesPerPageReadBack: s.RefaultsFromFile == 0 ? 0 : Math.Round((double)s.FileReadBytes / s.RefaultsFromFile, 1),
            PagesPerFileRead: s.FileReads == 0 ? 0 : Math.Round((double)s.RefaultsFromFile / s.FileReads, 2),
            SeqPagesPerFileRead: seqFileReads == 0 ? 0 : Math.Round((double)(afterSeq.RefaultsFromFile - beforeSeq.RefaultsFromFile) / seqFileReads, 2),
            SeqFileReadsSequentialShare: seqFileReads == 0 ? 0 : Math.Round((double)(afterSeq.FileReadsSequential - beforeSeq.FileReadsSequential) / seqFileReads, 3),
            EngineFaultLatencyP50Us: latencyB.Quantile(0.5).TotalMicroseconds,
            EngineFaultLatencySamples: latencyB.Count,
            EngineFaultServiceTimeP50Us: serviceB.Quantile(0.5).TotalMicroseconds,
            RecompressedPages: s.RecompressedPages,
            RefaultsZstd: s.RefaultsZstd,
            FileRecompressedPages: s.WritebackRecompressedPages,
            FileBytesSavedByRecompression: s.WritebackRecompressionSavedBytes);
        ResultPrinter.Print(result, json, "cram bench swap");
        return mismatches == 0 ? ExitCode.Success : ExitCode.IntegrityFailure;
    }

    /// <summary>As swaptest's phase(): random pages evicted when sampled, one timed 8-byte load each, checked.</summary>
    private static (List<long> Ticks, List<long> ZeroTicks, long Skipped, long Bad) Phase(CramRegion region, PageSource source, bool[] zero,
        long pages, int samples, Random rng)
    {
        var ticks = new List<long>(samples);
        var zeroTicks = new List<long>();
        long tries = 0, skipped = 0, bad = 0;
        Span<byte> expected = stackalloc byte[P];
        while (ticks.Count + zeroTicks.Count < samples && tries < 50L * samples)
        {
            tries++;
            long r = rng.NextInt64(pages);
            byte* p = region.Pointer + r * P;
            if (region.GetPageState(r * P) != PageState.Evicted)
            {
                skipped++;
                continue;
            }
            int offset = rng.Next(P / 8) * 8;
            long a = Stopwatch.GetTimestamp();
            long value = Volatile.Read(ref *(long*)(p + offset));
            long b = Stopwatch.GetTimestamp();
            source.Write(expected, r);
            if (value != BitConverter.ToInt64(expected[offset..]))
            {
                bad++;
            }
            (zero[r % zero.Length] ? zeroTicks : ticks).Add(b - a);
        }
        return (ticks, zeroTicks, skipped, bad);
    }
}
