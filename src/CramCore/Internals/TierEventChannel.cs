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

    /// <summary>Queues an event for the pump.</summary>
    public void Post(CramTierEventKind kind, string message) => _queue.Enqueue(new CramTierEventArgs(kind, message));

    /// <summary>The next queued event, oldest first (the pump).</summary>
    public bool TryTake(out CramTierEventArgs? e) => _queue.TryDequeue(out e);
}
