using System.Diagnostics;
using System.Runtime.InteropServices;
using CramCore.Storage;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench ratio --json` prints.</summary>
internal sealed record RatioBenchResult(
    [property: Figure(FigureUnit.Times, Label = "capacity, LZ4 (logical ÷ memory used, metadata included)")] double CapacityLz4,
    [property: Figure(FigureUnit.Times, Label = "capacity, after recompression")] double Capacity,
    [property: Figure(FigureUnit.Times, Label = "zstd-3 per page, 16-byte classes, no dictionary (the bench's own bound)")] double Zstd3PageBound,
    [property: Figure(FigureUnit.Times, Label = "capacity ÷ the zstd-3 bound")] double CapacityOverZstd3Bound,
    double RecompressMibS, [property: Figure(FigureUnit.Number, Label = "recompressor's CPU share (its thread's CPU ÷ the time it took)")] double RecompressCpuShare,
    [property: Figure(FigureUnit.Number, Label = "CPU share asked for (RecompressionCpuShare)")] double CpuShareOption,
    double SwapinP50Us, double SwapinRecompressedP50Us, double ZstdDecompressUs,
    long Mismatches,
    string Source, long SizeBytes, long Pages, long RecompressedPages, long KeptPages, long SameFilledPages,
    long MemoryUsedLz4Bytes, long MemoryUsedBytes, long MetadataBytes, long Dictionaries, double RecompressElapsedS, int Samples, string FaultService,
    [property: Figure(FigureUnit.Times, Label = "re-eviction codec: LZ4 per page, 16-byte classes")] double Lz4PageCapacity,
    [property: Figure(FigureUnit.Times, Label = "re-eviction codec: LZ4HC-9 per page, 16-byte classes")] double Lz4hcPageCapacity,
    [property: Figure(FigureUnit.Microseconds, Label = "LZ4 compress per page")] double Lz4CompressUs,
    [property: Figure(FigureUnit.Microseconds, Label = "LZ4HC-9 compress per page")] double Lz4hcCompressUs,
    [property: Figure(FigureUnit.Microseconds, Label = "LZ4 decode per page, LZ4's copy")] double Lz4DecompressUs,
    [property: Figure(FigureUnit.Microseconds, Label = "LZ4 decode per page, LZ4HC's copy")] double Lz4hcDecompressUs);

/// <summary>
/// `cram bench ratio`: how much cold data fits in the memory the tier is given. SIZE of corpus pages
/// written, every page evicted, capacity measured (logical bytes per byte of memory the engine
/// uses: the pool, resident pages, metadata); then the recompressor lets run until it has nothing
/// left to do and capacity measured again, beside the bench's own per-page zstd-3 bound (each page
/// compressed alone, no dictionary, sizes rounded up to the pool's 16-byte classes, pages over
/// 3 KiB counted whole, zero and same-filled pages at no cost). Swap-ins are sampled before (LZ4
/// copies) and after (zstd copies) and every page verified. Last, the codec a page's next eviction
/// could use once it has come back (issue 29: "LZ4 again, or LZ4HC if measured better"): LZ4 against
/// LZ4HC-9 on one page in four, capacity by the same rules and the cost of each to compress and decode.
/// </summary>
internal static unsafe class BenchRatioCommand
{
    private const int P = PageSource.PageSize;

    public static int Run(string? corpus, long size, double share, int samples, bool json, CramFaultService faultService = CramFaultService.Auto)
    {
        if (size < 16L << 20 || size > 64L << 30)
        {
            throw new CliException($"--size: {Measure.Bytes(size)} must be between 16m and 64g.");
        }
        if (!(share is > 0 and <= 1))
        {
            throw new CliException($"--cpu-share: {share} must be above 0 and at most 1 (a whole CPU).");
        }
        if (samples is < 100 or > 1_000_000)
        {
            throw new CliException($"--samples: {samples} must be between 100 and 1000000.");
        }
        PageSource source = corpus is null ? PageSource.GeneratedCorpus() : PageSource.FromCorpus(corpus);
        long pages = size / P;
        using var engine = CramEngine.Create(new CramOptions { RecompressionCpuShare = share, FaultService = faultService });
        using var region = engine.CreateRegion(pages * P);
        Recompressor recompressor = engine.Parts.Recompressor!;
        recompressor.Suspended = true; // LZ4 alone first
        recompressor.StartDelay = TimeSpan.Zero; // every page was evicted on purpose: cold at once

        BenchSupport.Progress($"fill: {Measure.Bytes(size)} of {source.Description}, then every page evicted");
        for (long i = 0; i < pages; i++)
        {
            source.Write(new Span<byte>(region.Pointer + i * P, P), i);
        }
        region.Reclaim(region.Length);
        CramStats lz4 = engine.GetStats();
        var rng = new Random(20261202);
        List<long> lz4Ticks = Sample(engine, region, pages, samples, rng, zstd: false);
        region.Reclaim(region.Length); // the sampled pages kept their copies: dropped again, nothing stored anew

        BenchSupport.Progress($"recompression at {share:0.##} of a CPU, until it has nothing left to do");
        Dictionary<string, double> cpuBefore = ThreadCpu.Sample();
        long t0 = Stopwatch.GetTimestamp();
        recompressor.Suspended = false;
        recompressor.Request();
        long lastReport = t0;
        while (!recompressor.Idle || recompressor.Due)
        {
            if (recompressor.Idle)
            {
                recompressor.Request();
            }
            Thread.Sleep(20);
            if (Stopwatch.GetElapsedTime(lastReport) > TimeSpan.FromSeconds(5))
            {
                lastReport = Stopwatch.GetTimestamp();
                BenchSupport.Progress($"  {engine.GetStats().RecompressedPages} of {pages} pages recompressed");
            }
        }
        double elapsed = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        double cpu = ThreadCpu.Since(cpuBefore, ThreadCpu.Sample())["recompress"];
        CramStats after = engine.GetStats();

        BenchSupport.Progress("swap-ins of recompressed pages; the bench's own zstd-3 bound; verify");
        List<long> zstdTicks = Sample(engine, region, pages, samples, rng, zstd: true);
        (double bound, double decodeUs) = Zstd3Bound(source, pages);
        Lz4Codecs lz4Codecs = CompareLz4Codecs(source, pages);
        long mismatches = 0;
        var scratch = new byte[P];
        for (long i = 0; i < pages; i++)
        {
            source.Write(scratch, i);
            if (!new ReadOnlySpan<byte>(region.Pointer + i * P, P).SequenceEqual(scratch))
            {
                mismatches++;
            }
        }
        double logical = pages * (double)P;
        double capacity = logical / after.MemoryUsedBytes;
        var result = new RatioBenchResult(
            CapacityLz4: Math.Round(logical / lz4.MemoryUsedBytes, 3),
            Capacity: Math.Round(capacity, 3),
            Zstd3PageBound: Math.Round(bound, 3),
            CapacityOverZstd3Bound: Math.Round(capacity / bound, 3),
            RecompressMibS: Math.Round(after.RecompressedPages * (double)P / (1 << 20) / elapsed, 1),
            RecompressCpuShare: Math.Round(cpu / elapsed, 3),
            CpuShareOption: share,
            SwapinP50Us: Math.Round(BenchSupport.P50Us(lz4Ticks), 2),
            SwapinRecompressedP50Us: Math.Round(BenchSupport.P50Us(zstdTicks), 2),
            ZstdDecompressUs: Math.Round(decodeUs, 2),
            Mismatches: mismatches,
            Source: source.Description,
            SizeBytes: pages * P,
            Pages: pages,
            RecompressedPages: after.RecompressedPages,
            KeptPages: after.RecompressionKeptPages,
            SameFilledPages: lz4.SameFilledPages,
            MemoryUsedLz4Bytes: lz4.MemoryUsedBytes,
            MemoryUsedBytes: after.MemoryUsedBytes,
            MetadataBytes: after.MetadataBytes,
            Dictionaries: after.ZstdDictionaries,
            RecompressElapsedS: Math.Round(elapsed, 2),
            Samples: zstdTicks.Count,
            FaultService: BenchSupport.Name(after.FaultService),
            Lz4PageCapacity: Math.Round(lz4Codecs.Lz4Capacity, 3),
            Lz4hcPageCapacity: Math.Round(lz4Codecs.HcCapacity, 3),
            Lz4CompressUs: Math.Round(lz4Codecs.Lz4CompressUs, 2),
            Lz4hcCompressUs: Math.Round(lz4Codecs.HcCompressUs, 2),
            Lz4DecompressUs: Math.Round(lz4Codecs.Lz4DecodeUs, 2),
            Lz4hcDecompressUs: Math.Round(lz4Codecs.HcDecodeUs, 2));
        ResultPrinter.Print(result, json, "cram bench ratio");
        return mismatches == 0 ? ExitCode.Success : ExitCode.IntegrityFailure;
    }

    /// <summary>Timed 8-byte reads of random evicted pages whose copy is (or is not) zstd, one fault each.</summary>
    private static List<long> Sample(CramEngine engine, CramRegion region, long pages, int samples, Random rng, bool zstd)
    {
        var ticks = new List<long>(samples);
        long acc = 0;
        for (long tries = 0; ticks.Count < samples && tries < 50L * samples; tries++)
        {
            long page = rng.NextInt64(pages);
            ulong pte = PageTableEntry.Load(region.PageTableEntries + page);
            if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == SharedLayout.ZeroSlot)
            {
                continue;
            }
            NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(pte));
            if (slot->Backend != SlotBackend.Pool || ((NativeSlot.LoadFlags(slot) & SlotFlags.Zstd) != 0) != zstd)
            {
                continue;
            }
            long t = Stopwatch.GetTimestamp();
            acc += Volatile.Read(ref *(long*)(region.Pointer + page * P));
            ticks.Add(Stopwatch.GetTimestamp() - t);
        }
        GC.KeepAlive(acc);
        return ticks;
    }

    /// <summary>What a page compressed to <paramref name="compressed"/> bytes (0 or less: did not fit) costs the pool: its size class, or the whole page over the compression threshold (stored, or kept, whole).</summary>
    private static int PoolBytes(int compressed, int threshold)
    {
        int size = compressed <= 0 ? P : CompressedPool.ObjectSize(compressed);
        return size > threshold ? P : size;
    }

    private readonly record struct Lz4Codecs(double Lz4Capacity, double HcCapacity, double Lz4CompressUs, double HcCompressUs, double Lz4DecodeUs, double HcDecodeUs);

    /// <summary>LZ4 against LZ4HC-9 on one page in four: capacity per page by the pool's rules (as the zstd-3 bound), mean compress and decode times.</summary>
    private static Lz4Codecs CompareLz4Codecs(PageSource source, long pages)
    {
        const int HcLevel = 9;
        byte* page = (byte*)NativeMemory.AlignedAlloc(P, P);
        byte* copy = (byte*)NativeMemory.AlignedAlloc(2 * P, P);
        byte* back = (byte*)NativeMemory.AlignedAlloc(P, P);
        try
        {
            int threshold = new CramOptions().CompressionThresholdBytes;
            long logical = 0, lz4Stored = 0, hcStored = 0, lz4Ticks = 0, hcTicks = 0, lz4Decode = 0, hcDecode = 0, n = 0;
            for (long i = 0; i < pages; i += 4)
            {
                source.Write(new Span<byte>(page, P), i);
                logical += P;
                if (CramCore.Estimation.SameFilled.Check(page, out _))
                {
                    continue;
                }
                n++;
                for (int codec = 0; codec < 2; codec++)
                {
                    long t = Stopwatch.GetTimestamp();
                    int size = codec == 0 ? Interop.Lz4.CompressDefault(page, copy, P, 2 * P) : Interop.Lz4.CompressHC(page, copy, P, 2 * P, HcLevel);
                    long compressed = Stopwatch.GetTimestamp() - t;
                    t = Stopwatch.GetTimestamp();
                    Interop.Lz4.DecompressSafe(copy, back, size, P);
                    long decoded = Stopwatch.GetTimestamp() - t;
                    int stored = PoolBytes(size, threshold);
                    if (codec == 0)
                    {
                        (lz4Stored, lz4Ticks, lz4Decode) = (lz4Stored + stored, lz4Ticks + compressed, lz4Decode + decoded);
                    }
                    else
                    {
                        (hcStored, hcTicks, hcDecode) = (hcStored + stored, hcTicks + compressed, hcDecode + decoded);
                    }
                }
            }
            double us = 1e6 / Stopwatch.Frequency / Math.Max(1, n);
            return new Lz4Codecs(lz4Stored == 0 ? 0 : logical / (double)lz4Stored, hcStored == 0 ? 0 : logical / (double)hcStored,
                lz4Ticks * us, hcTicks * us, lz4Decode * us, hcDecode * us);
        }
        finally
        {
            NativeMemory.AlignedFree(page);
            NativeMemory.AlignedFree(copy);
            NativeMemory.AlignedFree(back);
        }
    }

    /// <summary>The bench's own bound: logical bytes over the sum of each page's zstd-3 size alone (16-byte classes; over 3 KiB whole; zero and same-filled free), and the mean decode time of those frames.</summary>
    private static (double Bound, double DecodeUs) Zstd3Bound(PageSource source, long pages)
    {
        using var codec = new ZstdCodec(level: 3);
        byte* page = (byte*)NativeMemory.AlignedAlloc(P, P);
        byte* frame = (byte*)NativeMemory.AlignedAlloc(2 * P, P);
        byte* back = (byte*)NativeMemory.AlignedAlloc(P, P);
        try
        {
            long stored = 0, decodeTicks = 0, decoded = 0;
            int threshold = new CramOptions().CompressionThresholdBytes;
            for (long i = 0; i < pages; i++)
            {
                source.Write(new Span<byte>(page, P), i);
                if (CramCore.Estimation.SameFilled.Check(page, out _))
                {
                    continue; // same-filled: a word in the slot
                }
                int n = codec.Compress(page, 0, frame, 2 * P);
                stored += PoolBytes(n, threshold);
                if (n > 0 && i % 16 == 0)
                {
                    long t = Stopwatch.GetTimestamp();
                    codec.Decompress(frame, n, 0, back);
                    decodeTicks += Stopwatch.GetTimestamp() - t;
                    decoded++;
                }
            }
            return (stored == 0 ? 0 : pages * (double)P / stored, decoded == 0 ? 0 : decodeTicks * 1e6 / Stopwatch.Frequency / decoded);
        }
        finally
        {
            NativeMemory.AlignedFree(page);
            NativeMemory.AlignedFree(frame);
            NativeMemory.AlignedFree(back);
        }
    }
}
