namespace CramCore;

/// <summary>
/// The kernel or the process's sandbox does not let CramCore use userfaultfd. The message names
/// the cause and the fix.
/// </summary>
public sealed class CramUnavailableException : NotSupportedException
{
    /// <summary>Creates the exception.</summary>
    public CramUnavailableException(string message, int errno) : base(message) => Errno = errno;

    /// <summary>The errno the kernel returned.</summary>
    public int Errno { get; }

    internal static CramUnavailableException FromErrno(Native.Errno error, UserfaultfdMode mode)
    {
        string which = mode == UserfaultfdMode.Auto ? "userfaultfd (tried the system call, /dev/userfaultfd and user-mode-only)" : $"userfaultfd in mode {mode}";
        int errno = (int)error;
        string message = error switch
        {
            Native.Errno.EPERM or Native.Errno.EACCES =>
                $"{which} is not permitted for this process (errno {errno}). Fix: run as root or with CAP_SYS_PTRACE, " +
                "or set `sysctl vm.unprivileged_userfaultfd=1`, or give this user read/write access to /dev/userfaultfd (Linux 6.1+). " +
                "In a container, the seccomp profile must allow the userfaultfd system call (Docker's default profile blocks it: use a profile that allows it).",
            Native.Errno.ENOSYS or Native.Errno.ENOENT =>
                $"{which} is not available (errno {errno}): the kernel was built without CONFIG_USERFAULTFD, or a seccomp filter rejects the call. " +
                "Fix: use a kernel with userfaultfd (Linux 5.19+ recommended) or allow the userfaultfd system call in the seccomp profile.",
            Native.Errno.EPROTONOSUPPORT =>
                $"{which} lacks write-protect support for anonymous memory (UFFD_FEATURE_PAGEFAULT_FLAG_WP). Fix: use Linux 5.19 or newer.",
            _ => $"{which} could not be set up (errno {errno}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}).",
        };
        return new CramUnavailableException(message, errno);
    }
}
