using BenchmarkDotNet.Attributes;


namespace CramCore.Benchmarks;

/// <summary>Buddy allocate+free pairs (lock-free bitmap, NBBS tree, spin-locked) and compressed-pool store / load / free.</summary>
[MemoryDiagnoser]
public unsafe class PoolBenchmarks
{
    private const int MaxOrder = 14;
    private const int Objects = 4096;
    private byte* _arena;
    private BitmapBuddy _bitmap = null!;
    private LockFreeBuddy _tree = null!;
    private SpinLockedBuddy _locked = null!;
    private CompressedPool _pool = null!;
    private byte[][] _compressed = null!;
    private uint[] _handles = null!;
    private readonly byte[] _buffer = new byte[4096];

    [GlobalSetup]
    public void Setup()
    {
        _arena = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(4096L << MaxOrder), 4096);
        _bitmap = new BitmapBuddy(_arena, MaxOrder);
        _tree = new LockFreeBuddy(_arena, MaxOrder);
        _locked = new SpinLockedBuddy(_arena, MaxOrder);
        _pool = new CompressedPool(64L << 20, 0, lockMemory: false, NativeEngine.Detached);
        var source = PageSource.Generated();
        var page = new byte[4096];
        var scratch = new byte[4096];
        _compressed = new byte[Objects][];
        for (int i = 0; i < Objects; i++)
        {
            source.Write(page, i, compressibleOnly: true);
            fixed (byte* p = page, c = scratch)
            {
                int n = Interop.Lz4.CompressDefault(p, c, 4096, 4096);
                _compressed[i] = scratch.AsSpan(0, n).ToArray();
            }
        }
        _handles = new uint[Objects];
        StoreAll(); // touch the pool's pages once, so the benchmark sees a warm pool
        FreeAll();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        _bitmap.Dispose();
        _tree.Dispose();
        _locked.Dispose();
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_arena);
    }

    [Benchmark(OperationsPerInvoke = 1024)]
    public void BitmapBuddyAllocFree() => AllocFree(_bitmap.Allocate, _bitmap.Free);

    [Benchmark(OperationsPerInvoke = 1024)]
    public void NbbsTreeAllocFree() => AllocFree(_tree.Allocate, _tree.Free);

    [Benchmark(OperationsPerInvoke = 1024)]
    public void SpinLockedAllocFree() => AllocFree(_locked.Allocate, _locked.Free);

    private delegate byte* Allocate(int order);
    private delegate void Free(byte* block, int order);
    private readonly IntPtr[] _blocks = new IntPtr[1024];

    private void AllocFree(Allocate allocate, Free free)
    {
        for (int i = 0; i < 1024; i++)
        {
            _blocks[i] = (IntPtr)allocate(i & 3);
        }
        for (int i = 0; i < 1024; i++)
        {
            free((byte*)_blocks[i], i & 3);
        }
    }

    /// <summary>Store then free every object (one store + one free per operation).</summary>
    [Benchmark(OperationsPerInvoke = Objects)]
    public void PoolStoreFree()
    {
        StoreAll();
        FreeAll();
    }

    [IterationSetup(Targets = [nameof(PoolLoad)])]
    public void Fill() => StoreAll();

    [IterationCleanup(Targets = [nameof(PoolLoad)])]
    public void Empty() => FreeAll();

    [Benchmark(OperationsPerInvoke = Objects)]
    public int PoolLoad()
    {
        int total = 0;
        for (int i = 0; i < Objects; i++)
        {
            total += _pool.Load(_handles[i], _buffer);
        }
        return total;
    }

    private void StoreAll()
    {
        for (int i = 0; i < Objects; i++)
        {
            fixed (byte* c = _compressed[i])
            {
                _handles[i] = _pool.Store(c, _compressed[i].Length);
            }
        }
    }

    private void FreeAll()
    {
        for (int i = 0; i < Objects; i++)
        {
            _pool.Free(_handles[i]);
        }
    }
}
