using System.Runtime.InteropServices;
namespace CramCore.Tests;

[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class FaultKindTests : IDisposable
{
    private readonly CramEngine _engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
    private readonly CramRegion _region;
    private const int P = TestPages.PageSize;

    public FaultKindTests() => _region = _engine.CreateRegion(1 << 20);

    public void Dispose() => _engine.Dispose();

    private byte* Page(int i) => _region.Pointer + (long)i * P;

    [Fact]
    public void FirstTouchRead_InstallsZeroPage()
    {
        Assert.Equal(0L, *(long*)Page(3));
        Assert.Equal(PageState.Dirty, _region.GetPageState(3 * P));
        var s = _engine.GetStats();
        Assert.Equal(1, s.ZeroFillFaults);
        Assert.Equal(P, s.ResidentBytes);
        Assert.Equal(P, s.LogicalBytes);
    }

    [Fact]
    public void FaultAround_FillsNeighboursOnlyWhenFirstWritesAreSequential()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 16 });
        using var region = engine.CreateRegion(1 << 20);
        region.AsSpan<byte>(5 * P, 1)[0] = 1; // a lone first touch maps its one page
        Assert.Equal(P, engine.GetStats().ResidentBytes);
        region.AsSpan<byte>(6 * P, 1)[0] = 1; // the next page: a sequential stream, the rest of its block is filled
        var s = engine.GetStats();
        Assert.Equal(2, s.ZeroFillFaults);
        Assert.Equal(11L * P, s.ResidentBytes); // pages 5..15
        for (int i = 0; i < 16; i++)
        {
            Assert.Equal(i < 5 ? PageState.Empty : PageState.Dirty, region.GetPageState((long)i * P));
        }
        Assert.Equal(PageState.Empty, region.GetPageState(16L * P));
        region.AsSpan<byte>(16 * P, 1)[0] = 1; // the stream goes on into the next block
        Assert.Equal(3, engine.GetStats().ZeroFillFaults);
        Assert.Equal(27L * P, engine.GetStats().ResidentBytes);
    }

    [Fact]
    public void FaultAround_FollowsSequentialFirstTouchReads_NotRandomOnes()
    {
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 16 });
        using var region = engine.CreateRegion(1 << 20);
        // Random reads: one zero page each.
        Assert.Equal(0, region.AsSpan<byte>(50 * P, 1)[0]);
        Assert.Equal(0, region.AsSpan<byte>(10 * P, 1)[0]);
        Assert.Equal(2L * P, engine.GetStats().ResidentBytes);
        // A memcpy-style fill (its first access to each page can be a read) of pages 100..163:
        // after the first page of the run, each fault maps the rest of its 16-page block.
        byte[] data = new byte[64 * P];
        new Random(9).NextBytes(data);
        long before = engine.GetStats().ZeroFillFaults;
        for (int i = 0; i < 64; i++)
        {
            data.AsSpan(i * P, P).CopyTo(region.AsSpan<byte>((100L + i) * P, P));
        }
        Assert.True(engine.GetStats().ZeroFillFaults - before <= 8, $"faults {engine.GetStats().ZeroFillFaults - before}");
        Assert.True(region.AsSpan<byte>(100 * P, 64 * P).SequenceEqual(data));
    }

    [Fact]
    public void FaultAround_OnASequentialReadStream_MapsWritablePages_SoTheWritesThatFollowDoNotFault()
    {
        // A managed fill reads each page before it writes it (the JIT's null check): the fault-around
        // run must be writable zero pages, not the shared zero page that each write would copy (a
        // minor fault of the writing thread, and a TLB flush on every CPU the process runs on).
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 16 });
        using var region = engine.CreateRegion(1 << 20);
        for (int i = 0; i < 64; i++)
        {
            Assert.Equal(0, Volatile.Read(ref region.AsSpan<byte>((100L + i) * P, 1)[0]));
        }
        long copies = WriteFirstBytes(region.Pointer + 101L * P, 63) + 1; // page 100 was a lone read: its zero page is copied once
        Assert.True(copies <= 2, $"{copies} copy-on-write faults on pages the stream mapped");
        Assert.True(engine.GetStats().ZeroFillFaults <= 8, $"faults {engine.GetStats().ZeroFillFaults}");
    }

    [Fact]
    public void SequentialReadsOfEvictedPages_SwapInAhead_ClearButWriteProtected()
    {
        // 256 evicted pages (every 16th a zero page, every 37th a same-filled one, the rest LZ4),
        // read in order: after the first two faults, one fault brings in a whole window.
        for (int i = 0; i < 256; i++)
        {
            if (i % 16 == 5) TestPages.Fill(Page(i), 0);
            else if (i % 37 == 3) TestPages.Fill(Page(i), 0x0101010101010101UL * (ulong)(i & 0x7f));
            else TestPages.WriteCompressible(Page(i), i, 1);
        }
        Assert.Equal(256L * P, _region.Reclaim(256L * P));
        long sum = 0;
        for (int i = 0; i < 256; i++)
        {
            sum += Volatile.Read(ref *(long*)Page(i));
        }
        GC.KeepAlive(sum);
        // A page the service copied in ahead is readable at once; the service counts it just after:
        // on a loaded machine the reader can be done first.
        Assert.True(SpinWait.SpinUntil(() => _engine.GetStats() is var c && c.Refaults + c.ReadaheadPages == 256 && c.ResidentBytes == 256L * P, 5000),
            $"{_engine.GetStats().Refaults} refaults + {_engine.GetStats().ReadaheadPages} read ahead");
        var s = _engine.GetStats();
        Assert.True(s.Refaults <= 8, $"{s.Refaults} faults for 256 pages read in order");
        Assert.Equal(256L * P, s.ResidentBytes);
        for (int i = 0; i < 256; i++)
        {
            Assert.Equal(PageState.Clean, _region.GetPageState((long)i * P)); // a read swap-in: copy kept, write-protected
        }
        // Writes into pages that came in ahead fault once each (write-protect), and nothing is lost.
        long wp = s.WriteProtectFaults;
        TestPages.WriteCompressible(Page(100), 100, 2);
        TestPages.WriteCompressible(Page(200), 200, 2);
        Assert.Equal(wp + 2, _engine.GetStats().WriteProtectFaults);
        // Evicting again is a drop for the pages still clean; all read back as written.
        Assert.Equal(256L * P, _region.Reclaim(256L * P));
        for (int i = 255; i >= 0; i--) // backwards: no stream, one fault per page
        {
            bool ok = i is 100 or 200 ? TestPages.CheckCompressible(Page(i), i, 2)
                : i % 16 == 5 ? TestPages.CheckFilledZero(Page(i))
                : i % 37 == 3 ? new ReadOnlySpan<byte>(Page(i), P).IndexOfAnyExcept((byte)(i & 0x7f)) < 0
                : TestPages.CheckCompressible(Page(i), i, 1);
            Assert.True(ok, $"page {i}");
        }
        Assert.Equal(s.ReadaheadPages, _engine.GetStats().ReadaheadPages);
        Assert.Equal(0, _engine.GetStats().ServiceErrors);
    }

    [Fact]
    public void Readahead_StaysUnderTheResidentLimit_AndSkipsResidentPages()
    {
        // A long throttle: on a loaded machine the default 20 ms could time out and let a fault past
        // the hard limit, and the peak is what this test bounds.
        using var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1, ResidentLimitBytes = 64L * P, ThrottleMax = TimeSpan.FromSeconds(1) });
        using var region = engine.CreateRegion(1 << 20);
        byte* At(int i) => region.Pointer + (long)i * P;
        for (int i = 0; i < 200; i++)
        {
            TestPages.WriteCompressible(At(i), i, 1);
        }
        region.Reclaim(region.Length);
        TestPages.CheckCompressible(At(50), 50, 1); // a resident page in the way: readahead steps over it
        long peak = 0, sum = 0;
        for (int i = 0; i < 200; i++)
        {
            sum += Volatile.Read(ref *(long*)At(i));
            peak = Math.Max(peak, engine.GetStats().ResidentBytes);
        }
        GC.KeepAlive(sum);
        for (int i = 0; i < 200; i++)
        {
            Assert.True(TestPages.CheckCompressible(At(i), i, 1), $"page {i}");
        }
        var s = engine.GetStats();
        Assert.True(s.ReadaheadPages > 0, s.ToString());
        Assert.True(peak <= (ReclaimWatermarks.HardLimitPages(64) + 1) * P, $"peak {peak}");
        Assert.Equal(0, s.ServiceErrors);
    }

    [Fact]
    public void ScatteredCleanPages_DropInOneBatch_AndReadBackIntact()
    {
        // Every third page read back (CLEAN, scattered), then evicted again: one batch of many runs
        // (process_madvise where the kernel has it, one madvise per run otherwise).
        for (int i = 0; i < 192; i++)
        {
            TestPages.WriteCompressible(Page(i), i, 1);
        }
        _region.Reclaim(192L * P);
        for (int i = 189; i >= 0; i -= 3) // downwards: no stream, so no readahead fills the gaps
        {
            Assert.True(TestPages.CheckCompressible(Page(i), i, 1), $"page {i}");
        }
        long resident = _engine.GetStats().ResidentBytes;
        Assert.Equal(64L * P, resident);
        Assert.Equal(resident, _region.Reclaim(_region.Length));
        for (int i = 0; i < 192; i++)
        {
            Assert.Equal(PageState.Evicted, _region.GetPageState((long)i * P));
        }
        for (int i = 191; i >= 0; i--)
        {
            Assert.True(TestPages.CheckCompressible(Page(i), i, 1), $"page {i}");
        }
        Assert.Equal(0, _engine.GetStats().ServiceErrors);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RUsage
    {
        public long UserSeconds, UserMicroseconds, SystemSeconds, SystemMicroseconds;
        public long MaxRss, SharedRss, UnsharedData, UnsharedStack, MinorFaults, MajorFaults;
        public long Swaps, BlockIn, BlockOut, MessagesSent, MessagesReceived, Signals, VoluntarySwitches, InvoluntarySwitches;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int getrusage(int who, out RUsage usage);

    /// <summary>
    /// Writes the first byte of each of <paramref name="pages"/> pages; returns the calling thread's
    /// minor faults meanwhile. Fully optimized from the start: tiered compilation would otherwise
    /// replace the loop mid-way (on-stack replacement), and the new code's pages fault too.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static long WriteFirstBytes(byte* first, int pages)
    {
        long before = ThreadMinorFaults();
        for (int i = 0; i < pages; i++)
        {
            first[(long)i * P] = 1;
        }
        return ThreadMinorFaults() - before;
    }

    private static long ThreadMinorFaults()
    {
        Assert.Equal(0, getrusage(1 /* RUSAGE_THREAD */, out RUsage u));
        return u.MinorFaults;
    }

    [Fact]
    public void EvictedPage_ReadSwapsInWriteProtected_ThenWriteFaultsOnce()
    {
        TestPages.WriteCompressible(Page(0), 0, 1);
        Assert.Equal(P, _region.Reclaim(P));
        Assert.Equal(PageState.Evicted, _region.GetPageState(0));
        var evicted = _engine.GetStats();
        Assert.Equal(0, evicted.ResidentBytes);
        Assert.InRange(evicted.StoredBytes, 1, 3072);
        Assert.Equal(1, evicted.CompressedPages);

        Assert.True(TestPages.CheckCompressible(Page(0), 0, 1));
        Assert.Equal(PageState.Clean, _region.GetPageState(0));
        Assert.Equal(1, _engine.GetStats().RefaultsLz4);

        ((long*)Page(0))[1] = 2;
        var written = _engine.GetStats();
        Assert.Equal(1, written.WriteProtectFaults);
        Assert.Equal(PageState.Dirty, _region.GetPageState(0));
        Assert.Equal(0, written.StoredBytes); // the stale copy was freed
    }

    [Fact]
    public void EvictedPage_WriteSwapsInWritableAtOnce()
    {
        TestPages.WriteCompressible(Page(1), 1, 1);
        _region.Reclaim(P);
        ((long*)Page(1))[1] = 7; // write to an evicted page: one MISSING fault, no WP fault
        var s = _engine.GetStats();
        Assert.Equal(1, s.RefaultsLz4);
        Assert.Equal(0, s.WriteProtectFaults);
        Assert.Equal(PageState.Dirty, _region.GetPageState(P));
        Assert.Equal(1L, ((long*)Page(1))[0]);
        Assert.Equal(0, s.StoredBytes);
    }

    [Fact]
    public void CleanPage_IsEvictedAgainWithoutCompression()
    {
        TestPages.WriteCompressible(Page(2), 2, 1);
        _region.Reclaim(P);
        Assert.True(TestPages.CheckCompressible(Page(2), 2, 1)); // read: CLEAN, copy kept
        Assert.Equal(P, _region.Reclaim(P));
        var s = _engine.GetStats();
        Assert.Equal(1, s.CompressedPages);
        Assert.Equal(2, s.Evictions);
        Assert.Equal(PageState.Evicted, _region.GetPageState(2 * P));
        Assert.True(TestPages.CheckCompressible(Page(2), 2, 1));
    }

    [Fact]
    public void SameFilledPage_TakesNoStorageAndNoLz4()
    {
        TestPages.Fill(Page(4), 0xABCD_EF01_2345_6789UL);
        *(long*)Page(5) = 9;
        *(long*)Page(5) = 0; // written, but all zero again
        Assert.Equal(2L * P, _region.Reclaim(2L * P));
        var s = _engine.GetStats();
        Assert.Equal(0, s.StoredBytes);
        Assert.Equal(0, s.CompressedPages);
        Assert.Equal(2, s.SameFilledPages);
        Assert.Equal(0xABCD_EF01_2345_6789UL, ((ulong*)Page(4))[511]);
        Assert.Equal(0UL, ((ulong*)Page(5))[100]);
        Assert.Equal(2, _engine.GetStats().RefaultsSameFilled);
        Assert.Equal(0, _engine.GetStats().RefaultsLz4);
        ((ulong*)Page(4))[0] = 1; // the copy goes stale
        Assert.Equal(1, _engine.GetStats().SameFilledPages);
    }

    [Fact]
    public void IncompressiblePage_StaysResidentAndIsNotRetriedUntilWritten()
    {
        TestPages.WriteRandom(Page(6), 6);
        byte first = Page(6)[100];
        Assert.Equal(0, _region.Reclaim(P));
        Assert.Equal(PageState.Incompressible, _region.GetPageState(6 * P));
        Assert.Equal(1, _engine.GetStats().IncompressiblePages);

        Assert.Equal(0, _region.Reclaim(P));
        Assert.Equal(1, _engine.GetStats().IncompressiblePages); // not tried again
        Assert.Equal(first, Page(6)[100]); // reads do not fault: it is resident

        Page(6)[0] ^= 1; // a write makes it a candidate again
        Assert.Equal(PageState.Dirty, _region.GetPageState(6 * P));
        Assert.Equal(0, _region.Reclaim(P));
        Assert.Equal(2, _engine.GetStats().IncompressiblePages);
    }

    [Fact]
    public void CompressionThreshold_DecidesWhatIsStored()
    {
        using var engine = CramEngine.Create(new CramOptions { CompressionThresholdBytes = 4096, FaultAroundPages = 1 });
        using var region = engine.CreateRegion(1 << 20);
        // Half random, half zeros: LZ4 gets it to a bit over 2 KiB.
        TestPages.WriteRandom(region.Pointer, 1);
        new Span<byte>(region.Pointer + 2048, 2048).Clear();
        Assert.Equal(P, region.Reclaim(P));

        using var strict = CramEngine.Create(new CramOptions { CompressionThresholdBytes = 1024, FaultAroundPages = 1 });
        using var r2 = strict.CreateRegion(1 << 20);
        TestPages.WriteRandom(r2.Pointer, 1);
        new Span<byte>(r2.Pointer + 2048, 2048).Clear();
        Assert.Equal(0, r2.Reclaim(P));
        Assert.Equal(1, strict.GetStats().IncompressiblePages);
    }

    [Fact]
    public void WriteDuringEviction_CancelsIt_AndTheWriteSurvives()
    {
        // Drive the state machine by hand to the point where reclaim holds the page: EVICTING
        // and write-protected, its contents being read. A write now must cancel the eviction.
        TestPages.WriteCompressible(Page(7), 7, 1);
        ulong* pte = _region.PageTableEntries + 7;
        Assert.True(PageTableEntry.TryTransition(pte, PageTableEntry.Load(pte), PageTableEntry.Make(PageState.Evicting, 0)));
        ulong page = 7;
        Assert.Equal(0, Interop.CramNative.WriteProtectPages(_engine.Parts.Native, _region.Id, &page, 1));

        var writer = new Thread(() => ((long*)Page(7))[1] = 2); // takes a WP fault
        writer.Start();
        Assert.True(writer.Join(TimeSpan.FromSeconds(10)));

        Assert.Equal(PageState.Dirty, PageTableEntry.State(PageTableEntry.Load(pte)));
        Assert.Equal(1, _engine.GetStats().CancelledEvictions);
        // Reclaim's publish would now fail: EVICTING is gone.
        Assert.False(PageTableEntry.TryTransition(pte, PageTableEntry.Make(PageState.Evicting, 0), PageTableEntry.Make(PageState.Clean, 0)));
        Assert.Equal(2L, ((long*)Page(7))[1]);
        // And the page evicts normally afterwards, with the new value.
        Assert.Equal(P, _region.Reclaim(P));
        Assert.Equal(2L, ((long*)Page(7))[1]);
    }

    [Fact]
    public void ReclaimTakesColdPagesFirst_SecondChanceForRewrittenOnes()
    {
        for (int i = 0; i < 8; i++)
        {
            TestPages.WriteCompressible(Page(i), i, 1);
        }
        _region.Reclaim(8L * P); // all evicted, in fault order
        for (int i = 0; i < 8; i++)
        {
            Assert.True(TestPages.CheckCompressible(Page(i), i, 1)); // fault back in, order 0..7
        }
        ((long*)Page(0))[1] = 5; // page 0 written again: referenced
        Assert.Equal(2L * P, _region.Reclaim(2L * P));
        Assert.Equal(PageState.Dirty, _region.GetPageState(0)); // got its second chance
        Assert.Equal(PageState.Evicted, _region.GetPageState(P));
        Assert.Equal(PageState.Evicted, _region.GetPageState(2 * P));
        Assert.Equal(PageState.Clean, _region.GetPageState(3 * P));
    }
}
