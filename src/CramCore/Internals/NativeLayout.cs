using System.Runtime.InteropServices;

namespace CramCore;

// C# mirrors of the structures in native/cramnative.h. The layout test compares every offset
// with CramNative_GetLayout; change both sides together.

[StructLayout(LayoutKind.Sequential)]
internal struct NativeSlot
{
    public ulong Data;
    public uint Length;
    public ushort Backend;
    public ushort Flags;
    public ulong NextStale;
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativePoolHandle
{
    public const int ClusterShift = 14;
    public const int ClusterSize = 1 << ClusterShift;
    public const int DirectorySize = 1 << 18;

    public ulong Address;
    public uint Length;
    public uint Zspage;
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativePoolMove
{
    public ulong Handle;
    public ulong Destination;
    public uint Zspage;
    public uint Reserved;
}

internal enum SlotBackend : ushort
{
    Free = 0,
    SameFilled = 1,
    Lz4 = 2,
    Raw = 3,
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativeStats
{
    public ulong FaultsZero;
    public ulong FaultsSwapInLz4;
    public ulong FaultsSwapInSame;
    public ulong FaultsSwapInRaw;
    public ulong FaultsWriteProtect;
    public ulong FaultsWriteProtectCancel;
    public ulong FaultsSpurious;
    public ulong ResidentPages;
    public ulong PeakResidentPages;
    public ulong PopulatedPages;
    public ulong EvictedPagesTotal;
    public ulong ZeroCopies;
    public ulong ThrottleWaits;
    public ulong FaultLogOverflows;
    public ulong ServiceErrors;
    public ulong ServiceBusyNs;
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativeEngineConfig
{
    public uint ForcedMode;
    public uint SpinMicroseconds;
    public ulong SoftLimitPages;
    public ulong HardLimitPages;
    public uint ThrottleMaxMicroseconds;
    public uint FaultAroundPages;
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativeRegionDesc
{
    public ulong Base;
    public ulong Length;
    public ulong Pte;
    public uint Id;
    public uint Active;
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativeShared
{
    public const int MaxRegions = 256;
    public const int FaultLogSize = 1 << 16;
    public const int SlotClusterShift = 14;
    public const int SlotClusterSize = 1 << SlotClusterShift;
    public const int SlotDirectorySize = 1 << 18;

    public NativeStats Stats;
    public ulong SlotDirectory;
    public ulong HandleDirectory;
    public ulong StaleHead;
    public ulong FaultLog;
    public ulong FaultLogHead;
    public ulong FaultLogTail;
    public uint UffdMode;
    public uint RegionCount;
    public uint ReclaimStalled;
    public uint Reserved;
    // followed by NativeRegionDesc regions[MaxRegions]; C# never reads them.
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativeLayoutInfo
{
    public uint SizeofSlot, OffSlotData, OffSlotLength, OffSlotBackend, OffSlotNextStale;
    public uint SizeofHandle, OffHandleAddress, OffHandleLength, OffHandleZspage;
    public uint SizeofMove, OffMoveHandle, OffMoveDestination, OffMoveZspage;
    public uint OffSharedHandleDirectory, HandleClusterShift, HandleDirectorySize;
    public uint SizeofStats, OffStatsResidentPages, OffStatsZeroCopies, OffStatsServiceBusyNs;
    public uint SizeofRegion, OffRegionPte, OffRegionActive;
    public uint SizeofShared, OffSharedSlotDirectory, OffSharedStaleHead, OffSharedFaultLogHead,
        OffSharedFaultLogTail, OffSharedUffdMode, OffSharedReclaimStalled, OffSharedRegions;
    public uint SizeofConfig, OffConfigHardLimitPages, OffConfigFaultAroundPages;
    public uint PteSlotShift, SlotClusterShift, SlotDirectorySize, FaultLogSize, MaxRegions;
}
