namespace CramCore.Internals;

/// <summary>
/// A user callback the engine calls while it holds one of its own locks (<see cref="ICramDevice.Trim"/>,
/// on the maintenance path): on that thread, until the callback returns, a call back into the
/// engine or one of its regions throws <see cref="InvalidOperationException"/> saying why, instead of
/// re-entering the locks it holds (which could free or unmap what the engine is still using, or
/// deadlock). Callbacks the engine calls holding no lock — <see cref="CramEngine.TierEvent"/>
/// handlers, the logger, <see cref="IWriteBudgetSource"/> — may call anything.
/// </summary>
internal static class UserCallback
{
    [ThreadStatic]
    private static string? t_inside;

    /// <summary>Marks the current thread as inside <paramref name="callback"/> until the scope ends.</summary>
    public static Scope Enter(string callback)
    {
        string? outer = t_inside;
        t_inside = callback;
        return new Scope(outer);
    }

    /// <summary>Throws if the current thread is inside a callback the engine called under its locks.</summary>
    /// <exception cref="InvalidOperationException">It is; the message names the callback and the way out.</exception>
    public static void ThrowIfInside()
    {
        if (t_inside is { } callback)
        {
            Throw(callback);
        }
    }

    private static void Throw(string callback) => throw new InvalidOperationException(
        $"CramCore cannot be called from inside {callback}: the engine calls it holding its maintenance lock. " +
        "Do the work on another thread (for example ThreadPool.QueueUserWorkItem) once the callback has returned.");

    public readonly struct Scope(string? outer) : IDisposable
    {
        public void Dispose() => t_inside = outer;
    }
}
