using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;


namespace CramCore.Benchmarks;

/// <summary>
/// The compressibility estimator per instruction-set kernel, against an LZ4 trial (what reclaim
/// does without the estimator) and the same-filled check, on 1024 pages of the generated mix
/// (text, records, numeric, zero, incompressible) — 4 MiB, so the pages are cache-warm; cold-page
/// figures come from <c>cram estimate</c>. Times are per page.
/// </summary>
public unsafe class EstimatorBenchmarks
{
    private const int Pages = 1024;
    private byte* _pages;
    private byte* _scratch;

    private PageKernelIsa _isa;

    [Params("Scalar", "Vector128", "Vector256", "Vector512")]
    public string Kernel { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        _isa = Enum.Parse<PageKernelIsa>(Kernel);
        _pages = (byte*)NativeMemory.AlignedAlloc(Pages * 4096, 64);
        _scratch = (byte*)NativeMemory.Alloc(4096);
        var source = PageSource.Generated();
        for (int i = 0; i < Pages; i++)
        {
            source.Write(new Span<byte>(_pages + (long)i * 4096, 4096), i);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_pages);
        NativeMemory.Free(_scratch);
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public int Estimate()
    {
        int sum = 0;
        for (int i = 0; i < Pages; i++)
        {
            sum += PageEstimator.Estimate(_pages + (long)i * 4096, 3072, _isa).EstimatedSize;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public int SampleKernel()
    {
        int sum = 0;
        for (int i = 0; i < Pages; i++)
        {
            sum += PageKernels.Sample(_pages + (long)i * 4096, _isa).Run;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public int SameFilledCheck()
    {
        int sum = 0;
        for (int i = 0; i < Pages; i++)
        {
            sum += SameFilled.Check(_pages + (long)i * 4096, out _, _isa) ? 1 : 0;
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public int Lz4Trial()
    {
        // Independent of Kernel; measured with each so the ratio is read off one table.
        int sum = 0;
        for (int i = 0; i < Pages; i++)
        {
            sum += Interop.Lz4.CompressDefault(_pages + (long)i * 4096, _scratch, 4096, 3072);
        }
        return sum;
    }
}
