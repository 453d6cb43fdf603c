using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace CramCore.Tests;

/// <summary>
/// <see cref="CramOptions.MemoryLimitBytes"/> in-process (the same in a real memory cgroup:
/// <see cref="MemoryCgroupTests"/>): held with compressible data in ghost mode and with random
/// bytes and a backing file; where it cannot hold (random bytes, no file), the event, the stats
/// field, the log line and the documented back-pressure (one bounded wait per page added), and
/// their end once memory is freed.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class MemoryLimitTests
{
    private const int P = SharedLayout.PageSize;

    /// <summary>
    /// How far a sample may pass the limit while writers run flat out: reclaim asks the budget again
    /// every pass (4 MiB) and faults wait for it at the hard limit, bounded by ThrottleMax, after
    /// which each adds one page.
    /// </summary>
    private const long Slack = 6L << 20;

    [Fact]
    public void CompressibleData_InGhostMode_StaysUnderTheLimit_AndReadsBack()
    {
        const long limit = 48L << 20;
        using var engine = CramEngine.Create(new CramOptions { MemoryLimitBytes = limit });
        var events = new List<CramTierEventKind>();
        engine.TierEvent += (_, e) => events.Add(e.Kind);
        const int pages = (64 << 20) / P; // more than the limit; about 35 MiB once compressed (LZ4 halves these pages)
        using var region = engine.CreateRegion((long)pages * P);
        long peak = 0;
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
            if (i % 64 == 63)
            {
                peak = Math.Max(peak, engine.Parts.Budget.MemoryUsedBytes);
            }
        }
        Assert.True(peak <= limit + Slack, $"memory used reached {peak >> 10} KiB against a limit of {limit >> 10} KiB");
        Settle(engine, limit);
        CramStats stats = engine.GetStats();
        Assert.True(stats.ResidentTargetBytes < limit - stats.PoolBytes + P, $"resident target {stats.ResidentTargetBytes} with a pool of {stats.PoolBytes}");
        Assert.True(stats.Evictions > pages / 2, $"{stats.Evictions} evictions");
        for (int i = 0; i < pages; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 1), $"page {i}");
        }
        Assert.DoesNotContain(CramTierEventKind.MemoryLimitExceeded, events);
        Assert.False(engine.GetStats().MemoryLimitExceeded);
        Assert.Equal(stats.ResidentBytes + stats.PoolBytes + stats.MetadataBytes, stats.MemoryUsedBytes, tolerance: 64 * P); // two reads of moving counters
    }

    [Fact]
    public void RandomData_WithABackingFile_GoesToTheFileAsItIs_AndTheLimitHolds()
    {
        const long limit = 32L << 20;
        string path = Path.Combine(Path.GetTempPath(), $"cram-memlimit-{Guid.NewGuid():N}");
        using var engine = CramEngine.Create(new CramOptions { MemoryLimitBytes = limit, BackingFile = path });
        Assert.Equal(limit / 4, engine.Options.CompressedPoolLimitBytes); // the pool's default share
        const int pages = (96 << 20) / P;
        using var region = engine.CreateRegion((long)pages * P);
        long peak = 0;
        for (int i = 0; i < pages; i++)
        {
            TestPages.WriteRandom(region.Pointer + (long)i * P, i);
            if (i % 64 == 63)
            {
                peak = Math.Max(peak, engine.Parts.Budget.MemoryUsedBytes);
            }
        }
        Assert.True(peak <= limit + Slack, $"memory used reached {peak >> 10} KiB against a limit of {limit >> 10} KiB");
        Settle(engine, limit);
        CramStats stats = engine.GetStats();
        Assert.True(stats.UncompressedStoredPages > pages / 2, $"{stats.UncompressedStoredPages} pages stored as they are");
        Assert.True(stats.FilePages > pages / 2, $"{stats.FilePages} pages in the file");
        Assert.False(stats.MemoryLimitExceeded);
        var expected = new byte[P];
        for (int i = 0; i < pages; i++)
        {
            new Random(i).NextBytes(expected);
            Assert.True(new ReadOnlySpan<byte>(region.Pointer + (long)i * P, P).SequenceEqual(expected), $"page {i}");
        }
        Assert.True(engine.Parts.Budget.MemoryUsedBytes <= limit + Slack);
    }

    [Fact]
    public void RandomData_InGhostMode_RaisesTheEvent_WaitsOncePerPage_AndRecovers()
    {
        const long limit = 16L << 20;
        TimeSpan wait = TimeSpan.FromMilliseconds(2);
        var logger = new ListLogger();
        using var engine = CramEngine.Create(new CramOptions { MemoryLimitBytes = limit, MemoryLimitWait = wait, Logger = logger });
        var events = new List<CramTierEventKind>();
        engine.TierEvent += (_, e) => { lock (events) { events.Add(e.Kind); } };
        const int pages = (24 << 20) / P;
        using var region = engine.CreateRegion((long)pages * P);
        int written = 0;
        // Fill past the limit until the engine says it cannot hold it (reclaim finds only incompressible pages).
        while (!engine.Parts.Budget.Exceeded && written < pages - 256)
        {
            TestPages.WriteRandom(region.Pointer + (long)written * P, written);
            written++;
        }
        Assert.True(engine.Parts.Budget.Exceeded, $"not exceeded after {written} pages");
        Assert.True(written * (long)P > limit - Slack, $"exceeded after only {written} pages");
        CramStats exceeded = engine.GetStats();
        Assert.True(exceeded.MemoryLimitExceeded);
        Assert.Equal(1, exceeded.MemoryLimitExceededEpisodes);
        Assert.True(exceeded.MemoryUsedBytes > limit);

        // The policy: every page added from now on waits the full MemoryLimitWait once, then proceeds.
        // First the rest of the block fault-around may have mapped before the limit was exceeded.
        while (written % 64 != 0)
        {
            TestPages.WriteRandom(region.Pointer + (long)written * P, written);
            written++;
        }
        exceeded = engine.GetStats();
        int first = written;
        const int more = 128;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < more; i++, written++)
        {
            TestPages.WriteRandom(region.Pointer + (long)written * P, written);
        }
        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        CramStats after = engine.GetStats();
        long waits = after.MemoryLimitWaits - exceeded.MemoryLimitWaits;
        Assert.InRange(waits, more, 2 * more); // one per page (a page evicted while still zero may fault twice)
        Assert.True(elapsed >= waits * wait * 0.95, $"{waits} waits of {wait.TotalMilliseconds} ms took {elapsed.TotalMilliseconds} ms");
        var page = new byte[P];
        for (int i = first; i < written; i++)
        {
            new Random(i).NextBytes(page);
            Assert.True(new ReadOnlySpan<byte>(region.Pointer + (long)i * P, P).SequenceEqual(page), $"page {i}: the writes proceeded, nothing was lost");
        }
        engine.RaisePendingEvents();
        lock (events)
        {
            Assert.Single(events, e => e == CramTierEventKind.MemoryLimitExceeded);
        }
        (LogLevel level, _, string message) = Assert.Single(logger.Entries, e => e.Id.Name == nameof(CramTierEventKind.MemoryLimitExceeded));
        Assert.Equal(LogLevel.Warning, level);
        Assert.Contains("MemoryLimitWait", message);

        // Freeing memory ends it: faults stop waiting.
        region.Advise(0, region.Length, CramAdvice.DontNeed);
        Assert.True(SpinWait.SpinUntil(() => !engine.Parts.Budget.Exceeded, 5000), "still exceeded after the region was discarded");
        engine.RaisePendingEvents();
        lock (events)
        {
            Assert.Equal(CramTierEventKind.MemoryLimitRestored, events[^1]);
        }
        long waitsBefore = engine.GetStats().MemoryLimitWaits;
        for (int i = 0; i < 64; i++)
        {
            TestPages.WriteRandom(region.Pointer + (long)i * P, i);
        }
        Assert.Equal(waitsBefore, engine.GetStats().MemoryLimitWaits);
        Assert.Contains(logger.Entries, e => e.Id.Name == nameof(CramTierEventKind.MemoryLimitRestored) && e.Level == LogLevel.Information);
        for (int i = 0; i < 64; i++)
        {
            var expected = new byte[P];
            new Random(i).NextBytes(expected);
            Assert.True(new ReadOnlySpan<byte>(region.Pointer + (long)i * P, P).SequenceEqual(expected), $"page {i}");
        }
    }

    [Fact]
    public void Metadata_CountsThePageTablesFirstTouchMarks_AndGivesThemBackOnDispose()
    {
        using var engine = CramEngine.Create();
        long before = (long)engine.Parts.Shared->Stats.PageTablePages;
        long metadataBefore = engine.GetStats().MetadataBytes;
        const int blocks = 40; // one page of page table per 512 pages (2 MiB) of region
        var region = engine.CreateRegion(blocks * 2L << 20);
        for (int b = 0; b < blocks; b++)
        {
            region.Pointer[b * (2L << 20) + 100] = 1;
            region.Pointer[b * (2L << 20) + 9000] = 2; // the same block: no second page
        }
        Assert.Equal(before + blocks, (long)engine.Parts.Shared->Stats.PageTablePages);
        Assert.True(engine.GetStats().MetadataBytes >= metadataBefore + blocks * P);
        region.Dispose();
        Assert.Equal(before, (long)engine.Parts.Shared->Stats.PageTablePages);
    }

    [Fact]
    public void Options_AreCheckedAgainstEachOther()
    {
        static string Fails(CramOptions o) => Assert.Throws<ArgumentException>(() => CramEngine.Create(o)).ParamName!;
        Assert.Equal(nameof(CramOptions.MemoryLimitBytes), Fails(new CramOptions { MemoryLimitBytes = -1 }));
        Assert.Equal(nameof(CramOptions.MemoryLimitBytes), Fails(new CramOptions { MemoryLimitBytes = (16L << 20) - 1 }));
        Assert.Equal(nameof(CramOptions.ResidentLimitBytes), Fails(new CramOptions { MemoryLimitBytes = 64L << 20, ResidentLimitBytes = 65L << 20 }));
        Assert.Equal(nameof(CramOptions.CompressedPoolLimitBytes), Fails(new CramOptions { MemoryLimitBytes = 64L << 20, CompressedPoolLimitBytes = 64L << 20 }));
        Assert.Equal(nameof(CramOptions.MemoryLimitWait), Fails(new CramOptions { MemoryLimitBytes = 64L << 20, MemoryLimitWait = TimeSpan.FromSeconds(11) }));
        Assert.Equal(nameof(CramOptions.MemoryLimitWait), Fails(new CramOptions { MemoryLimitWait = TimeSpan.FromMilliseconds(-1) }));

        using var engine = CramEngine.Create(new CramOptions { MemoryLimitBytes = 64L << 20, ResidentLimitBytes = 32L << 20 });
        Assert.Equal(32L << 20, engine.ResidentLimitBytes);
        Assert.True(engine.GetStats().ResidentTargetBytes <= 32L << 20);
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.ResidentLimitBytes = 65L << 20);
        engine.ResidentLimitBytes = 0; // the memory limit alone then sets the resident target
        long target = engine.GetStats().ResidentTargetBytes;
        Assert.InRange(target, 32L << 20, 64L << 20);
    }

    /// <summary>Waits (up to 10 s) for background reclaim to bring memory use under <paramref name="limit"/>.</summary>
    private static void Settle(CramEngine engine, long limit) =>
        Assert.True(SpinWait.SpinUntil(() => engine.Parts.Budget.MemoryUsedBytes <= limit, 10_000),
            $"memory used stayed at {engine.Parts.Budget.MemoryUsedBytes >> 10} KiB against a limit of {limit >> 10} KiB: {Describe(engine.GetStats())}");

    private static string Describe(CramStats s) =>
        $"resident {s.ResidentBytes >> 10} KiB (target {s.ResidentTargetBytes >> 10} KiB), pool {s.PoolBytes >> 10} KiB (stored {s.StoredBytes >> 10} KiB, clean copies {s.CleanCopyBytes >> 10} KiB), metadata {s.MetadataBytes >> 10} KiB, exceeded {s.MemoryLimitExceeded}, incompressible {s.IncompressiblePages}, evictions {s.Evictions}";
}
