using System.Runtime.InteropServices;

namespace CramCore.Tests;

/// <summary>Every structure shared with C is checked against the C compiler's layout.</summary>
public sealed unsafe class LayoutTests
{
    private static uint Off<T>(string field) => (uint)Marshal.OffsetOf<T>(field);

    [Fact]
    public void CSharpMirrorMatchesNativeHeader()
    {
        NativeLayoutInfo l;
        Assert.Equal(0, Interop.CramNative.GetLayout(&l));

        Assert.Equal(l.SizeofSlot, (uint)sizeof(NativeSlot));
        Assert.Equal(l.OffSlotData, Off<NativeSlot>(nameof(NativeSlot.Data)));
        Assert.Equal(l.OffSlotLength, Off<NativeSlot>(nameof(NativeSlot.Length)));
        Assert.Equal(l.OffSlotBackend, Off<NativeSlot>(nameof(NativeSlot.Backend)));
        Assert.Equal(l.OffSlotNextStale, Off<NativeSlot>(nameof(NativeSlot.NextStale)));

        Assert.Equal(l.SizeofHandle, (uint)sizeof(NativePoolHandle));
        Assert.Equal(l.OffHandleAddress, Off<NativePoolHandle>(nameof(NativePoolHandle.Address)));
        Assert.Equal(l.OffHandleLength, Off<NativePoolHandle>(nameof(NativePoolHandle.Length)));
        Assert.Equal(l.OffHandleZspage, Off<NativePoolHandle>(nameof(NativePoolHandle.Zspage)));
        Assert.Equal(l.SizeofMove, (uint)sizeof(NativePoolMove));
        Assert.Equal(l.OffMoveHandle, Off<NativePoolMove>(nameof(NativePoolMove.Handle)));
        Assert.Equal(l.OffMoveDestination, Off<NativePoolMove>(nameof(NativePoolMove.Destination)));
        Assert.Equal(l.OffMoveZspage, Off<NativePoolMove>(nameof(NativePoolMove.Zspage)));
        Assert.Equal(l.OffSharedHandleDirectory, Off<NativeShared>(nameof(NativeShared.HandleDirectory)));
        Assert.Equal((uint)NativePoolHandle.ClusterShift, l.HandleClusterShift);
        Assert.Equal((uint)NativePoolHandle.DirectorySize, l.HandleDirectorySize);

        Assert.Equal(l.SizeofStats, (uint)sizeof(NativeStats));
        Assert.Equal(l.OffStatsResidentPages, Off<NativeStats>(nameof(NativeStats.ResidentPages)));
        Assert.Equal(l.OffStatsZeroCopies, Off<NativeStats>(nameof(NativeStats.ZeroCopies)));
        Assert.Equal(l.OffStatsServiceBusyNs, Off<NativeStats>(nameof(NativeStats.ServiceBusyNs)));

        Assert.Equal(l.SizeofRegion, (uint)sizeof(NativeRegionDesc));
        Assert.Equal(l.OffRegionPte, Off<NativeRegionDesc>(nameof(NativeRegionDesc.Pte)));
        Assert.Equal(l.OffRegionActive, Off<NativeRegionDesc>(nameof(NativeRegionDesc.Active)));

        Assert.Equal(l.OffSharedSlotDirectory, Off<NativeShared>(nameof(NativeShared.SlotDirectory)));
        Assert.Equal(l.OffSharedStaleHead, Off<NativeShared>(nameof(NativeShared.StaleHead)));
        Assert.Equal(l.OffSharedFaultLogHead, Off<NativeShared>(nameof(NativeShared.FaultLogHead)));
        Assert.Equal(l.OffSharedFaultLogTail, Off<NativeShared>(nameof(NativeShared.FaultLogTail)));
        Assert.Equal(l.OffSharedUffdMode, Off<NativeShared>(nameof(NativeShared.UffdMode)));
        Assert.Equal(l.OffSharedReclaimStalled, Off<NativeShared>(nameof(NativeShared.ReclaimStalled)));
        // The region table follows the C# struct directly (CramEngine.CreateRegion relies on it).
        Assert.Equal(l.OffSharedRegions, (uint)sizeof(NativeShared));
        Assert.Equal(l.SizeofShared, (uint)(sizeof(NativeShared) + NativeShared.MaxRegions * sizeof(NativeRegionDesc)));

        Assert.Equal(l.SizeofConfig, (uint)sizeof(NativeEngineConfig));
        Assert.Equal(l.OffConfigHardLimitPages, Off<NativeEngineConfig>(nameof(NativeEngineConfig.HardLimitPages)));
        Assert.Equal(l.OffConfigFaultAroundPages, Off<NativeEngineConfig>(nameof(NativeEngineConfig.FaultAroundPages)));

        Assert.Equal((uint)PageTable.SlotShift, l.PteSlotShift);
        Assert.Equal((uint)NativeShared.SlotClusterShift, l.SlotClusterShift);
        Assert.Equal((uint)NativeShared.SlotDirectorySize, l.SlotDirectorySize);
        Assert.Equal((uint)NativeShared.FaultLogSize, l.FaultLogSize);
        Assert.Equal((uint)NativeShared.MaxRegions, l.MaxRegions);
    }

    [Fact]
    public void SystemLz4RoundTrips()
    {
        Assert.True(Interop.Lz4.VersionNumber() >= 10900);
        byte[] src = new byte[4096], dst = new byte[4096], back = new byte[4096];
        for (int i = 0; i < src.Length; i++)
        {
            src[i] = (byte)(i % 13);
        }
        fixed (byte* s = src, d = dst, b = back)
        {
            int n = Interop.Lz4.CompressDefault(s, d, 4096, 4096);
            Assert.InRange(n, 1, 200);
            Assert.Equal(4096, Interop.Lz4.DecompressSafe(d, b, n, 4096));
        }
        Assert.Equal(src, back);
    }
}
