namespace CramCore.Tests;

/// <summary>
/// The backing file's device with failures a test turns on and off: while <see cref="WriteError"/>
/// is set every write fails with it (a full or broken disk), otherwise the real device does the I/O.
/// </summary>
internal sealed unsafe class FailingFileDevice(IBackingFileDevice inner) : IBackingFileDevice
{
    /// <summary>The error every write fails with now; <see cref="Errno.None"/>: writes work.</summary>
    public Errno WriteError { get; set; }

    /// <summary>Writes that failed because of <see cref="WriteError"/>.</summary>
    public int FailedWrites { get; private set; }

    public Errno Write(int fd, byte* data, ulong length, ulong offset)
    {
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
