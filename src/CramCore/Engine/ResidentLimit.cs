using CramCore.Native;

namespace CramCore.Engine;

/// <summary>
/// The resident limit the user asks for (<see cref="CramEngine.ResidentLimitBytes"/>): checked,
/// rounded to pages, handed to the memory budget (which may hold a lower one) and to the reclaim
/// worker, under the engine's lock so it never races a dispose.
/// </summary>
internal sealed class ResidentLimit(EngineParts parts, EngineRegions regions, long memoryLimitBytes, long initialBytes)
{
    private long _bytes = initialBytes / SharedLayout.PageSize * SharedLayout.PageSize;

    /// <summary>The limit asked for, in bytes (whole pages; 0: none).</summary>
    public long Bytes => Volatile.Read(ref _bytes);

    /// <summary>Sets the limit (see <see cref="CramEngine.ResidentLimitBytes"/> for what is allowed).</summary>
    public void Set(long value, CramEngine owner)
    {
        if (value < 0 || (value > 0 && value < 64 * SharedLayout.PageSize))
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "The resident limit is 0 (none) or at least 64 pages (262144 bytes).");
        }
        if (memoryLimitBytes > 0 && value > memoryLimitBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, $"The resident limit cannot be above MemoryLimitBytes ({memoryLimitBytes}), which also counts the pool and metadata; use 0 to let the memory limit set it.");
        }
        lock (regions.Lock)
        {
            ObjectDisposedException.ThrowIf(regions.Closing, owner);
            long pages = value / SharedLayout.PageSize;
            parts.Budget.SetUserLimit(pages); // the service sees it (or what the memory limit leaves, if lower) at once
            parts.Worker.LimitChanged();
            Volatile.Write(ref _bytes, pages * SharedLayout.PageSize);
        }
    }
}
