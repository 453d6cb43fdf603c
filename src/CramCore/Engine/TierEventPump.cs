using CramCore.Internals;
using CramCore.Native;
using Microsoft.Extensions.Logging;

namespace CramCore.Engine;

/// <summary>
/// Raises <see cref="CramEngine.TierEvent"/>: what the layers below posted to the
/// <see cref="TierEventChannel"/>, and events for what the fault service counted (checksum
/// failures, read errors, service errors, throttling starting and stopping); logs each to
/// <see cref="CramOptions.Logger"/>. One thread at a time raises, in order, holding no engine lock
/// but the pump's own (lock order 0 in cramnative.h). A thread that finds another raising does not
/// wait for it unless it asks to: the holder drains the channel, and the reclaim worker's next tick
/// raises what arrives after. So a handler may dispose the engine or a region, or set the resident
/// limit, from any thread. The reclaim worker never runs a handler: it collects the service's
/// counters and hands the raising to the thread pool (<see cref="RaiseInBackground"/>), so a
/// handler that blocks or runs long delays only later events, never reclaim.
/// </summary>
internal sealed unsafe class TierEventPump(NativeShared* shared, TierEventChannel channel, CramOptions options, Func<long> residentLimitBytes)
{
    /// <summary>How long without a throttled fault ends throttling (<see cref="CramTierEventKind.ThrottlingStopped"/>).</summary>
    internal const long ThrottleQuietMilliseconds = 1000;

    private readonly Lock _lock = new(); // lock 0: held while handlers run
    private readonly Lock _collectLock = new(); // a leaf: the counters PostServiceEvents compares
    private int _raiseQueued;
    private long _checksumFailuresSeen, _readErrorsSeen, _serviceErrorsSeen, _throttledSeen, _lastThrottleTick;
    private bool _throttling;
    private volatile bool _stopped;

    /// <summary>Whether faults were throttled within the last second: <see cref="CramTierEventKind.ThrottlingStopped"/> is due on the clock, so the reclaim worker must keep ticking.</summary>
    public bool Throttling => Volatile.Read(ref _throttling);

    /// <summary>The thread running handlers now, if any (so the engine can tell a call from inside a handler).</summary>
    public bool RaisingOnCurrentThread => _lock.IsHeldByCurrentThread;

    /// <summary>
    /// Raises what is pending through <paramref name="handler"/>. With <paramref name="wait"/> false
    /// (the reclaim worker) it returns at once if another thread is raising. Never after
    /// <see cref="Stop"/>: the shared block it reads may be gone.
    /// </summary>
    public void Raise(object sender, EventHandler<CramTierEventArgs>? handler, bool wait)
    {
        if (_stopped)
        {
            return;
        }
        if (wait)
        {
            _lock.Enter();
        }
        else if (!_lock.TryEnter())
        {
            return;
        }
        try
        {
            if (_stopped)
            {
                return;
            }
            Collect();
            while (!_stopped && channel.TryTake(out CramTierEventArgs? e))
            {
                Log(e!);
                try
                {
                    handler?.Invoke(sender, e!);
                }
                catch (Exception x)
                {
                    // A handler's exception must not reach the reclaim worker's (or a caller's) stack.
                    channel.CallbackFailed("A TierEvent handler", x);
                }
            }
        }
        finally
        {
            _lock.Exit();
        }
    }

    /// <summary>
    /// No more events: the engine is being torn down. Waits for a raise in progress on another thread
    /// (it reads the shared block the teardown unmaps); from a handler it returns at once (the lock is
    /// the caller's). Takes lock 0: call it holding no other engine lock.
    /// </summary>
    public void Stop()
    {
        lock (_lock)
        {
            lock (_collectLock) // and for a collection on the reclaim worker
            {
                _stopped = true;
            }
        }
    }

    /// <summary>
    /// From the reclaim worker's tick: posts events for what the fault service counted, and if any
    /// event is pending queues one raise on the thread pool (one at a time), which
    /// <paramref name="handler"/> gives the handlers of when it runs. Never runs a handler, never waits.
    /// </summary>
    public void RaiseInBackground(object sender, Func<EventHandler<CramTierEventArgs>?> handler)
    {
        if (_stopped)
        {
            return;
        }
        Collect();
        if (channel.IsEmpty || Interlocked.Exchange(ref _raiseQueued, 1) == 1)
        {
            return;
        }
        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            Volatile.Write(ref _raiseQueued, 0);
            Raise(sender, handler(), wait: false);
        }, null);
    }

    /// <summary>Whether events wait to be raised, or one is due on the clock: the reclaim worker keeps ticking.</summary>
    public bool Pending => Throttling || !channel.IsEmpty;

    /// <summary>Posts events for what the fault service counted since the last look (stops once the pump is stopped: the shared block may be gone).</summary>
    private void Collect()
    {
        lock (_collectLock)
        {
            if (!_stopped)
            {
                PostServiceEvents();
            }
        }
    }

    /// <summary>Events for what the fault service counted since the last look; under <see cref="_collectLock"/>.</summary>
    private void PostServiceEvents()
    {
        ref NativeStats s = ref shared->Stats;
        long checksum = (long)Volatile.Read(ref s.ChecksumFailures), read = (long)Volatile.Read(ref s.ReadErrors);
        if (checksum > _checksumFailuresSeen)
        {
            channel.Post(CramTierEventKind.ChecksumFailure, $"{checksum - _checksumFailuresSeen} stored page(s) failed their checksum; they were not mapped and the faulting threads got SIGBUS ({checksum} in all).");
            _checksumFailuresSeen = checksum;
        }
        if (read > _readErrorsSeen)
        {
            channel.Post(CramTierEventKind.ReadError, $"{read - _readErrorsSeen} read(s) of the backing file failed twice; those pages were not mapped and the faulting threads got SIGBUS ({read} in all).");
            _readErrorsSeen = read;
        }
        long service = (long)Volatile.Read(ref s.ServiceErrors), throttled = (long)Volatile.Read(ref s.ThrottleWaits);
        if (service > _serviceErrorsSeen)
        {
            channel.Post(CramTierEventKind.ServiceError, $"{service - _serviceErrorsSeen} fault-service system call(s) failed ({service} in all); the pages involved fault again. Please report it with the engine's stats.");
            _serviceErrorsSeen = service;
        }
        long now = (long)options.TimeProvider.GetElapsedTime(0).TotalMilliseconds; // on the engine's clock
        if (throttled > _throttledSeen)
        {
            if (!_throttling)
            {
                _throttling = true;
                channel.Post(CramTierEventKind.ThrottlingStarted, $"Faults are waiting for reclaim: resident memory is at the hard limit ({residentLimitBytes() >> 20} MiB limit), so writers are slowed, by at most {options.ThrottleMax.TotalMilliseconds} ms a fault. Raise ResidentLimitBytes or write less at once.");
            }
            _throttledSeen = throttled;
            _lastThrottleTick = now;
        }
        else if (_throttling && now - _lastThrottleTick >= ThrottleQuietMilliseconds)
        {
            _throttling = false;
            channel.Post(CramTierEventKind.ThrottlingStopped, "No fault has waited for reclaim for a second: throttling stopped.");
        }
    }

    /// <summary>The event to <see cref="CramOptions.Logger"/>, if any: trouble at Warning or Error, its end at Information.</summary>
    private void Log(CramTierEventArgs e)
    {
        ILogger? logger = options.Logger;
        if (logger is null)
        {
            return;
        }
        LogLevel level = e.Kind switch
        {
            CramTierEventKind.ChecksumFailure or CramTierEventKind.ReadError or CramTierEventKind.ServiceError or CramTierEventKind.CallbackFailed => LogLevel.Error,
            CramTierEventKind.PoolFull or CramTierEventKind.WritebackPaused or CramTierEventKind.BackingFileFull or CramTierEventKind.CramPressureHigh
                or CramTierEventKind.CramControlPlaneLost or CramTierEventKind.CramDeviceOutOfService or CramTierEventKind.ThrottlingStarted or CramTierEventKind.MemoryLimitExceeded => LogLevel.Warning,
            _ => LogLevel.Information,
        };
        try
        {
            logger.Log(level, new EventId((int)e.Kind + 1, e.Kind.ToString()), "{Message}", e.Message);
        }
        catch (Exception)
        {
            // A failing logger must not take reclaim down with it.
        }
    }
}
