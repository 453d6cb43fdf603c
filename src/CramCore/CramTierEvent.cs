namespace CramCore;

/// <summary>What a <see cref="CramEngine.TierEvent"/> reports.</summary>
public enum CramTierEventKind
{
    /// <summary>The compressed pool is full and there is no backing file (ghost mode) or it cannot take more: reclaim stops and pages stay resident; nothing is lost.</summary>
    PoolFull,
    /// <summary>The pool takes pages again after <see cref="PoolFull"/>.</summary>
    PoolAvailable,
    /// <summary>A write to the backing file failed (ENOSPC, EIO, ...): the entries stay in the pool and writeback retries every second.</summary>
    WritebackPaused,
    /// <summary>A write to the backing file succeeded again after <see cref="WritebackPaused"/>.</summary>
    WritebackResumed,
    /// <summary>The backing file reached <see cref="CramOptions.BackingFileLimitBytes"/> with no dead segment to reuse.</summary>
    BackingFileFull,
    /// <summary>Stored bytes did not match their checksum: the page was not mapped and the faulting thread got SIGBUS.</summary>
    ChecksumFailure,
    /// <summary>A backing-file read failed twice: the page was not mapped and the faulting thread got SIGBUS.</summary>
    ReadError,
    /// <summary>The CRAM node's ledger passed the high pressure threshold: it takes no new pages.</summary>
    CramPressureHigh,
    /// <summary>The CRAM node's ledger is below the low pressure threshold again.</summary>
    CramPressureLow,
    /// <summary>The CRAM device's control plane did not answer within its lease: no page becomes writable until it does; writes promote.</summary>
    CramControlPlaneLost,
    /// <summary>The control plane answered again after <see cref="CramControlPlaneLost"/>: its budget applies again.</summary>
    CramControlPlaneRegained,
    /// <summary>The CRAM device kept failing (its calls threw): the node places nothing more, every write to a placed page promotes, and its pages move out to the pool.</summary>
    CramDeviceOutOfService,
    /// <summary>Faults started to wait for reclaim: resident memory is at the hard limit, so writers are being slowed (bounded by <see cref="CramOptions.ThrottleMax"/> each).</summary>
    ThrottlingStarted,
    /// <summary>No fault has waited for reclaim for a second after <see cref="ThrottlingStarted"/>.</summary>
    ThrottlingStopped,
    /// <summary>A system call of the fault service failed (should never happen; <see cref="CramStats.ServiceErrors"/> counts them): the pages involved were left to fault again.</summary>
    ServiceError,
    /// <summary>
    /// <see cref="CramOptions.MemoryLimitBytes"/> cannot be held: memory is over it and reclaim can
    /// free no more (no backing file and the data does not compress, the pool is full, or writeback
    /// cannot keep up). Every fault that adds a page now waits up to
    /// <see cref="CramOptions.MemoryLimitWait"/>, then proceeds; <see cref="CramStats.MemoryLimitExceeded"/> is true.
    /// </summary>
    MemoryLimitExceeded,
    /// <summary>Memory is back under <see cref="CramOptions.MemoryLimitBytes"/> after <see cref="MemoryLimitExceeded"/>; faults no longer wait.</summary>
    MemoryLimitRestored,
    /// <summary>
    /// A callback of yours threw (a <see cref="CramEngine.TierEvent"/> handler, <see cref="ICramDevice"/>
    /// or the logger): CramCore caught it and carried on. Raised once per callback; every failure is
    /// counted in <see cref="CramStats.CallbackFailures"/> (metric <c>cramcore.errors.callback</c>).
    /// </summary>
    CallbackFailed,
}

/// <summary>An event of the engine's storage tiers (<see cref="CramEngine.TierEvent"/>).</summary>
/// <param name="kind">What happened.</param>
/// <param name="message">What happened and what it means, for a log.</param>
public sealed class CramTierEventArgs(CramTierEventKind kind, string message) : EventArgs
{
    /// <summary>What happened.</summary>
    public CramTierEventKind Kind { get; } = kind;

    /// <summary>What happened and what it means, for a log.</summary>
    public string Message { get; } = message;

    /// <summary>The kind and the message, as a log line shows them.</summary>
    public override string ToString() => $"{Kind}: {Message}";
}
