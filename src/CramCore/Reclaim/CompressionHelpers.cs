using System.Diagnostics;

namespace CramCore.Reclaim;

/// <summary>
/// One chunk of a reclaim batch's compression work, shared between the reclaim worker that owns it
/// and the process's <see cref="CompressionHelpers"/>. Items are taken one at a time; the owner takes
/// items too and, once none is left, waits only for those a helper is still running, so the work is
/// done even if no helper ever comes (helpers only make it faster). Work items must not throw; one
/// that does is reported to the owner by <see cref="Run"/>.
/// </summary>
internal sealed class CompressionJob(Action<int> work)
{
    // generation (bits 32..63) | item count (16..31) | next item (0..15): one word, so a helper's take
    // of an item can never mix one chunk's index with another chunk's count.
    private long _state;
    private int _done;
    private Exception? _failure;

    /// <summary>Most items a chunk may have.</summary>
    public const int MaxItems = 0xFFFF;

    /// <summary>Whether items are left to take (a helper's quick look).</summary>
    public bool HasWork
    {
        get
        {
            long s = Volatile.Read(ref _state);
            return (int)(s & 0xFFFF) < (int)((s >> 16) & 0xFFFF);
        }
    }

    /// <summary>Runs items 0..<paramref name="count"/> with whoever helps, and returns when all are done (owner only).</summary>
    public void Run(int count)
    {
        Start(count);
        Finish(count);
    }

    /// <summary>
    /// Offers items 0..<paramref name="count"/> to the helpers and returns at once (owner only); the
    /// owner must call <see cref="Finish"/> (or <see cref="FinishQuietly"/>) with the same count before
    /// it starts the job again or lets go of the items' inputs.
    /// </summary>
    public void Start(int count)
    {
        Debug.Assert(count is >= 0 and <= MaxItems);
        if (count == 0)
        {
            return;
        }
        long generation = (Volatile.Read(ref _state) >> 32) + 1;
        Volatile.Write(ref _done, 0);
        Volatile.Write(ref _state, (generation << 32) | ((long)count << 16)); // publishes the chunk's inputs, written before
        CompressionHelpers.Wake();
    }

    /// <summary>Runs the started items no helper took, waits for those a helper runs, and reports a failed item (owner only).</summary>
    public void Finish(int count)
    {
        if (WaitAll(count) is { } failure)
        {
            throw new InvalidOperationException("A compression helper failed.", failure);
        }
    }

    /// <summary>As <see cref="Finish"/>, for a job whose results are thrown away: a failed item is not reported.</summary>
    public void FinishQuietly(int count) => WaitAll(count);

    private Exception? WaitAll(int count)
    {
        if (count == 0)
        {
            return null;
        }
        while (TryRunOne())
        {
        }
        var spin = new SpinWait();
        while (Volatile.Read(ref _done) < count)
        {
            spin.SpinOnce(sleep1Threshold: -1); // a helper is finishing its item
        }
        Exception? failure = _failure;
        _failure = null;
        return failure;
    }

    /// <summary>Takes and runs one item; false when none is left.</summary>
    public bool TryRunOne()
    {
        long s = Volatile.Read(ref _state);
        while (true)
        {
            int next = (int)(s & 0xFFFF), count = (int)((s >> 16) & 0xFFFF);
            if (next >= count)
            {
                return false;
            }
            long seen = Interlocked.CompareExchange(ref _state, s + 1, s);
            if (seen != s)
            {
                s = seen;
                continue;
            }
            try
            {
                work(next);
            }
            catch (Exception e)
            {
                _failure ??= e;
            }
            Interlocked.Increment(ref _done); // after the item's results are written
            return true;
        }
    }
}

/// <summary>
/// Threads that help reclaim workers compress: shared by the engines of the process (a helper joins
/// whichever engine's chunk has items left), started at the first chunk posted and stopped when the
/// last engine that wanted them is disposed. After a chunk they look for more for a short while, then
/// sleep until the next is posted. On a machine with one CPU there are none: the reclaim worker
/// compresses alone, as it always can.
/// </summary>
internal static class CompressionHelpers
{
    private const int MaxPosted = 16;                                     // engines whose chunks can be helped at once
    private static readonly long s_lingerTicks = Stopwatch.Frequency / 5000; // 200 µs of looking for the next chunk
    private static readonly CompressionJob?[] s_posted = new CompressionJob?[MaxPosted];
    private static readonly Lock s_lifecycle = new();
    private static readonly List<Thread> s_threads = [];
    private static SemaphoreSlim s_wake = new(0);
    private static int s_sleeping, s_users, s_wanted, s_started;
    private static volatile bool s_stopping;

    /// <summary>Helpers the process runs now (tests).</summary>
    internal static int Running
    {
        get
        {
            lock (s_lifecycle)
            {
                return s_threads.Count;
            }
        }
    }

    /// <summary>Default helper count for an engine: one per further CPU the process may use, at most three.</summary>
    public static int DefaultHelpers => Math.Clamp(Environment.ProcessorCount - 1, 0, 3);

    /// <summary>An engine that wants <paramref name="helpers"/> helpers (its threads are started at its first posted chunk); pair with <see cref="Release"/>.</summary>
    public static void Acquire(int helpers)
    {
        lock (s_lifecycle)
        {
            s_users++;
            s_wanted = Math.Max(s_wanted, helpers);
        }
    }

    /// <summary>The engine is gone; the last one stops the helpers (they are idle: no engine posts any more).</summary>
    public static void Release()
    {
        lock (s_lifecycle)
        {
            if (--s_users > 0)
            {
                return;
            }
            s_wanted = 0;
            if (s_threads.Count == 0)
            {
                return;
            }
            s_stopping = true;
            s_wake.Release(s_threads.Count);
            foreach (Thread t in s_threads)
            {
                t.Join();
            }
            s_threads.Clear();
            s_wake.Dispose();
            s_wake = new SemaphoreSlim(0);
            s_sleeping = 0;
            s_stopping = false;
            Volatile.Write(ref s_started, 0);
        }
    }

    /// <summary>Offers <paramref name="job"/>'s chunks to the helpers until <see cref="Withdraw"/>; returns its place, or -1 when it runs alone.</summary>
    public static int Post(CompressionJob job)
    {
        if (Volatile.Read(ref s_wanted) == 0)
        {
            return -1;
        }
        if (Volatile.Read(ref s_started) == 0)
        {
            Start();
        }
        for (int i = 0; i < MaxPosted; i++)
        {
            if (Interlocked.CompareExchange(ref s_posted[i], job, null) is null)
            {
                return i;
            }
        }
        return -1;
    }

    /// <summary>Takes a posted job back (after its last chunk ran).</summary>
    public static void Withdraw(int place)
    {
        if (place >= 0)
        {
            Volatile.Write(ref s_posted[place], null);
        }
    }

    /// <summary>A chunk was posted: wakes the helpers that sleep (a full fence orders the chunk before the look at the sleepers).</summary>
    public static void Wake()
    {
        Interlocked.MemoryBarrier();
        int sleeping = Volatile.Read(ref s_sleeping);
        if (sleeping > 0)
        {
            s_wake.Release(sleeping);
        }
    }

    private static void Start()
    {
        lock (s_lifecycle)
        {
            if (s_started != 0 || s_wanted == 0)
            {
                return;
            }
            SemaphoreSlim wake = s_wake;
            for (int i = 0; i < s_wanted; i++)
            {
                var t = new Thread(() => Help(wake)) { IsBackground = true, Name = "cram-compress" };
                try
                {
                    t.Start();
                }
                catch (OutOfMemoryException)
                {
                    break; // no thread to be had: fewer helpers (reclaim's worker compresses alone if need be)
                }
                s_threads.Add(t);
            }
            Volatile.Write(ref s_started, 1);
        }
    }

    private static void Help(SemaphoreSlim wake)
    {
        long idleSince = Stopwatch.GetTimestamp();
        while (!s_stopping)
        {
            if (RunPosted())
            {
                idleSince = Stopwatch.GetTimestamp();
                continue;
            }
            if (Stopwatch.GetTimestamp() - idleSince < s_lingerTicks)
            {
                Thread.Yield();
                continue;
            }
            Interlocked.Increment(ref s_sleeping); // then look once more: a chunk posted before this is seen here, one after it wakes us
            if (!AnyPosted() && !s_stopping)
            {
                wake.Wait();
            }
            Interlocked.Decrement(ref s_sleeping);
            idleSince = Stopwatch.GetTimestamp();
        }
    }

    private static bool RunPosted()
    {
        bool worked = false;
        for (int i = 0; i < MaxPosted; i++)
        {
            CompressionJob? job = Volatile.Read(ref s_posted[i]);
            while (job is not null && job.TryRunOne())
            {
                worked = true;
            }
        }
        return worked;
    }

    private static bool AnyPosted()
    {
        for (int i = 0; i < MaxPosted; i++)
        {
            if (Volatile.Read(ref s_posted[i]) is { HasWork: true })
            {
                return true;
            }
        }
        return false;
    }
}
