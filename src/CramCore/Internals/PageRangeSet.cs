namespace CramCore.Internals;

/// <summary>
/// A set of pages kept as sorted, disjoint, non-adjacent ranges [Start, End): the hot ranges of a
/// region (<see cref="CramAdvice.Hot"/>). Costs a few words per range whatever their length, and a
/// binary search per lookup. Not thread-safe: its owner serializes changes and lookups (the
/// reclaimer's maintenance lock).
/// </summary>
internal sealed class PageRangeSet
{
    private readonly List<(ulong Start, ulong End)> _ranges = [];

    /// <summary>The ranges, in order.</summary>
    public IReadOnlyList<(ulong Start, ulong End)> Ranges => _ranges;

    /// <summary>True when the set is empty (reclaim skips the lookups).</summary>
    public bool IsEmpty => _ranges.Count == 0;

    /// <summary>Whether <paramref name="page"/> is in the set.</summary>
    public bool Contains(ulong page)
    {
        int i = FirstEndingAfter(page);
        return i < _ranges.Count && _ranges[i].Start <= page;
    }

    /// <summary>Adds the pages [start, end), merging with the ranges they overlap or touch.</summary>
    public void Add(ulong start, ulong end)
    {
        if (start >= end)
        {
            return;
        }
        int i = FirstEndingAtOrAfter(start); // the first range that overlaps or touches [start, end), if any
        int j = i;
        while (j < _ranges.Count && _ranges[j].Start <= end)
        {
            start = Math.Min(start, _ranges[j].Start);
            end = Math.Max(end, _ranges[j].End);
            j++;
        }
        _ranges.RemoveRange(i, j - i);
        _ranges.Insert(i, (start, end));
    }

    /// <summary>Removes the pages [start, end), splitting a range that spans them.</summary>
    public void Remove(ulong start, ulong end)
    {
        if (start >= end)
        {
            return;
        }
        int i = FirstEndingAfter(start);
        var keep = new List<(ulong, ulong)>(2);
        int j = i;
        while (j < _ranges.Count && _ranges[j].Start < end)
        {
            (ulong s, ulong e) = _ranges[j];
            if (s < start)
            {
                keep.Add((s, start));
            }
            if (e > end)
            {
                keep.Add((end, e));
            }
            j++;
        }
        _ranges.RemoveRange(i, j - i);
        _ranges.InsertRange(i, keep);
    }

    /// <summary>Index of the first range whose End is greater than <paramref name="page"/>.</summary>
    private int FirstEndingAfter(ulong page)
    {
        int lo = 0, hi = _ranges.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_ranges[mid].End > page)
            {
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }
        return lo;
    }

    /// <summary>Index of the first range whose End is at least <paramref name="page"/> (touching counts).</summary>
    private int FirstEndingAtOrAfter(ulong page) => page == 0 ? 0 : FirstEndingAfter(page - 1);
}
