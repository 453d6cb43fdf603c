using System.Diagnostics.Metrics;
using CramCore.Engine;
using CramCore.Internals;
using CramCore.Native;
using CramCore.Reclaim;
using CramCore.Storage;

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
    private readonly EngineParts _parts;
    private readonly EngineRegions _regions;
    private readonly TierEventPump _pump;
    private readonly CramMetrics _metrics;
    private readonly ResidentLimit _limit;
    private readonly InFlightGate _calls = new(); // calls reading native memory without a lock (Dispose waits for them)
    private readonly UserfaultfdMode _mode;
    private volatile bool _disposed;

    private CramEngine(CramOptions options, Func<IPageOperations, IPageOperations>? pageOperations, IMeterFactory? meterFactory, Action<EngineBuildStep>? beforeStep,
        Func<IBackingFileDevice, IBackingFileDevice>? fileDevice)
    {
        _options = options;
        // The worker's thread must not hold the engine, or an engine nobody references could never
        // be finalized: its ticks reach the engine through a weak reference.
        var self = new WeakReference<CramEngine>(this);
        try
        {
            _parts = new EngineParts(options, pageOperations, () => self.TryGetTarget(out CramEngine? engine) && engine.AfterWorkerTick(), beforeStep, fileDevice);
        }
        catch
        {
            GC.SuppressFinalize(this); // nothing was built that the finalizer could release
            throw;
        }
        _mode = (UserfaultfdMode)_parts.Shared->UffdMode;
        _regions = new EngineRegions(_parts);
        _limit = new ResidentLimit(_parts, _regions, options.MemoryLimitBytes, options.ResidentLimitBytes);
        _pump = new TierEventPump(_parts.Shared, _parts.Events, options, () => _limit.Bytes);
        Maintenance = new EngineMaintenance(_parts, _calls, RaisePendingEvents);
        _metrics = CramMetrics.For(meterFactory);
        try
        {
            _metrics.Register(this);
            _parts.Start(); // last: the worker's ticks raise events and record metrics
        }
        catch
        {
            _metrics.Unregister(this);
            _parts.Dispose();
            GC.SuppressFinalize(this);
            throw;
        }
    }

    /// <summary>Creates an engine and starts its fault service.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CramUnavailableException">userfaultfd cannot be used here; the message says why and how to fix it.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux x64.</exception>
    /// <exception cref="DllNotFoundException">The native helper or the system liblz4.so.1 cannot be loaded; the message says what to install or set.</exception>
    /// <exception cref="InvalidOperationException"><see cref="CramOptions.LockPoolMemory"/> is set but the pool's memory cannot be locked; the message says which limit to raise.</exception>
    /// <exception cref="IOException">The backing file cannot be created, or a file the remote store's TLS names (<see cref="Remote.CramRemoteTls"/>) does not exist or does not load.</exception>
    public static CramEngine Create(CramOptions? options = null) => CreateWithHooks(options);

    /// <summary>Creates an engine whose instruments live on a <c>CramCore</c> meter from <paramref name="meterFactory"/> (the one dependency injection provides, or a test's), reporting this engine only, instead of on the process-wide meter.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="meterFactory"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CramUnavailableException">userfaultfd cannot be used here; the message says why and how to fix it.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux x64.</exception>
    /// <exception cref="IOException">The backing file cannot be created, or a file the remote store's TLS names does not exist or does not load.</exception>
    public static CramEngine Create(CramOptions? options, IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        return CreateWithHooks(options, meterFactory: meterFactory);
    }

    /// <summary>Creates an engine with test hooks: reclaim's page operations wrapped by <paramref name="pageOperations"/>, <paramref name="beforeStep"/> run before each build step, the backing file's I/O wrapped by <paramref name="fileDevice"/>.</summary>
    internal static CramEngine CreateWithHooks(CramOptions? options, Func<IPageOperations, IPageOperations>? pageOperations = null,
        IMeterFactory? meterFactory = null, Action<EngineBuildStep>? beforeStep = null, Func<IBackingFileDevice, IBackingFileDevice>? fileDevice = null) =>
        new(EngineParts.Prepare(options), pageOperations, meterFactory, beforeStep, fileDevice);

    /// <summary>
    /// Something happened in the storage tiers that an operator should know: the pool is full in
    /// ghost mode, writeback paused on a write error or resumed, the backing file is full, a stored
    /// page failed its checksum or could not be read, faults started or stopped waiting for reclaim
    /// (throttling), the fault service hit an error. Raised on a thread-pool thread (or on the
    /// thread that called a member such as <see cref="CramRegion.Reclaim"/>), one at a time and in
    /// order, outside the engine's locks — never on the engine's own threads, so a handler that
    /// blocks delays only later events, not reclaim. A handler may call any member of the engine
    /// and its regions, <see cref="Dispose"/> included; one that throws is caught and counted
    /// (<see cref="CramStats.CallbackFailures"/>). Counters for all of these are in <see cref="GetStats"/>.
    /// </summary>
    public event EventHandler<CramTierEventArgs>? TierEvent;

    /// <summary>
    /// The name of the <see cref="System.Diagnostics.Metrics.Meter"/> engines report on
    /// (<c>"CramCore"</c>): give it to a <c>MeterListener</c>, OpenTelemetry's <c>AddMeter</c> or
    /// <c>dotnet-counters monitor --counters CramCore</c>. Its instruments are <c>cramcore.*</c>
    /// (README, "Metrics").
    /// </summary>
    public const string MeterName = "CramCore";

    /// <summary>Releases an engine that became unreachable without <see cref="Dispose"/>: threads stopped, regions unmapped (a live region keeps its engine reachable), storage freed.</summary>
    ~CramEngine()
    {
        try
        {
            Dispose();
        }
        catch (Exception)
        {
            // a finalizer must not throw: whatever failed to close goes with the process
        }
    }

    /// <summary>Raises what is pending (<see cref="TierEventPump"/>), waiting for another thread that is raising; never under an engine lock.</summary>
    internal void RaisePendingEvents() => _pump.Raise(this, TierEvent, wait: true);

    /// <summary>After each reclaim-worker tick: events, raised on the thread pool (never on the worker: a handler may block), and the swap-in metric. True while events wait or one is due on the clock (throttling's end).</summary>
    private bool AfterWorkerTick()
    {
        _pump.RaiseInBackground(this, () => TierEvent);
        if (!_disposed)
        {
            _metrics.RecordSwapIns(this);
        }
        return _pump.Pending;
    }

    /// <summary>
    /// The resident limit asked of background reclaim (bytes; 0: none). Starts as
    /// <see cref="CramOptions.ResidentLimitBytes"/>; setting it takes effect at once (lowering it
    /// starts reclaim, raising or removing it lets faults stop waiting). With
    /// <see cref="CramOptions.MemoryLimitBytes"/>, reclaim holds the lower of this and what the memory
    /// limit leaves (<see cref="CramStats.ResidentTargetBytes"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative, between 0 and 64 pages (262144 bytes), or above <see cref="CramOptions.MemoryLimitBytes"/>.</exception>
    /// <exception cref="ObjectDisposedException">The engine was disposed.</exception>
    /// <exception cref="InvalidOperationException">Called from inside a callback CramCore is running (a <see cref="CramEngine.TierEvent"/> handler, an <see cref="ICramDevice"/>, the logger): it would deadlock; do the work on another thread.</exception>
    public long ResidentLimitBytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _limit.Bytes;
        }
        set
        {
            UserCallback.ThrowIfInside();
            _limit.Set(value, this);
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
    public UserfaultfdMode UserfaultfdMode => _disposed ? throw new ObjectDisposedException(nameof(CramEngine)) : _mode;

    /// <summary>The engine's parts (its regions, tests and benchmarks reach the layers through it).</summary>
    internal EngineParts Parts => _parts;

    /// <summary>Whether a system call that touches an evicted page fails with EFAULT (user-mode-only userfaultfd, or the faulting-thread service): region I/O then goes through a buffer.</summary>
    /// <exception cref="ObjectDisposedException">The engine was disposed.</exception>
    internal bool SystemCallsMissEvictedPages => UserfaultfdMode == UserfaultfdMode.UserModeOnly || _parts.FaultService == CramFaultService.FaultingThread;

    /// <summary>
    /// Compacts the compressed pool: moves stored pages out of sparsely used pool pages and gives
    /// those back. Background reclaim does this on its own when a quarter of the pool is slack.
    /// Returns the bytes given back.
    /// </summary>
    public long CompactPool() => Maintenance.CompactPool();

    /// <summary>Maintenance on demand (tests, benchmarks): file compaction, the zombie sweep, forced writeback, a CRAM node scan.</summary>
    internal EngineMaintenance Maintenance { get; }

    /// <summary>
    /// Reserves a region of <paramref name="bytes"/> (rounded up to 4096) of virtual memory. Only
    /// touched pages use memory; a 64 GiB region on a smaller machine is fine.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is not between 1 byte and 64 TiB.</exception>
    /// <exception cref="ObjectDisposedException">The engine was disposed.</exception>
    /// <exception cref="InvalidOperationException">Called from inside a callback CramCore is running (a <see cref="CramEngine.TierEvent"/> handler, an <see cref="ICramDevice"/>, the logger): it would deadlock; do the work on another thread.</exception>
    public CramRegion CreateRegion(long bytes)
    {
        UserCallback.ThrowIfInside();
        if (bytes <= 0 || bytes > SharedLayout.MaxRegionBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A region must be between 1 byte and 64 TiB.");
        }
        long length = (bytes + SharedLayout.PageSize - 1) & ~(long)(SharedLayout.PageSize - 1);
        lock (_regions.Lock)
        {
            ObjectDisposedException.ThrowIf(_regions.Closing, this);
            return new CramRegion(this, _regions.Create(length));
        }
    }

    /// <summary>The engine's regions: lifecycle, census, hints (<see cref="CramRegion"/> calls them).</summary>
    internal EngineRegions Regions => _regions;

    /// <summary>The native service-time buckets as far as the metric <c>cramcore.fault.service_time</c> has recorded them (CramMetrics locks it).</summary>
    internal long[] ServiceTimesRecorded { get; } = new long[SharedLayout.SwapinLatencyBuckets];

    /// <summary>The native fault-latency buckets as far as the metric <c>cramcore.fault.latency</c> has recorded them (CramMetrics locks it).</summary>
    internal long[] FaultLatenciesRecorded { get; } = new long[SharedLayout.SwapinLatencyBuckets];

    /// <summary>Takes a snapshot of the engine's counters.</summary>
    public CramStats GetStats() => _calls.Run(() => EngineStatistics.Snapshot(_parts, _mode, _regions.Count), typeof(CramEngine)); // Dispose waits for it

    /// <summary>
    /// Stops background reclaim and the fault service, unmaps every region and frees all storage.
    /// Threads may be idle in regions, but none may access them during or after this. Afterwards
    /// every member of the engine and of its regions but <c>Dispose</c> throws
    /// <see cref="ObjectDisposedException"/>. An engine that becomes unreachable (with all its
    /// regions) without this is released by its finalizer.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from inside a callback CramCore is running (a <see cref="CramEngine.TierEvent"/> handler, an <see cref="ICramDevice"/>, the logger): it would deadlock; do the work on another thread.</exception>
    public void Dispose()
    {
        UserCallback.ThrowIfInside(); // before anything is closed: a device's Trim cannot tear down the engine calling it
        lock (_regions.Lock)
        {
            if (_regions.Closing)
            {
                return;
            }
            _regions.Closing = true; // from here on nothing new starts: the limit, regions and hints throw ObjectDisposedException
        }
        // Outside the engine lock: calls reading native memory finish; the worker may be in a TierEvent
        // handler that takes the lock (on the worker itself, a handler disposing, it stops without a wait).
        _calls.Close();
        _parts.Worker.Stop();
        _regions.RetireAll(); // no lock held: calls in flight on the regions finish first
        _pump.Stop();         // lock 0, before lock 1: a raise in progress finishes first
        lock (_regions.Lock)
        {
            _regions.DetachAll();
            _disposed = true;
            GC.SuppressFinalize(this);
            _metrics.Unregister(this);
            _parts.Dispose();
        }
    }
}
