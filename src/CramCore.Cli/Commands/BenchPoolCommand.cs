using System.Diagnostics;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench pool --json` prints.</summary>
internal sealed record PoolBenchResult(
    string Source, int Pages, int Objects, long SameFilledPages, long IncompressiblePages, long ObjectBytes, long PoolBytes,
    [property: Figure(FigureUnit.Percent)] double Density, [property: Figure(FigureUnit.Bytes, Label = "metadata per object")] double MetadataBytesPerObject, double StoreNs, int FreedObjects, long FreeBytesBeforeCompaction,
    long CompactionReturnedBytes, [property: Figure(FigureUnit.Percent)] double CompactionRecovered, [property: Figure(FigureUnit.Percent)] double DensityAfterCompaction, double CompactionMs,
    long ObjectsMoved, int ClassesInUse, bool Verified);

/// <summary>
/// `cram bench pool`: stores every page of a corpus (LZ4-compressed, as reclaim would) in the
/// compressed pool, then frees a random half and compacts. Reports how densely the pool packs,
/// its bookkeeping per object, and how much of the freed space compaction gives back.
/// </summary>
internal static unsafe class BenchPoolCommand
{
    public static int Run(PageSource source, int pages, bool json) => ResultPrinter.Print(Measure(source, pages), json, "cram bench pool");

    public static PoolBenchResult Measure(PageSource source, int pages)
    {
        if (pages is < 256 or > 4_000_000)
        {
            throw new CliException($"--pages: {pages} must be between 256 and 4000000.");
        }
        BenchSupport.Progress($"storing {pages} pages of {source.Description}, then freeing half and compacting");
        int threshold = new CramOptions().CompressionThresholdBytes;
        using var pool = new CompressedPool(64L << 20, 0, lockMemory: false, NativeEngine.Detached);
        var page = new byte[PageSource.PageSize];
        var compressed = new byte[PageSource.PageSize];
        var handles = new List<uint>();
        var objects = new List<byte[]>();
        long sameFilled = 0, incompressible = 0;
        long storeTicks = 0;
        fixed (byte* p = page, c = compressed)
        {
            for (int i = 0; i < pages; i++)
            {
                source.Write(page, i);
                if (SameFilled.Check(p, out _))
                {
                    sameFilled++;
                    continue;
                }
                int n = Interop.Lz4.CompressDefault(p, c, PageSource.PageSize, threshold);
                if (n <= 0)
                {
                    incompressible++;
                    continue;
                }
                long t0 = Stopwatch.GetTimestamp();
                uint h = pool.Store(c, n);
                storeTicks += Stopwatch.GetTimestamp() - t0;
                handles.Add(h);
                objects.Add(compressed.AsSpan(0, n).ToArray());
            }
        }
        PoolStats filled = pool.GetStats();
        double metadata = pool.MetadataBytesPerObject();

        // Free a random half, then compact.
        var rng = new Random(1);
        var order = Enumerable.Range(0, handles.Count).ToArray();
        rng.Shuffle(order);
        var freed = new bool[handles.Count];
        foreach (int i in order.Take(handles.Count / 2))
        {
            pool.Free(handles[i]);
            freed[i] = true;
        }
        long usedBefore = pool.UsedBytes, liveBytes = pool.ObjectBytes;
        long t1 = Stopwatch.GetTimestamp();
        long returned = pool.Compact();
        double compactMs = Cli.Measure.TicksToMicroseconds(Stopwatch.GetTimestamp() - t1) / 1000;
        PoolStats compacted = pool.GetStats();

        // Every object left must read back bit for bit.
        var buffer = new byte[PageSource.PageSize];
        long corrupt = 0;
        for (int i = 0; i < handles.Count; i++)
        {
            if (!freed[i] && (pool.Load(handles[i], buffer) != objects[i].Length || !buffer.AsSpan(0, objects[i].Length).SequenceEqual(objects[i])))
            {
                corrupt++;
            }
        }
        if (corrupt > 0)
        {
            throw new InvalidOperationException($"{corrupt} pool objects differ after compaction.");
        }
        return new PoolBenchResult(
            Source: source.Description,
            Pages: pages,
            Objects: handles.Count,
            SameFilledPages: sameFilled,
            IncompressiblePages: incompressible,
            ObjectBytes: filled.ObjectBytes,
            PoolBytes: filled.UsedBytes,
            Density: Math.Round(filled.Density, 4),
            MetadataBytesPerObject: Math.Round(metadata, 1),
            StoreNs: Math.Round(Cli.Measure.TicksToMicroseconds(storeTicks) * 1000 / Math.Max(1, handles.Count), 1),
            FreedObjects: handles.Count / 2,
            FreeBytesBeforeCompaction: usedBefore - liveBytes,
            CompactionReturnedBytes: returned,
            CompactionRecovered: Math.Round((double)returned / Math.Max(1, usedBefore - liveBytes), 4),
            DensityAfterCompaction: Math.Round(compacted.Density, 4),
            CompactionMs: Math.Round(compactMs, 2),
            ObjectsMoved: compacted.MovedObjects,
            ClassesInUse: filled.Classes.Length,
            Verified: true);
    }
}
