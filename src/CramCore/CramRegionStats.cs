namespace CramCore;

/// <summary>
/// A snapshot of one region's pages (<see cref="CramRegion.GetStats"/>), counted from its page
/// table: exact for a quiet region, a close snapshot while threads fault and reclaim runs.
/// </summary>
public sealed record CramRegionStats
{
    /// <summary>Bytes of the region's pages that hold data: touched at least once, resident or evicted.</summary>
    public long LogicalBytes { get; init; }
    /// <summary>Bytes of the region's pages mapped in memory now.</summary>
    public long ResidentBytes { get; init; }
    /// <summary>Bytes of the region's pages that are evicted (their copies stored).</summary>
    public long EvictedBytes { get; init; }
    /// <summary>Of <see cref="ResidentBytes"/>, pages that keep their stored copy (read back after eviction; see <see cref="CramStats.CleanCopyBytes"/>).</summary>
    public long CleanCopyBytes { get; init; }
    /// <summary>Bytes of the region's pages placed on the CRAM node (mapped read-only in place).</summary>
    public long PlacedBytes { get; init; }
    /// <summary>Evicted or clean-copy pages whose copy is a repeated value (zero pages included): no storage.</summary>
    public long SameFilledPages { get; init; }
    /// <summary>Σ sizes of the stored copies of the region's evicted and clean pages (pool or backing file).</summary>
    public long StoredBytes { get; init; }
    /// <summary>First touches of the region's pages (each installs a zero page), since it was created.</summary>
    public long FirstTouchFaults { get; init; }
    /// <summary>Faults that swapped an evicted page of the region back in (pages brought in by readahead or prefetch not counted).</summary>
    public long SwapInFaults { get; init; }
    /// <summary>Write-protect faults in the region: writes to pages that kept a stored copy, or to pages being evicted or placed on the CRAM node.</summary>
    public long WriteProtectFaults { get; init; }
}
