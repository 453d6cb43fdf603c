namespace CramCore;

/// <summary>
/// The engine's live regions by id (the native side has its own table, which C# never reads).
/// Lookups are lock-free; adds and removes happen under the engine's lock.
/// </summary>
internal sealed class RegionTable
{
    private readonly CramRegion?[] _regions = new CramRegion?[SharedLayout.MaxRegions];

    public CramRegion? Get(uint id) => id < SharedLayout.MaxRegions ? Volatile.Read(ref _regions[id]) : null;

    public void Add(CramRegion region) => Volatile.Write(ref _regions[region.Id], region);

    public void Remove(CramRegion region) => Interlocked.CompareExchange(ref _regions[region.Id], null, region);

    public int Count => _regions.Count(r => r is not null);

    /// <summary>A snapshot of the live regions.</summary>
    public List<CramRegion> Snapshot()
    {
        var live = new List<CramRegion>();
        foreach (CramRegion? r in _regions)
        {
            if (r is not null)
            {
                live.Add(r);
            }
        }
        return live;
    }
}
