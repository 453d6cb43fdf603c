using System.Diagnostics;

namespace CramCore.Cli.Commands;

/// <summary>What `cram bench sparse --json` prints.</summary>
internal sealed record SparseBenchResult(
    long RegionBytes, long StrideBytes, long Touches,
    double KernelTouchUsPerPage, double TouchUsPerPage, double TouchOverKernel, [property: Figure(FigureUnit.Bytes, Label = "resident per touched page")] double ResidentBytesPerTouchedPage,
    long LimitBytes, double LimitedTouchUsPerPage, double LimitedTouchOverKernel, string FaultService);

/// <summary>
/// `cram bench sparse`: a sparse first touch (one 8-byte write every STRIDE across a large region,
/// a hash table's pattern) on a CramCore region, without and with a resident limit, against the
/// kernel's own first-touch fault on a plain anonymous mapping (NORESERVE, no huge pages) with the
/// same pattern, in the same run. touch_us_per_page is the mean time of one touching write.
/// </summary>
internal static unsafe class BenchSparseCommand
{
    public static int Run(long size, long stride, long limit, bool json, CramFaultService faultService = CramFaultService.Auto)
    {
        if (size < 64L << 20 || size > SharedLayout.MaxRegionBytes)
        {
            throw new CliException($"--size: {Measure.Bytes(size)} must be between 64m and 64t.");
        }
        if (stride < PageSource.PageSize || stride > size / 16 || stride % PageSource.PageSize != 0)
        {
            throw new CliException($"--stride: {Measure.Bytes(stride)} must be a multiple of 4k, at most a sixteenth of --size.");
        }
        if (limit != 0 && limit < 1L << 20)
        {
            throw new CliException($"--limit: {Measure.Bytes(limit)} must be at least 1m (or 0 to skip the limited run).");
        }
        long touches = size / stride;

        // The kernel's first touch on a plain anonymous mapping.
        BenchSupport.Progress($"{touches} touches, one every {Measure.Bytes(stride)} of {Measure.Bytes(size)}: the kernel's first touch, then CramCore's" + (limit > 0 ? $", then CramCore's under a {Measure.Bytes(limit)} limit" : ""));
        ulong address;
        Interop.ThrowIfFailed(Interop.CramNative.ArenaMap((ulong)size, 0, &address), "Mapping the kernel's comparison region");
        double kernel;
        try
        {
            kernel = Touch((byte*)address, touches, stride);
        }
        finally
        {
            Interop.CramNative.ArenaUnmap(address, (ulong)size);
        }

        double cram, perPage;
        CramFaultService used;
        using (var engine = CramEngine.Create(new CramOptions { FaultService = faultService }))
        using (var region = engine.CreateRegion(size))
        {
            cram = Touch(region.Pointer, touches, stride);
            perPage = (double)engine.GetStats().ResidentBytes / touches;
            used = engine.GetStats().FaultService;
        }
        double limited = 0;
        if (limit > 0)
        {
            using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = limit, FaultService = faultService });
            using var region = engine.CreateRegion(size);
            limited = Touch(region.Pointer, touches, stride);
        }
        var result = new SparseBenchResult(size, stride, touches, Math.Round(kernel, 2), Math.Round(cram, 2), Math.Round(cram / kernel, 3),
            Math.Round(perPage, 1), limit, Math.Round(limited, 2), Math.Round(limited / kernel, 3), BenchSupport.Name(used));
        return ResultPrinter.Print(result, json, "cram bench sparse");
    }

    /// <summary>Mean microseconds of one first-touching 8-byte write, stride apart.</summary>
    private static double Touch(byte* start, long touches, long stride)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (long i = 0; i < touches; i++)
        {
            *(long*)(start + i * stride + 8) = i;
        }
        return Measure.TicksToMicroseconds(Stopwatch.GetTimestamp() - t0) / touches;
    }
}
