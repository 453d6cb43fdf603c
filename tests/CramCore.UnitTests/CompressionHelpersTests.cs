using CramCore.Reclaim;

namespace CramCore.Tests;

/// <summary>
/// The chunks reclaim shares with the process's compression helpers: every item runs exactly once
/// per chunk, whoever takes it, across many chunks of changing sizes; the owner finishes alone when
/// no helper comes; a throwing item is reported to the owner; the helpers stop with the last user.
/// </summary>
[Trait("Category", TestCategory.Unit)]
[Collection(nameof(CompressionHelpersTests))] // the helpers are process-wide: one test at a time
public sealed class CompressionHelpersTests
{
    [Fact]
    public void EveryItemRunsOnce_PerChunk_WithHelpers_AndTheyStopWithTheLastUser()
    {
        CompressionHelpers.Acquire(3);
        try
        {
            int[] runs = new int[CompressionJob.MaxItems];
            int[] threads = new int[CompressionJob.MaxItems];
            var helped = 0;
            int owner = Environment.CurrentManagedThreadId;
            var job = new CompressionJob(i =>
            {
                Interlocked.Increment(ref runs[i]);
                threads[i] = Environment.CurrentManagedThreadId;
                Thread.SpinWait(200); // long enough for a helper to take some
            });
            int place = CompressionHelpers.Post(job);
            Assert.True(place >= 0, "posted");
            try
            {
                var rng = new Random(3);
                for (int chunk = 0; chunk < 2000; chunk++)
                {
                    int count = rng.Next(0, 65);
                    Array.Clear(runs, 0, count + 1);
                    job.Run(count);
                    for (int i = 0; i < count; i++)
                    {
                        Assert.Equal(1, runs[i]);
                        helped += threads[i] != owner ? 1 : 0;
                    }
                    Assert.Equal(0, runs[count]); // nothing past the chunk's end
                }
            }
            finally
            {
                CompressionHelpers.Withdraw(place);
            }
            Assert.Equal(3, CompressionHelpers.Running);
            Assert.True(helped > 0, "no helper ever took an item");
        }
        finally
        {
            CompressionHelpers.Release();
        }
        Assert.Equal(0, CompressionHelpers.Running);
    }

    [Fact]
    public void TwoJobsStartedInTurn_TheHelpersRunTheNextWhileTheOwnerWorks_EachItemOnce()
    {
        // Reclaim's pipeline: start chunk k + 1, store chunk k, finish chunk k + 1 (EvictionPipeline).
        CompressionHelpers.Acquire(1);
        try
        {
            int[][] runs = [new int[32], new int[32]];
            var jobs = new CompressionJob[2];
            int helped = 0, owner = Environment.CurrentManagedThreadId;
            for (int set = 0; set < 2; set++)
            {
                int s = set;
                jobs[s] = new CompressionJob(i =>
                {
                    Interlocked.Increment(ref runs[s][i]);
                    if (Environment.CurrentManagedThreadId != owner)
                    {
                        Interlocked.Increment(ref helped);
                    }
                    Thread.SpinWait(500);
                });
            }
            int place0 = CompressionHelpers.Post(jobs[0]), place1 = CompressionHelpers.Post(jobs[1]);
            try
            {
                jobs[0].Start(32);
                for (int chunk = 0; chunk < 400; chunk++)
                {
                    int set = chunk & 1;
                    jobs[set].Finish(32);
                    Array.Clear(runs[set ^ 1]);
                    jobs[set ^ 1].Start(32);
                    Thread.SpinWait(2000); // the owner stores this chunk meanwhile
                    Assert.All(runs[set], n => Assert.Equal(1, n));
                    Array.Clear(runs[set]);
                }
                jobs[0].Finish(32); // the last one started (set 0 after an even number of chunks)
            }
            finally
            {
                CompressionHelpers.Withdraw(place0);
                CompressionHelpers.Withdraw(place1);
            }
            Assert.True(helped > 0, "no helper took an item of a started job");
        }
        finally
        {
            CompressionHelpers.Release();
        }
    }

    [Fact]
    public void FinishQuietly_WaitsForEveryItem_AndDropsAFailure()
    {
        int runs = 0;
        var job = new CompressionJob(i =>
        {
            if (Interlocked.Increment(ref runs) <= 10 && i == 3)
            {
                throw new InvalidOperationException("item 3"); // in the first job only
            }
        });
        job.Start(10);
        job.FinishQuietly(10);
        Assert.Equal(10, runs);
        job.Run(5); // the dropped failure is not reported by the next run
        Assert.Equal(15, runs);
    }

    [Fact]
    public void WithoutHelpers_TheOwnerRunsEveryItem()
    {
        int runs = 0;
        var job = new CompressionJob(_ => runs++);
        Assert.Equal(-1, CompressionHelpers.Post(job)); // no engine wants helpers: it runs alone
        job.Run(40);
        job.Run(7);
        Assert.Equal(47, runs);
        Assert.Equal(0, CompressionHelpers.Running);
    }

    [Fact]
    public void AThrowingItem_IsReportedToTheOwner_AfterEveryOtherItemRan()
    {
        int runs = 0;
        var job = new CompressionJob(i =>
        {
            Interlocked.Increment(ref runs);
            if (i == 5)
            {
                throw new ArithmeticException("item 5");
            }
        });
        var e = Assert.Throws<InvalidOperationException>(() => job.Run(10));
        Assert.IsType<ArithmeticException>(e.InnerException);
        Assert.Equal(10, runs);
        job.Run(3); // the failure was reported once; the job goes on
        Assert.Equal(13, runs);
    }
}
