using CramCore.Storage;
using Microsoft.Extensions.Time.Testing;

namespace CramCore.Tests;

/// <summary>
/// The recompression CPU budget alone, on a fake clock: credit accrues at the share of the clock
/// up to one second's worth; the recompressor pays back what it spends (no pause under 5 ms);
/// writeback re-encodes only with credit left over.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed class RecompressionBudgetTests
{
    private readonly FakeTimeProvider _clock = new();

    private long Ticks(TimeSpan t) => (long)(t.TotalSeconds * _clock.TimestampFrequency);

    [Fact]
    public void TheRecompressor_PaysBackWhatItSpends_AtTheShare()
    {
        var budget = new RecompressionBudget(0.1, _clock);
        _clock.Advance(TimeSpan.FromMilliseconds(10)); // 10 ms of work, 1 ms of it allowed
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(10)));
        Assert.Equal(90, budget.PauseOwed().TotalMilliseconds, 1); // 9 ms owed ÷ 0.1
        _clock.Advance(TimeSpan.FromMilliseconds(90)); // the pause: 10 % of the 100 ms was work
        Assert.Equal(TimeSpan.Zero, budget.PauseOwed());
        Assert.Equal(TimeSpan.FromMilliseconds(10), budget.Spent);
    }

    [Fact]
    public void ASmallDebt_IsNoPause_UntilItReachesTheMinimum()
    {
        var budget = new RecompressionBudget(0.5, _clock);
        _clock.Advance(TimeSpan.FromMilliseconds(2));
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(2))); // 1 ms owed: a 2 ms pause, under the minimum
        Assert.Equal(TimeSpan.Zero, budget.PauseOwed());
        _clock.Advance(TimeSpan.FromMilliseconds(4));
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(4))); // 3 ms owed: a 6 ms pause
        Assert.Equal(6, budget.PauseOwed().TotalMilliseconds, 1);
    }

    [Fact]
    public void Credit_AccruesWhileIdle_UpToOneSecondsWorth()
    {
        var budget = new RecompressionBudget(0.25, _clock);
        _clock.Advance(TimeSpan.FromSeconds(10)); // idle: at most 250 ms of credit
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(250)));
        Assert.Equal(TimeSpan.Zero, budget.PauseOwed());
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(25)));
        Assert.Equal(100, budget.PauseOwed().TotalMilliseconds, 1);
    }

    [Fact]
    public void Writeback_EncodesOnlyWithCreditLeftOver_TheRecompressorFirst()
    {
        var budget = new RecompressionBudget(0.1, _clock);
        Assert.False(budget.WritebackMayEncode()); // nothing accrued yet
        _clock.Advance(TimeSpan.FromSeconds(5)); // idle: 100 ms of credit (one second's worth)
        Assert.True(budget.WritebackMayEncode());
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(99)));
        Assert.True(budget.WritebackMayEncode());
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(1)));
        Assert.False(budget.WritebackMayEncode()); // spent: copies move as they are
        _clock.Advance(TimeSpan.FromMilliseconds(20)); // 2 ms accrued
        Assert.True(budget.WritebackMayEncode());
        budget.Spend(Ticks(TimeSpan.FromMilliseconds(12))); // the recompressor's batch: 10 ms in debt
        Assert.False(budget.WritebackMayEncode());
        Assert.Equal(100, budget.PauseOwed().TotalMilliseconds, 1); // it pays back, then writeback's turn comes with what accrues after
    }

    [Fact]
    public void AWholeCore_IsNoLimit()
    {
        var budget = new RecompressionBudget(1, _clock);
        budget.Spend(Ticks(TimeSpan.FromSeconds(30)));
        Assert.True(budget.Unlimited);
        Assert.True(budget.WritebackMayEncode());
        Assert.Equal(TimeSpan.Zero, budget.PauseOwed());
        Assert.Equal(TimeSpan.FromSeconds(30), budget.Spent);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-0.5)]
    public void ANonPositiveShare_IsRefused(double share) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new RecompressionBudget(share, _clock));
}
