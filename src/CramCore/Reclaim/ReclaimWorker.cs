namespace CramCore.Reclaim;

/// <summary>
/// The background thread that holds <see cref="CramOptions.ResidentLimitBytes"/>. The fault service
/// signals it when resident memory passes the limit (the soft limit); it then evicts down to the
/// low watermark. Faults above the hard limit wait, bounded, for it to catch up — unless it reports
/// it is stalled (nothing evictable), so the service stops delaying them. Between passes it drains
/// the fault-in log and compacts the pool when a quarter of it is slack.
/// </summary>
internal sealed unsafe class ReclaimWorker : IDisposable
{
    private readonly nint _engine;
    private readonly NativeShared* _shared;
    private readonly Reclaimer _reclaimer;
    private readonly SlotTable _slots;
    private readonly CompressedPool _pool;
    private readonly long _lowWaterPages;
    private Thread? _thread;
    private volatile bool _stopping;

    public ReclaimWorker(nint engine, NativeShared* shared, Reclaimer reclaimer, SlotTable slots, CompressedPool pool, long limitPages)
    {
        _engine = engine;
        _shared = shared;
        _reclaimer = reclaimer;
        _slots = slots;
        _pool = pool;
        _lowWaterPages = limitPages > 0 ? LowWaterPages(limitPages) : 0;
    }

    /// <summary>Background reclaim brings resident memory down to this after the limit is crossed.</summary>
    internal static long LowWaterPages(long limitPages) =>
        Math.Max(1, limitPages - Math.Max(32, limitPages / 64));

    /// <summary>Faults wait (bounded) for reclaim above this.</summary>
    internal static long HardLimitPages(long limitPages) => limitPages + Math.Max(32, limitPages / 40);

    /// <summary>Starts the thread when there is a limit to hold.</summary>
    public void Start()
    {
        if (_lowWaterPages == 0)
        {
            return;
        }
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
            _slots.DrainStale();
            long resident;
            while (!_stopping && (resident = (long)Volatile.Read(ref _shared->Stats.ResidentPages)) > _lowWaterPages)
            {
                bool stalled;
                try
                {
                    stalled = _reclaimer.Reclaim(resident - _lowWaterPages, null) == 0;
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
            if (!_stopping)
            {
                _reclaimer.PullFaultLog();
                _pool.CompactIfFragmented();
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
