using CramCore.Internals;

namespace CramCore.Tests;

/// <summary>The FIFO ring behind reclaim's victim queue and writeback's store order, against a linked list.</summary>
[Trait("Category", TestCategory.Unit)]
public sealed class FifoQueueTests
{
    [Fact]
    public void EnqueueFront_IsDequeuedNext_AcrossTheRingsWrapAndGrowth()
    {
        var queue = new FifoQueue<int>();
        var model = new LinkedList<int>();
        var rng = new Random(7);
        for (int step = 0; step < 50_000; step++)
        {
            int op = rng.Next(10);
            if (op < 4)
            {
                queue.Enqueue(step);
                model.AddLast(step);
            }
            else if (op < 6)
            {
                queue.EnqueueFront(step);
                model.AddFirst(step);
            }
            else
            {
                bool took = queue.TryDequeue(out int item);
                Assert.Equal(model.Count > 0, took);
                if (took)
                {
                    Assert.Equal(model.First!.Value, item);
                    model.RemoveFirst();
                }
            }
            Assert.Equal(model.Count, queue.Count);
        }
        var rest = new List<int>();
        queue.Visit(i => { rest.Add(i); return true; });
        Assert.Equal(model, rest);
        Assert.True(queue.CapacityBytes > 4096 * sizeof(int), "the run grew the ring at least once");
    }
}
