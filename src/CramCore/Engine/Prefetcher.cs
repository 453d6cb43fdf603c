using CramCore.Internals;

namespace CramCore.Engine;

/// <summary>
/// Works off <see cref="CramAdvice.WillNeed"/> requests in the background, one at a time, in the
/// order they came: each is a range of a region that <see cref="Step"/> swaps in a bounded piece of
/// at a time (CramNative_PrefetchPages) until it is done, the soft resident limit stops it, or its
/// region goes away. Runs on a thread-pool thread only while there is work; the engine stops it
/// (and waits for the piece in progress) before it frees anything the native call reads.
/// </summary>
internal sealed class Prefetcher(Prefetcher.Step step)
{
    /// <summary>Swaps in one piece of [next, end) of the region and moves <paramref name="next"/> on; false when the request is finished (done, at the limit, or its region gone).</summary>
    public delegate bool Step(RegionMapping region, ref ulong next, ulong end);

    private readonly Lock _lock = new();
    private readonly Queue<(RegionMapping Region, ulong Start, ulong End)> _requests = new();
    private Task _drain = Task.CompletedTask;
    private bool _draining;
    private volatile bool _stopping;

    /// <summary>Queues pages [start, end) of a region; returns at once.</summary>
    public void Enqueue(RegionMapping region, ulong start, ulong end)
    {
        lock (_lock)
        {
            if (_stopping)
            {
                return;
            }
            _requests.Enqueue((region, start, end));
            if (!_draining)
            {
                _draining = true;
                _drain = Task.Run(Drain);
            }
        }
    }

    /// <summary>Completes once every request queued so far is finished (tests, benchmarks).</summary>
    public Task WhenIdle()
    {
        lock (_lock)
        {
            return _draining ? _drain : Task.CompletedTask;
        }
    }

    /// <summary>Drops what is queued and waits for the piece in progress; later requests are ignored.</summary>
    public void Stop()
    {
        Task drain;
        lock (_lock)
        {
            _stopping = true;
            _requests.Clear();
            drain = _drain;
        }
        drain.Wait();
    }

    private void Drain()
    {
        while (true)
        {
            (RegionMapping Region, ulong Start, ulong End) request;
            lock (_lock)
            {
                if (_stopping || !_requests.TryDequeue(out request))
                {
                    _draining = false;
                    return;
                }
            }
            ulong next = request.Start;
            try
            {
                while (!_stopping && step(request.Region, ref next, request.End))
                {
                }
            }
            catch (Exception)
            {
                // A hint is best effort: a failed piece ends its request (the native side counted
                // it as a service error); the pages come in on their own faults.
            }
        }
    }
}
