namespace CramCore.Tests;

[Trait("Category", TestCategory.Unit)]
public sealed unsafe class CramBalloonTests
{
    [Fact]
    public void Balloon_InflatesAsTheObservedRatioDrops_AndDeflatesAsItRises()
    {
        var shared = (NativeShared*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)sizeof(NativeShared));
        try
        {
            var device = new EmulatedCramDevice(1 << 20, frameCount: 4096); // 256 pages of capacity, 4096 frames
            using var node = new CramNode(NativeEngine.Detached, shared, new CramOptions { CramDevice = device }, new CramCore.Internals.TierEventChannel());
            long initial = node.BalloonFrames; // nothing placed yet: the device's own 16x frames-per-capacity, with the margin
            Assert.Equal(4096 - (long)(1048576.0 * 16 * CramNode.BalloonMargin / 4096), initial);
            shared->Stats.CramPlacedPages = 1000;
            shared->Stats.CramPlacedBytes = 1000 * 256; // ratio 16: 1 MiB x 16 x 0.8 = 3276 frames usable
            long at16 = node.BalloonFrames;
            Assert.Equal(4096 - (long)(1048576.0 * 16 * CramNode.BalloonMargin / 4096), at16);
            shared->Stats.CramPlacedBytes = 1000 * 1024; // ratio 4: inflates
            long at4 = node.BalloonFrames;
            Assert.True(at4 > at16, $"{at16} -> {at4}");
            Assert.True(node.FramesInUse <= node.UsableFrames);
            shared->Stats.CramPlacedBytes = 1000 * 128; // ratio 32: deflates
            Assert.True(node.BalloonFrames < at4);
            Assert.False(node.Wants(SharedLayout.PageSize / 2 + 1)); // only very compressible pages
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(shared);
        }
    }
}
