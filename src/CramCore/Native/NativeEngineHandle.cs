using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>
/// Owns the native engine (CramNative_EngineCreate): its fault-service thread, userfaultfd and the
/// shared block. Releasing it stops the service and unmaps everything native the engine made.
/// </summary>
internal sealed unsafe class NativeEngineHandle : SafeHandle
{
    private NativeEngineHandle() : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>Starts a native engine (its fault service) with <paramref name="config"/>.</summary>
    /// <exception cref="OutOfMemoryException">No memory for the engine.</exception>
    /// <exception cref="CramUnavailableException">userfaultfd cannot be used; the message says why.</exception>
    public static NativeEngineHandle Create(NativeEngineConfig config, out NativeShared* shared)
    {
        nint native;
        NativeShared* s;
        if (Interop.CramNative.EngineCreate(&config, &native, &s) != 0)
        {
            Errno errno = Interop.LastErrno();
            throw errno == Errno.ENOMEM
                ? new OutOfMemoryException("Creating the CramCore engine ran out of memory.")
                : CramUnavailableException.FromErrno(errno, (UserfaultfdMode)config.ForcedMode);
        }
        var engine = new NativeEngineHandle();
        engine.SetHandle(native);
        shared = s;
        return engine;
    }

    protected override bool ReleaseHandle() => Interop.CramNative.EngineDestroy(handle) == 0;
}
