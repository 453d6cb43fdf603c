using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>The errno values CramCore tells apart (Linux numbering).</summary>
internal enum Errno
{
    /// <summary>No error.</summary>
    None = 0,
    EPERM = 1,
    ENOENT = 2,
    EIO = 5,
    EBUSY = 16,
    ENOMEM = 12,
    EACCES = 13,
    EEXIST = 17,
    EINVAL = 22,
    EMFILE = 24,
    ENOSPC = 28,
    ERANGE = 34,
    ENOSYS = 38,
    EPROTONOSUPPORT = 93,
}

internal static partial class Interop
{
    /// <summary>The errno of the last failed native call on this thread.</summary>
    internal static Errno LastErrno() => (Errno)Marshal.GetLastPInvokeError();

    /// <summary>Turns the errno of the last failed CramNative_* call into an exception.</summary>
    internal static Exception GetExceptionForLastError(string operation) => GetExceptionForErrno(LastErrno(), operation);

    internal static Exception GetExceptionForErrno(Errno errno, string operation)
    {
        string message = $"{operation} failed: {Marshal.GetPInvokeErrorMessage((int)errno)} (errno {(int)errno}).";
        return errno switch
        {
            Errno.ENOMEM => new OutOfMemoryException(message),
            Errno.EINVAL => new ArgumentException(message),
            _ => new IOException(message, (int)errno),
        };
    }

    internal static void ThrowIfFailed(Errno error, string operation)
    {
        if (error != Errno.None)
        {
            throw GetExceptionForErrno(error, operation);
        }
    }

    internal static void ThrowIfFailed(int result, string operation)
    {
        if (result != 0)
        {
            throw GetExceptionForLastError(operation);
        }
    }
}
