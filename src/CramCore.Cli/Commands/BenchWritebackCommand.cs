using System.Diagnostics;
using System.Runtime.InteropServices;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench writeback --json` prints.</summary>
internal sealed record WritebackBenchResult(
    string Source, int Pages, string BackingFile, bool DirectIo,
    [property: Figure(FigureUnit.Pages, Label = "pages written back")] long WritebackPages, [property: Figure(FigureUnit.MiBPerSecond, Label = "writeback rate")] double WritebackMibS, long CompressedBytesMoved, long FileBytesWritten,
    [property: Figure(FigureUnit.Times, Label = "file bytes per compressed byte")] double FileBytesPerCompressedByte, long DecompressedWritebackBytes, double WrittenOverDecompressed,
    double SwapinFromFileP50Us, double SwapinFromFileP99Us, int FileSamples,
    double SwapinP50Us, double SwapinP99Us, int PoolSamples,
    double MetadataBytesPerSlot, double ChecksumNsPerPage, [property: Figure(FigureUnit.Percent)] double ChecksumShareOfSwapin,
    long ChecksumFailures, long Mismatches,
    [property: Figure(FigureUnit.Bytes, Label = "file bytes per page, LZ4 copies as they were")] double FileBytesPerPage,
    [property: Figure(FigureUnit.Pages, Label = "background round: pages written back")] long BackgroundWritebackPages,
    [property: Figure(FigureUnit.MiBPerSecond, Label = "background round: writeback rate, re-encoding at a whole CPU")] double BackgroundWritebackMibS,
    [property: Figure(FigureUnit.Pages, Label = "background round: pages re-encoded with zstd")] long BackgroundRecompressedPages,
    [property: Figure(FigureUnit.Bytes, Label = "background round: file bytes per page")] double BackgroundFileBytesPerPage,
    [property: Figure(FigureUnit.Microseconds, Label = "swap-in of a zstd copy from the file, p50")] double SwapinFromFileZstdP50Us, int FileZstdSamples);

/// <summary>
/// `cram bench writeback`: the second tier on real pages, in one run. The pages are written and
/// reclaimed into the pool; the older half of the pool is then written back to the backing file,
/// still compressed (timed: writeback_mib_s counts logical bytes, 4 KiB per page); then random
/// evicted pages are read back, each timed and classed by where its copy was (file or pool) when
/// it was read; then the rest of the pool is written back by writeback's own background round, which
/// re-encodes the LZ4 copies with zstd (the recompression CPU share a whole CPU here; the recompressor
/// itself kept idle, so every zstd copy is writeback's), and random pages with zstd copies in the
/// file are read back, timed; every page is verified at the end. decompressed_writeback_bytes is what
/// writing the same pages decompressed would have written (4 KiB each).
/// </summary>
internal static unsafe class BenchWritebackCommand
{
    private const int P = PageSource.PageSize;

    public static int Run(int pages, string? corpus, string? directory, bool json)
    {
        if (pages is < 1024 or > 4_000_000)
        {
            throw new CliException($"--pages: {pages} must be between 1024 and 4000000.");
        }
        directory ??= Path.GetTempPath();
        if (!Directory.Exists(directory))
        {
            throw new CliException($"--dir: '{directory}' is not a directory; give one where the backing file can be created.");
        }
        PageSource source = corpus is null ? PageSource.Generated() : PageSource.FromCorpus(corpus);
        byte[] data = BenchSupport.Copy(source, pages);
        string file = Path.Combine(directory, $"cram-bench-writeback-{Environment.ProcessId}.swap");
        using var engine = CramEngine.Create(new CramOptions
        {
            BackingFile = file,
            CompressedPoolLimitBytes = Math.Max(64L << 20, (long)pages * P), // never reached: writeback is forced below
            FaultAroundPages = 16,
            RecompressionCpuShare = 1, // the background round's re-encoding, unthrottled
        });
        engine.Parts.Recompressor!.Suspended = true; // the pool's copies stay LZ4: the zstd copies in the file are writeback's
        using var region = engine.CreateRegion((long)pages * P);
        BenchSupport.Progress($"writing and reclaiming {pages} pages ({(long)pages * P >> 20} MiB) of {source.Description}");
        data.AsSpan().CopyTo(region.AsSpan<byte>(0, data.Length));
        region.Reclaim(region.Length);
        CramStats stored = engine.GetStats();
        if (stored.StoredBytes == 0)
        {
            throw new CliException("--corpus: no page of this corpus was stored compressed; nothing to write back.");
        }

        // Writeback of the older half of the pool (store order), timed.
        BenchSupport.Progress($"writing back half of {stored.StoredBytes >> 20} MiB stored to {file}");
        long t0 = Stopwatch.GetTimestamp();
        long moved = engine.Maintenance.WriteBack(stored.StoredBytes / 2);
        long elapsed = Stopwatch.GetTimestamp() - t0;
        CramStats after = engine.GetStats();
        long fileBytesWritten = engine.Parts.File!.BytesWritten; // the first half's (the background round writes more below)
        if (moved == 0)
        {
            throw new CliException($"writeback moved nothing ({(after.WritebackPaused ? "writes to the file failed" : "no entry qualified")}).");
        }

        // Random swap-ins of evicted pages, classed by where the copy was.
        BenchSupport.Progress("timing swap-ins from the file and from the pool");
        var fromFile = new List<long>();
        var fromPool = new List<long>();
        long sum = 0;
        foreach (int page in BenchSupport.Shuffled(pages, 11).Take(Math.Min(pages / 2, 20_000))) // half at most: the background round below needs evicted pages
        {
            ulong pte = PageTableEntry.Load(region.PageTableEntries + page);
            if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == SharedLayout.ZeroSlot)
            {
                continue;
            }
            SlotBackend backend = engine.Parts.Slots.Get(PageTableEntry.Slot(pte))->Backend;
            long* word = (long*)(region.Pointer + (long)page * P + 64);
            long s0 = Stopwatch.GetTimestamp();
            sum += *word;
            long ticks = Stopwatch.GetTimestamp() - s0;
            (backend == SlotBackend.File ? fromFile : backend == SlotBackend.Pool ? fromPool : null)?.Add(ticks);
        }
        GC.KeepAlive(sum);

        // The rest of the pool by writeback's background round: LZ4 copies re-encoded with zstd.
        BenchSupport.Progress("writing back the rest of the pool in a background round (re-encoding with zstd)");
        long t1 = Stopwatch.GetTimestamp();
        long backgroundPages = engine.Parts.Writeback!.RunInBackground(long.MaxValue);
        long backgroundElapsed = Stopwatch.GetTimestamp() - t1;
        CramStats background = engine.GetStats();
        var fromFileZstd = new List<long>();
        foreach (int page in BenchSupport.Shuffled(pages, 13).Take(Math.Min(pages, 20_000)))
        {
            ulong pte = PageTableEntry.Load(region.PageTableEntries + page);
            if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == SharedLayout.ZeroSlot)
            {
                continue;
            }
            NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(pte));
            if (slot->Backend != SlotBackend.File || (NativeSlot.LoadFlags(slot) & SlotFlags.Zstd) == 0)
            {
                continue;
            }
            long* word = (long*)(region.Pointer + (long)page * P + 64);
            long s0 = Stopwatch.GetTimestamp();
            sum += *word;
            fromFileZstd.Add(Stopwatch.GetTimestamp() - s0);
        }
        GC.KeepAlive(sum);

        // The checksum the fault service computes per page, over the same stored bytes.
        double checksumNs = ChecksumNsPerPage(data, pages);

        long mismatches = 0;
        for (int i = 0; i < pages; i++)
        {
            if (!region.AsSpan<byte>((long)i * P, P).SequenceEqual(data.AsSpan(i * P, P)))
            {
                mismatches++;
            }
        }
        CramStats end = engine.GetStats();
        double swapinNs = BenchSupport.P50Us(fromPool) * 1000;
        var result = new WritebackBenchResult(
            Source: source.Description,
            Pages: pages,
            BackingFile: file,
            DirectIo: engine.Parts.File!.Direct,
            WritebackPages: after.WritebackPages,
            WritebackMibS: Math.Round(BenchSupport.MBps(after.WritebackPages, elapsed), 1),
            CompressedBytesMoved: after.WritebackBytes,
            FileBytesWritten: fileBytesWritten,
            FileBytesPerCompressedByte: Math.Round((double)fileBytesWritten / after.WritebackBytes, 4),
            DecompressedWritebackBytes: after.WritebackPages * P,
            WrittenOverDecompressed: Math.Round((double)fileBytesWritten / (after.WritebackPages * P), 4),
            SwapinFromFileP50Us: Math.Round(BenchSupport.P50Us(fromFile), 1),
            SwapinFromFileP99Us: Math.Round(BenchSupport.P99Us(fromFile), 1),
            FileSamples: fromFile.Count,
            SwapinP50Us: Math.Round(BenchSupport.P50Us(fromPool), 1),
            SwapinP99Us: Math.Round(BenchSupport.P99Us(fromPool), 1),
            PoolSamples: fromPool.Count,
            MetadataBytesPerSlot: Math.Round(engine.Parts.Slots.MetadataBytesPerSlot, 2),
            ChecksumNsPerPage: Math.Round(checksumNs, 1),
            ChecksumShareOfSwapin: Math.Round(checksumNs / swapinNs, 4),
            ChecksumFailures: end.ChecksumFailures,
            Mismatches: mismatches,
            FileBytesPerPage: Math.Round((double)after.WritebackBytes / after.WritebackPages, 1),
            BackgroundWritebackPages: backgroundPages,
            BackgroundWritebackMibS: Math.Round(BenchSupport.MBps(backgroundPages, backgroundElapsed), 1),
            BackgroundRecompressedPages: background.WritebackRecompressedPages,
            BackgroundFileBytesPerPage: backgroundPages == 0 ? 0 : Math.Round((double)(background.WritebackBytes - after.WritebackBytes) / backgroundPages, 1),
            SwapinFromFileZstdP50Us: Math.Round(BenchSupport.P50Us(fromFileZstd), 1),
            FileZstdSamples: fromFileZstd.Count);
        return ResultPrinter.Print(result, json, "cram bench writeback");
    }

    /// <summary>CRC-32C per page over each page's LZ4 copy (what the service checks), best of 3.</summary>
    private static double ChecksumNsPerPage(byte[] data, int pages)
    {
        int n = Math.Min(pages, 16384);
        int threshold = new CramOptions().CompressionThresholdBytes;
        var copies = (byte*)NativeMemory.Alloc((nuint)n * P);
        var lengths = new int[n];
        try
        {
            fixed (byte* src = data)
            {
                for (int i = 0; i < n; i++)
                {
                    lengths[i] = Interop.Lz4.CompressDefault(src + (long)i * P, copies + (long)i * P, P, threshold);
                    if (lengths[i] <= 0)
                    {
                        Buffer.MemoryCopy(src + (long)i * P, copies + (long)i * P, P, P); // stored raw
                        lengths[i] = P;
                    }
                }
            }
            double best = double.MaxValue;
            uint sink = 0;
            for (int round = 0; round < 3; round++)
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < n; i++)
                {
                    sink ^= Checksum.Crc32C(copies + (long)i * P, lengths[i]);
                }
                best = Math.Min(best, (Stopwatch.GetTimestamp() - t0) * 1e9 / Stopwatch.Frequency / n);
            }
            GC.KeepAlive(sink);
            return best;
        }
        finally
        {
            NativeMemory.Free(copies);
        }
    }
}
