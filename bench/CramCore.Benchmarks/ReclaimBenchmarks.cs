using BenchmarkDotNet.Attributes;


namespace CramCore.Benchmarks;

/// <summary>
/// Cost of reclaim per page: dirty compressible pages, zero pages, and clean pages (drop only), with
/// the reclaim worker compressing alone and with a compression helper (CramOptions.CompressionThreads).
/// </summary>
[MemoryDiagnoser]
public unsafe class ReclaimBenchmarks
{
    private const int Pages = 4096;

    [Params(1, 2)]
    public int CompressionThreads { get; set; }

    private CramEngine _engine = null!;
    private CramRegion _region = null!;
    private byte[] _pages = null!;

    [GlobalSetup]
    public void Setup()
    {
        _engine = CramEngine.Create(new CramOptions { FaultAroundPages = 16, CompressionThreads = CompressionThreads });
        _region = _engine.CreateRegion((long)Pages * 4096);
        _pages = new byte[Pages * 4096];
        var source = PageSource.Generated();
        for (int i = 0; i < Pages; i++)
        {
            source.Write(_pages.AsSpan(i * 4096, 4096), i, compressibleOnly: true);
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _engine.Dispose();

    [IterationSetup(Targets = [nameof(ReclaimCompressible)])]
    public void WriteCompressible() => _pages.CopyTo(_region.AsSpan<byte>(0, _pages.Length));

    [IterationSetup(Targets = [nameof(ReclaimZero)])]
    public void WriteZero()
    {
        for (long i = 0; i < Pages; i++)
        {
            *(long*)(_region.Pointer + i * 4096) = 0;
            new Span<byte>(_region.Pointer + i * 4096, 4096).Clear();
        }
    }

    [IterationSetup(Targets = [nameof(ReclaimClean)])]
    public void MakeClean()
    {
        _pages.CopyTo(_region.AsSpan<byte>(0, _pages.Length));
        _region.Reclaim(_region.Length);
        long sum = 0;
        for (long i = 0; i < Pages; i++)
        {
            sum += *(long*)(_region.Pointer + i * 4096); // read back: CLEAN, copy kept
        }
        GC.KeepAlive(sum);
    }

    [Benchmark(OperationsPerInvoke = Pages), InvocationCount(1)]
    public long ReclaimCompressible() => _region.Reclaim(_region.Length);

    [Benchmark(OperationsPerInvoke = Pages), InvocationCount(1)]
    public long ReclaimZero() => _region.Reclaim(_region.Length);

    [Benchmark(OperationsPerInvoke = Pages), InvocationCount(1)]
    public long ReclaimClean() => _region.Reclaim(_region.Length);
}
