using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The I/O of the backing file (Tsavorite's IDevice in miniature): write, read and give back a
/// segment's blocks, by descriptor and offset. <see cref="NativeFileDevice"/> makes the system
/// calls; tests wrap it to inject failures (ENOSPC, EIO). Only writes, reads for compaction and hole
/// punches go through it: the fault service reads the file natively, by descriptor.
/// </summary>
internal unsafe interface IBackingFileDevice
{
    /// <summary>Writes exactly <paramref name="length"/> bytes at <paramref name="offset"/>. Returns <see cref="Errno.None"/> or the error.</summary>
    Errno Write(int fd, byte* data, ulong length, ulong offset);

    /// <summary>Reads exactly <paramref name="length"/> bytes at <paramref name="offset"/>. Returns <see cref="Errno.None"/> or the error.</summary>
    Errno Read(int fd, byte* data, ulong length, ulong offset);

    /// <summary>Gives the blocks of [offset, offset + length) back to the file system (a hole; best effort).</summary>
    void Discard(int fd, ulong offset, ulong length);
}

/// <summary>The real device: pwrite, pread and fallocate(PUNCH_HOLE) through the native helper.</summary>
internal sealed unsafe class NativeFileDevice : IBackingFileDevice
{
    public static NativeFileDevice Instance { get; } = new();

    public Errno Write(int fd, byte* data, ulong length, ulong offset) =>
        Interop.CramNative.BackingFileWrite(fd, data, length, offset) == 0 ? Errno.None : Interop.LastErrno();

    public Errno Read(int fd, byte* data, ulong length, ulong offset) =>
        Interop.CramNative.BackingFileRead(fd, data, length, offset) == 0 ? Errno.None : Interop.LastErrno();

    public void Discard(int fd, ulong offset, ulong length) => Interop.CramNative.BackingFileDiscard(fd, offset, length);
}
