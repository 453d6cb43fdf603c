using System.Runtime.InteropServices;
using CramCore.Internals;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The CRAM node (seeds 000–002): the managed half of the CRAM backend (cramnative.h, "CRAM node").
/// <list type="bullet">
/// <item><b>Allocation control</b>: only reclaim places pages here, only very compressible ones
///   (estimator class confirmed by the LZ4 size), and only while the node is open (its ledger
///   below the high pressure threshold). Frames come from a lock-free buddy allocator of their
///   own, capped by the balloon.</item>
/// <item><b>Write control</b>: placed pages stay mapped read-only in place; the fault service makes
///   a written one writable within the budget or promotes it. The budget is the administrator's
///   risk dial (<see cref="CramOptions.WritableBudgetPages"/>) or the device's control plane
///   (<see cref="IWriteBudgetSource"/>), read on its own thread and trusted for a lease; when the
///   lease runs out the budget can only shrink to what is already writable, so every further
///   write is promoted.</item>
/// <item><b>The device's view</b>: physical usage as inline-compression hardware would see it —
///   the ledger's sizes (measured at placement and re-placement) with writable frames
///   re-compressed by a periodic scan; overflow is usage beyond capacity (poison on real
///   hardware). Pressure thresholds raise events.</item>
/// <item><b>Balloon</b>: usable frames = capacity × observed compression ratio × a safety margin;
///   the frames above that are held, so placement stops as the ratio drops.</item>
/// <item><b>Moving out</b>: above the high pressure threshold, or with more frames in use than the
///   balloon leaves, the oldest placed entries leave through virtual swap: compressed into the
///   pool, then one native call rewrites each slot and drops the page (CramNative_MoveOutPages);
///   the page table is never walked. A full pool stops it (writeback then makes room).</item>
/// <item><b>TRIM</b>: frames freed by the reaper are trimmed in batches.</item>
/// </list>
/// Placement, re-placement, scans and TRIMs run on the maintenance path (the reclaimer's lock).
/// </summary>
internal sealed unsafe class CramNode : IDisposable
{
    /// <summary>The node closes to placement above this share of capacity in its ledger, and reopens below <see cref="LowPressure"/>.</summary>
    public const double HighPressure = 0.9, LowPressure = 0.75;

    /// <summary>Usable frames are this share of what the observed ratio would allow.</summary>
    public const double BalloonMargin = 0.8;

    private static readonly byte* FrameBase = (byte*)SharedLayout.PageSize; // frames are numbers, not memory

    /// <summary>The device's writable frames are compressed again at most this often by background upkeep.</summary>
    public static readonly TimeSpan ScanInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Most entries moved out per maintenance tick.</summary>
    public const int MoveOutBatch = 256;

    private readonly INativeEngine _engine;
    private readonly NativeShared* _shared;
    private readonly ICramDevice _device;
    private readonly BitmapBuddy _frames;
    private readonly long _hostBudget;
    private readonly IWriteBudgetSource? _source;
    private readonly long _leaseTicks;
    private readonly TimeProvider _time; // the lease, the control plane's polls, the scan interval
    private readonly CancellationTokenSource _stop = new(); // ends the control plane's wait between polls
    private readonly TierEventChannel _events;
    private readonly long _capacityBytes, _frameCount; // the device's, read once
    private readonly CramDeviceTrims _trims;
    private readonly Dictionary<long, (uint Region, ulong Page)> _owners = [];
    private readonly FifoQueue<long> _order = new(); // frames in placement order: the oldest leave first
    private readonly NativeCramMoveOut[] _moves = new NativeCramMoveOut[MoveOutBatch];
    private readonly long[] _moveFrames = new long[MoveOutBatch];
    private long _movedOut, _nextScan;
    private readonly byte* _scratch;
    private Thread? _controlPlane;
    private readonly Lock _planeLock = new(); // a leaf: the control plane's thread publishes under it; Dispose stops it under it
    private bool _stopping;
    private long _lastAnswerAt;
    private long _framesInUse, _maxOverflow, _physicalUsage;
    private bool _pressureHigh, _leaseExpiredReported;

    public CramNode(INativeEngine engine, NativeShared* shared, CramOptions options, TierEventChannel events)
    {
        _engine = engine;
        _shared = shared;
        _device = options.CramDevice!;
        _capacityBytes = _device.CapacityBytes; // read once: a device's property that throws later cannot reach the worker
        _frameCount = _device.FrameCount;
        _hostBudget = options.WritableBudgetPages;
        _source = options.WriteBudgetSource;
        _time = options.TimeProvider;
        _leaseTicks = (long)(options.ControlPlaneLease.TotalSeconds * _time.TimestampFrequency);
        _events = events;
        _trims = new CramDeviceTrims(_device, events);
        WriteControl = options.CramWriteControl;
        _frames = new BitmapBuddy(FrameBase, System.Numerics.BitOperations.Log2((ulong)_frameCount));
        _scratch = (byte*)NativeMemory.Alloc(2 * SharedLayout.PageSize);
        shared->CramCapacityBytes = (ulong)_capacityBytes;
        shared->CramWriteControl = WriteControl ? 1u : 0u;
        shared->CramWritableLimit = WriteControl ? (ulong)(_source is null ? _hostBudget : 0) : ulong.MaxValue;
        if (_source is not null && WriteControl)
        {
            _controlPlane = new Thread(AskControlPlane) { IsBackground = true, Name = "cram-control-plane" };
            _controlPlane.Start();
        }
    }

    public ICramDevice Device => _device;
    public bool WriteControl { get; }
    public bool PressureHigh => Volatile.Read(ref _pressureHigh);

    /// <summary>The device kept failing (<see cref="CramDeviceTrims"/>): the node places nothing more, makes nothing writable, and moves what it holds out to the pool.</summary>
    public bool OutOfService => _trims.OutOfService;
    public long TrimmedFrames => _trims.TrimmedFrames;
    public long MaxOverflowBytes => Interlocked.Read(ref _maxOverflow);
    public long PhysicalUsageBytes => Interlocked.Read(ref _physicalUsage);
    public long FramesInUse => Interlocked.Read(ref _framesInUse);
    public long MovedOut => Interlocked.Read(ref _movedOut);
    public bool ControlPlaneAlive => _source is not null && _time.GetTimestamp() - Interlocked.Read(ref _lastAnswerAt) <= _leaseTicks;

    /// <summary>Frames the node may use now: capacity × observed ratio × margin (the rest is the balloon).</summary>
    public long UsableFrames
    {
        get
        {
            ulong bytes = Volatile.Read(ref _shared->Stats.CramPlacedBytes), pages = Volatile.Read(ref _shared->Stats.CramPlacedPages);
            double ratio = pages == 0 || bytes == 0 ? _frameCount * (double)SharedLayout.PageSize / _capacityBytes
                                                    : pages * (double)SharedLayout.PageSize / bytes;
            double frames = _capacityBytes * Math.Max(1, ratio) * BalloonMargin / SharedLayout.PageSize;
            return (long)Math.Min(_frameCount, frames);
        }
    }

    /// <summary>Frames held back by the balloon.</summary>
    public long BalloonFrames => _frameCount - UsableFrames;

    /// <summary>Whether reclaim may place a page of <paramref name="size"/> compressed bytes now.</summary>
    public bool Wants(int size) => size <= SharedLayout.PageSize / 2 && !OutOfService && !PressureHigh && FramesInUse < UsableFrames;

    /// <summary>A free frame, or -1.</summary>
    public long AllocateFrame()
    {
        byte* block = _frames.Allocate(0);
        if (block == null)
        {
            return -1;
        }
        Interlocked.Increment(ref _framesInUse);
        return (block - FrameBase) >> SharedLayout.PageShift;
    }

    /// <summary>The page now on <paramref name="frame"/> (after the native placement succeeded).</summary>
    public void Placed(long frame, uint region, ulong page)
    {
        _owners[frame] = (region, page);
        _order.Enqueue(frame);
    }

    /// <summary>A frame no slot names any more (promoted, rewritten, region gone): free it and queue its TRIM.</summary>
    public void Release(long frame)
    {
        _owners.Remove(frame);
        _frames.Free(FrameBase + (frame << SharedLayout.PageShift), 0);
        Interlocked.Decrement(ref _framesInUse);
        _trims.Add(frame);
    }

    /// <summary>Re-places writable pages of a region (sorted): write-protect, measure again, release their budget.</summary>
    public int Replace(uint region, ulong[] pages, int count)
    {
        int replaced;
        fixed (ulong* p = pages)
        {
            Interop.ThrowIfFailed(_engine.ReplacePages(region, p, count, out replaced), "Re-placing writable CRAM pages");
        }
        return replaced;
    }

    /// <summary>
    /// Upkeep on the maintenance path: the budget (lease), the device's physical usage (scan of
    /// writable frames), pressure, and the batched TRIMs.
    /// </summary>
    public void Tick(RegionTable regions, SlotTable slots, bool forceScan = false)
    {
        UpdateBudget();
        long now = _time.GetTimestamp();
        if (forceScan || now >= _nextScan)
        {
            _nextScan = now + (long)(ScanInterval.TotalSeconds * _time.TimestampFrequency);
            Scan(regions, slots);
        }
        UpdatePressure();
        while (MustShrink() && MoveOut(regions, slots) > 0)
        {
            UpdatePressure();
        }
        FlushTrims();
        if (_order.Count > 2 * _owners.Count + 4096)
        {
            var seen = new HashSet<long>();
            _order.Retain(frame => _owners.ContainsKey(frame) && seen.Add(frame)); // dead and repeated entries
        }
    }

    /// <summary>Over the high threshold until back under the low one, or holding more frames than the balloon leaves.</summary>
    private bool MustShrink() => OutOfService || PressureHigh || FramesInUse > UsableFrames;

    /// <summary>
    /// Moves up to <see cref="MoveOutBatch"/> of the oldest read-only placed entries to the pool
    /// through virtual swap (compress, store, one native slot rewrite + drop per region batch,
    /// free the frame). Writable ones are skipped: reclaim re-places them first. Returns how many moved.
    /// </summary>
    public int MoveOut(RegionTable regions, SlotTable slots)
    {
        int moved = 0, n = 0, looked = 0, budget = _order.Count;
        uint batchRegion = 0;
        byte* copy = _scratch;
        while (n < MoveOutBatch && looked++ < budget && _order.TryDequeue(out long frame))
        {
            if (!_owners.TryGetValue(frame, out (uint Region, ulong Page) owner) || regions.Get(owner.Region) is not { } region)
            {
                continue; // freed (promoted, region gone) since it was placed
            }
            ulong pte = PageTableEntry.Load(region.PageTableEntries + owner.Page);
            NativeSlot* slot = PageTableEntry.State(pte) is PageState.Placed or PageState.PlacedWritable ? slots.Get(PageTableEntry.Slot(pte)) : null;
            if (slot == null || slot->Backend != SlotBackend.Cram || (long)slot->Location != frame)
            {
                continue;
            }
            if (PageTableEntry.State(pte) == PageState.PlacedWritable || (n > 0 && owner.Region != batchRegion))
            {
                _order.Enqueue(frame); // later: after its re-placement, or in the next region's batch
                continue;
            }
            byte* data = region.BasePointer + (owner.Page << SharedLayout.PageShift);
            int size = Interop.Lz4.CompressDefault(data, copy, SharedLayout.PageSize, SharedLayout.PageSize - 1);
            bool raw = size <= 0; // re-placed after it became incompressible: the pool keeps it as it is
            byte* stored = raw ? data : copy;
            size = raw ? SharedLayout.PageSize : size;
            uint handle = slots.Pool.Store(stored, size);
            if (handle == 0)
            {
                _order.Enqueue(frame);
                break; // the pool is full: stop here (writeback makes room, if there is a file)
            }
            batchRegion = owner.Region;
            _moveFrames[n] = frame;
            _moves[n++] = new NativeCramMoveOut
            {
                Page = owner.Page, Slot = PageTableEntry.Slot(pte), Handle = handle, Length = (uint)size, Checksum = Checksum.Crc32C(stored, size),
                Raw = raw ? 1u : 0u,
            };
        }
        if (n == 0)
        {
            return 0;
        }
        int done;
        Errno error;
        fixed (NativeCramMoveOut* moves = _moves)
        {
            error = _engine.MoveOutPages(batchRegion, moves, n, out done);
        }
        for (int i = 0; i < n; i++)
        {
            if (_moves[i].Moved != 0)
            {
                slots.Moved(SlotBackend.Cram, SlotBackend.Pool);
                Release(_moveFrames[i]); // step 3: the old location goes
                moved++;
            }
            else
            {
                slots.Pool.Free((uint)_moves[i].Handle); // written meanwhile: the copy is not needed
                if (_owners.ContainsKey(_moveFrames[i]))
                {
                    _order.Enqueue(_moveFrames[i]);
                }
            }
        }
        Interlocked.Add(ref _movedOut, moved);
        if (error != Errno.None)
        {
            throw Interop.GetExceptionForErrno(error, "Moving entries out of the CRAM node");
        }
        return moved;
    }

    private void UpdateBudget()
    {
        if (!WriteControl)
        {
            return;
        }
        if (OutOfService)
        {
            Volatile.Write(ref _shared->CramWritableLimit, 0ul); // every write to a placed page promotes
            return;
        }
        if (_source is null)
        {
            Volatile.Write(ref _shared->CramWritableLimit, (ulong)_hostBudget);
            return;
        }
        if (ControlPlaneAlive)
        {
            if (_leaseExpiredReported)
            {
                _leaseExpiredReported = false;
                _events.Post(CramTierEventKind.CramControlPlaneRegained, "The CRAM device's control plane answers again: its budget applies (writes within it stay in place).");
            }
            return; // AskControlPlane publishes each answer
        }
        // No answer within the lease: spend only what is already writable; every new write promotes.
        ulong writable = Volatile.Read(ref _shared->Stats.CramWritablePages);
        ulong limit = Volatile.Read(ref _shared->CramWritableLimit);
        Volatile.Write(ref _shared->CramWritableLimit, Math.Min(limit, writable));
        if (!_leaseExpiredReported)
        {
            _leaseExpiredReported = true;
            _events.Post(CramTierEventKind.CramControlPlaneLost, "The CRAM device's control plane stopped answering; no page becomes writable until it does (writes promote).");
        }
    }

    private void AskControlPlane()
    {
        while (true)
        {
            bool ok;
            long pages;
            try
            {
                ok = _source!.TryReadBudget(out pages);
            }
            catch (Exception x)
            {
                _events.CallbackFailed("IWriteBudgetSource.TryReadBudget", x); // no answer, as when it returns false
                ok = false;
                pages = 0;
            }
            lock (_planeLock)
            {
                if (_stopping)
                {
                    return; // the engine is going: its shared block may be unmapped next
                }
                if (ok && pages >= 0)
                {
                    Interlocked.Exchange(ref _lastAnswerAt, _time.GetTimestamp());
                    Volatile.Write(ref _shared->CramWritableLimit, (ulong)pages);
                }
            }
            try
            {
                // A quarter of the lease between polls, on the engine's clock (a test's fake one only moves when advanced).
                Task.Delay(TimeSpan.FromSeconds(Math.Max(0.001, (double)_leaseTicks / _time.TimestampFrequency / 4)), _time, _stop.Token).Wait();
            }
            catch (AggregateException e) when (e.InnerException is TaskCanceledException)
            {
                return; // Dispose
            }
            if (Volatile.Read(ref _stopping))
            {
                return;
            }
        }
    }

    /// <summary>
    /// The usage the device would see: the ledger (sizes measured at placement or re-placement),
    /// with every writable frame compressed again as it is now. Returns it; tracks the overflow peak.
    /// </summary>
    public long Scan(RegionTable regions, SlotTable slots)
    {
        long usage = (long)Volatile.Read(ref _shared->Stats.CramPlacedBytes);
        if (Volatile.Read(ref _shared->Stats.CramWritablePages) > 0)
        {
            foreach ((uint region, ulong page) in _owners.Values)
            {
                RegionMapping? r = regions.Get(region);
                if (r is null || page >= r.PageCount)
                {
                    continue;
                }
                ulong pte = PageTableEntry.Load(r.PageTableEntries + page);
                if (PageTableEntry.State(pte) != PageState.PlacedWritable)
                {
                    continue;
                }
                int now = Interop.Lz4.CompressDefault(r.BasePointer + (page << SharedLayout.PageShift), _scratch, SharedLayout.PageSize, SharedLayout.PageSize);
                int size = now > 0 ? now : SharedLayout.PageSize;
                usage += size - slots.Get(PageTableEntry.Slot(pte))->Length;
            }
        }
        Interlocked.Exchange(ref _physicalUsage, usage);
        long overflow = usage - _capacityBytes;
        if (overflow > Interlocked.Read(ref _maxOverflow))
        {
            Interlocked.Exchange(ref _maxOverflow, overflow);
        }
        return usage;
    }

    private void UpdatePressure()
    {
        double used = (double)Volatile.Read(ref _shared->Stats.CramPlacedBytes)
            + (WriteControl ? (double)Volatile.Read(ref _shared->Stats.CramWritablePages) * SharedLayout.PageSize : 0);
        double share = used / _capacityBytes;
        if (!_pressureHigh && share >= HighPressure)
        {
            Volatile.Write(ref _pressureHigh, true);
            _events.Post(CramTierEventKind.CramPressureHigh, $"The CRAM node's ledger is at {share:P0} of the device's capacity: it is closed to new pages.");
        }
        else if (_pressureHigh && share < LowPressure)
        {
            Volatile.Write(ref _pressureHigh, false);
            _events.Post(CramTierEventKind.CramPressureLow, $"The CRAM node's ledger is down to {share:P0} of the device's capacity: it takes pages again.");
        }
    }

    /// <summary>Trims the frames freed since the last flush (<see cref="CramDeviceTrims.Flush"/>).</summary>
    public void FlushTrims() => _trims.Flush();

    /// <summary>Stops the control plane's thread from touching the engine (a hung one keeps its background thread until it returns), trims what is pending. Before the engine's shared block goes.</summary>
    public void Dispose()
    {
        lock (_planeLock)
        {
            _stopping = true;
        }
        _stop.Cancel();
        FlushTrims();
        _frames.Dispose();
        NativeMemory.Free(_scratch);
    }
}
