using System.Diagnostics;

namespace CramCore.Cli;

/// <summary>
/// `cram bench pool`: stores every page of a corpus (LZ4-compressed, as reclaim would) in the
/// compressed pool, then frees a random half and compacts. Reports how densely the pool packs,
/// its bookkeeping per object, and how much of the freed space compaction gives back.
/// </summary>
internal static unsafe class PoolBench
{
    public static Dictionary<string, object> Run(PageSource source, int pages)
    {
        if (pages is < 256 or > 4_000_000)
        {
            throw new CliException($"--pages: {pages} must be between 256 and 4000000.");
        }
        int threshold = new CramOptions().CompressionThreshold;
        using var pool = new CompressedPool(64L << 20, 0, lockMemory: false, engine: 0);
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
        double compactMs = Measure.TicksToMicroseconds(Stopwatch.GetTimestamp() - t1) / 1000;
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
        return new Dictionary<string, object>
        {
            ["source"] = source.Description,
            ["pages"] = pages,
            ["objects"] = handles.Count,
            ["same_filled_pages"] = sameFilled,
            ["incompressible_pages"] = incompressible,
            ["object_bytes"] = filled.ObjectBytes,
            ["pool_bytes"] = filled.UsedBytes,
            ["density"] = Math.Round(filled.Density, 4),
            ["metadata_bytes_per_object"] = Math.Round(metadata, 1),
            ["store_ns"] = Math.Round(Measure.TicksToMicroseconds(storeTicks) * 1000 / Math.Max(1, handles.Count), 1),
            ["freed_objects"] = handles.Count / 2,
            ["free_bytes_before_compaction"] = usedBefore - liveBytes,
            ["compaction_returned_bytes"] = returned,
            ["compaction_recovered"] = Math.Round((double)returned / Math.Max(1, usedBefore - liveBytes), 4),
            ["density_after_compaction"] = Math.Round(compacted.Density, 4),
            ["compaction_ms"] = Math.Round(compactMs, 2),
            ["objects_moved"] = compacted.MovedObjects,
            ["classes_in_use"] = filled.Classes.Length,
            ["verified"] = true,
        };
    }
}
