using System.Collections.Concurrent;

namespace CramCore.Internals;

/// <summary>
/// The one way up: lower layers (reclaim, the memory budget, writeback, the CRAM node) post what an
/// operator should hear about here, and the engine's event pump (Engine/TierEventPump.cs) raises
/// it as <see cref="CramEngine.TierEvent"/>, in order, outside every lock. Posting never blocks and
/// never runs a handler, so a layer can post under its own locks; nothing below the engine holds a
/// delegate into it.
/// </summary>
internal sealed class TierEventChannel
{
    private readonly ConcurrentQueue<CramTierEventArgs> _queue = new();
    private readonly ConcurrentDictionary<string, bool> _failedCallbacks = new();
    private long _callbackFailures;

    /// <summary>Exceptions user callbacks threw that the library caught (cumulative).</summary>
    public long CallbackFailures => Interlocked.Read(ref _callbackFailures);

    /// <summary>
    /// A user callback (<paramref name="callback"/> names it) threw <paramref name="error"/>: counted,
    /// and posted as <see cref="CramTierEventKind.CallbackFailed"/> the first time that callback fails,
    /// so a handler that throws on every event cannot flood the channel. The caller carries on.
    /// </summary>
    public void CallbackFailed(string callback, Exception error)
    {
        Interlocked.Increment(ref _callbackFailures);
        if (_failedCallbacks.TryAdd(callback, true))
        {
            Post(CramTierEventKind.CallbackFailed,
                $"{callback} threw {error.GetType().Name}: {error.Message} CramCore caught it and carried on; later failures of it are only counted (CallbackFailures).");
        }
    }

    /// <summary>Queues an event for the pump.</summary>
    public void Post(CramTierEventKind kind, string message) => _queue.Enqueue(new CramTierEventArgs(kind, message));

    /// <summary>Whether nothing is queued.</summary>
    public bool IsEmpty => _queue.IsEmpty;

    /// <summary>The next queued event, oldest first (the pump).</summary>
    public bool TryTake(out CramTierEventArgs? e) => _queue.TryDequeue(out e);
}
