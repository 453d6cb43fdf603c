namespace CramCore.Tests;

/// <summary>
/// The backing file's device with failures a test turns on and off: while <see cref="WriteError"/>
/// is set every write fails with it (a full or broken disk); while frozen (<see cref="Freeze"/>)
/// every write waits until <see cref="Thaw"/> (a frozen or hung file system); while
/// <see cref="DropWrites"/> a write reports success and writes nothing (a lying disk); otherwise
/// the real device does the I/O.
/// </summary>
internal sealed unsafe class FailingFileDevice(IBackingFileDevice inner) : IBackingFileDevice
{
    /// <summary>The error every write fails with now; <see cref="Errno.None"/>: writes work.</summary>
    public Errno WriteError { get; set; }

    /// <summary>Writes that failed because of <see cref="WriteError"/>.</summary>
    public int FailedWrites { get; private set; }

    private readonly ManualResetEventSlim _thawed = new(initialState: true);

    /// <summary>Set once a write is waiting on the frozen device.</summary>
    public ManualResetEventSlim WriteWaiting { get; } = new();

    /// <summary>Writes that reported success without writing (cumulative).</summary>
    public int DroppedWrites { get; private set; }

    /// <summary>While true, writes report success and write nothing.</summary>
    public bool DropWrites { get; set; }

    /// <summary>From now on every write waits until <see cref="Thaw"/>.</summary>
    public void Freeze() => _thawed.Reset();

    /// <summary>Lets waiting and later writes through.</summary>
    public void Thaw() => _thawed.Set();

    public Errno Write(int fd, byte* data, ulong length, ulong offset)
    {
        if (!_thawed.IsSet)
        {
            WriteWaiting.Set();
            _thawed.Wait();
        }
        if (DropWrites)
        {
            DroppedWrites++;
            return Errno.None;
        }
        if (WriteError != Errno.None)
        {
            FailedWrites++;
            return WriteError;
        }
        return inner.Write(fd, data, length, offset);
    }

    public Errno Read(int fd, byte* data, ulong length, ulong offset) => inner.Read(fd, data, length, offset);

    public void Discard(int fd, ulong offset, ulong length) => inner.Discard(fd, offset, length);
}
