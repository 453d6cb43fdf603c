namespace CramCore.Internals;

/// <summary>
/// Calls in flight on something a dispose unmaps (a region's memory, the engine's shared block):
/// each call <see cref="TryEnter"/>s and <see cref="Exit"/>s; <see cref="Close"/> refuses new calls
/// and waits for those in flight, so the teardown after it never pulls memory from under one. Enter
/// and exit are two interlocked operations; close spins (calls in flight are short).
/// </summary>
internal sealed class InFlightGate
{
    private volatile bool _closed;
    private int _inFlight;

    /// <summary>Whether <see cref="Close"/> was called: nothing new may start.</summary>
    public bool Closed => _closed;

    /// <summary>Starts a call; false once the gate is closed (the caller throws <see cref="ObjectDisposedException"/>). Pair with <see cref="Exit"/>.</summary>
    /// <exception cref="InvalidOperationException">Called from inside a callback the engine makes under its locks (<see cref="UserCallback"/>).</exception>
    public bool TryEnter()
    {
        UserCallback.ThrowIfInside();
        Interlocked.Increment(ref _inFlight);
        if (_closed)
        {
            Interlocked.Decrement(ref _inFlight);
            return false;
        }
        return true;
    }

    public void Exit() => Interlocked.Decrement(ref _inFlight);

    /// <summary>Runs <paramref name="call"/> as a call in flight.</summary>
    /// <exception cref="ObjectDisposedException">The gate is closed: <paramref name="owner"/> is being disposed.</exception>
    public T Run<T>(Func<T> call, Type owner)
    {
        ObjectDisposedException.ThrowIf(!TryEnter(), owner);
        try
        {
            return call();
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Refuses new calls and waits for the ones in flight. Call with no lock a call in flight may need.</summary>
    /// <exception cref="InvalidOperationException">Called from inside a callback the engine makes under its locks (<see cref="UserCallback"/>).</exception>
    public void Close()
    {
        UserCallback.ThrowIfInside();
        _closed = true;
        var spin = new SpinWait();
        while (Volatile.Read(ref _inFlight) != 0)
        {
            spin.SpinOnce();
        }
    }
}
