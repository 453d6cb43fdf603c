namespace CramCore.Reclaim;

/// <summary>
/// What reclaim counts. Managed code is the only writer of these (the native counters are in
/// <see cref="Native.NativeStats"/>); one pass runs at a time, but readers are on any thread.
/// </summary>
internal sealed class ReclaimCounters
{
    private long _compressed, _incompressible, _estimatedIncompressible, _mispredictedCompressible, _audits,
        _falseIncompressible, _zeroCopiesPublished, _errors, _placed, _replaced, _uncompressedStored,
        _helperClassified;

    /// <summary>Victims classified (and compressed, when worth it) by a compression helper rather than the reclaim worker.</summary>
    public long HelperClassifiedPages => Volatile.Read(ref _helperClassified);
    /// <summary>Pages stored LZ4-compressed.</summary>
    public long CompressedPages => Volatile.Read(ref _compressed);
    /// <summary>Pages that do not compress (LZ4 failed or the estimator was confident): kept resident, or stored as they are with a backing file.</summary>
    public long IncompressiblePages => Volatile.Read(ref _incompressible);
    /// <summary>Of those, pages stored as they are (there is a backing file).</summary>
    public long UncompressedStoredPages => Volatile.Read(ref _uncompressedStored);
    /// <summary>Of those, pages the estimator kept without an LZ4 attempt.</summary>
    public long EstimatedIncompressiblePages => Volatile.Read(ref _estimatedIncompressible);
    /// <summary>Pages the estimator called compressible that LZ4 could not compress.</summary>
    public long MispredictedCompressiblePages => Volatile.Read(ref _mispredictedCompressible);
    /// <summary>Predicted-incompressible pages compressed anyway, to measure the estimator's error.</summary>
    public long EstimatorAudits => Volatile.Read(ref _audits);
    /// <summary>Audited pages that did compress.</summary>
    public long FalseIncompressiblePages => Volatile.Read(ref _falseIncompressible);
    /// <summary>Slot-0 (zero page) copies published; the native side counts those released.</summary>
    public long ZeroCopiesPublished => Volatile.Read(ref _zeroCopiesPublished);
    /// <summary>Pages placed on the CRAM node.</summary>
    public long Placements => Volatile.Read(ref _placed);
    /// <summary>Writable CRAM pages made read-only again (their budget released).</summary>
    public long Replacements => Volatile.Read(ref _replaced);
    /// <summary>Passes that ended in an error (a failed write-protect or drop), rolled back.</summary>
    public long Errors => Volatile.Read(ref _errors);

    internal void AddCompressed(long n) => Interlocked.Add(ref _compressed, n);
    internal void AddPlaced() => Interlocked.Increment(ref _placed);
    internal void AddReplaced(long n) => Interlocked.Add(ref _replaced, n);
    internal void AddIncompressible(bool estimated)
    {
        Interlocked.Increment(ref _incompressible);
        if (estimated)
        {
            Interlocked.Increment(ref _estimatedIncompressible);
        }
    }
    internal void AddUncompressedStored() => Interlocked.Increment(ref _uncompressedStored);
    internal void AddMispredictedCompressible() => Interlocked.Increment(ref _mispredictedCompressible);
    internal void AddAudit() => Interlocked.Increment(ref _audits);
    internal void AddFalseIncompressible() => Interlocked.Increment(ref _falseIncompressible);
    internal void AddZeroCopy(long delta) => Interlocked.Add(ref _zeroCopiesPublished, delta);
    internal void AddError() => Interlocked.Increment(ref _errors);
    internal void AddHelperClassified() => Interlocked.Increment(ref _helperClassified);
}
