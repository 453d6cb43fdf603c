using CramCore.Internals;

namespace CramCore.Storage;

/// <summary>
/// The CRAM node's TRIMs and its device's health: freed frames queue here and go to
/// <see cref="ICramDevice.Trim"/> in runs of consecutive frames on the maintenance path. A device
/// whose calls throw is the caller's code: the exception is caught and reported
/// (<see cref="TierEventChannel.CallbackFailed"/>); after <see cref="FailuresBeforeOutOfService"/>
/// failures in a row the device is out of service (<see cref="CramTierEventKind.CramDeviceOutOfService"/>)
/// and the node stops using it.
/// </summary>
internal sealed class CramDeviceTrims(ICramDevice device, TierEventChannel events)
{
    /// <summary>Consecutive failing calls of the device after which the node stops using it.</summary>
    public const int FailuresBeforeOutOfService = 8;

    private readonly List<long> _pending = [];
    private long _trimmed;
    private int _failures;
    private volatile bool _outOfService;

    /// <summary>Frames trimmed (or whose TRIM failed: they are free either way).</summary>
    public long TrimmedFrames => Interlocked.Read(ref _trimmed);

    /// <summary>The device kept failing: place nothing more on it, make nothing writable, move what it holds out.</summary>
    public bool OutOfService => _outOfService;

    /// <summary>A frame no slot names any more: TRIM it at the next <see cref="Flush"/>.</summary>
    public void Add(long frame) => _pending.Add(frame);

    /// <summary>Trims the frames freed since the last flush, in runs of consecutive frames.</summary>
    public void Flush()
    {
        if (_pending.Count == 0)
        {
            return;
        }
        _pending.Sort();
        int start = 0;
        for (int i = 1; i <= _pending.Count; i++)
        {
            if (i == _pending.Count || _pending[i] != _pending[i - 1] + 1)
            {
                try
                {
                    using (UserCallback.Enter("ICramDevice.Trim"))
                    {
                        device.Trim(_pending[start], i - start);
                    }
                    _failures = 0;
                }
                catch (Exception x)
                {
                    // The frames are free either way; a device that cannot TRIM keeps their bytes until it reuses them.
                    events.CallbackFailed("ICramDevice.Trim", x);
                    Failed();
                }
                start = i;
            }
        }
        Interlocked.Add(ref _trimmed, _pending.Count);
        _pending.Clear();
    }

    private void Failed()
    {
        if (++_failures < FailuresBeforeOutOfService || _outOfService)
        {
            return;
        }
        _outOfService = true;
        events.Post(CramTierEventKind.CramDeviceOutOfService,
            $"The CRAM device failed {_failures} times in a row: the node places nothing more on it, every write to a placed page promotes, and what it holds moves out to the pool.");
    }
}
