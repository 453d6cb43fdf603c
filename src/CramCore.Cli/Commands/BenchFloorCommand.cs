namespace CramCore.Cli.Commands;

/// <summary>What `cram bench floor --json` prints: the fault floor of this machine, in microseconds (p50s; the copy is a mean).</summary>
internal sealed record FloorBenchResult(
    double KernelFirstTouchUs, double UffdServiceThreadUs, double UffdFaultingThreadUs, double UffdioCopyUs, double Lz4DecompressUs,
    double ServiceThreadOverFaultingThread, int Samples);

/// <summary>
/// `cram bench floor`: the primitives a fault service is built from, measured in one run by the
/// shipped native library (CramNative_MeasureFloor): the kernel's own first touch; a userfaultfd
/// fault answered by a spinning service thread and by the faulting thread itself (CramCore's SIGBUS
/// handler); one UFFDIO_COPY; one LZ4 page decompression. What `CramOptions.FaultService` chooses
/// between, on this machine today.
/// </summary>
internal static unsafe class BenchFloorCommand
{
    public static int Run(int samples, bool json)
    {
        if (samples is < 100 or > 1_000_000)
        {
            throw new CliException($"--samples: {samples} must be between 100 and 1000000.");
        }
        BenchSupport.Progress($"{samples} faults per figure: the kernel's first touch, a service thread, the faulting thread; UFFDIO_COPY; LZ4");
        NativeFloor floor;
        if (Interop.CramNative.MeasureFloor(samples, &floor) != 0)
        {
            Errno errno = Interop.LastErrno();
            throw errno is Errno.EPERM or Errno.EACCES or Errno.ENOSYS
                ? CramUnavailableException.FromErrno(errno, UserfaultfdMode.Syscall) // exit 3, with how to get a full userfaultfd
                : new IOException($"Measuring the fault floor failed ({errno}).");
        }
        var result = new FloorBenchResult(
            Math.Round(floor.KernelFirstTouchUs, 2), Math.Round(floor.UffdServiceThreadUs, 2), Math.Round(floor.UffdFaultingThreadUs, 2),
            Math.Round(floor.UffdioCopyUs, 2), Math.Round(floor.Lz4DecompressUs, 2),
            Math.Round(floor.UffdServiceThreadUs / floor.UffdFaultingThreadUs, 2), samples);
        return ResultPrinter.Print(result, json, "cram bench floor");
    }
}
