using System.Diagnostics;
using CramCore.Internals;
using CramCore.Native;
using CramCore.Reclaim;

namespace CramCore.Engine;

/// <summary>
/// The engine's regions: creating one (a native mapping, its page table, the service told), tearing
/// one down (fenced out of the service, forgotten by reclaim, its pages and slots freed), its
/// census, and the range hints of <see cref="CramRegion.Advise"/> (prefetch in the background,
/// discard now, the rest to reclaim). Region lifecycle runs under the engine's lock (lock 1 in
/// cramnative.h), which this part owns; tear-down also pauses reclaim (lock 3).
/// </summary>
internal sealed unsafe class EngineRegions
{
    private readonly EngineParts _parts;
    private readonly Prefetcher _prefetcher;

    public EngineRegions(EngineParts parts)
    {
        _parts = parts;
        _prefetcher = new Prefetcher(PrefetchStep);
    }

    /// <summary>The engine's lock (lock 1): region create and tear-down, engine dispose, the resident limit.</summary>
    public Lock Lock { get; } = new();

    /// <summary>Set under <see cref="Lock"/> once the engine is being disposed: nothing new starts.</summary>
    public bool Closing { get; set; }

    public int Count => _parts.Regions.Count;

    /// <summary>Reserves a region of <paramref name="length"/> bytes (whole pages); under <see cref="Lock"/>.</summary>
    public RegionMapping Create(long length)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "region create runs under the engine's lock (1)");
        Errno errno = _parts.Engine.RegionCreate((ulong)length, out uint id, out ulong baseAddress, out ulong pageTable);
        if (errno != Errno.None)
        {
            if (errno == Errno.EMFILE)
            {
                throw new InvalidOperationException($"An engine holds at most {SharedLayout.MaxRegions} regions; dispose some first.");
            }
            if (errno == Errno.ENOMEM)
            {
                throw new OutOfMemoryException($"Reserving a region of {length} bytes failed: no address space (check `ulimit -v` and vm.overcommit_memory).");
            }
            throw Interop.GetExceptionForErrno(errno, $"Creating a region of {length} bytes");
        }
        var mapping = new RegionMapping(id, (byte*)baseAddress, (ulong*)pageTable, length);
        _parts.Regions.Add(mapping);
        return mapping;
    }

    /// <summary>Tears a region down if it is still the engine's (a second dispose does nothing).</summary>
    public void Remove(RegionMapping region)
    {
        lock (Lock)
        {
            if (Closing || _parts.Regions.Get(region.Id) != region)
            {
                return;
            }
            Detach(region);
        }
    }

    /// <summary>Every region refuses new calls and waits for those in flight (<see cref="RegionMapping.MarkDetached"/>); with no engine lock held, before <see cref="DetachAll"/>.</summary>
    public void RetireAll()
    {
        foreach (RegionMapping region in _parts.Regions.Snapshot())
        {
            region.MarkDetached();
        }
    }

    /// <summary>Stops the prefetcher (before the engine tears anything down that it reads) and detaches every region; under <see cref="Lock"/>.</summary>
    public void DetachAll()
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "engine dispose detaches under the engine's lock (1)");
        _prefetcher.Stop();
        foreach (RegionMapping region in _parts.Regions.Snapshot())
        {
            Detach(region);
        }
    }

    /// <summary>
    /// Takes a region out of reclaim and the service and frees its pages and slots; under
    /// <see cref="Lock"/>, with reclaim paused so no pass is using the region.
    /// </summary>
    private void Detach(RegionMapping region)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "region tear-down runs under the engine's lock (1)");
        using (_parts.Reclaimer.Pause())
        {
            _parts.Regions.Remove(region); // later passes cannot find it
            region.MarkDetached();
            // Fence the service out, then drop the region's queued pages (the log holds no more).
            Interop.ThrowIfFailed(_parts.Engine.RegionDeactivate(region.Id), "Deactivating a region");
            _parts.Reclaimer.ForgetRegion(region.Id);
            // Native: counters, every slot still named pushed on the stale list, unmap.
            Interop.ThrowIfFailed(_parts.Engine.RegionDestroy(region.Id), "Destroying a region");
            _parts.Reaper.Drain();
        }
    }

    /// <summary>A region's census; under <see cref="Lock"/>, so the region cannot be destroyed meanwhile, while faults and reclaim go on.</summary>
    public CramRegionStats Census(RegionMapping region)
    {
        NativeRegionCensus c;
        lock (Lock)
        {
            ObjectDisposedException.ThrowIf(Closing || region.Detached, typeof(CramRegion));
            Interop.ThrowIfFailed(_parts.Engine.RegionCensus(region.Id, &c), "Counting a region's pages");
        }
        return new CramRegionStats
        {
            LogicalBytes = (long)c.PopulatedPages << SharedLayout.PageShift,
            ResidentBytes = (long)c.ResidentPages << SharedLayout.PageShift,
            EvictedBytes = (long)c.EvictedPages << SharedLayout.PageShift,
            CleanCopyBytes = (long)c.CleanCopyPages << SharedLayout.PageShift,
            PlacedBytes = (long)c.PlacedPages << SharedLayout.PageShift,
            SameFilledPages = (long)c.SameFilledPages,
            StoredBytes = (long)c.StoredBytes,
            FirstTouchFaults = (long)c.FaultsFirstTouch,
            SwapInFaults = (long)c.FaultsSwapin,
            WriteProtectFaults = (long)c.FaultsWriteProtect,
        };
    }

    /// <summary>
    /// Applies advice to pages [start, end) of a region (<see cref="CramRegion.Advise"/>, which
    /// checks the range): prefetch is queued, a discard happens now, the other hints go to reclaim.
    /// </summary>
    public void Advise(RegionMapping region, ulong start, ulong end, CramAdvice advice)
    {
        ObjectDisposedException.ThrowIf(Closing, typeof(CramEngine));
        switch (advice)
        {
            case CramAdvice.WillNeed:
                _prefetcher.Enqueue(region, start, end);
                break;
            case CramAdvice.DontNeed:
                _parts.Reclaimer.Advise(region, start, end, CramAdvice.Normal, ListResident(region)); // hints of discarded pages go with them
                Discard(region, start, end);
                break;
            default:
                _parts.Reclaimer.Advise(region, start, end, advice, ListResident(region));
                break;
        }
    }

    /// <summary>Evicts up to <paramref name="pages"/> of a region's resident pages now (<see cref="CramRegion.Reclaim"/>). Returns pages evicted.</summary>
    public long Reclaim(RegionMapping region, long pages) => _parts.Reclaimer.Reclaim(pages, region);

    /// <summary>Completes once every prefetch queued so far is finished (tests, benchmarks).</summary>
    public Task PrefetchIdle() => _prefetcher.WhenIdle();

    /// <summary>Pages of a region that reclaim can take (DIRTY or CLEAN), through the native walk of the touched blocks.</summary>
    private Reclaimer.ListPages ListResident(RegionMapping region) => (ulong start, ulong end, ulong[] pages, out ulong next) =>
    {
        const uint resident = 1u << (int)PageState.Dirty | 1u << (int)PageState.Clean;
        int found;
        fixed (ulong* p = pages)
        {
            Interop.ThrowIfFailed(_parts.Engine.FindPages(region.Id, start, end, resident, p, pages.Length, out found, out next), "Listing a region's resident pages");
        }
        return found;
    };

    /// <summary>Discards pages [start, end) of a region (CramNative_DiscardPages), with reclaim paused as the native call requires.</summary>
    private void Discard(RegionMapping region, ulong start, ulong end)
    {
        using (_parts.Reclaimer.Pause())
        {
            ObjectDisposedException.ThrowIf(_parts.Reclaimer.Stopping || region.Detached, typeof(CramRegion));
            Errno errno = _parts.Engine.DiscardPages(region.Id, start, end, out _);
            _parts.Reaper.Drain(); // free the discarded copies now
            Interop.ThrowIfFailed(errno, "Discarding pages");
        }
    }

    /// <summary>One piece of a prefetch (<see cref="Prefetcher.Step"/>), with reclaim paused so the region cannot be torn down under the native call.</summary>
    private bool PrefetchStep(RegionMapping region, ref ulong next, ulong end)
    {
        using (_parts.Reclaimer.Pause())
        {
            if (_parts.Reclaimer.Stopping || region.Detached)
            {
                return false;
            }
            if (_parts.Engine.PrefetchPages(region.Id, next, end, out ulong after, out _, out bool atLimit) != Errno.None)
            {
                return false; // counted as a service error natively; the pages come in on their own faults
            }
            next = after;
            return !atLimit && after < end;
        }
    }
}
