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
