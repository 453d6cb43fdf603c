namespace CramCore.Tests;

/// <summary><see cref="CramLatencyHistogram"/>: quantiles at their bucket's bound, and a phase's latencies from two snapshots.</summary>
[Trait("Category", TestCategory.Unit)]
public sealed class LatencyHistogramTests
{
    [Fact]
    public void Quantile_IsTheUpperBoundOfTheBucketThatHoldsIt()
    {
        var h = new CramLatencyHistogram([0, 1, 0, 3, 0, 0]); // one in [1, 2) µs, three in [4, 8) µs
        Assert.Equal(4, h.Count);
        Assert.Equal(TimeSpan.FromMicroseconds(2), h.Quantile(0.25));
        Assert.Equal(TimeSpan.FromMicroseconds(8), h.Quantile(0.5));
        Assert.Equal(TimeSpan.FromMicroseconds(8), h.Quantile(1));
        Assert.Equal(TimeSpan.Zero, new CramLatencyHistogram([0, 0, 0]).Quantile(0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => h.Quantile(1.5));
    }

    [Fact]
    public void Since_CountsWhatCameAfterTheEarlierSnapshot()
    {
        var before = new CramLatencyHistogram([5, 2, 0, 1]);
        var after = new CramLatencyHistogram([5, 4, 3, 1]);
        CramLatencyHistogram phase = after.Since(before);
        Assert.Equal([0L, 2, 3, 0], phase.Counts);
        Assert.Equal(TimeSpan.FromMicroseconds(4), phase.Quantile(0.5));
        Assert.Equal(after.Counts, after.Since(CramLatencyHistogram.Empty).Counts); // stats of an engine that had not started
        Assert.Throws<ArgumentException>(() => before.Since(after)); // the wrong way round
        Assert.Throws<ArgumentException>(() => after.Since(new CramLatencyHistogram([1, 1]))); // another histogram's buckets
    }
}
