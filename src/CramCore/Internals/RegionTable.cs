using CramCore.Native;

namespace CramCore.Internals;

/// <summary>
/// The engine's live regions by id (the native side has its own table, which C# never reads).
/// Lookups are lock-free; adds and removes happen under the engine's lock.
/// </summary>
internal sealed class RegionTable
{
    private readonly RegionMapping?[] _regions = new RegionMapping?[SharedLayout.MaxRegions];

    public RegionMapping? Get(uint id) => id < SharedLayout.MaxRegions ? Volatile.Read(ref _regions[id]) : null;

    public void Add(RegionMapping region) => Volatile.Write(ref _regions[region.Id], region);

    public void Remove(RegionMapping region) => Interlocked.CompareExchange(ref _regions[region.Id], null, region);

    public int Count => _regions.Count(r => r is not null);

    /// <summary>A snapshot of the live regions.</summary>
    public List<RegionMapping> Snapshot()
    {
        var live = new List<RegionMapping>();
        foreach (RegionMapping? r in _regions)
        {
            if (r is not null)
            {
                live.Add(r);
            }
        }
        return live;
    }
}
