using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

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
    private readonly BackingFile? _file;
    private readonly Writeback? _writeback;
    private readonly Reaper _reaper;
    private readonly CramNode? _node;
    private readonly ConcurrentQueue<CramTierEventArgs> _pendingEvents = new();
    private readonly Lock _eventLock = new(); // events are raised one at a time, in order
    private long _checksumFailuresSeen, _readErrorsSeen, _serviceErrorsSeen, _throttledSeen, _lastThrottleTick;
    private bool _throttling;
    private long _residentLimitBytes;
    private readonly RegionTable _regions = new();
    private readonly ReclaimWorker _worker;
    private readonly MemoryBudget _budget;
    private readonly Prefetcher _prefetcher;
    private readonly Lock _lock = new();
    private readonly CramMetrics _metrics;
    private volatile bool _disposed;

    /// <param name="options">Validated options (a copy).</param>
    /// <param name="pageOperations">Test hook: wraps the page operations reclaim uses, to inject failures.</param>
    /// <param name="meterFactory">Where the instruments go (null: the process-wide meter).</param>
    private CramEngine(CramOptions options, Func<IPageOperations, IPageOperations>? pageOperations, IMeterFactory? meterFactory)
    {
        _options = options;
        long limitPages = options.ResidentLimitBytes / SharedLayout.PageSize;
        _residentLimitBytes = limitPages * SharedLayout.PageSize;
        var config = new NativeEngineConfig
        {
            ForcedMode = (uint)options.Userfaultfd,
            SpinUs = (uint)options.FaultServiceSpin.TotalMicroseconds,
            SoftLimitPages = (ulong)limitPages,
            HardLimitPages = limitPages == 0 ? 0 : (ulong)ReclaimWorker.HardLimitPages(limitPages),
            ThrottleMaxUs = (uint)options.ThrottleMax.TotalMicroseconds,
            FaultAroundPages = (uint)options.FaultAroundPages,
        };
        nint native;
        NativeShared* shared;
        if (Interop.CramNative.EngineCreate(&config, &native, &shared) != 0)
        {
            Errno errno = Interop.LastErrno();
            throw errno == Errno.ENOMEM
                ? new OutOfMemoryException("Creating the CramCore engine ran out of memory.")
                : CramUnavailableException.FromErrno(errno, options.Userfaultfd);
        }
        _native = native;
        _shared = shared;
        try
        {
            _pool = new CompressedPool(options.PoolArenaBytes, options.CompressedPoolLimitBytes, options.LockPoolMemory, native);
            _file = options.BackingFile is null ? null : BackingFile.Open(options.BackingFile, options.KeepBackingFile, options.BackingFileLimitBytes);
        }
        catch
        {
            _pool?.Dispose();
            Interop.CramNative.EngineDestroy(native); // stop the service thread we just started
            GC.SuppressFinalize(this);
            throw;
        }
        // Both directories and the file are published before any region exists, so before any fault.
        shared->HandleDirectory = _pool.HandleDirectory;
        if (_file is not null)
        {
            shared->BackingFd = _file.Descriptor;
            shared->BackingDirect = _file.Direct ? 1u : 0u;
        }
        // Nothing the background thread reaches may hold the engine itself, or an engine nobody
        // references could never be finalized: events go through the queue, ticks through a weak
        // reference.
        ConcurrentQueue<CramTierEventArgs> pending = _pendingEvents;
        Action<CramTierEventKind, string> enqueue = (kind, message) => pending.Enqueue(new CramTierEventArgs(kind, message));
        var self = new WeakReference<CramEngine>(this);
        Action afterTick = () =>
        {
            if (self.TryGetTarget(out CramEngine? engine))
            {
                engine.RaisePendingEvents();
                engine._metrics.RecordSwapIns(engine);
            }
        };
        _node = options.CramDevice is null ? null : new CramNode(native, shared, options, enqueue);
        _slots = new SlotTable(shared, _pool, _file, _node);
        _reaper = new Reaper(native, _slots);
        if (_file is not null)
        {
            _writeback = new Writeback(native, _slots, options);
            _writeback.StateChanged += enqueue;
        }
        IPageOperations operations = new NativePageOperations(native, _slots);
        Reclaimer = new Reclaimer(native, shared, _regions, _slots, pageOperations?.Invoke(operations) ?? operations, options, _reaper, _writeback, enqueue);
        CompressedPool pool = _pool;
        SlotTable slots = _slots;
        Reclaimer reclaimer = Reclaimer;
        BackingFile? file = _file;
        nint sharedAddress = (nint)shared;
        _budget = new MemoryBudget(native, shared, Reclaimer, options.MemoryLimitBytes, options.MemoryLimitWait, limitPages,
            () => pool.UsedBytes, () => MetadataBytesOf((NativeShared*)sharedAddress, slots, pool, reclaimer, file), enqueue);
        _budget.Update(); // the limit the memory limit allows, before any fault
        _prefetcher = new Prefetcher(PrefetchStep);
        _metrics = CramMetrics.For(meterFactory); // before the worker's first tick, which records into it
        _metrics.Register(this);
        _worker = new ReclaimWorker(native, shared, Reclaimer, _budget, _file is not null || _node is not null, afterTick);
        _worker.Start();
    }

    /// <summary>Creates an engine and starts its fault service.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CramUnavailableException">userfaultfd cannot be used here; the message says why and how to fix it.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux x64.</exception>
    /// <exception cref="DllNotFoundException">The native helper or the system liblz4.so.1 cannot be loaded; the message says what to install or set.</exception>
    /// <exception cref="InvalidOperationException"><see cref="CramOptions.LockPoolMemory"/> is set but the pool's memory cannot be locked; the message says which limit to raise.</exception>
    public static CramEngine Create(CramOptions? options = null)
    {
        return CreateWithPageOperations(options, pageOperations: null);
    }

    /// <summary>
    /// Creates an engine whose instruments live on a <c>CramCore</c> meter from
    /// <paramref name="meterFactory"/> (the one dependency injection provides, or a test's), reporting
    /// this engine only, instead of on the process-wide meter.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="meterFactory"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CramUnavailableException">userfaultfd cannot be used here; the message says why and how to fix it.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux x64.</exception>
    public static CramEngine Create(CramOptions? options, IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        return CreateWithPageOperations(options, pageOperations: null, meterFactory);
    }

    /// <summary>Creates an engine whose reclaim goes through <paramref name="pageOperations"/> (tests inject failures with it).</summary>
    internal static CramEngine CreateWithPageOperations(CramOptions? options, Func<IPageOperations, IPageOperations>? pageOperations, IMeterFactory? meterFactory = null)
    {
        NativeLibraryResolver.ThrowIfUnsupportedPlatform();
        options = (options ?? new CramOptions()).Clone();
        options.Validate();
        options.Resolve();
        if (options.NativeLibraryPath is not null)
        {
            NativeLibraryResolver.SetOverride(options.NativeLibraryPath);
        }
        return new CramEngine(options, pageOperations, meterFactory);
    }

    /// <summary>
    /// Something happened in the storage tiers that an operator should know: the pool is full in
    /// ghost mode, writeback paused on a write error or resumed, the backing file is full, a stored
    /// page failed its checksum or could not be read, faults started or stopped waiting for reclaim
    /// (throttling), the fault service hit an error. Raised on the engine's background thread (or
    /// on the thread that called <see cref="CramRegion.Reclaim"/>), one at a time and in order,
    /// outside the engine's locks; keep handlers short. A handler must not dispose the engine:
    /// <see cref="Dispose"/> waits for the background thread the handler may be running on. Counters for all of these are in <see cref="GetStats"/>.
    /// </summary>
    public event EventHandler<CramTierEventArgs>? TierEvent;

    private void Enqueue(CramTierEventKind kind, string message) => _pendingEvents.Enqueue(new CramTierEventArgs(kind, message));

    /// <summary>
    /// Releases an engine that became unreachable without <see cref="Dispose"/>: stops its threads,
    /// unmaps its regions (none can be in use: a live region keeps its engine reachable) and frees
    /// its storage.
    /// </summary>
    ~CramEngine()
    {
        try
        {
            Dispose();
        }
        catch (Exception)
        {
            // A finalizer must not throw; whatever failed to close goes with the process.
        }
    }

    /// <summary>Raises queued events, and events for what the fault service counted (checksum failures, read errors, service errors, throttling starting and stopping); logs each to <see cref="CramOptions.Logger"/>. Never under an engine lock.</summary>
    internal void RaisePendingEvents()
    {
        if (_disposed)
        {
            return;
        }
        lock (_eventLock) // one thread at a time: the counters below, and the handlers in order
        {
            ref NativeStats s = ref _shared->Stats;
            long checksum = (long)Volatile.Read(ref s.ChecksumFailures), read = (long)Volatile.Read(ref s.ReadErrors);
            if (checksum > _checksumFailuresSeen)
            {
                Enqueue(CramTierEventKind.ChecksumFailure, $"{checksum - _checksumFailuresSeen} stored page(s) failed their checksum; they were not mapped and the faulting threads got SIGBUS ({checksum} in all).");
                _checksumFailuresSeen = checksum;
            }
            if (read > _readErrorsSeen)
            {
                Enqueue(CramTierEventKind.ReadError, $"{read - _readErrorsSeen} read(s) of the backing file failed twice; those pages were not mapped and the faulting threads got SIGBUS ({read} in all).");
                _readErrorsSeen = read;
            }
            long service = (long)Volatile.Read(ref s.ServiceErrors), throttled = (long)Volatile.Read(ref s.ThrottleWaits);
            if (service > _serviceErrorsSeen)
            {
                Enqueue(CramTierEventKind.ServiceError, $"{service - _serviceErrorsSeen} fault-service system call(s) failed ({service} in all); the pages involved fault again. Please report it with the engine's stats.");
                _serviceErrorsSeen = service;
            }
            long now = Environment.TickCount64;
            if (throttled > _throttledSeen)
            {
                if (!_throttling)
                {
                    _throttling = true;
                    Enqueue(CramTierEventKind.ThrottlingStarted, $"Faults are waiting for reclaim: resident memory is at the hard limit ({Volatile.Read(ref _residentLimitBytes) >> 20} MiB limit), so writers are slowed, by at most {_options.ThrottleMax.TotalMilliseconds} ms a fault. Raise ResidentLimitBytes or write less at once.");
                }
                _throttledSeen = throttled;
                _lastThrottleTick = now;
            }
            else if (_throttling && now - _lastThrottleTick >= ThrottleQuietMilliseconds)
            {
                _throttling = false;
                Enqueue(CramTierEventKind.ThrottlingStopped, "No fault has waited for reclaim for a second: throttling stopped.");
            }
            while (_pendingEvents.TryDequeue(out CramTierEventArgs? e))
            {
                Log(e);
                TierEvent?.Invoke(this, e);
            }
        }
    }

    /// <summary>How long without a throttled fault ends throttling (<see cref="CramTierEventKind.ThrottlingStopped"/>).</summary>
    internal const long ThrottleQuietMilliseconds = 1000;

    /// <summary>The event to <see cref="CramOptions.Logger"/>, if any: trouble at Warning or Error, its end at Information.</summary>
    private void Log(CramTierEventArgs e)
    {
        ILogger? logger = _options.Logger;
        if (logger is null)
        {
            return;
        }
        LogLevel level = e.Kind switch
        {
            CramTierEventKind.ChecksumFailure or CramTierEventKind.ReadError or CramTierEventKind.ServiceError => LogLevel.Error,
            CramTierEventKind.PoolFull or CramTierEventKind.WritebackPaused or CramTierEventKind.BackingFileFull or CramTierEventKind.CramPressureHigh
                or CramTierEventKind.CramControlPlaneLost or CramTierEventKind.ThrottlingStarted or CramTierEventKind.MemoryLimitExceeded => LogLevel.Warning,
            _ => LogLevel.Information,
        };
        try
        {
            logger.Log(level, new EventId((int)e.Kind + 1, e.Kind.ToString()), "{Message}", e.Message);
        }
        catch (Exception)
        {
            // A failing logger must not take reclaim down with it.
        }
    }

    /// <summary>
    /// The resident limit asked of background reclaim (bytes; 0: none). Starts as
    /// <see cref="CramOptions.ResidentLimitBytes"/>; setting it takes effect at once (lowering it
    /// starts reclaim, raising or removing it lets faults stop waiting). With
    /// <see cref="CramOptions.MemoryLimitBytes"/>, reclaim holds the lower of this and what the memory
    /// limit leaves (<see cref="CramStats.ResidentTargetBytes"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative, between 0 and 64 pages (262144 bytes), or above <see cref="CramOptions.MemoryLimitBytes"/>.</exception>
    public long ResidentLimitBytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return Volatile.Read(ref _residentLimitBytes);
        }
        set
        {
            if (value < 0 || (value > 0 && value < 64 * SharedLayout.PageSize))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The resident limit is 0 (none) or at least 64 pages (262144 bytes).");
            }
            if (_options.MemoryLimitBytes > 0 && value > _options.MemoryLimitBytes)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, $"The resident limit cannot be above MemoryLimitBytes ({_options.MemoryLimitBytes}), which also counts the pool and metadata; use 0 to let the memory limit set it.");
            }
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                long pages = value / SharedLayout.PageSize;
                _budget.SetUserLimit(pages); // the service sees it (or what the memory limit leaves, if lower) at once
                _worker.LimitChanged();
                Volatile.Write(ref _residentLimitBytes, pages * SharedLayout.PageSize);
            }
        }
    }

    /// <summary>The options the engine was created with (a copy).</summary>
    /// <exception cref="ObjectDisposedException">The engine was disposed.</exception>
    public CramOptions Options
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _options.Clone();
        }
    }

    /// <summary>The userfaultfd mode the engine obtained.</summary>
    /// <exception cref="ObjectDisposedException">The engine was disposed.</exception>
    public UserfaultfdMode UserfaultfdMode
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return (UserfaultfdMode)_shared->UffdMode; // the shared block is unmapped by Dispose
        }
    }

    /// <summary>
    /// CramCore's own memory besides resident pages and the pool, as the memory limit counts it: the
    /// page tables in use, the fault-in log, the slot and handle tables, the zspages' handle arrays,
    /// reclaim's and writeback's queues and the backing file's two segment buffers.
    /// </summary>
    internal long MetadataBytes() => MetadataBytesOf(_shared, _slots, _pool, Reclaimer, _file);

    private static long MetadataBytesOf(NativeShared* shared, SlotTable slots, CompressedPool pool, Reclaimer reclaimer, BackingFile? file) =>
        ((long)Volatile.Read(ref shared->Stats.PageTablePages) << SharedLayout.PageShift)
        + (long)SharedLayout.FaultLogSize * sizeof(ulong)
        + slots.MetadataBytes + pool.MetadataBytes + reclaimer.MetadataBytes
        + (slots.PoolOrder?.CapacityBytes ?? 0)
        + (file is null ? 0 : 2L * BackingFile.SegmentBytes);

    internal MemoryBudget Budget => _budget;

    internal nint NativeHandle => _native;
    internal Reclaimer Reclaimer { get; }
    internal NativeShared* Shared => _shared;
    internal SlotTable Slots => _slots;
    internal CompressedPool Pool => _pool;
    internal BackingFile? File => _file;

    /// <summary>The CRAM node's upkeep now, with a device scan (budget lease, usage, pressure, moving out, TRIMs); returns the device's physical usage (benchmarks, tests).</summary>
    internal long TickCramNode() => Maintenance(() =>
    {
        _node?.Tick(_regions, _slots, forceScan: true);
        return _node?.PhysicalUsageBytes ?? 0;
    });

    internal RegionTable Regions => _regions;

    /// <summary>Runs <paramref name="action"/> under the maintenance lock, after freeing what faults released; default once the engine is stopping.</summary>
    private T Maintenance<T>(Func<T> action)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        T result = default!;
        Reclaimer.Exclusive(() =>
        {
            _reaper.Drain();
            result = action();
        });
        RaisePendingEvents();
        return result;
    }

    /// <summary>
    /// Compacts the compressed pool: moves stored pages out of sparsely used pool pages and gives
    /// those back. Background reclaim does this on its own when a quarter of the pool is slack.
    /// Returns the bytes given back.
    /// </summary>
    public long CompactPool() => Maintenance(_pool.Compact);

    /// <summary>Compacts the backing file's sparse segments now, whatever its dead share (tests). Returns segments emptied.</summary>
    internal int CompactBackingFile() => Maintenance(() => _writeback?.CompactSegments(force: true) ?? 0);

    /// <summary>Runs the reaper's zombie sweep now (tests; the worker runs it every ReclaimWorker.SweepInterval). Returns zombies freed.</summary>
    internal int SweepZombies() => Maintenance(_reaper.Sweep);

    /// <summary>Writes back at least <paramref name="bytes"/> stored bytes now (benchmarks, tests), whatever the watermarks. Returns pages moved.</summary>
    internal long WriteBack(long bytes) => Maintenance(() => _writeback?.Run(bytes) ?? 0);

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
        long length = (bytes + SharedLayout.PageSize - 1) & ~(long)(SharedLayout.PageSize - 1);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            uint id;
            ulong baseAddress, pageTable;
            if (Interop.CramNative.RegionCreate(_native, (ulong)length, &id, &baseAddress, &pageTable) != 0)
            {
                Errno errno = Interop.LastErrno();
                if (errno == Errno.EMFILE)
                {
                    throw new InvalidOperationException($"An engine holds at most {SharedLayout.MaxRegions} regions; dispose some first.");
                }
                if (errno == Errno.ENOMEM)
                {
                    throw new OutOfMemoryException($"Reserving a region of {length} bytes failed: no address space (check `ulimit -v` and vm.overcommit_memory).");
                }
                throw Interop.GetExceptionForErrno(errno, $"Creating a region of {length} bytes");
            }
            var mapping = new RegionMapping(id, (byte*)baseAddress, (ulong*)pageTable, length);
            _regions.Add(mapping);
            return new CramRegion(this, mapping);
        }
    }

    /// <summary>A region's census (<see cref="CramRegion.GetStats"/>); under the engine's managed lock, so the region cannot be destroyed meanwhile, while faults and reclaim go on.</summary>
    internal CramRegionStats RegionStats(RegionMapping region)
    {
        NativeRegionCensus c;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed || region.Detached, typeof(CramRegion));
            Interop.ThrowIfFailed(Interop.CramNative.RegionCensus(_native, region.Id, &c), "Counting a region's pages");
        }
        return new CramRegionStats
        {
            LogicalBytes = (long)c.PopulatedPages << SharedLayout.PageShift,
            ResidentBytes = (long)c.ResidentPages << SharedLayout.PageShift,
            EvictedBytes = (long)c.EvictedPages << SharedLayout.PageShift,
            CleanCopyBytes = (long)c.CleanCopyPages << SharedLayout.PageShift,
            PlacedBytes = (long)c.PlacedPages << SharedLayout.PageShift,
            SameFilledPages = (long)c.SameFilledPages,
            StoredBytes = (long)c.StoredBytes,
            FirstTouchFaults = (long)c.FaultsFirstTouch,
            SwapInFaults = (long)c.FaultsSwapin,
            WriteProtectFaults = (long)c.FaultsWriteProtect,
        };
    }

    /// <summary>
    /// Applies advice to pages [start, end) of a region (<see cref="CramRegion.Advise"/>, which
    /// checks the range): prefetch is queued, a discard happens now, the other hints go to reclaim.
    /// </summary>
    internal void Advise(RegionMapping region, ulong start, ulong end, CramAdvice advice)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        switch (advice)
        {
            case CramAdvice.WillNeed:
                _prefetcher.Enqueue(region, start, end);
                break;
            case CramAdvice.DontNeed:
                Reclaimer.Advise(region, start, end, CramAdvice.Normal, ListResident(region)); // hints of discarded pages go with them
                Discard(region, start, end);
                break;
            default:
                Reclaimer.Advise(region, start, end, advice, ListResident(region));
                break;
        }
        RaisePendingEvents();
    }

    /// <summary>Pages of a region that reclaim can take (DIRTY or CLEAN), through the native walk of the touched blocks.</summary>
    private Reclaimer.ListPages ListResident(RegionMapping region) => (ulong start, ulong end, ulong[] pages, out ulong next) =>
    {
        const uint resident = 1u << (int)PageState.Dirty | 1u << (int)PageState.Clean;
        int found;
        ulong after;
        fixed (ulong* p = pages)
        {
            Interop.ThrowIfFailed(Interop.CramNative.FindPages(_native, region.Id, start, end, resident, p, pages.Length, &found, &after), "Listing a region's resident pages");
        }
        next = after;
        return found;
    };

    /// <summary>Discards pages [start, end) of a region (CramNative_DiscardPages), with reclaim paused as the native call requires.</summary>
    private void Discard(RegionMapping region, ulong start, ulong end)
    {
        using (Reclaimer.Pause())
        {
            ObjectDisposedException.ThrowIf(Reclaimer.Stopping || region.Detached, typeof(CramRegion));
            ulong discarded;
            int rc = Interop.CramNative.DiscardPages(_native, region.Id, start, end, &discarded);
            Errno errno = rc == 0 ? Errno.None : Interop.LastErrno();
            _reaper.Drain(); // free the discarded copies now
            if (rc != 0)
            {
                throw Interop.GetExceptionForErrno(errno, "Discarding pages");
            }
        }
    }

    /// <summary>One piece of a prefetch (<see cref="Prefetcher.Step"/>), with reclaim paused so the region cannot be torn down under the native call.</summary>
    private bool PrefetchStep(RegionMapping region, ref ulong next, ulong end)
    {
        using (Reclaimer.Pause())
        {
            if (Reclaimer.Stopping || region.Detached)
            {
                return false;
            }
            ulong after, brought;
            int atLimit;
            if (Interop.CramNative.PrefetchPages(_native, region.Id, next, end, &after, &brought, &atLimit) != 0)
            {
                return false; // counted as a service error natively; the pages come in on their own faults
            }
            next = after;
            return atLimit == 0 && after < end;
        }
    }

    /// <summary>Completes once every prefetch queued so far is finished (tests, benchmarks).</summary>
    internal Task PrefetchIdle() => _prefetcher.WhenIdle();

    internal void RemoveRegion(RegionMapping region)
    {
        lock (_lock)
        {
            if (_disposed || _regions.Get(region.Id) != region)
            {
                return;
            }
            Detach(region);
        }
    }

    /// <summary>
    /// Takes a region out of reclaim and the service and frees its pages and slots; under
    /// <see cref="_lock"/>, with reclaim paused so no pass is using the region.
    /// </summary>
    private void Detach(RegionMapping region)
    {
        using (Reclaimer.Pause())
        {
            _regions.Remove(region); // later passes cannot find it
            region.MarkDetached();
            // Fence the service out, then drop the region's queued pages (the log holds no more).
            Interop.ThrowIfFailed(Interop.CramNative.RegionDeactivate(_native, region.Id), "Deactivating a region");
            Reclaimer.ForgetRegion(region.Id);
            // Native: counters, every slot still named pushed on the stale list, unmap.
            Interop.ThrowIfFailed(Interop.CramNative.RegionDestroy(_native, region.Id), "Destroying a region");
            _reaper.Drain();
        }
    }

    /// <summary>The native swap-in buckets as far as the metric <c>cramcore.swapin.duration</c> has recorded them (CramMetrics locks it).</summary>
    internal long[] SwapInsRecorded { get; } = new long[SharedLayout.SwapinLatencyBuckets];

    /// <summary>The native swap-in latency buckets, copied.</summary>
    internal CramLatencyHistogram SwapInLatency()
    {
        var counts = new long[SharedLayout.SwapinLatencyBuckets];
        ulong* buckets = _shared->Stats.SwapinLatencyUsLog2;
        for (int b = 0; b < counts.Length; b++)
        {
            counts[b] = (long)Volatile.Read(ref buckets[b]);
        }
        return new CramLatencyHistogram(counts);
    }

    /// <summary>Takes a snapshot of the engine's counters.</summary>
    public CramStats GetStats()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Reclaimer.TryDrain();
        ref NativeStats s = ref _shared->Stats;
        PoolStats pool = _pool.GetStats();
        ReclaimCounters reclaim = Reclaimer.Counters;
        long resident = Pages(s.ResidentPages), metadata = MetadataBytes();
        return new CramStats
        {
            LogicalBytes = Pages(s.PopulatedPages),
            ResidentBytes = resident,
            PeakResidentBytes = Pages(s.PeakResidentPages),
            StoredBytes = _slots.StoredBytes,
            CleanCopyBytes = (long)Volatile.Read(ref s.CleanCopyBytes),
            CleanCopyPages = (long)Volatile.Read(ref s.CleanCopyPages),
            CleanCopiesReleasedBytes = Reclaimer.CleanCopiesReleased,
            SameFilledPages = _slots.SameFilledSlots + reclaim.ZeroCopiesPublished - (long)Volatile.Read(ref s.ZeroCopiesReleased),
            ZeroFillFaults = (long)s.FaultsZero,
            RefaultsLz4 = (long)s.FaultsSwapinLz4,
            ReadaheadPages = (long)s.ReadaheadPages,
            PrefetchedPages = (long)s.PrefetchedPages,
            DiscardedPages = (long)s.DiscardedPages,
            WorkingSetActivations = (long)s.WorkingsetActivations,
            WorkingSetDemotions = Reclaimer.Demotions,
            SwapInLatency = SwapInLatency(),
            RefaultsSameFilled = (long)s.FaultsSwapinSame,
            RefaultsUncompressed = (long)s.FaultsSwapinRaw,
            WriteProtectFaults = (long)s.FaultsWp,
            CancelledEvictions = (long)s.FaultsWpCancel,
            SpuriousFaults = (long)s.FaultsSpurious,
            ThrottledFaults = (long)s.ThrottleWaits,
            MemoryUsedBytes = resident + pool.UsedBytes + metadata, // the budget's sum, of this snapshot's parts
            MetadataBytes = metadata,
            ResidentTargetBytes = _budget.LimitPages << SharedLayout.PageShift,
            MemoryLimitExceeded = _budget.Exceeded,
            MemoryLimitExceededEpisodes = _budget.ExceededEpisodes,
            MemoryLimitWaits = (long)Volatile.Read(ref s.MemoryLimitWaits),
            Evictions = (long)s.EvictedPagesTotal,
            CompressedPages = reclaim.CompressedPages,
            IncompressiblePages = reclaim.IncompressiblePages,
            UncompressedStoredPages = reclaim.UncompressedStoredPages,
            EstimatedIncompressiblePages = reclaim.EstimatedIncompressiblePages,
            MispredictedCompressiblePages = reclaim.MispredictedCompressiblePages,
            EstimatorAudits = reclaim.EstimatorAudits,
            FalseIncompressiblePages = reclaim.FalseIncompressiblePages,
            ServiceErrors = (long)s.ServiceErrors,
            RefaultsFromFile = (long)s.FaultsSwapinFile,
            ChecksumFailures = (long)s.ChecksumFailures,
            ReadErrors = (long)s.ReadErrors,
            BadPageFaults = (long)s.BadPageFaults,
            ZombiesReaped = _reaper.ZombiesReaped,
            FilePages = _slots.FileSlots,
            BackingFileBytes = _file?.FileBytes ?? 0,
            BackingFileLiveBytes = _file?.LiveBytes ?? 0,
            BackingFileDeadBytes = _file?.DeadBytes ?? 0,
            BackingFileSegments = _file?.Segments ?? 0,
            BackingFileSegmentsCompacted = _writeback?.SegmentCompactions ?? 0,
            WritebackPages = _writeback?.Pages ?? 0,
            WritebackBytes = _writeback?.Bytes ?? 0,
            WriteErrors = _file?.WriteErrors ?? 0,
            WritebackPaused = _writeback is { PausedBy: not Errno.None },
            CramCapacityBytes = _node?.Device.CapacityBytes ?? 0,
            CramPlacedPages = (long)s.CramPlacedPages,
            CramLedgerBytes = (long)s.CramPlacedBytes,
            CramPhysicalUsageBytes = _node?.PhysicalUsageBytes ?? 0,
            CramOverflowBytes = Math.Max(0, _node?.MaxOverflowBytes ?? 0),
            CramPressureHigh = _node?.PressureHigh ?? false,
            CramWritableBudgetPages = _node is { WriteControl: true } ? (long)Math.Min((ulong)long.MaxValue, Volatile.Read(ref _shared->CramWritableLimit)) : (_node is null ? 0 : long.MaxValue),
            CramWritablePages = (long)s.CramWritablePages,
            CramMaxWritablePages = (long)s.CramMaxWritable,
            CramMadeWritable = (long)s.CramMadeWritable,
            CramPromotions = (long)s.CramPromotions,
            CramPromotionCopyTime = TimeSpan.FromTicks((long)(s.CramPromotionCopyNs / 100)),
            CramPlacements = reclaim.Placements,
            CramReplacements = reclaim.Replacements,
            CramPlacementRefusals = (long)s.CramPlacementRefusals,
            CramTrimmedFrames = _node?.TrimmedFrames ?? 0,
            CramBalloonFrames = _node?.BalloonFrames ?? 0,
            CramMovedOut = _node?.MovedOut ?? 0,
            CramControlPlaneAlive = _node?.ControlPlaneAlive ?? false,
            FaultServiceBusyTime = TimeSpan.FromTicks((long)(s.ServiceBusyNs / 100)),
            UserfaultfdMode = UserfaultfdMode,
            Regions = _regions.Count,
            PoolBytes = pool.UsedBytes,
            PoolCompactedPages = pool.CompactedPages,
            PoolFullRejections = pool.FullRejections,
            PoolFragmentation = pool.Fragmentation,
            PoolClasses = [.. pool.Classes.Select(c => new CramPoolClass(c.ObjectSize, c.ZspagePages, c.Objects, c.Capacity))],
        };

        static long Pages(ulong pages) => (long)Volatile.Read(ref pages) << SharedLayout.PageShift;
    }

    /// <summary>
    /// Stops background reclaim and the fault service, unmaps every region and frees all storage.
    /// Threads may be idle in regions, but none may access them during or after this. Afterwards
    /// every member of the engine and of its regions but <c>Dispose</c> throws
    /// <see cref="ObjectDisposedException"/>. An engine that becomes unreachable (with all its
    /// regions) without this is released by its finalizer.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _worker.Stop();
            _prefetcher.Stop(); // before anything it reads goes
            foreach (RegionMapping region in _regions.Snapshot())
            {
                Detach(region);
            }
            Reclaimer.Dispose(); // waits for a pass a caller of CramRegion.Reclaim may be in
            _disposed = true;
            GC.SuppressFinalize(this);
            _metrics.Unregister(this);
            // No region is active, so the service no longer reads slots; free them while the
            // shared block (which EngineDestroy unmaps) is still there.
            _slots.Dispose();
            _node?.Dispose(); // after the slot table gave its frames back, before the shared block goes
            _pool.Dispose();
            Interop.ThrowIfFailed(Interop.CramNative.EngineDestroy(_native), "Stopping the fault service");
            _writeback?.Dispose();
            _file?.Dispose(); // after the service stopped: it reads the file
        }
    }
}
