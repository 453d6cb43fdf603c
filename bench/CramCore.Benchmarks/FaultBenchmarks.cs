using BenchmarkDotNet.Attributes;


namespace CramCore.Benchmarks;

/// <summary>Cost of one fault, per page: swap-in (LZ4 or uncompressed) and the first write to a clean page.</summary>
[MemoryDiagnoser]
public unsafe class FaultBenchmarks
{
    private const int Pages = 4096;
    private CramEngine _lz4 = null!, _raw = null!;
    private CramRegion _lz4Region = null!, _rawRegion = null!;

    [GlobalSetup]
    public void Setup()
    {
        _lz4 = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
        _raw = CramEngine.Create(new CramOptions { FaultAroundPages = 1, StoreUncompressed = true });
        _lz4Region = _lz4.CreateRegion((long)Pages * 4096);
        _rawRegion = _raw.CreateRegion((long)Pages * 4096);
        var source = PageSource.Generated();
        for (int i = 0; i < Pages; i++)
        {
            source.Write(_lz4Region.AsSpan<byte>((long)i * 4096, 4096), i, compressibleOnly: true);
            source.Write(_rawRegion.AsSpan<byte>((long)i * 4096, 4096), i, compressibleOnly: true);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _lz4.Dispose();
        _raw.Dispose();
    }

    [IterationSetup(Targets = [nameof(SwapInLz4)])]
    public void EvictLz4() => _lz4Region.Reclaim(_lz4Region.Length);

    [IterationSetup(Targets = [nameof(SwapInUncompressed)])]
    public void EvictRaw() => _rawRegion.Reclaim(_rawRegion.Length);

    [IterationSetup(Targets = [nameof(WriteProtectFault)])]
    public void MakeClean()
    {
        _lz4Region.Reclaim(_lz4Region.Length);
        Touch(_lz4Region, write: false); // swapped in read-only: CLEAN and write-protected
    }

    [Benchmark(OperationsPerInvoke = Pages), InvocationCount(1)]
    public long SwapInLz4() => Touch(_lz4Region, write: false);

    [Benchmark(OperationsPerInvoke = Pages), InvocationCount(1)]
    public long SwapInUncompressed() => Touch(_rawRegion, write: false);

    [Benchmark(OperationsPerInvoke = Pages), InvocationCount(1)]
    public long WriteProtectFault() => Touch(_lz4Region, write: true);

    private static long Touch(CramRegion region, bool write)
    {
        long sum = 0;
        for (long i = 0; i < Pages; i++)
        {
            long* w = (long*)(region.Pointer + i * 4096 + 64);
            if (write)
            {
                *w += 1;
            }
            sum += *w;
        }
        return sum;
    }
}
