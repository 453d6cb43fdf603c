using System.Runtime.InteropServices;

namespace CramCore;

/// <summary>
/// A compressed memory tier: owns the native userfaultfd fault service, the page tables, the
/// virtual swap slots with their compressed storage, and background reclaim. Create regions with
/// <see cref="CreateRegion"/>. Thread-safe.
/// </summary>
/// <example>
/// <code>
/// using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 256L &lt;&lt; 20 });
/// using var region = engine.CreateRegion(4L &lt;&lt; 30);
/// Span&lt;long&gt; values = region.AsSpan&lt;long&gt;(0, 1024);
/// values[0] = 42;
/// </code>
/// </example>
public sealed unsafe class CramEngine : IDisposable
{
    private readonly CramOptions _options;
    private readonly nint _native;
    private readonly NativeShared* _shared;
    private readonly SlotTable _slots;
    private readonly CompressedPool _pool;
    private readonly CramRegion?[] _regions = new CramRegion?[NativeShared.MaxRegions];
    private readonly Lock _lock = new();
    private volatile bool _disposed;

    private CramEngine(CramOptions options)
    {
        _options = options;
        long limitPages = options.ResidentLimitBytes / PageTable.PageSize;
        var config = new NativeEngineConfig
        {
            ForcedMode = (uint)options.Userfaultfd,
            SpinMicroseconds = (uint)options.FaultServiceSpinMicroseconds,
            SoftLimitPages = (ulong)limitPages,
            HardLimitPages = limitPages == 0 ? 0 : (ulong)Reclaimer.HardLimitPages(limitPages),
            ThrottleMaxMicroseconds = (uint)options.ThrottleMaxMicroseconds,
            FaultAroundPages = (uint)options.FaultAroundPages,
        };
        nint native;
        NativeShared* shared;
        if (Interop.CramNative.EngineCreate(&config, &native, &shared) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw errno == Interop.ENOMEM
                ? new OutOfMemoryException("Creating the CramCore engine ran out of memory.")
                : CramUnavailableException.FromErrno(errno, options.Userfaultfd);
        }
        _native = native;
        _shared = shared;
        try
        {
            _pool = new CompressedPool(options.PoolArenaBytes, options.CompressedPoolLimitBytes, options.LockPoolMemory, native);
        }
        catch
        {
            Interop.CramNative.EngineDestroy(native); // stop the service thread we just started
            throw;
        }
        shared->HandleDirectory = _pool.HandleDirectory; // before any region exists, so before any fault
        _slots = new SlotTable(shared, _pool);
        Reclaimer = new Reclaimer(this, shared, _slots, options);
        Reclaimer.StartBackground();
        CramMetrics.Register(this);
    }

    /// <summary>Creates an engine and starts its fault service.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CramUnavailableException">userfaultfd cannot be used here; the message says why and how to fix it.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux x64.</exception>
    /// <exception cref="DllNotFoundException">The native helper or the system liblz4.so.1 cannot be loaded; the message says what to install or set.</exception>
    /// <exception cref="InvalidOperationException"><see cref="CramOptions.LockPoolMemory"/> is set but the pool's memory cannot be locked; the message says which limit to raise.</exception>
    public static CramEngine Create(CramOptions? options = null)
    {
        NativeLibraryResolver.ThrowIfUnsupportedPlatform();
        options = (options ?? new CramOptions()).Clone();
        options.Validate();
        if (options.NativeLibraryPath is not null)
        {
            NativeLibraryResolver.SetOverride(options.NativeLibraryPath);
        }
        return new CramEngine(options);
    }

    /// <summary>The options the engine was created with (a copy).</summary>
    public CramOptions Options => _options.Clone();

    /// <summary>The userfaultfd mode the engine obtained.</summary>
    public UserfaultfdMode UserfaultfdMode => (UserfaultfdMode)_shared->UffdMode;

    internal nint NativeHandle => _native;
    internal Reclaimer Reclaimer { get; }
    internal NativeShared* Shared => _shared;
    internal SlotTable Slots => _slots;
    internal CompressedPool Pool => _pool;

    /// <summary>
    /// Compacts the compressed pool: moves stored pages out of sparsely used pool pages and gives
    /// those back. Background reclaim does this on its own when a quarter of the pool is slack.
    /// Returns the bytes given back.
    /// </summary>
    public long CompactPool()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _slots.DrainStale();
        return _pool.Compact();
    }

    internal void CompactPoolIfFragmented()
    {
        if (_pool.SlackBytes > Math.Max(16L << 20, _pool.UsedBytes / 4))
        {
            _pool.Compact();
        }
    }

    /// <summary>
    /// Reserves a region of <paramref name="bytes"/> (rounded up to 4096) of virtual memory. Only
    /// touched pages use memory; a 64 GiB region on a smaller machine is fine.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is not positive.</exception>
    public CramRegion CreateRegion(long bytes)
    {
        if (bytes <= 0 || bytes > (1L << 46))
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A region must be between 1 byte and 64 TiB.");
        }
        long length = (bytes + PageTable.PageSize - 1) & ~(long)(PageTable.PageSize - 1);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            uint id;
            if (Interop.CramNative.RegionCreate(_native, (ulong)length, &id) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Interop.EMFILE)
                {
                    throw new InvalidOperationException($"An engine holds at most {NativeShared.MaxRegions} regions; dispose some first.");
                }
                if (errno == Interop.ENOMEM)
                {
                    throw new OutOfMemoryException($"Reserving a region of {length} bytes failed: no address space (check `ulimit -v` and vm.overcommit_memory).");
                }
                throw Interop.GetExceptionForLastError($"Creating a region of {length} bytes");
            }
            NativeRegionDesc* desc = (NativeRegionDesc*)((byte*)_shared + sizeof(NativeShared)) + id;
            var region = new CramRegion(this, id, (byte*)desc->Base, (ulong*)desc->Pte, length);
            Volatile.Write(ref _regions[id], region);
            return region;
        }
    }

    internal CramRegion? RegionById(uint id) => id < NativeShared.MaxRegions ? Volatile.Read(ref _regions[id]) : null;

    internal IEnumerable<CramRegion> LiveRegions()
    {
        foreach (CramRegion? r in _regions)
        {
            if (r is not null)
            {
                yield return r;
            }
        }
    }

    internal void RemoveRegion(CramRegion region)
    {
        lock (_lock)
        {
            if (_disposed || RegionById(region.Id) != region)
            {
                return;
            }
            Detach(region);
        }
    }

    /// <summary>Takes a region out of reclaim and the service, frees its pages and slots; under <see cref="_lock"/>.</summary>
    private void Detach(CramRegion region)
    {
        Reclaimer.ForgetRegion(region, () => TearDown(region));
        region.MarkDisposed();
        Volatile.Write(ref _regions[region.Id], null);
    }

    /// <summary>Fences the service out, frees the region's slots, fixes the counters, unmaps.</summary>
    private void TearDown(CramRegion region)
    {
        Interop.ThrowIfFailed(Interop.CramNative.RegionDeactivate(_native, region.Id), "Deactivating a region");
        _slots.DrainStale();
        ulong resident = 0, populated = 0, zeroCopies = 0;
        ulong* ptes = region.PageTableEntries;
        for (ulong i = 0; i < region.PageCount; i++)
        {
            ulong p = ptes[i];
            PageState state = PageTable.State(p);
            if (state == PageState.Empty)
            {
                continue;
            }
            populated++;
            if (PageTable.IsResident(state))
            {
                resident++;
            }
            if (PageTable.HoldsSlot(state))
            {
                if (PageTable.Slot(p) == PageTable.ZeroSlot)
                {
                    zeroCopies++;
                }
                else
                {
                    _slots.Free(PageTable.Slot(p));
                }
            }
        }
        Interlocked.Add(ref _shared->Stats.ResidentPages, unchecked(0UL - resident));
        Interlocked.Add(ref _shared->Stats.PopulatedPages, unchecked(0UL - populated));
        Interlocked.Add(ref _shared->Stats.ZeroCopies, unchecked(0UL - zeroCopies));
        Interop.ThrowIfFailed(Interop.CramNative.RegionDestroy(_native, region.Id), "Destroying a region");
    }

    /// <summary>Takes a snapshot of the engine's counters.</summary>
    public CramStats GetStats()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _slots.DrainStale();
        ref NativeStats s = ref _shared->Stats;
        PoolStats pool = _pool.GetStats();
        int regions = 0;
        foreach (CramRegion? r in _regions)
        {
            regions += r is null ? 0 : 1;
        }
        return new CramStats
        {
            LogicalBytes = Pages(s.PopulatedPages),
            ResidentBytes = Pages(s.ResidentPages),
            PeakResidentBytes = Pages(s.PeakResidentPages),
            StoredBytes = _slots.StoredBytes,
            SameFilledPages = _slots.SameFilledSlots + (long)Volatile.Read(ref s.ZeroCopies),
            ZeroFillFaults = (long)s.FaultsZero,
            RefaultsLz4 = (long)s.FaultsSwapInLz4,
            RefaultsSameFilled = (long)s.FaultsSwapInSame,
            RefaultsUncompressed = (long)s.FaultsSwapInRaw,
            WriteProtectFaults = (long)s.FaultsWriteProtect,
            CancelledEvictions = (long)s.FaultsWriteProtectCancel,
            SpuriousFaults = (long)s.FaultsSpurious,
            ThrottledFaults = (long)s.ThrottleWaits,
            Evictions = (long)s.EvictedPagesTotal,
            CompressedPages = Reclaimer.CompressedPages,
            IncompressiblePages = Reclaimer.IncompressiblePages,
            EstimatedIncompressiblePages = Reclaimer.EstimatedIncompressiblePages,
            MispredictedCompressiblePages = Reclaimer.MispredictedCompressiblePages,
            EstimatorAudits = Reclaimer.EstimatorAudits,
            FalseIncompressiblePages = Reclaimer.FalseIncompressiblePages,
            ServiceErrors = (long)s.ServiceErrors,
            FaultServiceBusyTime = TimeSpan.FromTicks((long)(s.ServiceBusyNs / 100)),
            UserfaultfdMode = UserfaultfdMode,
            Regions = regions,
            PoolBytes = pool.UsedBytes,
            PoolCompactedPages = pool.CompactedPages,
            PoolFullRejections = pool.FullRejections,
            PoolFragmentation = pool.Fragmentation,
            PoolClasses = [.. pool.Classes.Select(c => new CramPoolClass(c.ObjectSize, c.ZspagePages, c.Objects, c.Capacity))],
        };

        static long Pages(ulong pages) => (long)Volatile.Read(ref pages) << PageTable.PageShift;
    }

    /// <summary>
    /// Stops background reclaim and the fault service, unmaps every region and frees all storage.
    /// Threads may be idle in regions, but none may access them during or after this.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            Reclaimer.Stop();
            foreach (CramRegion? region in _regions)
            {
                if (region is not null)
                {
                    Detach(region);
                }
            }
            _disposed = true;
            CramMetrics.Unregister(this);
            // No region is active, so the service no longer reads slots; free them while the
            // shared block (which EngineDestroy unmaps) is still there.
            _slots.Dispose();
            _pool.Dispose();
            Reclaimer.Dispose();
            Interop.ThrowIfFailed(Interop.CramNative.EngineDestroy(_native), "Stopping the fault service");
        }
    }
}
