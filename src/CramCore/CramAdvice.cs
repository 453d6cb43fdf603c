namespace CramCore;

/// <summary>
/// What the application knows about a range of a region (<see cref="CramRegion.Advise"/>), in the
/// spirit of <c>madvise(2)</c>. The latest advice for a page wins.
/// </summary>
public enum CramAdvice
{
    /// <summary>No hint: the range is neither kept (<see cref="Hot"/>) nor taken first (<see cref="Cold"/>) any more; reclaim treats it like everything else.</summary>
    Normal = 0,

    /// <summary>
    /// Reclaim first: the range's resident pages become the next victims, before any page reclaim
    /// chose on its own and without the second chance a recent access gives. Nothing is evicted
    /// until reclaim runs (the resident limit, or <see cref="CramRegion.Reclaim"/>). Once evicted,
    /// the range's copies are recompressed (<see cref="CramOptions.RecompressionCpuShare"/>) without
    /// waiting for the working set's distance, until the range is advised otherwise.
    /// </summary>
    Cold = 1,

    /// <summary>
    /// Keep resident while the resident limit allows: reclaim passes over the range's pages and
    /// evicts them only when nothing else it can evict would bring resident memory under the limit.
    /// Pages already evicted stay evicted until touched (add <see cref="WillNeed"/> to bring them in).
    /// </summary>
    Hot = 2,

    /// <summary>
    /// Prefetch: the range's evicted pages are swapped in ahead of use, in the background (the call
    /// returns at once), without a fault each, and never past the soft resident limit. The pages come
    /// back exactly as a read brings them (they keep their stored copy until written).
    /// </summary>
    WillNeed = 3,

    /// <summary>
    /// Discard: the range's data is dropped without being compressed or stored: resident pages are
    /// unmapped, stored copies freed, and the next read sees zeros, as after
    /// <c>madvise(MADV_DONTNEED)</c> on private anonymous memory. Whole pages are discarded; the
    /// parts of the first and last page that fall inside the range are overwritten with zeros.
    /// </summary>
    DontNeed = 4,
}
