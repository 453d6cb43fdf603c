namespace CramCore.Reclaim;

/// <summary>
/// The background thread that holds <see cref="CramOptions.ResidentLimitBytes"/>. The fault service
/// signals it when resident memory passes the limit (the soft limit); it then evicts down to the
/// low watermark. Faults above the hard limit wait, bounded, for it to catch up — unless it reports
/// it is stalled (nothing evictable), so the service stops delaying them. Between passes it runs
/// <see cref="Reclaimer.Maintain"/> (frees, writeback above the pool's high watermark, compaction,
/// and every <see cref="SweepInterval"/> the zombie sweep), then raises the engine's pending events
/// outside every lock. It runs when there is a resident limit or a backing file.
/// </summary>
internal sealed unsafe class ReclaimWorker : IDisposable
{
    private readonly nint _engine;
    private readonly NativeShared* _shared;
    private readonly Reclaimer _reclaimer;
    private readonly Action _afterTick;
    private long _lowWaterPages;
    private bool _run;
    private long _nextSweep;
    private Thread? _thread;
    private volatile bool _stopping;

    /// <summary>A worker for <paramref name="limitPages"/> (0: none) and, with <paramref name="backingFile"/>, writeback; <paramref name="afterTick"/> runs after every tick, outside the maintenance lock.</summary>
    public ReclaimWorker(nint engine, NativeShared* shared, Reclaimer reclaimer, long limitPages, bool backingFile, Action afterTick)
    {
        _engine = engine;
        _shared = shared;
        _reclaimer = reclaimer;
        _afterTick = afterTick;
        _lowWaterPages = limitPages > 0 ? LowWaterPages(limitPages) : long.MaxValue;
        _run = limitPages > 0 || backingFile;
    }

    /// <summary>How often the worker looks for zombie slots.</summary>
    internal static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(10);

    /// <summary>Background reclaim brings resident memory down to this after the limit is crossed.</summary>
    internal static long LowWaterPages(long limitPages) =>
        Math.Max(1, limitPages - Math.Max(32, limitPages / 64));

    /// <summary>Faults wait (bounded) for reclaim above this.</summary>
    internal static long HardLimitPages(long limitPages) => limitPages + Math.Max(32, limitPages / 40);

    /// <summary>Holds <paramref name="limitPages"/> from now on (0: no limit), starting the thread if it was not needed before.</summary>
    public void SetLimit(long limitPages)
    {
        Volatile.Write(ref _lowWaterPages, limitPages > 0 ? LowWaterPages(limitPages) : long.MaxValue);
        if (limitPages > 0 && !_run)
        {
            _run = true;
            Start();
        }
    }

    /// <summary>Starts the thread when there is a limit to hold (once).</summary>
    public void Start()
    {
        if (!_run || _thread is not null || _stopping)
        {
            return;
        }
        _nextSweep = Environment.TickCount64 + (long)SweepInterval.TotalMilliseconds;
        _thread = new Thread(Loop) { IsBackground = true, Name = "cram-reclaim" };
        _thread.Start();
    }

    private void Loop()
    {
        while (!_stopping)
        {
            int signalled;
            Interop.CramNative.WaitReclaimSignal(_engine, 20, &signalled);
            if (_stopping)
            {
                break;
            }
            long resident;
            long lowWater;
            while (!_stopping && (resident = (long)Volatile.Read(ref _shared->Stats.ResidentPages)) > (lowWater = Volatile.Read(ref _lowWaterPages)))
            {
                Volatile.Write(ref _shared->ReclaimRunning, 1u); // the fault service does not spin meanwhile
                bool stalled;
                try
                {
                    stalled = _reclaimer.Reclaim(resident - lowWater, null) == 0;
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
                bool sweep = Environment.TickCount64 >= _nextSweep;
                if (sweep)
                {
                    _nextSweep = Environment.TickCount64 + (long)SweepInterval.TotalMilliseconds;
                }
                try
                {
                    _reclaimer.Maintain(sweep);
                }
                catch (Exception e) when (e is IOException or InvalidOperationException or OutOfMemoryException)
                {
                    // Counted where it happened; the next tick tries again.
                }
                _afterTick();
            }
        }
    }

    /// <summary>Stops and joins the thread.</summary>
    public void Stop()
    {
        _stopping = true;
        if (_thread is not null)
        {
            Interop.CramNative.SignalReclaim(_engine);
            _thread.Join();
            _thread = null;
        }
    }

    public void Dispose() => Stop();
}
