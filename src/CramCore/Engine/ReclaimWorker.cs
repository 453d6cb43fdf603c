using CramCore.Native;
using CramCore.Reclaim;

namespace CramCore.Engine;

/// <summary>
/// The background thread that holds the resident limit <see cref="MemoryBudget"/> decides
/// (<see cref="CramOptions.ResidentLimitBytes"/>, lowered as needed to hold
/// <see cref="CramOptions.MemoryLimitBytes"/>). The fault service signals it when resident memory
/// passes the limit (the soft limit); it then evicts down to the low watermark, asking the budget
/// for the limit again before every pass (a pass grows the pool, which lowers it). Faults above the
/// hard limit wait, bounded, for it to catch up — unless it reports it is stalled (nothing
/// evictable), so the service stops delaying them. After the passes the budget checks whether the
/// memory limit holds. Between passes it runs <see cref="Reclaimer.Maintain"/> (frees, writeback
/// above the pool's high watermark, compaction, and every <see cref="SweepInterval"/> the zombie
/// sweep), then raises the engine's pending events outside every lock. It runs when there is a
/// limit, a backing file or a CRAM node.
/// <para>
/// An idle engine costs no CPU: after <see cref="QuietTicksBeforeSleep"/> ticks in which the fault
/// service resolved nothing, nobody signalled and no event needs a later tick (throttling's quiet
/// second), the worker sleeps in CramNative_WaitReclaimIdle until the next batch of faults or a
/// signal (a limit set, writeback making room, dispose). With a CRAM node it wakes every
/// <see cref="NodeIdleTickMs"/> to look at the device and the control plane's lease.
/// </para>
/// </summary>
internal sealed unsafe class ReclaimWorker : IDisposable
{
    private readonly INativeEngine _engine;
    private readonly TimeProvider _time; // the sweep interval
    private readonly NativeShared* _shared;
    private readonly Reclaimer _reclaimer;
    private readonly MemoryBudget _budget;
    private readonly TickListener _afterTick;
    private readonly int _idleTimeoutMs;
    private long _idleSleeps;
    private volatile bool _sleeping;
    private bool _run;
    private long _nextSweep;
    private Thread? _thread;
    private volatile bool _stopping;

    /// <summary>A worker for <paramref name="budget"/>'s limits and, with <paramref name="upkeep"/> (a backing file or a CRAM node), their upkeep; <paramref name="afterTick"/> runs after every tick, outside the maintenance lock. With <paramref name="node"/> its idle sleeps last <see cref="NodeIdleTickMs"/>.</summary>
    public ReclaimWorker(INativeEngine engine, NativeShared* shared, Reclaimer reclaimer, MemoryBudget budget, bool upkeep, bool node, TickListener afterTick, TimeProvider time)
    {
        _idleTimeoutMs = node ? NodeIdleTickMs : -1;
        _engine = engine;
        _time = time;
        _shared = shared;
        _reclaimer = reclaimer;
        _budget = budget;
        _afterTick = afterTick;
        _run = budget.Limited || upkeep;
    }

    /// <summary>What runs after every tick, outside the maintenance lock: the engine raises its events and records its metrics. True if it needs another tick soon even if nothing happens (an event due on the clock).</summary>
    public delegate bool TickListener();

    /// <summary>Milliseconds between ticks while the engine is busy.</summary>
    internal const int TickMs = 20;

    /// <summary>Ticks with nothing to do before the worker sleeps until the next fault or signal.</summary>
    internal const int QuietTicksBeforeSleep = 5;

    /// <summary>With a CRAM node, the longest idle sleep (the node's device scan interval).</summary>
    internal const int NodeIdleTickMs = 100;

    /// <summary>Times the worker went to sleep idle (cumulative).</summary>
    public long IdleSleeps => Interlocked.Read(ref _idleSleeps);

    /// <summary>Whether the worker is asleep idle now.</summary>
    public bool Sleeping => _sleeping;

    /// <summary>How often the worker looks for zombie slots.</summary>
    internal static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(10);

    /// <summary>The budget's limits changed: start the thread if it was not needed before, and let it look now.</summary>
    public void LimitChanged()
    {
        if (_budget.Limited && !_run)
        {
            _run = true;
            Start();
        }
        _engine.SignalReclaim();
    }

    /// <summary>Starts the thread when there is a limit to hold (once).</summary>
    public void Start()
    {
        if (!_run || _thread is not null || _stopping)
        {
            return;
        }
        _nextSweep = _time.GetTimestamp() + (long)(SweepInterval.TotalSeconds * _time.TimestampFrequency);
        _thread = new Thread(Loop) { IsBackground = true, Name = "cram-reclaim" };
        _thread.Start();
    }

    private void Loop()
    {
        ulong seen = _engine.ReclaimActivity;
        int quiet = 0;
        while (!_stopping)
        {
            bool signalled;
            if (quiet >= QuietTicksBeforeSleep)
            {
                Interlocked.Increment(ref _idleSleeps);
                _sleeping = true;
                _engine.WaitReclaimIdle(seen, _idleTimeoutMs, out signalled);
                _sleeping = false;
                quiet = 0;
            }
            else
            {
                _engine.WaitReclaimSignal(TickMs, out signalled);
            }
            if (_stopping)
            {
                break;
            }
            long resident;
            long limit;
            bool stalled = false;
            while (!_stopping && (limit = _budget.Update()) > 0 &&
                   (resident = (long)Volatile.Read(ref _shared->Stats.ResidentPages)) > ReclaimWatermarks.LowWaterPages(limit))
            {
                if (_budget.Exceeded && _reclaimer.PendingPages < EvictionPipeline.BatchPages)
                {
                    // The memory limit cannot be held and all reclaim could take are the few pages
                    // just faulted in, most of them about to be written: evicting them would only make
                    // their writers fault (and wait) again. Look again once a batch has come in.
                    stalled = true;
                    break;
                }
                Volatile.Write(ref _shared->ReclaimRunning, 1u); // the fault service does not spin meanwhile
                try
                {
                    long target = resident - ReclaimWatermarks.LowWaterPages(limit);
                    if (_budget.MemoryLimitBytes > 0)
                    {
                        // Each pass grows the pool while writers refill resident memory up to the hard
                        // limit: ask the budget again every few batches, so the limit follows the pool.
                        target = Math.Min(target, ReclaimWatermarks.MemoryLimitPassPages);
                    }
                    // Nothing evicted is a stall unless the pool is full and writeback is making room:
                    // then faults over the hard limit should wait (bounded) rather than run past it.
                    stalled = _reclaimer.Reclaim(target, null) == 0 && !_reclaimer.WaitingForRoom;
                }
                catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or OutOfMemoryException)
                {
                    // The pass rolled back and counted it (ReclaimCounters.Errors); try again on the next tick.
                    stalled = true;
                }
                // Tell the service whether faults over the hard limit are worth delaying.
                Volatile.Write(ref _shared->ReclaimStalled, stalled ? 1u : 0u);
                if (stalled)
                {
                    break; // nothing evictable right now; wait for the next signal or tick
                }
            }
            Volatile.Write(ref _shared->ReclaimRunning, 0u);
            if (!_stopping)
            {
                bool sweep = _time.GetTimestamp() >= _nextSweep;
                if (sweep)
                {
                    _nextSweep = _time.GetTimestamp() + (long)(SweepInterval.TotalSeconds * _time.TimestampFrequency);
                }
                try
                {
                    _reclaimer.Maintain(sweep);
                }
                catch (Exception e) when (e is IOException or InvalidOperationException or OutOfMemoryException)
                {
                    // Counted where it happened; the next tick tries again.
                }
                _budget.Update(); // writeback and compaction changed the pool
                _budget.Check(stalled);
                bool wantsTick = _afterTick();
                ulong activity = _engine.ReclaimActivity;
                if (signalled || wantsTick || activity != seen)
                {
                    quiet = 0;
                    seen = activity;
                }
                else
                {
                    quiet++;
                }
            }
        }
    }

    /// <summary>Stops and joins the thread (from the thread itself: stops it without a join).</summary>
    public void Stop()
    {
        _stopping = true;
        if (_thread is not null && _thread != Thread.CurrentThread)
        {
            _engine.SignalReclaim();
            _thread.Join();
        }
        // On the worker itself (a TierEvent handler disposing the engine), the loop ends when the
        // handler returns: it touches nothing after its tick listener once stopping is set.
        _thread = null;
    }

    /// <summary>Whether the caller is the worker thread.</summary>
    public bool OnWorkerThread => _thread == Thread.CurrentThread;

    public void Dispose() => Stop();
}
