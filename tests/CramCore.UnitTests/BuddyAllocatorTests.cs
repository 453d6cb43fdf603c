using System.Runtime.InteropServices;
using FsCheck;
using FsCheck.Fluent;

namespace CramCore.Tests;

[Trait("Category", TestCategory.Unit)]
public sealed unsafe class BuddyAllocatorTests
{
    private const int P = SharedLayout.PageSize;

    public enum Kind { Bitmap, NbbsTree, SpinLocked }

    /// <summary>Any of the allocators, behind one shape for the tests.</summary>
    private sealed class Subject : IDisposable
    {
        private readonly BitmapBuddy? _bitmap;
        private readonly LockFreeBuddy? _tree;
        private readonly SpinLockedBuddy? _locked;
        public readonly byte* Arena;
        public readonly int MaxOrder;

        public Subject(Kind kind, int maxOrder)
        {
            MaxOrder = maxOrder;
            Arena = (byte*)NativeMemory.AlignedAlloc((nuint)((long)P << maxOrder), P);
            switch (kind)
            {
                case Kind.Bitmap: _bitmap = new BitmapBuddy(Arena, maxOrder); break;
                case Kind.NbbsTree: _tree = new LockFreeBuddy(Arena, maxOrder); break;
                default: _locked = new SpinLockedBuddy(Arena, maxOrder); break;
            }
        }

        public byte* Allocate(int order) => _bitmap is not null ? _bitmap.Allocate(order) : _tree is not null ? _tree.Allocate(order) : _locked!.Allocate(order);
        public void Free(byte* p, int order)
        {
            if (_bitmap is not null) _bitmap.Free(p, order);
            else if (_tree is not null) _tree.Free(p, order);
            else _locked!.Free(p, order);
        }
        public bool IsPristine() => _bitmap?.IsPristine() ?? _tree?.IsPristine() ?? _locked!.IsPristine();
        public long[]? FreeBytes() => _bitmap?.FreeBytesByOrder() ?? _tree?.FreeBytesByOrder();

        public void Dispose()
        {
            _bitmap?.Dispose();
            _tree?.Dispose();
            _locked?.Dispose();
            NativeMemory.AlignedFree(Arena);
        }
    }

    /// <summary>
    /// Random interleavings of allocate/free of random orders against a model of live blocks:
    /// blocks never overlap, an allocation fails only when no free aligned block of that order
    /// exists, free space is accounted exactly, and freeing everything coalesces back to one block.
    /// </summary>
    [Theory]
    [InlineData(Kind.Bitmap, 6)]
    [InlineData(Kind.Bitmap, 9)] // orders above 6 span several words
    [InlineData(Kind.NbbsTree, 6)]
    [InlineData(Kind.SpinLocked, 6)]
    public void MatchesModel_UnderRandomInterleavings(Kind kind, int maxOrder)
    {
        var ops = Gen.ListOf(Gen.Choose(0, 1 << 20)).Select(l => l.ToArray());
        Prop.ForAll(ops.ToArbitrary(), program =>
        {
            using var subject = new Subject(kind, maxOrder);
            var live = new List<(long Offset, int Order)>();
            bool[] used = new bool[1 << maxOrder];
            foreach (int op in program)
            {
                if (op % 3 != 0 || live.Count == 0)
                {
                    int order = ((op >> 2) % 7) switch { 0 or 1 or 2 => 0, 3 or 4 => 1, 5 => 2, _ => (op >> 5) % (maxOrder + 1) };
                    byte* p = subject.Allocate(order);
                    if (p is null)
                    {
                        // Only allowed when every aligned block of that order is partly in use.
                        for (int b = 0; b < 1 << maxOrder; b += 1 << order)
                        {
                            if (!used.AsSpan(b, 1 << order).Contains(true))
                            {
                                return false;
                            }
                        }
                        continue;
                    }
                    long offset = p - subject.Arena;
                    int first = (int)(offset / P);
                    if (offset % ((long)P << order) != 0 || used.AsSpan(first, 1 << order).Contains(true))
                    {
                        return false; // misaligned or overlapping a live block
                    }
                    used.AsSpan(first, 1 << order).Fill(true);
                    live.Add((offset, order));
                }
                else
                {
                    var (offset, order) = live[(op >> 2) % live.Count];
                    live.Remove((offset, order));
                    subject.Free(subject.Arena + offset, order);
                    used.AsSpan((int)(offset / P), 1 << order).Clear();
                }
                long[]? free = subject.FreeBytes();
                if (free is not null && free.Sum() != (long)P * used.Count(u => !u))
                {
                    return false;
                }
            }
            foreach (var (offset, order) in live)
            {
                subject.Free(subject.Arena + offset, order);
            }
            return subject.IsPristine();
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(300));
    }

    [Fact]
    public void DoubleFree_IsRefused()
    {
        using var subject = new Subject(Kind.Bitmap, maxOrder: 7);
        byte* p = subject.Allocate(1);
        subject.Free(p, 1);
        Assert.Throws<InvalidOperationException>(() => subject.Free(p, 1));
        Assert.Throws<ArgumentException>(() => subject.Free(p + 1, 1));
        byte* big = subject.Allocate(7);
        subject.Free(big, 7);
        Assert.Throws<InvalidOperationException>(() => subject.Free(big, 7));
        Assert.True(subject.IsPristine());
    }

    [Theory]
    [InlineData(Kind.Bitmap)]
    [InlineData(Kind.NbbsTree)]
    public void FreeSpaceAndFragmentation_AreReported(Kind kind)
    {
        using var subject = new Subject(kind, maxOrder: 8);
        Assert.Equal(0, BuddyStats.Fragmentation(subject.FreeBytes()!));
        byte* a = subject.Allocate(0);
        long[] free = subject.FreeBytes()!;
        Assert.Equal(new long[] { P, 2 * P, 4 * P, 8 * P, 16 * P, 32 * P, 64 * P, 128 * P, 0 }, free);
        Assert.Equal(1 - 128.0 / 255, BuddyStats.Fragmentation(free), 6);
        subject.Free(a, 0);
        Assert.Equal(256L * P, subject.FreeBytes()![8]);
    }

    /// <summary>Threads allocate and free concurrently; each block carries its owner's tag on every page.</summary>
    [Theory]
    [InlineData(Kind.Bitmap, 40)]
    [InlineData(Kind.Bitmap, 250)] // close to full: allocations fail and retry, words collide
    [InlineData(Kind.NbbsTree, 40)]
    [InlineData(Kind.NbbsTree, 250)]
    [InlineData(Kind.SpinLocked, 40)]
    public void ConcurrentAllocateFree_NeverHandsOutABlockTwice(Kind kind, int liveBlocks)
    {
        const int maxOrder = 10, threads = 4, opsPerThread = 200_000;
        using var subject = new Subject(kind, maxOrder);
        var errors = new List<string>();
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            var live = new List<(IntPtr Block, int Order, long Tag)>();
            for (long i = 0; i < opsPerThread; i++)
            {
                if (live.Count < liveBlocks && rng.Next(3) != 0 || live.Count == 0)
                {
                    int order = rng.Next(4) == 0 ? rng.Next(0, 5) : rng.Next(50) == 0 ? rng.Next(6, 9) : 0;
                    byte* p = subject.Allocate(order);
                    if (p is null)
                    {
                        continue;
                    }
                    long tag = ((long)t << 40) | i;
                    for (int page = 0; page < 1 << order; page++)
                    {
                        *(long*)(p + (long)page * P) = tag;
                    }
                    live.Add(((IntPtr)p, order, tag));
                }
                else
                {
                    int k = rng.Next(live.Count);
                    var (block, order, tag) = live[k];
                    live[k] = live[^1];
                    live.RemoveAt(live.Count - 1);
                    for (int page = 0; page < 1 << order; page++)
                    {
                        if (*(long*)((byte*)block + (long)page * P) != tag)
                        {
                            lock (errors) { errors.Add($"thread {t}: block {(long)((byte*)block - subject.Arena):x} order {order} was overwritten"); }
                            return;
                        }
                    }
                    subject.Free((byte*)block, order);
                }
            }
            foreach (var (block, order, _) in live)
            {
                subject.Free((byte*)block, order);
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        Assert.Empty(errors);
        Assert.True(subject.IsPristine(), "not everything coalesced back");
    }
}
