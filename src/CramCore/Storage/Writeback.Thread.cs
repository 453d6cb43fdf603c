namespace CramCore.Storage;

/// <summary>
/// Writeback's own thread ("cram-writeback"): it runs when asked (<see cref="Request"/>: the pool
/// passed its high watermark, reclaim found the pool full, segments died, a pause ended) and
/// otherwise sleeps. Each round punches dead segments, writes back down to the low watermark,
/// compacts sparse segments and trims the queue, then wakes the reclaim worker (room was made,
/// events were posted). Without the thread (an engine on the in-memory fake, before
/// <see cref="Start"/>) the caller of <see cref="MakeRoom"/> or <see cref="Upkeep"/> does the work itself.
/// </summary>
internal sealed unsafe partial class Writeback
{
    /// <summary>How long reclaim waits, with the pool full, for writeback to move a batch before it stops the pass (a frozen file system: writes that do not return; a loaded machine takes longer than one might think to schedule the thread).</summary>
    internal static readonly TimeSpan RoomWait = TimeSpan.FromSeconds(5);

    private readonly SemaphoreSlim _wake = new(0);
    private readonly object _progress = new(); // a leaf (Monitor): only the wait for progress
    private Thread? _thread;
    private ITimer? _retryTimer;
    private int _requested, _roomWanted, _inRound;
    private long _rounds;
    private volatile bool _stopping;

    /// <summary>Starts the thread (once).</summary>
    public void Start()
    {
        if (_thread is not null || _stopping)
        {
            return;
        }
        _thread = new Thread(Loop) { IsBackground = true, Name = "cram-writeback" };
        _thread.Start();
    }

    /// <summary>No round running or asked for (tests wait for it before they read writeback's figures; another request may come at any time).</summary>
    public bool Idle => Volatile.Read(ref _inRound) == 0 && Volatile.Read(ref _requested) == 0;

    /// <summary>Asks the thread for a round (never blocks; many requests make one round).</summary>
    public void Request()
    {
        if (Interlocked.Exchange(ref _requested, 1) == 0)
        {
            _wake.Release();
        }
    }

    /// <summary>
    /// Background upkeep, from the reclaim worker's tick (holding no lock): if anything is due —
    /// the pool above its high watermark, dead segments to punch, a compaction, a long queue — asks
    /// the thread for a round, or without a thread does it here.
    /// </summary>
    public void Upkeep()
    {
        if (_stopping)
        {
            return;
        }
        if (!AboveHighWatermark && !_tier.HasDeadSegments && !CompactionDue && !QueueNeedsTrim && !_tier.UpkeepDue && !SpillDue &&
            _spill?.UpkeepDue != true)
        {
            return;
        }
        if (_thread is not null)
        {
            Request();
        }
        else
        {
            Round();
        }
    }

    /// <summary>
    /// The pool is full and reclaim wants room (holding no lock): false at once if writeback cannot
    /// make any (paused after an error, the file full); else asks the thread and waits up to
    /// <see cref="RoomWait"/> for a batch to be moved or the round to end — or without a thread
    /// writes back here. True if pages left the pool meanwhile.
    /// </summary>
    public bool MakeRoom()
    {
        if (Paused || FileFull || _stopping)
        {
            return false;
        }
        if (_thread is null)
        {
            return RunForRoom() > 0;
        }
        long pages = Pages, rounds;
        lock (_progress)
        {
            rounds = _rounds;
        }
        Volatile.Write(ref _roomWanted, 1);
        Request();
        long deadline = Environment.TickCount64 + (long)RoomWait.TotalMilliseconds;
        lock (_progress)
        {
            while (Pages == pages && _rounds - rounds < 2 && !_stopping) // a round already under way may end without our request
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0 || !Monitor.Wait(_progress, (int)left))
                {
                    break;
                }
            }
        }
        return Pages > pages;
    }

    private void Loop()
    {
        while (true)
        {
            _wake.Wait();
            if (_stopping)
            {
                break;
            }
            Volatile.Write(ref _inRound, 1);
            Interlocked.Exchange(ref _requested, 0);
            try
            {
                Round();
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or OutOfMemoryException)
            {
                // Counted where it happened (write errors pause writeback); the next request tries again.
            }
            lock (_progress)
            {
                _rounds++;
                Monitor.PulseAll(_progress);
            }
            Volatile.Write(ref _inRound, 0);
            _engine.SignalReclaim(); // room was made, events were posted: the reclaim worker looks
        }
    }

    /// <summary>One round of upkeep: punch dead segments, write back to the low watermark, compact sparse segments, trim the queue.</summary>
    private void Round()
    {
        PunchDeadSegments();
        Spill(); // the file's oldest segments to the store, when the file is past its high watermark
        if (Interlocked.Exchange(ref _roomWanted, 0) == 1)
        {
            RunForRoom();
        }
        else if (AboveHighWatermark)
        {
            RunInBackground();
        }
        CompactSegments();
        TrimQueue();
        _tier.Upkeep(_maintenance); // the remote store's key leases
        _spill?.Upkeep(_maintenance);
    }

    /// <summary>
    /// For a pass the full pool stopped: down to the low watermark, and at least one batch even when
    /// the pool is there already (a round that ran between the refused store and the request may have
    /// made the room; the pass then waits for a batch it can see).
    /// </summary>
    private long RunForRoom() => Run(force: _pool.UsedBytes > _lowBytes ? 0 : 1);

    /// <summary>
    /// The round's own writeback, above the high watermark with nobody waiting for it: the one that
    /// re-encodes LZ4 copies on their way out (Writeback.Recode.cs), until a reclaim pass asks for room.
    /// <paramref name="force"/> as for <see cref="Run"/> (tests: a whole pool's worth).
    /// </summary>
    internal long RunInBackground(long force = 0)
    {
        _background = true;
        try
        {
            return Run(force);
        }
        finally
        {
            _background = false;
        }
    }

    /// <summary>Whether this run may re-encode: the background's, and no reclaim pass waiting for room (writeback is then on its critical path).</summary>
    private bool MayReencode => _background && Volatile.Read(ref _roomWanted) == 0;

    private volatile bool _background;

    /// <summary>A batch moved: wake whoever waits in <see cref="MakeRoom"/>.</summary>
    private void Progressed()
    {
        lock (_progress)
        {
            Monitor.PulseAll(_progress);
        }
    }

    /// <summary>After a failed write: a round when the pause ends, on the engine's clock.</summary>
    private void RetryAfterPause()
    {
        if (_thread is null)
        {
            return; // without the thread, the next caller retries
        }
        _retryTimer ??= _time.CreateTimer(_ => Request(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _retryTimer.Change(TimeSpan.FromSeconds(1.01), Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// The engine is going: no new round or batch starts, and a reclaim pass waiting for room stops
    /// waiting (so the reclaim worker can be stopped at once). Never blocks; <see cref="StopThread"/> joins.
    /// </summary>
    public void BeginStop()
    {
        _stopping = true;
        _wake.Release();
        lock (_progress)
        {
            Monitor.PulseAll(_progress);
        }
    }

    /// <summary>Stops the thread and waits for its round (a write in flight included). Before the engine's teardown: the thread moves slots and frees pool objects.</summary>
    public void StopThread()
    {
        _stopping = true;
        _retryTimer?.Dispose();
        if (_thread is not null)
        {
            _wake.Release();
            _thread.Join();
            _thread = null;
        }
        lock (_progress)
        {
            Monitor.PulseAll(_progress);
        }
    }
}
