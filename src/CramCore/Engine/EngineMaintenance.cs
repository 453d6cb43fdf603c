using CramCore.Internals;
using CramCore.Storage;

namespace CramCore.Engine;

/// <summary>
/// Maintenance run on demand rather than by the reclaim worker's clock: pool compaction
/// (<see cref="CramEngine.CompactPool"/>), and for tests and benchmarks backing-file compaction,
/// the zombie sweep, forced writeback and a CRAM node scan. Each runs under the maintenance lock
/// (lock 3) after the reaper frees what faults released — writeback's take its I/O lock (2a) and
/// lock 3 only for their steps — then the engine raises what it posted.
/// </summary>
internal sealed class EngineMaintenance(EngineParts parts, InFlightGate calls, Action raiseEvents)
{
    /// <summary>Runs <paramref name="action"/> under the maintenance lock, after freeing what faults released, then raises what it posted.</summary>
    private T Run<T>(Func<T> action)
    {
        T result = calls.Run(() => // a racing Dispose waits for it
        {
            T value = default!;
            parts.Reclaimer.Exclusive(() =>
            {
                parts.Reaper.Drain();
                value = action();
            });
            return value;
        }, typeof(CramEngine));
        raiseEvents(); // after the call: a handler may dispose the engine
        return result;
    }

    /// <summary>Compacts the compressed pool now; returns the bytes given back.</summary>
    public long CompactPool() => Run(parts.Pool.Compact);

    /// <summary>Compacts the backing file's sparse segments now, whatever its dead share. Returns segments emptied.</summary>
    public int CompactBackingFile() => (int)RunWriteback(w => w.CompactSegments(force: true));

    /// <summary>Runs the reaper's zombie sweep now (the worker runs it every ReclaimWorker.SweepInterval). Returns zombies freed.</summary>
    public int SweepZombies() => Run(parts.Reaper.Sweep);

    /// <summary>Writes back at least <paramref name="bytes"/> stored bytes now, whatever the watermarks. Returns pages moved.</summary>
    public long WriteBack(long bytes) => RunWriteback(w => w.Run(bytes));

    /// <summary>Runs a writeback operation on the caller's thread after freeing what faults released: it takes writeback's I/O lock (2a) and then lock 3 for its steps, so not under lock 3.</summary>
    private long RunWriteback(Func<Writeback, long> action)
    {
        if (parts.Writeback is not { } writeback)
        {
            return Run(() => 0L);
        }
        Run(() => parts.Reaper.Drain()); // dead extents become dead segments, which a compaction need not move
        long result = calls.Run(() =>
        {
            long value = action(writeback);
            writeback.PunchDeadSegments();
            return value;
        }, typeof(CramEngine));
        raiseEvents();
        return result;
    }

    /// <summary>The CRAM node's upkeep now, with a device scan (budget lease, usage, pressure, moving out, TRIMs); returns the device's physical usage.</summary>
    public long TickCramNode() => Run(() =>
    {
        parts.Node?.Tick(parts.Regions, parts.Slots, forceScan: true);
        return parts.Node?.PhysicalUsageBytes ?? 0;
    });
}
