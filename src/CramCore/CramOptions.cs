using Microsoft.Extensions.Logging;
using CramCore.Native;

namespace CramCore;

/// <summary>How the engine obtains its userfaultfd.</summary>
[NativeEnum("CRAM_UFFD_MODE_")] // mirrors enum cram_uffd_mode
public enum UserfaultfdMode
{
    /// <summary>Try <see cref="Syscall"/>, then <see cref="Device"/>, then <see cref="UserModeOnly"/>.</summary>
    Auto = 0,
    /// <summary>The userfaultfd(2) system call with kernel faults included (root, CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd=1).</summary>
    Syscall = 1,
    /// <summary>/dev/userfaultfd (Linux 6.1+, needs read/write access to the device node); kernel faults included.</summary>
    Device = 2,
    /// <summary>
    /// UFFD_USER_MODE_ONLY: what an unprivileged process gets. Faults raised by the kernel on the
    /// process's behalf are not handled, so a system call that reads or writes an evicted page
    /// (e.g. <c>read(2)</c> into a region buffer) fails with EFAULT. Do stream I/O with
    /// <see cref="CramRegion.ReadFrom"/> and <see cref="CramRegion.WriteTo"/> (or their async forms),
    /// which never hand a region page to the kernel in this mode, or call
    /// <see cref="CramRegion.MakeResident"/> on a range right before another system call.
    /// </summary>
    UserModeOnly = 3,
}

/// <summary>Who resolves a fault in a region (<see cref="CramOptions.FaultService"/>).</summary>
public enum CramFaultService
{
    /// <summary>
    /// <see cref="FaultingThread"/> where system calls on evicted pages fail with EFAULT anyway
    /// (<see cref="UserfaultfdMode.UserModeOnly"/>, what an unprivileged process gets), otherwise
    /// <see cref="ServiceThread"/>.
    /// </summary>
    Auto = 0,
    /// <summary>
    /// The engine's native service thread reads each fault from the userfaultfd and resolves it
    /// while the faulting thread waits in the kernel. System calls that touch evicted pages work
    /// (with a full userfaultfd). Each fault costs a wake-up of another CPU.
    /// </summary>
    ServiceThread = 1,
    /// <summary>
    /// The faulting thread resolves its own fault, in a native SIGBUS handler CramCore installs in
    /// front of the .NET runtime's (every other SIGBUS is passed on to it): no wake-up of another
    /// CPU, as with the kernel's own swap-in (`cram bench floor` measures both on your machine).
    /// As in <see cref="UserfaultfdMode.UserModeOnly"/>, a system call that reads or writes an
    /// evicted page fails with EFAULT: use <see cref="CramRegion.ReadFrom"/> and
    /// <see cref="CramRegion.WriteTo"/> (or their async forms), which pass such data through a
    /// buffer, or <see cref="CramRegion.MakeResident"/> right before the call.
    /// </summary>
    FaultingThread = 2,
}

/// <summary>Options for <see cref="CramEngine.Create(CramOptions)"/>. Validated when the engine is created.</summary>
public sealed class CramOptions
{
    /// <summary>
    /// Resident memory, over all regions of the engine, that background reclaim holds (bytes,
    /// rounded down to pages). 0 (the default) means no limit: pages are evicted only by
    /// <see cref="CramRegion.Reclaim"/>. Faults that would exceed the limit by more than a small
    /// margin wait a bounded time (<see cref="ThrottleMax"/>) for reclaim.
    /// </summary>
    public long ResidentLimitBytes { get; set; }

    /// <summary>
    /// Memory the engine may use in all, in bytes: resident region pages + the compressed pool +
    /// CramCore's own metadata (page tables, slot and handle tables, reclaim's queues; see
    /// <see cref="CramStats.MemoryUsedBytes"/>). 0 (the default) means no such limit. Background
    /// reclaim holds it together with writeback: the resident limit it keeps is
    /// <see cref="ResidentLimitBytes"/> (if set) or what the pool and metadata leave, whichever is
    /// lower, so pages are evicted further as the pool grows. With a <see cref="BackingFile"/>,
    /// pages that do not compress are stored as they are and written to the file, and the pool is
    /// kept to <see cref="CompressedPoolLimitBytes"/> (a quarter of this limit unless set), so the
    /// limit holds whatever the data. Where it cannot hold (no file, and the data does not compress
    /// or the pool is full), <see cref="CramEngine.TierEvent"/> reports
    /// <see cref="CramTierEventKind.MemoryLimitExceeded"/> at once and every fault that adds a page
    /// waits up to <see cref="MemoryLimitWait"/>, then proceeds: growth past the limit is slowed,
    /// never silent, never a hang. At least 16 MiB. Memory of the .NET runtime itself and of the
    /// application's own heap is not counted (README, "Memory bounds").
    /// </summary>
    public long MemoryLimitBytes { get; set; }

    /// <summary>
    /// While <see cref="MemoryLimitBytes"/> cannot be held, how long each fault that adds a resident
    /// page waits for memory to come back under the limit before it proceeds anyway (0 to 10 s; default
    /// 10 ms). The fault service resolves one fault at a time, so this caps growth past the limit at
    /// one page per wait for the whole engine (about 400 KiB/s at the default). 0 only reports.
    /// </summary>
    public TimeSpan MemoryLimitWait { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// A page is stored compressed only if LZ4 makes it this small or smaller (bytes, 64–4096;
    /// default 3072, three quarters of a page). Pages that do not compress below it stay resident
    /// and are not tried again until they are written.
    /// </summary>
    public int CompressionThresholdBytes { get; set; } = 3 * 1024;

    /// <summary>
    /// Whether reclaim estimates a page's compressibility from a sample before compressing it
    /// (default <see langword="true"/>). Pages the estimator is confident LZ4 cannot get below
    /// <see cref="CompressionThresholdBytes"/> stay resident without a compression attempt; one in 64 of
    /// them is compressed anyway to audit the estimator (<see cref="CramStats.FalseIncompressiblePages"/>).
    /// Zero and same-filled pages are detected either way.
    /// </summary>
    public bool EstimateCompressibility { get; set; } = true;

    /// <summary>
    /// Most memory the compressed pool may take, in bytes (0, the default, means no limit: arenas
    /// are added as needed). When the pool is full, reclaim leaves pages resident and
    /// <see cref="CramStats.PoolFullRejections"/> counts them; nothing is lost.
    /// </summary>
    public long CompressedPoolLimitBytes { get; set; }

    /// <summary>
    /// The second tier: a file that entries move to, still compressed, when the pool passes
    /// <see cref="WritebackHighWatermark"/> of <see cref="CompressedPoolLimitBytes"/> (which must then
    /// be set, or <see cref="MemoryLimitBytes"/>). Pages that do not compress are stored as they are
    /// and go to the file the same way, instead of staying resident. The file must not exist: it is created with mode 0600, opened O_DIRECT where the file
    /// system allows, and unlinked at once unless <see cref="KeepBackingFile"/>; it grows in 256 KiB
    /// segments as needed. <see langword="null"/> (the default) is ghost mode: no file; when the pool
    /// is full, reclaim stops and <see cref="CramEngine.TierEvent"/> says so; nothing is lost.
    /// </summary>
    public string? BackingFile { get; set; }

    /// <summary>Keep the backing file's name in the file system while the engine runs (for inspection); it is still never reused. Default false.</summary>
    public bool KeepBackingFile { get; set; }

    /// <summary>Most bytes the backing file may take (rounded down to 256 KiB segments; 0, the default, means no limit).</summary>
    public long BackingFileLimitBytes { get; set; }

    /// <summary>
    /// A remote tier on a distributed store (CramCore.Redis's <c>RedisRemoteStore</c>, or any
    /// <see cref="Remote.ICramRemoteStore"/>): the pool's coldest entries move there, still
    /// compressed, sealed and packed into segments, when the pool passes
    /// <see cref="WritebackHighWatermark"/> (so <see cref="CompressedPoolLimitBytes"/> or
    /// <see cref="MemoryLimitBytes"/> must be set), exactly as they would to a
    /// <see cref="BackingFile"/>. With both, the pool's entries go to the file and the file's oldest
    /// segments to the store once the file passes <see cref="WritebackHighWatermark"/> of
    /// <see cref="BackingFileLimitBytes"/> (which must then be set), down to <see cref="WritebackLowWatermark"/>
    /// of it: pool, file, store. A fault on a remote entry is fetched natively,
    /// outside the fault service's lock; a fetch that fails until <see cref="RemoteReadTimeout"/> is a
    /// read error (SIGBUS, counted), never zeros. Null (the default): no remote tier. The engine does
    /// not dispose the store.
    /// </summary>
    public Remote.ICramRemoteStore? RemoteStore { get; set; }

    /// <summary>The prefix of the engine's keys on the remote store (letters, digits, '-', '_', '.', at most 40 characters); null (the default) makes one up per engine ("cram-" and 12 random hex digits).</summary>
    public string? RemoteKeyPrefix { get; set; }

    /// <summary>How long a fault retries a remote fetch (reconnecting, with backoff) before it fails as a read error, and how long a remote write may take (100 ms to 10 minutes; default 5 s).</summary>
    public TimeSpan RemoteReadTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a remote segment outlives its engine: keys expire after this unless renewed, which the engine does every third of it (10 s to 7 days; default 10 minutes). <see cref="CramEngine.Dispose"/> deletes them at once.</summary>
    public TimeSpan RemoteLease { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Seal remote entries with AES-256-GCM under a random per-engine key that never leaves the process (default true); false sends the compressed bytes as they are.</summary>
    public bool RemoteEncryption { get; set; } = true;

    /// <summary>Writeback starts when the pool uses more than this fraction of <see cref="CompressedPoolLimitBytes"/> (0.1–1; default 0.9).</summary>
    public double WritebackHighWatermark { get; set; } = 0.9;

    /// <summary>Writeback stops when the pool is back at this fraction of <see cref="CompressedPoolLimitBytes"/> (0–high; default 0.75).</summary>
    public double WritebackLowWatermark { get; set; } = 0.75;

    /// <summary>Most compressed bytes written back per second (0, the default, means no limit).</summary>
    public long WritebackBytesPerSecond { get; set; }

    /// <summary>
    /// A compressed-RAM device for the CRAM node (null, the default: no node). Reclaim places very
    /// compressible pages on it; they stay mapped read-only in place, so reads never fault; a write
    /// makes the page writable within the writable budget or promotes it to ordinary memory.
    /// <see cref="EmulatedCramDevice"/> emulates one.
    /// </summary>
    public ICramDevice? CramDevice { get; set; }

    /// <summary>
    /// The administrator's risk dial: how many placed pages may be writable in place at once (the
    /// device must absorb them even if they become incompressible); 0, the default, promotes every
    /// write. Ignored with <see cref="WriteBudgetSource"/>.
    /// </summary>
    public long WritableBudgetPages { get; set; }

    /// <summary>The device's control plane, supplying the writable budget instead of <see cref="WritableBudgetPages"/> (null: use the dial).</summary>
    public IWriteBudgetSource? WriteBudgetSource { get; set; }

    /// <summary>How long an answer of the control plane stays valid (10 ms to 1 minute; default 200 ms). Without a fresh one the host spends only the budget it has.</summary>
    public TimeSpan ControlPlaneLease { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Write control on the CRAM node (default true). Off, every write makes its page writable: only the bear experiment's baseline turns it off.</summary>
    internal bool CramWriteControl { get; set; } = true;

    /// <summary>Size of each arena of the compressed pool (a power of two from 1 MiB to 1 GiB; default 64 MiB).</summary>
    public long PoolArenaBytes { get; set; } = 64L << 20;

    /// <summary>mlock the pool's arenas so the kernel never swaps compressed data out (needs RLIMIT_MEMLOCK; default false).</summary>
    public bool LockPoolMemory { get; set; }

    /// <summary>
    /// Where the engine logs what an operator should know (null, the default: nowhere): every
    /// <see cref="CramEngine.TierEvent"/>, at Warning or Error for trouble (pool full, throttling,
    /// checksum and read errors, service errors, writeback paused, control plane lost) and at
    /// Information when it ends. Any <c>Microsoft.Extensions.Logging</c> logger.
    /// </summary>
    public ILogger? Logger { get; set; }

    /// <summary>Which userfaultfd to use (default <see cref="UserfaultfdMode.Auto"/>).</summary>
    public UserfaultfdMode Userfaultfd { get; set; } = UserfaultfdMode.Auto;

    /// <summary>Who resolves faults: the engine's service thread or the faulting thread itself (default <see cref="CramFaultService.Auto"/>; <see cref="CramStats.FaultService"/> says which runs).</summary>
    public CramFaultService FaultService { get; set; } = CramFaultService.Auto;

    /// <summary>
    /// How long the native fault service busy-polls for the next fault before it blocks
    /// (0 to 10 ms, whole microseconds; default 50 µs). Spinning trades CPU for fault latency. The service
    /// does not spin while background reclaim runs (the CPUs are taken; spinning only delays the
    /// thread it has just woken) nor when the process may use a single CPU.
    /// </summary>
    public TimeSpan FaultServiceSpin { get; set; } = TimeSpan.FromMicroseconds(50);

    /// <summary>
    /// How often, at most, the service thread's engine samples its fault latency (0 or 1 ms to 10 s,
    /// whole microseconds; default 10 ms; <see cref="TimeSpan.Zero"/>: never). Under the service
    /// thread the faulting thread waits inside the kernel, where nothing can time it, so the engine's
    /// probe thread (<c>cram-probe</c>) takes a swap-in fault on a page of its own and times it whole:
    /// <see cref="CramStats.FaultLatency"/>. It probes only after swap-ins happened since its last
    /// probe, so an engine that swaps nothing in costs nothing. Ignored with
    /// <see cref="CramFaultService.FaultingThread"/>, where every swap-in is timed.
    /// </summary>
    public TimeSpan FaultLatencyProbeInterval { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// The share of one CPU the recompressor may take (0 to 1; default 0.1; 0: no recompression).
    /// In the background, never on the fault path, it rewrites the pool's cold LZ4 copies (pages
    /// evicted at least the working set's refault distance ago) with zstd and a dictionary trained
    /// from this engine's pages, where that saves a size class; a page that comes back keeps its copy
    /// until its next eviction, which stores LZ4 again. Needs the system libzstd.so.1.
    /// See <see cref="CramStats.RecompressedPages"/>.
    /// </summary>
    public double RecompressionCpuShare { get; set; } = 0.1;

    /// <summary>
    /// Threads that classify and compress the pages reclaim evicts, the reclaim worker included
    /// (1–16; 0, the default: one per CPU the process may use, at most 4). The worker stores the
    /// pages in order; the helpers beyond it take pages of the same batch while it does. They are
    /// shared by the process's engines, start at the first eviction and stop with the last engine.
    /// 1 keeps compression on the reclaim worker alone (a CPU left to the application).
    /// </summary>
    public int CompressionThreads { get; set; }

    /// <summary>
    /// Threads that map a sequential reader's readahead window (swap readahead), the thread that
    /// resolved the fault included (1–4; 0, the default: 2 when the process may use more than one
    /// CPU, else 1). The fault decodes the window under the engine lock; mapping its pages
    /// (<c>UFFDIO_COPY</c>, the largest cost of a sequential read-back) then runs on this many
    /// threads at once. The helpers are the engine's own native threads (<c>cram-readahead</c>),
    /// started at its first eviction and asleep between windows. 1 maps every window on the faulting thread (or the service thread) alone.
    /// </summary>
    public int ReadaheadThreads { get; set; }

    /// <summary>Longest a fault waits for reclaim when resident memory is over the limit (0 to 1 s, whole microseconds; default 20 ms).</summary>
    public TimeSpan ThrottleMax { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// A first touch (write or read) that continues a sequential stream of first touches — the page
    /// right after an earlier first-touch run, as a fill or a memcpy into fresh memory makes (four
    /// streams are followed per region), or the page right after one already in use — fills up to
    /// this many never-touched neighbours in its aligned block at once with writable zero pages
    /// (1–64; default 64), even for a read: .NET code reads before it writes (the JIT's null check
    /// of a span's target), and a shared zero page would cost a second, copy-on-write fault per page.
    /// Saves faults on sequential fills; a sparse first touch (a hash table's pattern) maps its one
    /// page, and a lone read maps the shared zero page (no memory). 1 turns it off. A first touch
    /// never maps more pages than fit below the resident hard limit, and only its own page at the
    /// limit or while <see cref="MemoryLimitBytes"/> cannot be held.
    /// </summary>
    public int FaultAroundPages { get; set; } = SharedLayout.FaultAroundMax;

    /// <summary>
    /// The clock of the engine's timed decisions: writeback's pause after a write error and its rate
    /// limit, the CRAM node's control-plane lease, polling and device scans. Default
    /// <see cref="TimeProvider.System"/>; a test passes a fake one and advances it instead of sleeping.
    /// </summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>
    /// Path of libCramNative.so, overriding where the package puts it (runtimes/linux-x64/native/).
    /// The helper loads once per process: this applies only before the first engine is created.
    /// The CRAMCORE_NATIVE_LIBRARY environment variable does the same. Default: null.
    /// </summary>
    public string? NativeLibraryPath { get; set; }

    /// <summary>Store evicted pages uncompressed (benchmarks use this to measure the bare fault cost).</summary>
    internal bool StoreUncompressed { get; set; }

    internal void Validate()
    {
        if (ResidentLimitBytes < 0)
        {
            throw new ArgumentException($"ResidentLimitBytes is {ResidentLimitBytes}; use 0 for no limit or a positive byte count.", nameof(ResidentLimitBytes));
        }
        if (ResidentLimitBytes > 0 && ResidentLimitBytes < 64 * SharedLayout.PageSize)
        {
            throw new ArgumentException($"ResidentLimitBytes is {ResidentLimitBytes}; the smallest limit is 64 pages (262144 bytes), or 0 for no limit.", nameof(ResidentLimitBytes));
        }
        if (MemoryLimitBytes < 0 || (MemoryLimitBytes > 0 && MemoryLimitBytes < MinMemoryLimitBytes))
        {
            throw new ArgumentException($"MemoryLimitBytes is {MemoryLimitBytes}; use 0 for no limit or at least 16 MiB ({MinMemoryLimitBytes} bytes).", nameof(MemoryLimitBytes));
        }
        if (MemoryLimitBytes > 0 && ResidentLimitBytes > MemoryLimitBytes)
        {
            throw new ArgumentException($"ResidentLimitBytes ({ResidentLimitBytes}) is above MemoryLimitBytes ({MemoryLimitBytes}), which also counts the pool and metadata; lower it, or leave it 0 to let the memory limit set it.", nameof(ResidentLimitBytes));
        }
        if (MemoryLimitBytes > 0 && LockPoolMemory && PoolArenaBytes >= MemoryLimitBytes)
        {
            throw new ArgumentException($"LockPoolMemory locks PoolArenaBytes ({PoolArenaBytes}) at Create, which alone is not below MemoryLimitBytes ({MemoryLimitBytes}); lower PoolArenaBytes, raise MemoryLimitBytes, or leave LockPoolMemory off.", nameof(PoolArenaBytes));
        }
        if (MemoryLimitBytes > 0 && CompressedPoolLimitBytes >= MemoryLimitBytes)
        {
            throw new ArgumentException($"CompressedPoolLimitBytes ({CompressedPoolLimitBytes}) is not below MemoryLimitBytes ({MemoryLimitBytes}), which also counts resident pages; lower it (a quarter of the memory limit is the default with a backing file).", nameof(CompressedPoolLimitBytes));
        }
        if (MemoryLimitWait < TimeSpan.Zero || MemoryLimitWait > TimeSpan.FromSeconds(10))
        {
            throw new ArgumentException($"MemoryLimitWait is {MemoryLimitWait}; it must be between 0 and 10 s.", nameof(MemoryLimitWait));
        }
        if (CompressionThreads is < 0 or > 16)
        {
            throw new ArgumentException($"CompressionThreads is {CompressionThreads}; it must be between 1 and 16, or 0 for one per CPU (at most 4).", nameof(CompressionThreads));
        }
        if (ReadaheadThreads is < 0 or > SharedLayout.ReadaheadHelpersMax + 1)
        {
            throw new ArgumentException($"ReadaheadThreads is {ReadaheadThreads}; it must be between 1 and {SharedLayout.ReadaheadHelpersMax + 1}, or 0 for the default (2 with more than one CPU).", nameof(ReadaheadThreads));
        }
        if (CompressionThresholdBytes is < 64 or > SharedLayout.PageSize)
        {
            throw new ArgumentException($"CompressionThresholdBytes is {CompressionThresholdBytes}; it must be between 64 and 4096 bytes (default 3072).", nameof(CompressionThresholdBytes));
        }
        if (!Enum.IsDefined(Userfaultfd))
        {
            throw new ArgumentException($"Userfaultfd is {(int)Userfaultfd}, which is not a UserfaultfdMode value.", nameof(Userfaultfd));
        }
        if (!Enum.IsDefined(FaultService))
        {
            throw new ArgumentException($"FaultService is {(int)FaultService}, which is not a CramFaultService value.", nameof(FaultService));
        }
        if (FaultServiceSpin < TimeSpan.Zero || FaultServiceSpin > TimeSpan.FromMilliseconds(10))
        {
            throw new ArgumentException($"FaultServiceSpin is {FaultServiceSpin}; it must be between 0 and 10 ms.", nameof(FaultServiceSpin));
        }
        if (!(RecompressionCpuShare is >= 0 and <= 1))
        {
            throw new ArgumentException($"RecompressionCpuShare is {RecompressionCpuShare}; it must be between 0 (no recompression) and 1 (a whole CPU).", nameof(RecompressionCpuShare));
        }
        if (FaultLatencyProbeInterval != TimeSpan.Zero && (FaultLatencyProbeInterval < TimeSpan.FromMilliseconds(1) || FaultLatencyProbeInterval > TimeSpan.FromSeconds(10)))
        {
            throw new ArgumentException($"FaultLatencyProbeInterval is {FaultLatencyProbeInterval}; it must be between 1 ms and 10 s, or TimeSpan.Zero for no probes.", nameof(FaultLatencyProbeInterval));
        }
        if (ThrottleMax < TimeSpan.Zero || ThrottleMax > TimeSpan.FromSeconds(1))
        {
            throw new ArgumentException($"ThrottleMax is {ThrottleMax}; it must be between 0 and 1 s.", nameof(ThrottleMax));
        }
        if (PoolArenaBytes is < 1L << 20 or > 1L << 30 || (PoolArenaBytes & (PoolArenaBytes - 1)) != 0)
        {
            throw new ArgumentException($"PoolArenaBytes is {PoolArenaBytes}; it must be a power of two from 1 MiB (1048576) to 1 GiB (default 64 MiB).", nameof(PoolArenaBytes));
        }
        if (CompressedPoolLimitBytes < 0 || (CompressedPoolLimitBytes > 0 && CompressedPoolLimitBytes < PoolArenaBytes))
        {
            throw new ArgumentException($"CompressedPoolLimitBytes is {CompressedPoolLimitBytes}; use 0 for no limit or at least PoolArenaBytes ({PoolArenaBytes}).", nameof(CompressedPoolLimitBytes));
        }
        if (NativeLibraryPath is not null && !File.Exists(NativeLibraryPath))
        {
            throw new ArgumentException($"NativeLibraryPath is '{NativeLibraryPath}', which does not exist; give the path of libCramNative.so or leave it null.", nameof(NativeLibraryPath));
        }
        if (BackingFile is not null)
        {
            if (string.IsNullOrWhiteSpace(BackingFile))
            {
                throw new ArgumentException("BackingFile is empty; give a file path, or null for no file (ghost mode).", nameof(BackingFile));
            }
            if (CompressedPoolLimitBytes == 0 && MemoryLimitBytes == 0)
            {
                throw new ArgumentException("BackingFile is set but CompressedPoolLimitBytes is 0 (no limit), so writeback would never start; set a pool limit, or MemoryLimitBytes (the pool then gets a quarter of it).", nameof(CompressedPoolLimitBytes));
            }
        }
        if (RemoteStore is not null)
        {
            if (BackingFile is not null && BackingFileLimitBytes == 0)
            {
                throw new ArgumentException("BackingFile and RemoteStore are both set but BackingFileLimitBytes is 0: the file's oldest segments go to the store when the file reaches its limit, so give it one (e.g. 1 GiB), or leave one of the two tiers out.", nameof(BackingFileLimitBytes));
            }
            if (CompressedPoolLimitBytes == 0 && MemoryLimitBytes == 0)
            {
                throw new ArgumentException("RemoteStore is set but CompressedPoolLimitBytes is 0 (no limit), so writeback would never start; set a pool limit, or MemoryLimitBytes (the pool then gets a quarter of it).", nameof(CompressedPoolLimitBytes));
            }
            if (RemoteStore.Nodes is not { Count: > 0 and <= RemoteLocation.MaxEndpoints } nodes ||
                nodes.Any(n => n.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork))
            {
                throw new ArgumentException($"RemoteStore lists {RemoteStore.Nodes?.Count ?? 0} nodes; it needs 1 to {RemoteLocation.MaxEndpoints} IPv4 endpoints (the fault path connects to them).", nameof(RemoteStore));
            }
            if (RemoteStore.Password is { } password && System.Text.Encoding.UTF8.GetByteCount(password) > 63)
            {
                throw new ArgumentException("RemoteStore's password is longer than 63 bytes, which the native read half cannot send; use a shorter one.", nameof(RemoteStore));
            }
        }
        if (RemoteKeyPrefix is not null && (RemoteKeyPrefix.Length is 0 or > 40 || !RemoteKeyPrefix.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
        {
            throw new ArgumentException($"RemoteKeyPrefix is '{RemoteKeyPrefix}'; use 1 to 40 letters, digits, '-', '_' or '.', or null for a random one.", nameof(RemoteKeyPrefix));
        }
        if (RemoteReadTimeout < TimeSpan.FromMilliseconds(100) || RemoteReadTimeout > TimeSpan.FromMinutes(10))
        {
            throw new ArgumentException($"RemoteReadTimeout is {RemoteReadTimeout}; it must be between 100 ms and 10 minutes.", nameof(RemoteReadTimeout));
        }
        if (RemoteLease < TimeSpan.FromSeconds(10) || RemoteLease > TimeSpan.FromDays(7))
        {
            throw new ArgumentException($"RemoteLease is {RemoteLease}; it must be between 10 seconds and 7 days.", nameof(RemoteLease));
        }
        if (BackingFileLimitBytes < 0 || (BackingFileLimitBytes > 0 && BackingFileLimitBytes < Storage.BackingFile.SegmentBytes))
        {
            throw new ArgumentException($"BackingFileLimitBytes is {BackingFileLimitBytes}; use 0 for no limit or at least one segment ({Storage.BackingFile.SegmentBytes} bytes).", nameof(BackingFileLimitBytes));
        }
        if (!(WritebackHighWatermark is >= 0.1 and <= 1))
        {
            throw new ArgumentException($"WritebackHighWatermark is {WritebackHighWatermark}; it must be between 0.1 and 1 (a fraction of CompressedPoolLimitBytes).", nameof(WritebackHighWatermark));
        }
        if (!(WritebackLowWatermark >= 0 && WritebackLowWatermark < WritebackHighWatermark))
        {
            throw new ArgumentException($"WritebackLowWatermark is {WritebackLowWatermark}; it must be at least 0 and below WritebackHighWatermark ({WritebackHighWatermark}).", nameof(WritebackLowWatermark));
        }
        if (WritebackBytesPerSecond < 0)
        {
            throw new ArgumentException($"WritebackBytesPerSecond is {WritebackBytesPerSecond}; use 0 for no limit or a positive rate.", nameof(WritebackBytesPerSecond));
        }
        if (WritableBudgetPages < 0)
        {
            throw new ArgumentException($"WritableBudgetPages is {WritableBudgetPages}; use 0 (every write promotes) or a page count.", nameof(WritableBudgetPages));
        }
        if (WriteBudgetSource is not null && WritableBudgetPages > 0)
        {
            throw new ArgumentException("Both WriteBudgetSource and WritableBudgetPages are set; the budget comes from one of them: leave WritableBudgetPages 0 to use the control plane.", nameof(WritableBudgetPages));
        }
        if ((WriteBudgetSource is not null || WritableBudgetPages > 0) && CramDevice is null)
        {
            throw new ArgumentException("A writable budget is set but CramDevice is null; set CramDevice (e.g. new EmulatedCramDevice(capacity)).", nameof(CramDevice));
        }
        if (ControlPlaneLease < TimeSpan.FromMilliseconds(10) || ControlPlaneLease > TimeSpan.FromMinutes(1))
        {
            throw new ArgumentException($"ControlPlaneLease is {ControlPlaneLease}; it must be between 10 ms and 1 minute.", nameof(ControlPlaneLease));
        }
        if (CramDevice is not null && (CramDevice.CapacityBytes <= 0 || CramDevice.FrameCount < 64 || (CramDevice.FrameCount & (CramDevice.FrameCount - 1)) != 0 || CramDevice.FrameCount > 1L << 30))
        {
            throw new ArgumentException($"CramDevice reports {CramDevice.CapacityBytes} bytes and {CramDevice.FrameCount} frames; it needs a positive capacity and a power-of-two frame count from 64 to 2^30.", nameof(CramDevice));
        }
        if (FaultAroundPages is < 1 or > SharedLayout.FaultAroundMax)
        {
            throw new ArgumentException($"FaultAroundPages is {FaultAroundPages}; it must be between 1 (off) and {SharedLayout.FaultAroundMax}.", nameof(FaultAroundPages));
        }
    }

    /// <summary>The smallest <see cref="MemoryLimitBytes"/>: 16 MiB.</summary>
    internal const long MinMemoryLimitBytes = 16L << 20;

    /// <summary>
    /// Fills in what other options imply, after <see cref="Validate"/>: with a memory limit and a
    /// backing file but no pool limit, the pool gets a quarter of the memory limit (whole pages).
    /// </summary>
    internal void Resolve()
    {
        if (MemoryLimitBytes > 0 && (BackingFile is not null || RemoteStore is not null) && CompressedPoolLimitBytes == 0)
        {
            CompressedPoolLimitBytes = MemoryLimitBytes / 4 / SharedLayout.PageSize * SharedLayout.PageSize;
        }
        if (CompressionThreads == 0)
        {
            CompressionThreads = 1 + Reclaim.CompressionHelpers.DefaultHelpers;
        }
        RemoteKeyPrefix ??= "cram-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6));
        if (ReadaheadThreads == 0)
        {
            ReadaheadThreads = Environment.ProcessorCount > 1 ? 2 : 1;
        }
    }

    internal CramOptions Clone() => (CramOptions)MemberwiseClone();
}
