namespace CramCore.Reclaim;

/// <summary>The watermarks around a resident limit that background reclaim and the fault service hold.</summary>
internal static class ReclaimWatermarks
{
    /// <summary>Most pages one pass evicts under a memory limit before the budget is asked again (4 MiB).</summary>
    public const long MemoryLimitPassPages = 4 * EvictionPipeline.BatchPages;

    /// <summary>Background reclaim brings resident memory down to this after the limit is crossed.</summary>
    public static long LowWaterPages(long limitPages) =>
        Math.Max(1, limitPages - Math.Max(32, limitPages / 64));

    /// <summary>Faults wait (bounded) for reclaim above this.</summary>
    public static long HardLimitPages(long limitPages) => limitPages + Math.Max(32, limitPages / 40);
}
