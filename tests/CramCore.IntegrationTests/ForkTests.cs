using System.Runtime.InteropServices;

namespace CramCore.Tests;

/// <summary>
/// A native library that calls fork() without exec must not hand its child a silent copy of a
/// region: the child would inherit the mapping without the userfaultfd registration and read
/// evicted pages as zeros. Regions and pool arenas are MADV_DONTFORK, so the child has no mapping
/// there at all and any access fails loudly.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe partial class ForkTests
{
    private const int P = 4096;
    private const int EFAULT = 14;

    // The child runs only these (no GC transition, nothing allocated, nothing managed that could
    // wait for the parent's runtime), then leaves with _exit.
    [LibraryImport("libc", EntryPoint = "fork")]
    [SuppressGCTransition]
    private static partial int Fork();

    [LibraryImport("libc", EntryPoint = "write")]
    [SuppressGCTransition]
    private static partial nint Write(int fd, byte* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "__errno_location")]
    [SuppressGCTransition]
    private static partial int* ErrnoLocation();

    [LibraryImport("libc", EntryPoint = "_exit")]
    [SuppressGCTransition]
    private static partial void Exit(int status);

    [LibraryImport("libc", EntryPoint = "pipe")]
    private static partial int Pipe(int* fds);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "waitpid")]
    private static partial int WaitPid(int pid, int* status, int options);

    /// <summary>
    /// Forks; the child writes a page from each address to a pipe (the kernel reads it, as any
    /// system call on the memory would) and exits with 0 if every write worked or with the errno of
    /// the first that failed. Returns the child's exit status.
    /// </summary>
    private static int ChildReads(params nint[] addresses)
    {
        int* fds = stackalloc int[2];
        Assert.Equal(0, Pipe(fds));
        byte* scratch = stackalloc byte[1];
        Assert.Equal(1, (int)Write(fds[1], scratch, 1)); // every import the child uses is bound before the fork
        _ = ErrnoLocation();
        // ... and its stub generated (exit is never called here): a forked child of a multi-threaded
        // runtime cannot JIT (a Debug build's stubs are made on first call, and the child then crashed).
        foreach (string import in new[] { nameof(Exit), nameof(Write), nameof(ErrnoLocation), nameof(Fork) })
        {
            Marshal.Prelink(typeof(ForkTests).GetMethod(import, System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic)!);
        }
        int count = addresses.Length;
        nint* list = stackalloc nint[count];
        for (int i = 0; i < count; i++)
        {
            list[i] = addresses[i];
        }
        int pid = Fork();
        if (pid == 0)
        {
            int status = 0;
            for (int i = 0; i < count && status == 0; i++)
            {
                if (Write(fds[1], (byte*)list[i], P) != P)
                {
                    status = *ErrnoLocation();
                }
            }
            Exit(status);
        }
        Assert.True(pid > 0, "fork failed");
        Close(fds[1]);
        Close(fds[0]);
        int wait;
        Assert.Equal(pid, WaitPid(pid, &wait, 0));
        Assert.True((wait & 0x7f) == 0, $"the child died of signal {wait & 0x7f}");
        return (wait >> 8) & 0xff;
    }

    [Fact]
    public void ForkedChild_HasNoCopyOfRegionsOrPool_ItsSystemCallsFailLoudly()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(1 << 20);
        for (int i = 0; i < 4; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
        }
        region.Reclaim(2 * P); // two evicted (their copies in the pool), two resident
        nint[] arenas = engine.Parts.Pool.ArenaAddresses;
        Assert.NotEmpty(arenas);

        byte* own = stackalloc byte[P];
        Assert.Equal(0, ChildReads((nint)own)); // the probe itself works: the child reads its own stack
        Assert.Equal(EFAULT, ChildReads((nint)region.Pointer)); // evicted: without DONTFORK, zeros
        Assert.Equal(EFAULT, ChildReads((nint)(region.Pointer + 3 * P))); // resident
        Assert.Equal(EFAULT, ChildReads(arenas[0]));

        for (int i = 0; i < 4; i++) // and the parent lost nothing
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
    }
}
