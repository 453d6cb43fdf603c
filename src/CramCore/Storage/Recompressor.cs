using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// Recompression (cramnative.h, "Codecs"): in the background, under a CPU budget
/// (<see cref="CramOptions.RecompressionCpuShare"/>), never on the fault path, the pool's cold LZ4
/// copies are rewritten with zstd and a dictionary trained from the engine's own pages, and kept only
/// where they land in a smaller size class. "Cold": the page is EVICTED and was evicted at least the
/// working set's refault distance ago, or resident memory's size if that is less (a page that
/// refaults within it comes back active). A page that comes back before its copy is rewritten keeps
/// its LZ4 copy; one that comes back after keeps the zstd copy while it stays clean (a read), and a
/// write frees it, so its next eviction stores LZ4 again. A batch:
/// <list type="number">
/// <item>CramNative_FindColdEntries lists candidates from a cursor over the regions;</item>
/// <item>under the maintenance lock (lock 3), each still-pooled copy is copied out, and frees are watched;</item>
/// <item>with no lock, each is decoded and re-encoded (the first ones sampled to train the dictionary);</item>
/// <item>under lock 3 again, the smaller copies are stored in the pool, CramNative_SlotsRecode rewrites
/// the slots whose pages are still EVICTED and which were not freed meanwhile, and the old copies (or,
/// where refused, the new ones) are freed; copies that gained nothing are marked kept.</item>
/// </list>
/// Dictionaries are versioned by index (1..3): the fault service's copy is set before any slot names
/// it; when the sizes of new copies drift from those measured just after training, a new dictionary
/// is trained into a free index and becomes current, the old one retires — its copies are found again
/// and re-encoded with the current one — and it is removed once no slot names it (the slot table
/// counts them). Ranges advised cold (<see cref="CramAdvice.Cold"/>) are a hint: their evicted pages
/// are taken at the start of each round, whatever their distance. One thread ("cram-recompress"),
/// started by the first request. Writeback re-encodes the LZ4 copies it moves out of the pool with
/// the current dictionary, which it leases for the batch (<see cref="LeaseDictionary"/>: a leased
/// dictionary is not removed), on an encoder sharing this one's dictionaries, under the same
/// <see cref="Budget"/>.
/// </summary>
internal sealed unsafe class Recompressor : IDisposable
{
    /// <summary>Entries per batch (one recode call; the budget's pause follows each batch).</summary>
    public const int BatchEntries = 64;

    /// <summary>Pages sampled to train a dictionary (4 MiB of samples).</summary>
    public const int TrainingPages = 1024;

    /// <summary>The fewest pages a dictionary is trained from (a pass over every region that found fewer recompresses without one).</summary>
    public const int MinimumTrainingPages = 128;

    /// <summary>Copies re-encoded after training whose mean size is the reference for drift, and the window drift is measured over.</summary>
    public const int DriftWindow = 2048;

    /// <summary>How much larger the mean new copy may grow over the reference before the dictionary is retrained.</summary>
    public const double DriftTolerance = 1.15;

    private readonly INativeEngine _engine;
    private readonly CramCore.Internals.RegionTable? _regions; // their ranges advised cold
    private readonly NativeShared* _shared;
    private readonly SlotTable _slots;
    private readonly CompressedPool _pool;
    private readonly Lock _maintenance;
    private readonly TimeProvider _time;
    private readonly ZstdCodec _codec = new();
    private readonly int[] _leases = new int[SlotFlags.ZstdDictionaries]; // writeback batches encoding with each dictionary
    private readonly byte* _stored;   // BatchEntries copies as they were
    private readonly byte* _encoded;  // and as re-encoded
    private readonly byte* _page;     // one decoded page
    private byte* _samples;           // TrainingPages decoded pages, while a dictionary is being sampled
    private int _sampled;
    private readonly NativeColdEntry[] _found = new NativeColdEntry[BatchEntries];
    private readonly NativeColdEntry[] _taken = new NativeColdEntry[BatchEntries];
    private readonly bool[] _isSample = new bool[BatchEntries];
    private readonly int[] _newLength = new int[BatchEntries];
    private readonly byte[] _newFlags = new byte[BatchEntries];
    private readonly NativeSlotRecode[] _recodes = new NativeSlotRecode[BatchEntries];
    private readonly int[] _recodeOf = new int[BatchEntries];
    private uint _cursorRegion;
    private ulong _cursorPage;
    private int _current;             // the dictionary new copies get (0: none yet)
    private uint _retiring;           // bit d: dictionary d's copies are re-encoded with the current one, then it is removed
    private bool _sampling = true;    // a dictionary is wanted (at start, and on drift)
    private long _referenceSum, _referenceCount, _windowSum, _windowCount;
    private long _nativeDictionaryBytes;
    private ulong _evictionsSeen;

    private readonly SemaphoreSlim _wake = new(0);
    private readonly ManualResetEventSlim _stopped = new(false);
    private Thread? _thread;
    private int _requested, _inRound;
    private volatile bool _stopping;

    private long _recompressed, _kept, _bytesBefore, _bytesAfter, _trained, _retired, _refused;

    public Recompressor(INativeEngine engine, NativeShared* shared, SlotTable slots, Lock maintenance, double share, TimeProvider time, CramCore.Internals.RegionTable? regions = null)
    {
        _regions = regions;
        _engine = engine;
        _shared = shared;
        _slots = slots;
        _pool = slots.Pool;
        _maintenance = maintenance;
        Budget = new RecompressionBudget(share, time);
        _time = time;
        _stored = (byte*)NativeMemory.AlignedAlloc(BatchEntries * (nuint)SharedLayout.PageSize, SharedLayout.PageSize);
        _encoded = (byte*)NativeMemory.AlignedAlloc(BatchEntries * (nuint)SharedLayout.PageSize, SharedLayout.PageSize);
        _page = (byte*)NativeMemory.AlignedAlloc(SharedLayout.PageSize, SharedLayout.PageSize);
    }

    /// <summary>Copies rewritten with zstd (cumulative; re-encodings with a newer dictionary included).</summary>
    public long Recompressed => Interlocked.Read(ref _recompressed);

    /// <summary>Copies tried and kept as they were (no smaller size class).</summary>
    public long Kept => Interlocked.Read(ref _kept);

    /// <summary>Stored bytes of the copies rewritten, before and after.</summary>
    public long BytesBefore => Interlocked.Read(ref _bytesBefore);
    public long BytesAfter => Interlocked.Read(ref _bytesAfter);

    /// <summary>The CPU budget this thread and writeback's re-encoding share.</summary>
    public RecompressionBudget Budget { get; }

    /// <summary>An encoder for writeback's thread, with this one's dictionaries (its owner disposes it before this).</summary>
    public ZstdCodec CreateWritebackEncoder() => new(ZstdCodec.Level, _codec);

    /// <summary>
    /// Writeback, under the maintenance lock: the dictionary its batch encodes with (the current one;
    /// 0, none, before the first is trained), which is not removed until <see cref="ReleaseDictionary"/>.
    /// </summary>
    public int LeaseDictionary()
    {
        _leases[_current]++;
        return _current;
    }

    /// <summary>Writeback, under the maintenance lock: its batch is over (its copies, if any, count in the slot table now).</summary>
    public void ReleaseDictionary(int index) => _leases[index]--;

    /// <summary>Dictionaries trained, and removed once no copy named them.</summary>
    public long DictionariesTrained => Interlocked.Read(ref _trained);
    public long DictionariesRetired => Interlocked.Read(ref _retired);

    /// <summary>Rewrites the native side refused (the page came back, the slot moved or was freed meanwhile).</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Dictionaries loaded now (the current one and any retiring).</summary>
    public int Dictionaries
    {
        get
        {
            int n = 0;
            for (int i = 1; i < SlotFlags.ZstdDictionaries; i++)
            {
                n += _codec.Has(i) ? 1 : 0;
            }
            return n;
        }
    }

    /// <summary>Memory the recompressor holds: its buffers, the encoder and its dictionaries, the fault service's decoders and dictionaries.</summary>
    public long MemoryBytes => 2L * BatchEntries * SharedLayout.PageSize + SharedLayout.PageSize + (_samples is null ? 0 : (long)TrainingPages * SharedLayout.PageSize)
        + _codec.MemoryBytes + Volatile.Read(ref _nativeDictionaryBytes);

    /// <summary>No round running or asked for.</summary>
    public bool Idle => Volatile.Read(ref _inRound) == 0 && Volatile.Read(ref _requested) == 0;

    /// <summary>Asks for a round (never blocks); starts the thread the first time.</summary>
    public void Request()
    {
        if (_stopping)
        {
            return;
        }
        lock (_wake)
        {
            if (_thread is null)
            {
                _thread = new Thread(Loop) { IsBackground = true, Name = "cram-recompress" };
                _thread.Start();
            }
        }
        if (Interlocked.Exchange(ref _requested, 1) == 0)
        {
            _wake.Release();
        }
    }

    /// <summary>Starts the dictionary over: the next copies are sampled, a new dictionary trained, and the current one retired (tests; drift does it by itself).</summary>
    internal void Retrain()
    {
        lock (_maintenance)
        {
            _sampling = true;
            _sampleStride = 0;
        }
        Request();
    }

    /// <summary>
    /// How long a round waits after it was asked for: copies evicted within it are not rewritten by
    /// it (a copy must also stay cold for a moment: a page evicted and read back at once keeps its LZ4
    /// copy, and an application that evicts and checks at once sees reclaim's work alone). Tests and
    /// `cram bench ratio` set it to zero.
    /// </summary>
    internal TimeSpan StartDelay { get; set; } = TimeSpan.FromSeconds(1);

    private void Loop()
    {
        while (true)
        {
            _wake.Wait();
            if (_stopping || (StartDelay > TimeSpan.Zero && _stopped.Wait(StartDelay)))
            {
                break;
            }
            Volatile.Write(ref _inRound, 1);
            Volatile.Write(ref _requested, 0);
            try
            {
                Round();
            }
            finally
            {
                Volatile.Write(ref _inRound, 0);
            }
        }
    }

    /// <summary>Tests: rounds do nothing while set (what reclaim and the fault service do alone is then observable).</summary>
    internal volatile bool Suspended;

    /// <summary>Batches until a walk over every region finds nothing more to do, each followed by the budget's pause.</summary>
    internal void Round()
    {
        int emptyWraps = 0, donePass = 0;
        bool passStart = true;
        while (!_stopping && !Suspended && emptyWraps < 2)
        {
            long start = _time.GetTimestamp();
            if (passStart) // every pass starts with the ranges advised cold (a dictionary trained at the last wrap encodes what it sampled there)
            {
                donePass += AdvisedCold();
                passStart = false;
            }
            int found = Find(out bool wrapped);
            donePass += found == 0 ? 0 : Batch(found);
            if (wrapped)
            {
                emptyWraps = donePass == 0 ? emptyWraps + 1 : 0; // two passes in a row with nothing done: the round is over
                WrapUp(rewrote: donePass > 0);
                donePass = 0;
                passStart = true;
            }
            long work = _time.GetTimestamp() - start;
            Pause(work);
        }
    }

    /// <summary>The budget (<see cref="RecompressionBudget"/>): <paramref name="work"/> ticks spent, and the pause that pays them back.</summary>
    private void Pause(long work)
    {
        Budget.Spend(work);
        TimeSpan owed = Budget.PauseOwed();
        if (owed > TimeSpan.Zero)
        {
            _stopped.Wait(owed < TimeSpan.FromSeconds(30) ? owed : TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>
    /// A pass over every region ended: the pool compacted if the pass rewrote copies (the old ones
    /// leave holes in their classes' zspages, the new ones fill zspages of smaller classes); dictionaries
    /// whose copies are all gone are removed; sampling with too few pages trains with what it has.
    /// </summary>
    private void WrapUp(bool rewrote)
    {
        lock (_maintenance)
        {
            if (rewrote)
            {
                _pool.Compact();
            }
            for (int d = 1; d < SlotFlags.ZstdDictionaries; d++)
            {
                if ((_retiring & (1u << d)) != 0 && _slots.DictionarySlots(d) == 0 && _leases[d] == 0)
                {
                    Interop.ThrowIfFailed(_engine.ZstdDictionarySet(d, default, out long memory), "Removing a retired zstd dictionary");
                    Volatile.Write(ref _nativeDictionaryBytes, memory);
                    _codec.SetDictionary(d, default);
                    _retiring &= ~(1u << d);
                    Interlocked.Increment(ref _retired);
                }
            }
        }
        long lz4Copies = _slots.PoolSlots - _slots.ZstdSlots;
        if (_sampling && _sampled >= MinimumTrainingPages)
        {
            TrainFromSamples();
        }
        else if (_sampling && _current == 0)
        {
            if (lz4Copies < MinimumTrainingPages)
            {
                _sampling = false; // a small pool: zstd without a dictionary, until the pool grows (below)
                ReleaseSamples();
            }
            else
            {
                _sampleStride = 0; // too few cold pages yet (the pool is filling): sample on, over the pool as it is now
            }
        }
        else if (!_sampling && _current == 0 && lz4Copies >= 4L * TrainingPages)
        {
            _sampling = true; // the pool grew: a dictionary is worth training now
            _sampleStride = 0;
        }
        Volatile.Write(ref _evictionsSeen, Volatile.Read(ref _shared->Stats.EvictedPagesTotal));
    }

    /// <summary>
    /// The ranges advised cold (<see cref="CramAdvice.Cold"/>, a hint): their evicted pages are taken
    /// at once, whatever their distance, in batches like any other. Returns the copies rewritten or kept.
    /// </summary>
    private int AdvisedCold()
    {
        var ranges = new List<(uint Region, ulong Start, ulong End)>();
        lock (_maintenance)
        {
            foreach (CramCore.Internals.RegionMapping r in _regions?.Snapshot() ?? [])
            {
                foreach ((ulong start, ulong end) in r.ColdPages.Ranges)
                {
                    ranges.Add((r.Id, start, end));
                }
            }
        }
        int done = 0;
        uint mask = Volatile.Read(ref _retiring);
        foreach ((uint region, ulong start, ulong end) in ranges)
        {
            uint cursorRegion = region;
            ulong cursorPage = start, tick = 0;
            while (!_stopping && !Suspended && cursorRegion == region && cursorPage < end)
            {
                int found = 0;
                fixed (NativeColdEntry* entries = _found)
                {
                    Interop.ThrowIfFailed(_engine.FindColdEntries(ref cursorRegion, ref cursorPage, 0, mask, 1, ref tick, entries, BatchEntries, out int n, out bool wrapped),
                        "Finding advised-cold entries to recompress");
                    for (int i = 0; i < n; i++)
                    {
                        if (entries[i].Region == region && entries[i].Page < end)
                        {
                            entries[found++] = entries[i];
                        }
                    }
                    if (wrapped)
                    {
                        cursorRegion = uint.MaxValue;
                    }
                }
                done += found == 0 ? 0 : Batch(found);
            }
        }
        return done;
    }

    private int Find(out bool wrapped)
    {
        int found = 0;
        wrapped = false;
        // The working set's refault distance (reclaim sizes it from the resident limit, or from resident
        // memory at its last pass), but no more than resident memory now: without a limit, pages the
        // application evicted itself (CramRegion.Reclaim) are cold once they are gone.
        ulong distance = Math.Min(Volatile.Read(ref _shared->ActivateDistancePages), Volatile.Read(ref _shared->Stats.ResidentPages));
        uint retiring = Volatile.Read(ref _retiring); // LZ4 copies are always candidates; zstd ones of these dictionaries too
        // Before the first dictionary only its samples are wanted: the native walk hands out one
        // candidate in every stride, so the pass that samples the whole pool is a walk, not a batch per 64.
        ulong stride = _sampling && _current == 0 ? (ulong)SampleStride() : 1;
        fixed (NativeColdEntry* entries = _found)
        {
            while (found < BatchEntries && !wrapped)
            {
                Interop.ThrowIfFailed(_engine.FindColdEntries(ref _cursorRegion, ref _cursorPage, distance, retiring, stride, ref _walkTick, entries + found, BatchEntries - found, out int n, out wrapped),
                    "Finding cold entries to recompress");
                found += n; // a bounded walk that found nothing walks on from where it stopped
            }
        }
        return found;
    }

    /// <summary>One batch of <paramref name="found"/> candidates (the class summary's steps 2–4); returns the copies rewritten or marked kept.</summary>
    private int Batch(int found)
    {
        int taken = 0;
        lock (_maintenance)
        {
            _slots.WatchFrees(recompressor: true);
            for (int i = 0; i < found; i++)
            {
                NativeColdEntry e = _found[i];
                NativeSlot* s = _slots.TryGet(e.Slot);
                if (s is null || s->Backend != SlotBackend.Pool || s->Location != e.Location)
                {
                    continue;
                }
                byte flags = NativeSlot.LoadFlags(s);
                if ((flags & (SlotFlags.Raw | SlotFlags.Stale | SlotFlags.Bad)) != 0 || SlotFlags.IsKept(flags) ||
                    ((flags & SlotFlags.Zstd) != 0 && (_retiring & (1u << SlotFlags.Dictionary(flags))) == 0))
                {
                    continue;
                }
                // Samples are spread over the whole pool (one candidate in every _sampleStride), not
                // the first pages the cursor meets: a dictionary of one corner of the heap fits the
                // rest worse. Before the first dictionary only the samples are taken at all (the
                // others wait for it: found again on the next pass).
                bool sample = _sampling && (_current == 0 || TakeSample()); // before the first dictionary the walk chose the samples
                int length = s->Length;
                Buffer.MemoryCopy((void*)_pool.AddressOf((uint)s->Location), _stored + (long)taken * SharedLayout.PageSize, SharedLayout.PageSize, length);
                e.Length = (ushort)length;
                e.Flags = flags;
                _isSample[taken] = sample;
                _taken[taken++] = e;
            }
        }
        for (int i = 0; i < taken; i++)
        {
            Encode(i);
        }
        return Publish(taken);
    }

    /// <summary>Step 3 for copy <paramref name="i"/>: decoded, sampled, re-encoded; its new length (0: keep it as it is).</summary>
    private void Encode(int i)
    {
        NativeColdEntry e = _taken[i];
        byte* stored = _stored + (long)i * SharedLayout.PageSize;
        _newLength[i] = 0;
        bool decoded = (e.Flags & SlotFlags.Zstd) != 0
            ? _codec.Decompress(stored, e.Length, SlotFlags.Dictionary(e.Flags), _page)
            : Interop.Lz4.DecompressSafe(stored, _page, e.Length, SharedLayout.PageSize) == SharedLayout.PageSize;
        if (!decoded)
        {
            return; // the fault service will find it bad by its checksum, or decode it: not ours to judge
        }
        if (_isSample[i] && _sampling)
        {
            Sample();
            if (_sampled == TrainingPages)
            {
                TrainFromSamples();
            }
        }
        if (_sampling && _current == 0)
        {
            return; // no dictionary yet: this copy waits for it (found again on a later pass)
        }
        byte* output = _encoded + (long)i * SharedLayout.PageSize;
        int length = _codec.Compress(_page, _current, output, SharedLayout.PageSize);
        bool retiring = (e.Flags & SlotFlags.Zstd) != 0;
        if (length > 0 && (retiring || CompressedPool.ObjectSize(length) < CompressedPool.ObjectSize(e.Length)))
        {
            _newLength[i] = length;
            _newFlags[i] = (byte)(SlotFlags.Zstd | (_current << SlotFlags.DictShift));
        }
        else if (retiring) // off a retiring dictionary, and zstd does not fit: back to LZ4
        {
            length = Interop.Lz4.CompressDefault(_page, output, SharedLayout.PageSize, SharedLayout.PageSize);
            if (length > 0)
            {
                _newLength[i] = length;
                _newFlags[i] = 0;
            }
        }
        else
        {
            _newLength[i] = -1; // kept
        }
    }

    /// <summary>One candidate in every (LZ4 pool copies ÷ <see cref="TrainingPages"/>) is a sample, counted when sampling starts.</summary>
    private long SampleStride()
    {
        if (_sampleStride == 0)
        {
            long copies = _slots.PoolSlots - _slots.ZstdSlots;
            _sampleStride = Math.Max(1, copies / TrainingPages);
            _sampleTick = 0;
        }
        return _sampleStride;
    }

    /// <summary>Whether the next candidate is a sample (while retraining: every candidate is taken, one in <see cref="SampleStride"/> sampled).</summary>
    private bool TakeSample() => _sampleTick++ % SampleStride() == 0;

    private long _sampleStride, _sampleTick; // 0: counted again at the next candidate
    private ulong _walkTick;                 // the native walk's count for its stride

    private void Sample()
    {
        if (_samples is null)
        {
            _samples = (byte*)NativeMemory.AlignedAlloc((nuint)TrainingPages * SharedLayout.PageSize, SharedLayout.PageSize);
            _sampled = 0;
        }
        Buffer.MemoryCopy(_page, _samples + (long)_sampled * SharedLayout.PageSize, SharedLayout.PageSize, SharedLayout.PageSize);
        _sampled++;
    }

    private void ReleaseSamples()
    {
        if (_samples is not null)
        {
            NativeMemory.AlignedFree(_samples);
            _samples = null;
        }
        _sampled = 0;
    }

    /// <summary>Trains a dictionary from the samples into a free index; it becomes current, the one before retires. Without a free index, or if zstd's trainer fails, nothing changes.</summary>
    private void TrainFromSamples()
    {
        byte[]? dictionary = ZstdCodec.Train(_samples, _sampled);
        ReleaseSamples();
        _sampling = false;
        int index = 0;
        lock (_maintenance)
        {
            for (int d = 1; d < SlotFlags.ZstdDictionaries && index == 0; d++)
            {
                if (d != _current && (_retiring & (1u << d)) == 0 && !_codec.Has(d))
                {
                    index = d;
                }
            }
            if (dictionary is null || index == 0)
            {
                return;
            }
            // The fault service's copy first: no slot may name a dictionary it cannot decode with.
            Interop.ThrowIfFailed(_engine.ZstdDictionarySet(index, dictionary, out long memory), "Loading a zstd dictionary into the fault service");
            Volatile.Write(ref _nativeDictionaryBytes, memory);
            _codec.SetDictionary(index, dictionary);
            if (_current != 0)
            {
                _retiring |= 1u << _current;
            }
            _current = index;
        }
        _referenceSum = _referenceCount = _windowSum = _windowCount = 0;
        Interlocked.Increment(ref _trained);
    }

    /// <summary>Step 4: the smaller copies stored and the slots rewritten; returns the copies rewritten or marked kept.</summary>
    private int Publish(int taken)
    {
        int done = 0, recodes = 0;
        lock (_maintenance)
        {
            HashSet<ulong> freed = _slots.StopWatchingFrees(recompressor: true);
            for (int i = 0; i < taken; i++)
            {
                NativeColdEntry e = _taken[i];
                if (_newLength[i] == 0 || freed.Contains(e.Slot))
                {
                    continue;
                }
                if (_newLength[i] < 0)
                {
                    NativeSlot* s = _slots.Get(e.Slot);
                    if (s->Backend == SlotBackend.Pool && s->Location == e.Location)
                    {
                        NativeSlot.SetFlags(s, SlotFlags.Kept);
                        Interlocked.Increment(ref _kept);
                        done++;
                    }
                    continue;
                }
                byte* copy = _encoded + (long)i * SharedLayout.PageSize;
                uint handle = _pool.Store(copy, _newLength[i]);
                if (handle == 0)
                {
                    break; // the pool is full: the rest wait for a later pass
                }
                _recodeOf[recodes] = i;
                _recodes[recodes++] = new NativeSlotRecode
                {
                    Slot = e.Slot, FromBackend = SlotBackend.Pool, FromLocation = e.Location, ToBackend = SlotBackend.Pool, ToLocation = handle, Page = e.Page, Region = e.Region,
                    Checksum = Checksum.Crc32C(copy, _newLength[i]), Length = (ushort)_newLength[i], Flags = _newFlags[i],
                };
            }
            if (recodes == 0)
            {
                return done;
            }
            fixed (NativeSlotRecode* r = _recodes)
            {
                Interop.ThrowIfFailed(_engine.SlotsRecode(r, recodes, out _), "Rewriting recompressed slots");
            }
            for (int k = 0; k < recodes; k++)
            {
                ref NativeSlotRecode r = ref _recodes[k];
                NativeColdEntry e = _taken[_recodeOf[k]];
                if (r.Recoded == 0)
                {
                    _pool.Free((uint)r.ToLocation);
                    Interlocked.Increment(ref _refused);
                    continue;
                }
                _pool.Free((uint)r.FromLocation);
                _slots.Recoded(e.Flags, r.Flags);
                Interlocked.Increment(ref _recompressed);
                Interlocked.Add(ref _bytesBefore, e.Length);
                Interlocked.Add(ref _bytesAfter, r.Length);
                done++;
                if ((r.Flags & SlotFlags.Zstd) != 0 && (e.Flags & SlotFlags.Zstd) == 0)
                {
                    NoteSize(e.Length, r.Length);
                }
            }
        }
        return done;
    }

    /// <summary>Drift: the mean ratio of new copies over their LZ4 size, just after training against the last window; retrains past the tolerance.</summary>
    private void NoteSize(int before, int after)
    {
        long permille = after * 1000L / before;
        if (_referenceCount < DriftWindow)
        {
            _referenceSum += permille;
            _referenceCount++;
            return;
        }
        _windowSum += permille;
        if (++_windowCount < DriftWindow)
        {
            return;
        }
        if (_current != 0 && _windowSum > _referenceSum * DriftTolerance)
        {
            _sampling = true; // the data changed under the dictionary: sample again and retrain
            _sampleStride = 0;
        }
        _windowSum = _windowCount = 0;
    }

    /// <summary>Evictions happened since the last full pass, or a dictionary retires: a round is due.</summary>
    public bool Due => Volatile.Read(ref _shared->Stats.EvictedPagesTotal) != Volatile.Read(ref _evictionsSeen) || Volatile.Read(ref _retiring) != 0;

    /// <summary>Stops the thread; waits for a batch in flight (its publish step moves slots and frees pool objects).</summary>
    public void Stop()
    {
        _stopping = true;
        _stopped.Set();
        _wake.Release();
        _thread?.Join();
    }

    public void Dispose()
    {
        Stop();
        ReleaseSamples();
        _codec.Dispose();
        NativeMemory.AlignedFree(_stored);
        NativeMemory.AlignedFree(_encoded);
        NativeMemory.AlignedFree(_page);
        _wake.Dispose();
        _stopped.Dispose();
    }
}
