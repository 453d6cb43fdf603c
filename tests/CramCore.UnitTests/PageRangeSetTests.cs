using FsCheck;
using FsCheck.Fluent;

namespace CramCore.Tests;

/// <summary>The hot set's ranges (<see cref="PageRangeSet"/>) against a plain array of flags, for random sequences of adds and removes.</summary>
[Trait("Category", TestCategory.Unit)]
public sealed class PageRangeSetTests
{
    private const int Pages = 64;

    [Fact]
    public void AddsAndRemoves_AgreeWithAnArrayOfFlags()
    {
        Gen<(bool Add, int Start, int Length)> op =
            from add in Gen.Elements(true, false)
            from start in Gen.Choose(0, Pages - 1)
            from length in Gen.Choose(0, 20)
            select (add, start, length);
        Prop.ForAll(Gen.ListOf(op).ToArbitrary(), ops =>
        {
            var set = new PageRangeSet();
            var model = new bool[Pages + 20];
            foreach ((bool add, int start, int length) in ops)
            {
                if (add)
                {
                    set.Add((ulong)start, (ulong)(start + length));
                }
                else
                {
                    set.Remove((ulong)start, (ulong)(start + length));
                }
                Array.Fill(model, add, start, length);
            }
            for (int p = 0; p < model.Length; p++)
            {
                if (set.Contains((ulong)p) != model[p])
                {
                    return false;
                }
            }
            // Canonical: sorted, non-empty, neither overlapping nor touching.
            for (int i = 0; i < set.Ranges.Count; i++)
            {
                if (set.Ranges[i].Start >= set.Ranges[i].End || (i > 0 && set.Ranges[i - 1].End >= set.Ranges[i].Start))
                {
                    return false;
                }
            }
            return set.IsEmpty == !model.Contains(true);
        }).QuickCheckThrowOnFailure();
    }
}
