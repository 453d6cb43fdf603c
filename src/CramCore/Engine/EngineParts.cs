using CramCore.Internals;
using CramCore.Native;
using CramCore.Reclaim;
using CramCore.Remote;
using CramCore.Storage;

namespace CramCore.Engine;

/// <summary>The steps of building an engine, in order (tests inject a failure at each).</summary>
internal enum EngineBuildStep
{
    NativeEngine,
    Pool,
    BackingFile,
    CramNode,
    SlotTable,
    Writeback,
    Reclaimer,
    MemoryBudget,
    Worker,
}

/// <summary>
/// The composition root: builds the engine's parts bottom-up — the native engine (fault service),
/// the compressed pool, the backing file, the CRAM node, the slot table, the reaper, writeback,
/// reclaim, the memory budget, and last the reclaim worker (started by <see cref="Start"/>) — and tears them down in the one order
/// that is safe (<see cref="Dispose"/>). A failure at any step tears down everything built before
/// it, so a failed <see cref="CramEngine.Create(CramOptions?)"/> leaves no thread, descriptor or
/// mapping behind.
/// </summary>
internal sealed unsafe class EngineParts : IDisposable
{
    private readonly NativeEngineHandle _handle;
    private bool _disposed;

    public nint Native { get; }
    /// <summary>The native engine's operations, for the layers below (the seam unit tests fake).</summary>
    public INativeEngine Engine { get; }
    public NativeShared* Shared { get; }
    public CompressedPool Pool { get; } = null!;
    public BackingFile? File { get; }
    public CramNode? Node { get; }
    public SlotTable Slots { get; } = null!;
    public Reaper Reaper { get; } = null!;
    public Writeback? Writeback { get; }
    /// <summary>The recompressor (null with <see cref="CramOptions.RecompressionCpuShare"/> 0).</summary>
    public Recompressor? Recompressor { get; }
    public Reclaimer Reclaimer { get; } = null!;
    public MemoryUse MemoryUse { get; } = null!;
    public MemoryBudget Budget { get; } = null!;
    public ReclaimWorker Worker { get; } = null!;
    public RegionTable Regions { get; } = new();
    /// <summary>Who resolves faults, as the native engine chose (never Auto).</summary>
    public CramFaultService FaultService { get; }

    /// <summary>Threads that compress reclaim's victims (the option, resolved).</summary>
    public int CompressionThreads { get; }

    /// <summary>Threads that map readahead windows (<see cref="CramOptions.ReadaheadThreads"/>, resolved).</summary>
    public int ReadaheadThreads { get; }

    public TierEventChannel Events { get; } = new();

    private readonly Lock _maintenance = new(); // lock 3 (cramnative.h): reclaim's passes, writeback's batch steps, compaction, the reaper

    /// <param name="options">Validated, resolved options.</param>
    /// <param name="pageOperations">Test hook: wraps the page operations reclaim uses, to inject failures.</param>
    /// <param name="afterTick">What the reclaim worker runs after each tick (the engine's events and metrics).</param>
    /// <param name="beforeStep">Test hook: runs before each step; a throw there is a failure at that step.</param>
    /// <param name="fileDevice">Test hook: wraps the backing file's I/O, to inject write and read errors.</param>
    public EngineParts(CramOptions options, Func<IPageOperations, IPageOperations>? pageOperations, ReclaimWorker.TickListener afterTick, Action<EngineBuildStep>? beforeStep,
        Func<IBackingFileDevice, IBackingFileDevice>? fileDevice = null)
    {
        long limitPages = options.ResidentLimitBytes / SharedLayout.PageSize;
        beforeStep?.Invoke(EngineBuildStep.NativeEngine);
        var config = new NativeEngineConfig
        {
            ForcedMode = (uint)options.Userfaultfd,
            SpinUs = (uint)options.FaultServiceSpin.TotalMicroseconds,
            SoftLimitPages = (ulong)limitPages,
            HardLimitPages = limitPages == 0 ? 0 : (ulong)ReclaimWatermarks.HardLimitPages(limitPages),
            ThrottleMaxUs = (uint)options.ThrottleMax.TotalMicroseconds,
            FaultAroundPages = (uint)options.FaultAroundPages,
            ReadaheadHelpers = (uint)(options.ReadaheadThreads - 1),
            LatencyProbeUs = (ulong)options.FaultLatencyProbeInterval.TotalMicroseconds,
            FaultService = options.FaultService switch
            {
                CramFaultService.ServiceThread => 0u,
                CramFaultService.FaultingThread => 1u,
                _ => 2u,
            },
        };
        _handle = NativeEngineHandle.Create(config, out NativeShared* shared);
        Native = _handle.DangerousGetHandle();
        Engine = new NativeEngine(Native);
        Shared = shared;
        try
        {
            uint service;
            Interop.ThrowIfFailed(Interop.CramNative.EngineFaultService(Native, &service), "Asking the engine for its fault service");
            FaultService = service == 1 ? CramFaultService.FaultingThread : CramFaultService.ServiceThread;
            CompressionThreads = options.CompressionThreads;
            ReadaheadThreads = options.ReadaheadThreads;
            beforeStep?.Invoke(EngineBuildStep.Pool);
            Pool = new CompressedPool(options.PoolArenaBytes, options.CompressedPoolLimitBytes, options.LockPoolMemory, Engine);
            shared->HandleDirectory = Pool.HandleDirectory; // directories and file are published before any region, so before any fault
            beforeStep?.Invoke(EngineBuildStep.BackingFile);
            if (options.BackingFile is not null)
            {
                File = BackingFile.Open(options.BackingFile, options.KeepBackingFile, options.BackingFileLimitBytes, fileDevice?.Invoke(NativeFileDevice.Instance));
                shared->BackingFd = File.Descriptor;
                shared->BackingDirect = File.Direct ? 1u : 0u;
            }
            if (options.RemoteStore is not null)
            {
                Remote = ConfigureRemote(options);
            }
            beforeStep?.Invoke(EngineBuildStep.CramNode);
            Node = options.CramDevice is null ? null : new CramNode(Engine, shared, options, Events);
            beforeStep?.Invoke(EngineBuildStep.SlotTable);
            Slots = new SlotTable(shared, Pool, File, Remote, Node);
            Reaper = new Reaper(Engine, Slots);
            beforeStep?.Invoke(EngineBuildStep.Writeback);
            Recompressor = options.RecompressionCpuShare > 0 ? new Recompressor(Engine, shared, Slots, _maintenance, options.RecompressionCpuShare, options.TimeProvider, Regions) : null;
            Writeback = Slots.Tier is null ? null : new Writeback(Engine, Slots, options, Events, _maintenance, Recompressor);
            beforeStep?.Invoke(EngineBuildStep.Reclaimer);
            IPageOperations operations = new NativePageOperations(Engine, Slots);
            Reclaimer = new Reclaimer(Engine, shared, Regions, Slots, pageOperations?.Invoke(operations) ?? operations, options, Reaper, Writeback, Events, _maintenance, Recompressor);
            beforeStep?.Invoke(EngineBuildStep.MemoryBudget);
            MemoryUse = new MemoryUse(shared, Slots, Pool, Reclaimer, File, Recompressor, Writeback);
            Budget = new MemoryBudget(Engine, shared, Reclaimer, options.MemoryLimitBytes, options.MemoryLimitWait, limitPages, MemoryUse, Events);
            Budget.Update(); // the limit the memory limit allows, before any fault
            beforeStep?.Invoke(EngineBuildStep.Worker);
            Worker = new ReclaimWorker(Engine, shared, Reclaimer, Budget, Slots.Tier is not null || Node is not null, Node is not null, afterTick, options.TimeProvider); // started by Start, once the engine can take its ticks
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>A TLS setting as the native read half takes it: NUL-terminated UTF-8 in 256 bytes; a file must exist (named in the error when not).</summary>
    private static void CopyTlsSetting(string? value, string name, Span<byte> destination, bool file)
    {
        if (value is null)
        {
            return;
        }
        if (file)
        {
            value = Path.GetFullPath(value);
            if (!System.IO.File.Exists(value))
            {
                throw new FileNotFoundException($"RemoteStore.Tls.{name}: {value} does not exist.", value);
            }
        }
        if (value.Length == 0 || System.Text.Encoding.UTF8.GetByteCount(value) > destination.Length - 1)
        {
            throw new ArgumentException($"RemoteStore.Tls.{name} must be 1 to {destination.Length - 1} bytes of UTF-8 (a file path: move the file to a shorter path).", "options");
        }
        System.Text.Encoding.UTF8.GetBytes(value, destination);
    }

    /// <summary>The remote tier's segments, with the native read half configured: the engine's key, prefix, endpoints.</summary>
    private unsafe RemoteSegments ConfigureRemote(CramOptions options)
    {
        ICramRemoteStore store = options.RemoteStore!;
        byte[]? key = options.RemoteEncryption ? System.Security.Cryptography.RandomNumberGenerator.GetBytes(32) : null;
        var config = new NativeRemoteConfig
        {
            TimeoutMs = (uint)options.RemoteReadTimeout.TotalMilliseconds,
            Lanes = 8,
            Sealed = key is null ? 0u : 1u,
        };
        key?.CopyTo(new Span<byte>(config.Key, 32));
        System.Text.Encoding.ASCII.GetBytes(options.RemoteKeyPrefix!, new Span<byte>(config.Prefix, 55));
        if (store.Password is { } password)
        {
            System.Text.Encoding.UTF8.GetBytes(password, new Span<byte>(config.Password, 63));
        }
        if (store.Tls is { } tls)
        {
            config.Tls = 1;
            CopyTlsSetting(tls.ServerName, nameof(tls.ServerName), new Span<byte>(config.TlsServerName, 256), file: false);
            CopyTlsSetting(tls.CaFile, nameof(tls.CaFile), new Span<byte>(config.TlsCaFile, 256), file: true);
            CopyTlsSetting(tls.ClientCertificateFile, nameof(tls.ClientCertificateFile), new Span<byte>(config.TlsCertFile, 256), file: true);
            CopyTlsSetting(tls.ClientKeyFile, nameof(tls.ClientKeyFile), new Span<byte>(config.TlsKeyFile, 256), file: true);
            if (tls.ClientKeyFile is not null && tls.ClientCertificateFile is null)
            {
                throw new ArgumentException("RemoteStore.Tls.ClientKeyFile is set without ClientCertificateFile: give the certificate too, or neither.", nameof(options));
            }
        }
        try
        {
            Interop.ThrowIfFailed(Interop.CramNative.RemoteConfigure(Native, &config), config.Tls == 0
                ? "Configuring the remote tier's read half (libcrypto.so.3 is needed for encryption)"
                : "Configuring the remote tier's read half (libcrypto.so.3 for encryption, and libssl.so.3 for TLS: EINVAL means a TLS file did not load — a CA file that is not PEM, a client key that does not match its certificate)");
        }
        finally
        {
            new Span<byte>(config.Key, 32).Clear();
        }
        nint native = Native;
        void Publish(int index, System.Net.IPEndPoint node)
        {
            uint address = BitConverter.ToUInt32(node.Address.GetAddressBytes()); // network order in memory, as s_addr
            Interop.ThrowIfFailed(Interop.CramNative.RemoteSetEndpoint(native, (uint)index, address, (uint)node.Port), $"Publishing remote node {index} ({node})");
        }
        var segments = new RemoteSegments(store, options.RemoteKeyPrefix!, key, options.RemoteLease, options.RemoteReadTimeout, options.TimeProvider, Publish);
        if (key is not null)
        {
            Array.Clear(key); // AesGcm keeps its own copy
        }
        return segments;
    }

    /// <summary>The remote tier's segments, or null.</summary>
    public RemoteSegments? Remote { get; }

    /// <summary>The options an engine is built with: a copy of the caller's (or the defaults), validated and resolved, the native helper's path applied.</summary>
    /// <exception cref="PlatformNotSupportedException">Not Linux x64.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static CramOptions Prepare(CramOptions? options)
    {
        NativeLibraryResolver.ThrowIfUnsupportedPlatform();
        options = (options ?? new CramOptions()).Clone();
        options.Validate();
        options.Resolve();
        if (options.NativeLibraryPath is not null)
        {
            NativeLibraryResolver.SetOverride(options.NativeLibraryPath);
        }
        return options;
    }

    /// <summary>Starts writeback's thread (with a backing file) and the reclaim worker (when there is a limit or upkeep to hold): last, once whatever their rounds call is built.</summary>
    public void Start()
    {
        Writeback?.Start();
        Worker.Start();
    }

    /// <summary>
    /// Tears down what was built, in order: the worker, reclaim (waits for a pass in progress), the
    /// slot table (no region is active, so the service no longer reads slots), the node (after the
    /// slots gave its frames back), the pool, the native engine (stops the service, unmaps the shared
    /// block), writeback and last the file, which the service read. Regions must be detached first.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        // Every step runs even if one before it throws (a device's callback, a file system error),
        // so nothing is left behind — above all not the fault service; the first failure is rethrown.
        Exception? first = null;
        void Step(Action step)
        {
            try
            {
                step();
            }
            catch (Exception e)
            {
                first ??= e;
            }
        }
        Step(() => Writeback?.BeginStop()); // a reclaim pass waiting for room stops waiting, so the worker stops at once
        Step(() => Worker?.Stop());
        Step(() => Recompressor?.Stop()); // waits for a batch in flight: its publish step rewrites slots and frees pool objects
        Step(() => Writeback?.StopThread()); // waits for a write in flight: its round moves slots and frees pool objects
        Step(() => Reclaimer?.Dispose());
        Step(() => Slots?.Dispose());
        Step(() => Node?.Dispose());
        Step(() => Pool?.Dispose());
        Step(_handle.Dispose);
        Step(() => Writeback?.Dispose()); // its encoder uses the recompressor's dictionaries
        Step(() => Recompressor?.Dispose());
        Step(() => File?.Dispose());
        Step(() => Remote?.Dispose()); // deletes the engine's keys: nothing is left on the store
        if (first is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(first);
        }
    }
}
