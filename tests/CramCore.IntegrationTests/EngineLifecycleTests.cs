namespace CramCore.Tests;

/// <summary>
/// Building and tearing down an engine: a failure at any build step leaves nothing behind, and a
/// TierEvent handler may dispose the engine or a region, or set the resident limit, on whichever
/// thread it runs, without a hang.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class EngineLifecycleTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private readonly string _dir = Directory.CreateTempSubdirectory("cram-lifecycle-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static int OpenDescriptors() => Directory.GetFiles("/proc/self/fd").Length;

    private static int CramThreads() => ProcessThreads.Count(n => n.StartsWith("cram-", StringComparison.Ordinal));

    /// <summary>Engines earlier tests left to their finalizers release their threads and descriptors now, not during a count.</summary>
    private static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    /// <summary>Runs <paramref name="action"/> on a thread of its own; false if it has not returned within <see cref="Patience"/>.</summary>
    private static bool CompletesWithin(Action action)
    {
        var thread = new Thread(() => action()) { IsBackground = true };
        thread.Start();
        return thread.Join(Patience);
    }

    /// <summary>What a fault waiting at the hard limit does (native/fault.c, throttle): counts a throttle wait and wakes the reclaim worker, which raises ThrottlingStarted on its tick.</summary>
    private static void ThrottledFault(CramEngine engine)
    {
        Interlocked.Add(ref engine.Parts.Shared->Stats.ThrottleWaits, 1);
        engine.Parts.Engine.SignalReclaim();
    }

    public static TheoryData<int> Steps() => [.. Enum.GetValues<EngineBuildStep>().Select(s => (int)s)];

    [Theory]
    [MemberData(nameof(Steps))]
    public void AFailureAtAnyBuildStep_RollsBackEverythingBuiltBeforeIt(int step)
    {
        var failAt = (EngineBuildStep)step;
        var options = new CramOptions
        {
            ResidentLimitBytes = 16 << 20,
            BackingFile = Path.Combine(_dir, "swap"),
            CompressedPoolLimitBytes = 4 << 20,
            PoolArenaBytes = 4 << 20,
            CramDevice = new EmulatedCramDevice(4 << 20),
        };
        using (CramEngine warm = CramEngine.Create(options))
        {
            // the native library, the runtime's threads and the metrics exist before the count
        }
        Settle();
        int descriptors = OpenDescriptors(), threads = CramThreads();
        var steps = new List<EngineBuildStep>();
        var e = Assert.Throws<InvalidOperationException>(() => CramEngine.CreateWithHooks(options, beforeStep: step =>
        {
            steps.Add(step);
            if (step == failAt)
            {
                throw new InvalidOperationException($"injected at {step}");
            }
        }));
        Assert.Equal($"injected at {failAt}", e.Message);
        Assert.Equal(failAt, steps[^1]); // every step before it ran
        Assert.Equal((int)failAt + 1, steps.Count);
        // No GC here: finalizers would release what a missing roll-back leaked, and hide it.
        Assert.Equal(descriptors, OpenDescriptors()); // uffd, eventfds, pidfd, the backing file: all closed
        Assert.Equal(threads, CramThreads());         // the fault service and the reclaim worker: stopped
        Assert.Empty(Directory.GetFiles(_dir));       // the backing file was unlinked
        using CramEngine after = CramEngine.Create(options); // and the same options work afterwards
        Assert.Equal(0, after.GetStats().Regions);
    }

    [Fact]
    public void AHandlerTheWorkerRaises_DisposesTheEngine_WithoutAHang()
    {
        var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 16 << 20 });
        CramRegion region = engine.CreateRegion(1 << 20);
        region.AsSpan<byte>(0, 4096)[0] = 1;
        string? thread = null;
        Exception? failure = null;
        using var disposed = new ManualResetEventSlim();
        engine.TierEvent += (_, _) =>
        {
            if (thread is not null)
            {
                return;
            }
            thread = Thread.CurrentThread.Name;
            try
            {
                engine.Dispose();
            }
            catch (Exception x)
            {
                failure = x;
            }
            disposed.Set();
        };
        ThrottledFault(engine); // ThrottlingStarted on the worker's next tick
        Assert.True(disposed.Wait(Patience), "Dispose from a handler the reclaim worker raised did not return");
        Assert.Null(failure);
        Assert.NotEqual("cram-reclaim", thread); // raised on the thread pool: the worker never runs a handler
        Assert.Throws<ObjectDisposedException>(() => engine.GetStats());
        Assert.Throws<ObjectDisposedException>(() => region.AsSpan<byte>(0, 1));
        region.Dispose(); // a region of a disposed engine: nothing to do
    }

    [Fact]
    public void AHandlerTheWorkerRaises_MayUseEveryMember()
    {
        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 16 << 20 });
        using CramRegion region = engine.CreateRegion(4 << 20);
        for (int i = 0; i < 1024; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * 4096, i, 1);
        }
        Exception? failure = null;
        string? thread = null;
        using var done = new ManualResetEventSlim();
        engine.TierEvent += (_, _) =>
        {
            if (thread is not null)
            {
                return;
            }
            thread = Thread.CurrentThread.Name;
            try
            {
                Assert.True(region.Reclaim(1 << 20) > 0);                   // a reclaim pass (the maintenance lock)
                region.Advise(0, 1 << 20, CramAdvice.WillNeed);             // the prefetcher
                Assert.True(engine.GetStats().Evictions > 0);               // stats
                engine.CompactPool();                                       // maintenance
                engine.ResidentLimitBytes = 32 << 20;                       // the engine's lock and the budget's
                using CramRegion other = engine.CreateRegion(1 << 20);      // region create and tear-down
                other.AsSpan<byte>(0, 1)[0] = 1;
            }
            catch (Exception x)
            {
                failure = x;
            }
            done.Set();
        };
        ThrottledFault(engine);
        Assert.True(done.Wait(Patience), "a handler the reclaim worker raised hung");
        Assert.Null(failure);
        Assert.NotEqual("cram-reclaim", thread);
        Assert.Equal(32L << 20, engine.ResidentLimitBytes);
        for (int i = 0; i < 1024; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * 4096, i, 1), $"page {i}");
        }
    }

    [Fact]
    public void AHandlerThatAlwaysThrows_NeverReachesTheReclaimWorker_AndIsCounted()
    {
        // Issue 24's repro, smaller: before, this ended the process (unhandled on cram-reclaim).
        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 16 << 20, CompressedPoolLimitBytes = 1 << 20, PoolArenaBytes = 1 << 20 });
        int calls = 0;
        engine.TierEvent += (_, _) =>
        {
            Interlocked.Increment(ref calls);
            throw new InvalidOperationException("a handler bug");
        };
        using CramRegion region = engine.CreateRegion(64L << 20);
        for (int i = 0; i < (64 << 20) / 4096; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * 4096, i, 1); // the pool fills: PoolFull on the worker
        }
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().CallbackFailures >= 2, Patience), "no event reached the handler");
        CramStats s = engine.GetStats();
        Assert.Equal(Volatile.Read(ref calls), s.CallbackFailures);
        for (int i = 0; i < (64 << 20) / 4096; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * 4096, i, 1), $"page {i}");
        }
    }

    /// <summary>A handler that blocks (here until the test lets it go) holds up later events only: reclaim goes on and holds the limit meanwhile.</summary>
    [Fact]
    public void AHandlerThatBlocks_DoesNotStopReclaim()
    {
        var options = new CramOptions { ResidentLimitBytes = 4 << 20, CompressedPoolLimitBytes = 16 << 20, PoolArenaBytes = 16 << 20 };
        using var engine = CramEngine.Create(options);
        using var release = new ManualResetEventSlim();
        using var blocked = new ManualResetEventSlim();
        int calls = 0;
        engine.TierEvent += (_, _) =>
        {
            Interlocked.Increment(ref calls);
            blocked.Set();
            release.Wait();
        };
        try
        {
            ThrottledFault(engine);
            Assert.True(blocked.Wait(Patience), "no event reached the handler");
            const int pages = 4096; // 16 MiB, four times the limit
            using CramRegion region = engine.CreateRegion((long)pages * 4096);
            for (int i = 0; i < pages; i++)
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * 4096, i, 1);
            }
            Assert.True(SpinWait.SpinUntil(() => engine.GetStats().ResidentBytes <= options.ResidentLimitBytes, Patience),
                $"reclaim stopped while a handler blocked: {engine.GetStats().ResidentBytes >> 20} MiB resident");
            Assert.Equal(1, Volatile.Read(ref calls)); // later events (throttling's end) wait for the handler
            release.Set();
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref calls) > 1, Patience), "the events behind the blocked handler were never raised");
            for (int i = 0; i < pages; i++)
            {
                Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * 4096, i, 1), $"page {i}");
            }
        }
        finally
        {
            release.Set();
        }
    }

    [Fact]
    public void AHandlerOnTheCallersThread_DisposesTheEngineAndARegion_WithoutAHang()
    {
        var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 16 << 20 });
        CramRegion first = engine.CreateRegion(1 << 20), second = engine.CreateRegion(1 << 20);
        int calls = 0;
        engine.TierEvent += (_, _) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                first.Dispose();
                engine.ResidentLimitBytes = 32 << 20;
                engine.Dispose();
            }
        };
        ThrottledFault(engine);
        Assert.True(CompletesWithin(engine.RaisePendingEvents), "a handler on a caller's thread hung"); // racing the worker's tick
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref calls) >= 1, Patience));
        Assert.Throws<ObjectDisposedException>(() => engine.ResidentLimitBytes);
        Assert.Throws<ObjectDisposedException>(() => second.GetStats());
    }

    [Fact]
    public void AHandlerSettingTheLimit_WhileAnotherThreadDisposes_DoesNotHang()
    {
        for (int round = 0; round < 20; round++)
        {
            var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 16 << 20 });
            using var inHandler = new ManualResetEventSlim();
            engine.TierEvent += (_, _) =>
            {
                inHandler.Set();
                try
                {
                    engine.ResidentLimitBytes = 8 << 20; // takes the engine's lock while Dispose runs
                }
                catch (ObjectDisposedException)
                {
                    // what a handler gets once Dispose has begun
                }
            };
            ThrottledFault(engine);
            inHandler.Wait(Patience);
            Assert.True(CompletesWithin(engine.Dispose), $"round {round}: Dispose hung against a handler setting the limit");
        }
    }

    [Fact]
    public void AnIdleWorker_Sleeps_AndTheNextFaultPastTheLimitWakesIt()
    {
        using var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 16 << 20 });
        using CramRegion region = engine.CreateRegion(64 << 20);
        ReclaimWorker worker = engine.Parts.Worker;
        region.Pointer[0] = 1;
        Assert.True(SpinWait.SpinUntil(() => worker.Sleeping, Patience), "the worker never went to sleep on an idle engine");
        long sleeps = worker.IdleSleeps;
        // Past the limit: the faults wake the worker, which evicts down to the low watermark.
        for (int i = 0; i < 8192; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * 4096, i, 1);
        }
        Assert.True(SpinWait.SpinUntil(() => engine.GetStats().ResidentBytes <= 16 << 20, Patience),
            $"reclaim did not bring resident memory under the limit: {engine.GetStats().ResidentBytes >> 20} MiB");
        Assert.True(engine.GetStats().Evictions > 0);
        // Quiet again: back to sleep (another sleep counted), and every page reads back.
        Assert.True(SpinWait.SpinUntil(() => worker.Sleeping && worker.IdleSleeps > sleeps, Patience), "the worker did not sleep again once the engine was idle");
        for (int i = 0; i < 8192; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * 4096, i, 1), $"page {i}");
        }
    }
}
