using System.Runtime.InteropServices;

namespace CramCore.Tests;

/// <summary>Every instruction-set kernel, forced, on every machine: all agree with the definition.</summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class SameFilledKernelTests
{
    [Theory]
    [InlineData(nameof(PageKernelIsa.Scalar))]
    [InlineData(nameof(PageKernelIsa.Vector128))]
    [InlineData(nameof(PageKernelIsa.Vector256))]
    [InlineData(nameof(PageKernelIsa.Vector512))]
    public void Kernel_FindsSameFilledPages_AndEveryDifference(string kernel)
    {
        var isa = Enum.Parse<PageKernelIsa>(kernel);
        ulong* page = (ulong*)NativeMemory.AlignedAlloc(4096, 64);
        try
        {
            foreach (ulong value in new[] { 0UL, 1UL, 0xDEAD_BEEF_0BAD_F00DUL, ulong.MaxValue })
            {
                new Span<ulong>(page, 512).Fill(value);
                Assert.True(SameFilled.Check((byte*)page, out ulong found, isa));
                Assert.Equal(value, found);
                // A single differing byte anywhere (first, last, vector and step boundaries) is seen.
                for (int at = 0; at < 4096; at += at < 300 ? 1 : 97)
                {
                    ((byte*)page)[at] ^= 0x40;
                    Assert.False(SameFilled.Check((byte*)page, out _, isa), $"{isa}: byte {at} changed, value {value:x}");
                    ((byte*)page)[at] ^= 0x40;
                }
                ((byte*)page)[4095] ^= 1;
                Assert.False(SameFilled.Check((byte*)page, out _, isa));
                ((byte*)page)[4095] ^= 1;
            }
            // Same 8-byte word, but the page is not (a repeating 16-byte pattern).
            for (int i = 0; i < 512; i++)
            {
                page[i] = i % 2 == 0 ? 1UL : 2UL;
            }
            Assert.False(SameFilled.Check((byte*)page, out _, isa));
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }
    }

    [Fact]
    public void Best_IsAKernelThisMachineAccelerates_Vector256First()
    {
        PageKernelIsa best = PageKernels.Best;
        Assert.True(best == PageKernelIsa.Scalar
            || (best == PageKernelIsa.Vector128 && System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated)
            || (best == PageKernelIsa.Vector256 && System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
            || (best == PageKernelIsa.Vector512 && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated));
        Assert.Equal(System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated, best == PageKernelIsa.Vector256);
    }
}
