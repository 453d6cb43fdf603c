namespace CramCore.Storage;

/// <summary>
/// The CPU that recompression may use (<see cref="CramOptions.RecompressionCpuShare"/>, a share of
/// one core), shared by the two threads that re-encode: the recompressor and writeback. Credit
/// accrues at the share of the wall clock, up to one second's worth, and work spends it. The
/// recompressor spends and pays back: after a batch it waits until credit is back to zero.
/// Writeback re-encodes only with credit left over (above zero: the recompressor idle, or between
/// its pauses), and otherwise moves copies as they are — a byte saved in the pool is memory, one
/// saved in the file or the store is not, so the recompressor comes first. Waits are made at least
/// <see cref="MinimumPause"/> long (a shorter wait than the timer's millisecond would be no pause
/// at all) and what a wait actually lasted accrues, so the share holds on average whatever the
/// batches cost. Thread-safe.
/// </summary>
internal sealed class RecompressionBudget
{
    /// <summary>The shortest pause the budget asks for (owed time is paid in pauses at least this long).</summary>
    public static readonly TimeSpan MinimumPause = TimeSpan.FromMilliseconds(5);

    private readonly double _share;
    private readonly TimeProvider _time;
    private readonly long _burst; // ticks of work one second of credit buys
    private readonly Lock _lock = new();
    private long _credit, _at;    // timestamp ticks of work the share allows now, and when it was counted
    private long _spent;          // ticks of work spent (cumulative)

    /// <param name="share">A share of one core, above 0; 1 or more is no limit.</param>
    /// <param name="time">The clock credit accrues by.</param>
    public RecompressionBudget(double share, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(share);
        _share = share;
        _time = time;
        _burst = (long)(Math.Min(share, 1) * time.TimestampFrequency);
        _at = time.GetTimestamp();
    }

    /// <summary>Whether the share is a whole core or more (nobody waits, writeback always re-encodes).</summary>
    public bool Unlimited => _share >= 1;

    /// <summary>The working time spent, by both threads (an upper bound of their CPU time for it).</summary>
    public TimeSpan Spent => _time.GetElapsedTime(0, Interlocked.Read(ref _spent));

    /// <summary>Whether writeback may re-encode now (credit left over: above zero).</summary>
    public bool WritebackMayEncode()
    {
        if (Unlimited)
        {
            return true;
        }
        lock (_lock)
        {
            Accrue();
            return _credit > 0;
        }
    }

    /// <summary>Counts <paramref name="ticks"/> of work (timestamp ticks).</summary>
    public void Spend(long ticks)
    {
        if (ticks <= 0)
        {
            return;
        }
        Interlocked.Add(ref _spent, ticks);
        if (Unlimited)
        {
            return;
        }
        lock (_lock)
        {
            Accrue();
            _credit -= ticks;
        }
    }

    /// <summary>The recompressor's pause now: how long until credit is back to zero, or zero when that is less than <see cref="MinimumPause"/>.</summary>
    public TimeSpan PauseOwed()
    {
        if (Unlimited)
        {
            return TimeSpan.Zero;
        }
        lock (_lock)
        {
            Accrue();
            if (_credit >= 0)
            {
                return TimeSpan.Zero;
            }
            TimeSpan owed = _time.GetElapsedTime(0, (long)(-_credit / _share));
            return owed < MinimumPause ? TimeSpan.Zero : owed;
        }
    }

    private void Accrue()
    {
        long now = _time.GetTimestamp();
        _credit = Math.Min(_burst, _credit + (long)((now - _at) * _share));
        _at = now;
    }
}
