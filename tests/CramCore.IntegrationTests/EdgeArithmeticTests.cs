namespace CramCore.Tests;

/// <summary>
/// Every public size and offset argument at its extremes (issue 15, "arithmetic at the edges"):
/// out-of-range values throw <see cref="ArgumentOutOfRangeException"/> naming the argument, values
/// whose sums would overflow are caught before they wrap, and the largest legal values work.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class EdgeArithmeticTests
{
    private const int P = TestPages.PageSize;

    public static TheoryData<long, long> OutsideRanges() => new()
    {
        { -1, 0 }, { 0, -1 }, { long.MinValue, 1 }, { 1, long.MinValue },
        { long.MaxValue, 1 }, { 1, long.MaxValue }, { long.MaxValue, long.MaxValue }, // sums that would wrap
        { 16L * P, 1 }, { 16L * P + 1, 0 }, { 0, 16L * P + 1 }, { 15L * P, 2L * P },
    };

    [Theory]
    [MemberData(nameof(OutsideRanges))]
    public void EveryRangeMethod_RejectsRangesOutsideTheRegion(long offset, long length)
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(16L * P);
        int count = (int)Math.Clamp(length, int.MinValue, int.MaxValue);
        var calls = new Dictionary<string, Action>
        {
            ["MakeResident"] = () => region.MakeResident(offset, length, forWrite: false),
            ["Advise"] = () => region.Advise(offset, length, CramAdvice.DontNeed),
            ["AsSpan"] = () => _ = region.AsSpan<byte>(offset, count).Length,
            ["AsSpan<long>"] = () => _ = region.AsSpan<long>(offset, count).Length,
            ["AsMemory"] = () => _ = region.AsMemory<byte>(offset, count).Length,
            ["ReadFrom"] = () => region.ReadFrom(Stream.Null, offset, count),
            ["WriteTo"] = () => region.WriteTo(Stream.Null, offset, count),
            ["ReadFromAsync"] = () => region.ReadFromAsync(Stream.Null, offset, count).AsTask().GetAwaiter().GetResult(),
            ["WriteToAsync"] = () => region.WriteToAsync(Stream.Null, offset, count).AsTask().GetAwaiter().GetResult(),
        };
        foreach ((string name, Action call) in calls) // the int-count methods get the length clamped to int: still outside
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(call);
            Assert.True(e.ParamName is "byteOffset" or "count" or "length", $"{name}({offset}, {length}): names '{e.ParamName}'");
        }
        Assert.Equal(0, region.GetStats().LogicalBytes); // nothing was touched on the way
    }

    [Fact]
    public void LargestLegalValues_Work()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(1L << 46); // 64 TiB, the largest region
        long last = region.Length - P;
        region.AsSpan<long>(last, P / 8)[^1] = 42;
        region.MakeResident(last, P, forWrite: true);
        Assert.Equal(42, region.AsSpan<long>(region.Length - 8, 1)[0]);
        Assert.Equal(P, region.Reclaim(long.MaxValue)); // every page, without wrapping
        Assert.Equal(42, region.AsSpan<long>(region.Length - 8, 1)[0]);
        region.Advise(0, region.Length, CramAdvice.Cold);
        region.Advise(region.Length, 0, CramAdvice.DontNeed); // an empty range at the very end
        Assert.Equal(0, region.AsSpan<byte>(region.Length, 0).Length);

        Assert.Throws<ArgumentOutOfRangeException>("bytes", () => region.Reclaim(-1));
        Assert.Throws<ArgumentOutOfRangeException>("bytes", () => region.Reclaim(long.MinValue));
        Assert.Throws<ArgumentOutOfRangeException>("bytes", () => engine.CreateRegion(0));
        Assert.Throws<ArgumentOutOfRangeException>("bytes", () => engine.CreateRegion(-1));
        Assert.Throws<ArgumentOutOfRangeException>("bytes", () => engine.CreateRegion((1L << 46) + 1));
        Assert.Throws<ArgumentOutOfRangeException>("bytes", () => engine.CreateRegion(long.MaxValue)); // rounding up would wrap
        Assert.Throws<ArgumentOutOfRangeException>("value", () => engine.ResidentLimitBytes = -1);
        Assert.Throws<ArgumentOutOfRangeException>("value", () => engine.ResidentLimitBytes = long.MinValue);
        engine.ResidentLimitBytes = long.MaxValue; // as good as no limit, without overflow in the page arithmetic
        engine.ResidentLimitBytes = 0;

        using var bounded = CramEngine.Create(new CramOptions { MemoryLimitBytes = long.MaxValue, MemoryLimitWait = TimeSpan.FromSeconds(10) });
        using var small = bounded.CreateRegion(1L << 20);
        small.AsSpan<long>(0, 1)[0] = 7;
        CramStats stats = bounded.GetStats();
        Assert.True(stats.ResidentTargetBytes > 1L << 60 && !stats.MemoryLimitExceeded, $"target {stats.ResidentTargetBytes}");
        Assert.Equal(7, small.AsSpan<long>(0, 1)[0]);
        bounded.ResidentLimitBytes = long.MaxValue; // equal to the memory limit: allowed, and the arithmetic holds
        Assert.True(bounded.GetStats().ResidentTargetBytes > 1L << 60);
    }

    /// <summary>
    /// After the fault-in log overflowed, reclaim rebuilds its FIFO from the page tables: through the
    /// walk of the blocks first touch marked, so in a 64 TiB region with three pages touched it finds
    /// exactly those three (a walk of every entry would read 2^34 of them).
    /// </summary>
    [Fact]
    public void FaultLogOverflow_RebuildsFromTheTouchedBlocksOnly()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(1L << 46);
        long[] offsets = [0, 1L << 40, region.Length - P];
        foreach (long o in offsets)
        {
            region.MakeResident(o, P, forWrite: true);
            region.AsSpan<long>(o, 1)[0] = o + 1;
        }
        Interlocked.Increment(ref engine.Parts.Shared->Stats.FaultLogOverflows); // as if the service had dropped entries
        Assert.Equal(offsets.Length * P, region.Reclaim(long.MaxValue));
        foreach (long o in offsets)
        {
            Assert.Equal(o + 1, region.AsSpan<long>(o, 1)[0]);
        }
    }
}
