namespace CramCore.Storage;

/// <summary>Occupancy of one size class of the compressed pool.</summary>
internal readonly record struct PoolClassStats(int ObjectSize, int ZspagePages, long Objects, long Capacity);

/// <summary>A snapshot of the compressed pool.</summary>
internal readonly record struct PoolStats(
    long UsedBytes, long ObjectBytes, long Objects, long Zspages, long ArenaBytes, long CompactedPages,
    long MovedObjects, long FullRejections, double Fragmentation, PoolClassStats[] Classes)
{
    /// <summary>Σ object sizes / bytes of class pages in use.</summary>
    public double Density => UsedBytes == 0 ? 1 : (double)ObjectBytes / UsedBytes;
}
