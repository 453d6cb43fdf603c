using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CramCore.Native;

// The C# mirror of the contract in native/cramnative.h: the only one. Every struct, field, enum
// member and constant here is compared both ways with what the C compiler reports
// (CramNative_GetContract) by ContractTests; C side names are derived from C# names
// (FromLocation -> from_location, SameFilled -> CRAM_BACKEND_SAME_FILLED), so a rename is a mismatch.

/// <summary>Marks a struct that mirrors the C struct <see cref="Name"/> field by field.</summary>
[AttributeUsage(AttributeTargets.Struct)]
internal sealed class NativeStructAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>Marks an enum whose members mirror the C enumerators named <see cref="Prefix"/> + UPPER_SNAKE(member).</summary>
[AttributeUsage(AttributeTargets.Enum)]
internal sealed class NativeEnumAttribute(string prefix) : Attribute
{
    public string Prefix { get; } = prefix;
}

/// <summary>Marks a constant that mirrors the C macro <see cref="Name"/>.</summary>
[AttributeUsage(AttributeTargets.Field)]
internal sealed class NativeConstantAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>Constants of the contract.</summary>
internal static class SharedLayout
{
    [NativeConstant("CRAM_PAGE_SIZE")] public const int PageSize = 4096;
    [NativeConstant("CRAM_PAGE_SHIFT")] public const int PageShift = 12;
    [NativeConstant("CRAM_MAX_REGIONS")] public const int MaxRegions = 256;
    [NativeConstant("CRAM_MAX_REGION_BYTES")] public const long MaxRegionBytes = 1L << 46;
    [NativeConstant("CRAM_FAULT_AROUND_MAX")] public const int FaultAroundMax = 64;
    [NativeConstant("CRAM_READAHEAD_HELPERS_MAX")] public const int ReadaheadHelpersMax = 3;

    /// <summary>Buckets of the swap-in latency histogram (cram_stats.swapin_latency_us_log2): bucket b counts [2^(b-1), 2^b) µs, the last one everything above.</summary>
    [NativeConstant("CRAM_SWAPIN_LATENCY_BUCKETS")] public const int SwapinLatencyBuckets = 16;

    /// <summary>Slot id 0 never names a slot: it means "the page is all zero bytes".</summary>
    [NativeConstant("CRAM_SLOT_ZERO")] public const ulong ZeroSlot = 0;

    [NativeConstant("CRAM_DIRECTORY_CLUSTER_SHIFT")] public const int DirectoryClusterShift = 14;
    [NativeConstant("CRAM_DIRECTORY_CLUSTER_SIZE")] public const int DirectoryClusterSize = 1 << DirectoryClusterShift;
    [NativeConstant("CRAM_DIRECTORY_SIZE")] public const int DirectorySize = 1 << 18;

    [NativeConstant("CRAM_FAULT_LOG_SIZE")] public const int FaultLogSize = 1 << 16;
    [NativeConstant("CRAM_FAULT_LOG_REGION_SHIFT")] public const int FaultLogRegionShift = 48;
}

/// <summary>
/// Page states. The state machine, with every transition and who makes it, and the lock order are
/// written down once, in native/cramnative.h ("Page-table entry").
/// </summary>
[NativeEnum("CRAM_PTE_")]
internal enum PageState : uint
{
    Empty = 0,
    Dirty = 1,
    Clean = 2,
    Evicting = 3,
    Dropping = 4,
    Evicted = 5,
    Incompressible = 6,
    Unprotecting = 7,
    Placed = 8,
    PlacedWritable = 9,
    /// <summary>Readahead: decoded and claimed under the engine lock, being mapped by an installer outside it (cramnative.h).</summary>
    Installing = 10,
    /// <summary>Remote tier: claimed under the engine lock, its extent being fetched outside it (cramnative.h, "Remote tier").</summary>
    Fetching = 11,
}

/// <summary>The encoding of a page-table entry: state, referenced and active bits, virtual slot id, eviction stamp.</summary>
internal static unsafe class PageTableEntry
{
    [NativeConstant("CRAM_PTE_STATE_MASK")] public const ulong StateMask = 0xF;
    [NativeConstant("CRAM_PTE_REFERENCED")] public const ulong Referenced = 0x10;
    /// <summary>Resident and in the working set: refaulted soon after its eviction (cramnative.h, "Working set").</summary>
    [NativeConstant("CRAM_PTE_ACTIVE")] public const ulong Active = 0x20;
    [NativeConstant("CRAM_PTE_STAMPED")] public const ulong Stamped = 0x40;
    /// <summary>Resident, swapped in from far: evicted early unless it comes back active (cramnative.h, "Working set").</summary>
    [NativeConstant("CRAM_PTE_TRIAL")] public const ulong Trial = 0x80;
    [NativeConstant("CRAM_PTE_SLOT_SHIFT")] public const int SlotShift = 16;
    [NativeConstant("CRAM_PTE_SLOT_MASK")] public const ulong SlotMask = 0xFFFFFFFF;
    [NativeConstant("CRAM_PTE_STAMP_SHIFT")] public const int StampShift = 48;
    [NativeConstant("CRAM_EVICTION_STAMP_UNIT")] public const int EvictionStampUnit = 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageState State(ulong pte) => (PageState)(pte & StateMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Slot(ulong pte) => (pte >> SlotShift) & SlotMask;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Make(PageState state, ulong slot) => (slot << SlotShift) | (ulong)state;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Load(ulong* pte) => Volatile.Read(ref *pte);

    /// <summary>
    /// A page-table CAS; a change of state must be one of cramnative.h's transitions
    /// (<see cref="PageTransitions"/>), which Debug builds assert, as CRAM_DEBUG does natively.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryTransition(ulong* pte, ulong expected, ulong desired)
    {
        Debug.Assert(PageTransitions.Allowed(State(expected), State(desired)), $"page-state transition {State(expected)} -> {State(desired)} is not in cramnative.h's CRAM_PTE_TRANSITIONS");
        return Interlocked.CompareExchange(ref *pte, desired, expected) == expected;
    }
}

/// <summary>
/// The page-state machine as data: for each state, the states it may move to (cramnative.h,
/// CRAM_PTE_TRANSITIONS; the contract reports the native table as these masks and ContractTests
/// compares them). A change of flag bits only (same state) is not a transition.
/// </summary>
internal static class PageTransitions
{
    private const uint Empty = 1u << (int)PageState.Empty, Dirty = 1u << (int)PageState.Dirty, Clean = 1u << (int)PageState.Clean,
        Evicting = 1u << (int)PageState.Evicting, Dropping = 1u << (int)PageState.Dropping, Evicted = 1u << (int)PageState.Evicted,
        Incompressible = 1u << (int)PageState.Incompressible, Unprotecting = 1u << (int)PageState.Unprotecting,
        Placed = 1u << (int)PageState.Placed, PlacedWritable = 1u << (int)PageState.PlacedWritable,
        Installing = 1u << (int)PageState.Installing, Fetching = 1u << (int)PageState.Fetching;

    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_EMPTY")] public const uint FromEmpty = Dirty;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_DIRTY")] public const uint FromDirty = Evicting | Unprotecting | Empty;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_CLEAN")] public const uint FromClean = Unprotecting | Dropping | Dirty | Empty;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_EVICTING")] public const uint FromEvicting = Dirty | Clean | Incompressible | Unprotecting | Placed;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_DROPPING")] public const uint FromDropping = Evicted | Clean | Placed;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_EVICTED")] public const uint FromEvicted = Clean | Dirty | Empty | Installing | Fetching;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_INCOMPRESSIBLE")] public const uint FromIncompressible = Unprotecting | Empty;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_UNPROTECTING")] public const uint FromUnprotecting = Dirty | PlacedWritable;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_PLACED")] public const uint FromPlaced = Unprotecting | Dropping | Empty;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_PLACED_WRITABLE")] public const uint FromPlacedWritable = Placed | Empty;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_INSTALLING")] public const uint FromInstalling = Clean | Evicted;
    [NativeConstant("CRAM_PTE_TRANSITIONS_FROM_FETCHING")] public const uint FromFetching = Clean | Dirty | Evicted;

    private static readonly uint[] s_from =
        [FromEmpty, FromDirty, FromClean, FromEvicting, FromDropping, FromEvicted, FromIncompressible, FromUnprotecting, FromPlaced, FromPlacedWritable, FromInstalling, FromFetching];

    /// <summary>Whether <paramref name="from"/> → <paramref name="to"/> is a transition, or no change of state.</summary>
    public static bool Allowed(PageState from, PageState to) =>
        from == to || ((uint)from < (uint)s_from.Length && (s_from[(int)from] & (1u << (int)to)) != 0);
}

/// <summary>An entry of the fault-in log (and of reclaim's victim queue): region id and page index.</summary>
internal static class FaultLogEntry
{
    private const ulong PageMask = (1UL << SharedLayout.FaultLogRegionShift) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Encode(uint regionId, ulong page) => ((ulong)regionId << SharedLayout.FaultLogRegionShift) | page;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint RegionOf(ulong entry) => (uint)(entry >> SharedLayout.FaultLogRegionShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong PageOf(ulong entry) => entry & PageMask;
}

/// <summary>Where a slot's data lives (the backend contract: cramnative.h, "Virtual swap").</summary>
[NativeEnum("CRAM_BACKEND_")]
internal enum SlotBackend : byte
{
    Free = 0,
    SameFilled = 1,
    Pool = 2,
    File = 3,
    Cram = 4,
    /// <summary>An extent of a segment in a RESP store; location = <see cref="RemoteLocation"/> (cramnative.h, "Remote tier").</summary>
    Remote = 5,
}

/// <summary>A REMOTE slot's location: segment, node, offset (CRAM_REMOTE_LOCATION), and the remote tier's constants.</summary>
internal static class RemoteLocation
{
    [NativeConstant("CRAM_REMOTE_MAX_ENDPOINTS")] public const int MaxEndpoints = 64;
    [NativeConstant("CRAM_REMOTE_TAG_BYTES")] public const int TagBytes = 16;
    [NativeConstant("CRAM_REMOTE_OFFSET_BITS")] public const int OffsetBits = 24;
    [NativeConstant("CRAM_REMOTE_NODE_SHIFT")] public const int NodeShift = 24;
    [NativeConstant("CRAM_REMOTE_SEGMENT_SHIFT")] public const int SegmentShift = 32;

    public static ulong Make(uint segment, int node, int offset) => ((ulong)segment << SegmentShift) | ((ulong)(uint)node << NodeShift) | (uint)offset;
    public static uint Segment(ulong location) => (uint)(location >> SegmentShift);
    public static int Node(ulong location) => (int)((location >> NodeShift) & 0xFF);
    public static int Offset(ulong location) => (int)(location & ((1u << OffsetBits) - 1));
}

/// <summary>Slot flags (cram_slot.flags); they change only by 32-bit atomics on the slot's word at offset 12.</summary>
internal static class SlotFlags
{
    /// <summary>Set at store: the stored bytes are the page itself, not LZ4.</summary>
    [NativeConstant("CRAM_SLOT_RAW")] public const byte Raw = 0x1;
    /// <summary>Set by native code when it pushes the slot on the stale list.</summary>
    [NativeConstant("CRAM_SLOT_STALE")] public const byte Stale = 0x2;
    /// <summary>Set by the fault service: the stored bytes failed their checksum or could not be read.</summary>
    [NativeConstant("CRAM_SLOT_BAD")] public const byte Bad = 0x4;
    /// <summary>Set by the fault service on a read fault-in; cleared by writeback (second chance).</summary>
    [NativeConstant("CRAM_SLOT_REFERENCED")] public const byte Referenced = 0x8;
    /// <summary>Set by the recompressor: the stored bytes are a zstd frame (cramnative.h, "Codecs").</summary>
    [NativeConstant("CRAM_SLOT_ZSTD")] public const byte Zstd = 0x10;
    /// <summary>With <see cref="Zstd"/>, the dictionary's index (0: none) in bits DictShift and up.</summary>
    [NativeConstant("CRAM_SLOT_DICT_SHIFT")] public const int DictShift = 5;
    [NativeConstant("CRAM_SLOT_DICT_MASK")] public const byte DictMask = 0x60;
    /// <summary>Without <see cref="Zstd"/> (an LZ4 copy, whose dictionary bits are free), set by the recompressor: tried and kept as it was (no smaller size class). Test with <see cref="IsKept"/>.</summary>
    [NativeConstant("CRAM_SLOT_KEPT")] public const byte Kept = 0x20;
    /// <summary>What CramNative_SlotsRecode rewrites (<see cref="Kept"/> included).</summary>
    [NativeConstant("CRAM_SLOT_CODEC_MASK")] public const byte CodecMask = Zstd | DictMask;
    /// <summary>Set and cleared by both sides with the clean-copy counts: a resident page keeps this slot as its copy (cramnative.h, "Clean copies"); a slot with it is never recoded.</summary>
    [NativeConstant("CRAM_SLOT_CLEAN_COPY")] public const byte CleanCopy = 0x80;
    /// <summary>Dictionary indexes, 0 (none) included.</summary>
    [NativeConstant("CRAM_ZSTD_DICTIONARIES")] public const int ZstdDictionaries = 4;

    /// <summary>The dictionary a zstd copy's flags name (0: none).</summary>
    public static int Dictionary(byte flags) => (flags & DictMask) >> DictShift;

    /// <summary>An LZ4 copy the recompressor tried and kept.</summary>
    public static bool IsKept(byte flags) => (flags & (Zstd | Kept)) == Kept;

    /// <summary>CramNative_SlotsRecode's region for a rewrite that names no page (writeback's): refused for a slot a resident page keeps.</summary>
    [NativeConstant("CRAM_RECODE_ANY_PAGE")] public const uint AnyPage = 0xFFFFFFFF;
}

/// <summary>
/// A virtual swap slot (cram_slot), 16 bytes. While the slot is on the stale list,
/// <see cref="Checksum"/> holds the list's link.
/// </summary>
[NativeStruct("cram_slot")]
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeSlot
{
    public ulong Location;
    public uint Checksum;
    public ushort Length;
    public SlotBackend Backend;
    public byte Flags;

    private const int FlagsShift = 24;

    /// <summary>The flags, read atomically with the rest of their word.</summary>
    public static byte LoadFlags(NativeSlot* slot) => (byte)(Volatile.Read(ref *(uint*)&slot->Length) >> FlagsShift);

    /// <summary>Clears <paramref name="flags"/> atomically (the service may set others meanwhile); returns the flags before.</summary>
    public static byte ClearFlags(NativeSlot* slot, byte flags) => (byte)(ChangeFlagsWord(slot, flags, set: false) >> FlagsShift);

    /// <summary>Sets <paramref name="flags"/> atomically (the service may set others meanwhile); returns the flags before.</summary>
    public static byte SetFlags(NativeSlot* slot, byte flags) => (byte)(ChangeFlagsWord(slot, flags, set: true) >> FlagsShift);

    /// <summary>Sets (<paramref name="set"/>) or clears <paramref name="flags"/> atomically; returns the whole word before (length in its low 16 bits).</summary>
    public static uint ChangeFlagsWord(NativeSlot* slot, byte flags, bool set) => set
        ? Interlocked.Or(ref *(uint*)&slot->Length, (uint)flags << FlagsShift)
        : Interlocked.And(ref *(uint*)&slot->Length, ~((uint)flags << FlagsShift));
}

/// <summary>One move of CramNative_MoveOutPages (cram_move_out).</summary>
[NativeStruct("cram_move_out")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeCramMoveOut
{
    public ulong Page;
    public ulong Slot;
    public ulong Handle;
    public uint Length;
    public uint Checksum;
    public uint Moved;
    public uint Raw;
}

/// <summary>A region's pages by state (cram_region_census, CramNative_RegionCensus).</summary>
[NativeStruct("cram_region_census")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeRegionCensus
{
    public ulong PopulatedPages;
    public ulong ResidentPages;
    public ulong EvictedPages;
    public ulong CleanCopyPages;
    public ulong PlacedPages;
    public ulong SameFilledPages;
    public ulong StoredBytes;
    public ulong FaultsFirstTouch;
    public ulong FaultsSwapin;
    public ulong FaultsWriteProtect;
}

/// <summary>One placement of CramNative_PlacePages (cram_place).</summary>
[NativeStruct("cram_place")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeCramPlace
{
    public ulong Page;
    public ulong Slot;
    public uint Size;
    public uint Placed;
}

/// <summary>One move of CramNative_SlotsMove (cram_slot_move).</summary>
[NativeStruct("cram_slot_move")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeSlotMove
{
    public ulong Slot;
    public ulong FromLocation;
    public ulong ToLocation;
    public SlotBackend FromBackend;
    public SlotBackend ToBackend;
    public ushort Reserved;
    public uint Moved;
}

/// <summary>One rewrite of CramNative_SlotsRecode (cram_slot_recode): recompression's step 3 (cramnative.h, "Codecs").</summary>
[NativeStruct("cram_slot_recode")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeSlotRecode
{
    public ulong Slot;
    public ulong FromLocation;
    public ulong ToLocation;
    public ulong Page;
    public uint Region;
    public uint Checksum;
    public ushort Length;
    public byte Flags;
    public byte Recoded;
    public SlotBackend FromBackend;
    public SlotBackend ToBackend;
    public ushort Reserved;
}

/// <summary>One entry CramNative_FindColdEntries found (cram_cold_entry).</summary>
[NativeStruct("cram_cold_entry")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeColdEntry
{
    public ulong Page;
    public ulong Slot;
    public ulong Location;
    public uint Region;
    public ushort Length;
    public byte Flags;
    public byte Reserved;
}

/// <summary>A compressed-pool handle (cram_pool_handle).</summary>
[NativeStruct("cram_pool_handle")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativePoolHandle
{
    public ulong Address;
    public uint Length;
    public uint Zspage;
}

/// <summary>One object move of a compaction (cram_pool_move).</summary>
/// <summary>What CramNative_MeasureFloor reports (cram_floor): the fault floor of this host, in microseconds.</summary>
[NativeStruct("cram_floor")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeFloor
{
    public double KernelFirstTouchUs;
    public double UffdServiceThreadUs;
    public double UffdFaultingThreadUs;
    public double UffdioCopyUs;
    public double Lz4DecompressUs;
}

[NativeStruct("cram_pool_move")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativePoolMove
{
    public ulong Handle;
    public ulong Destination;
    public uint Zspage;
    public uint Reserved;
}

/// <summary>The native counters (cram_stats); native code is their only writer.</summary>
[NativeStruct("cram_stats")]
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeStats
{
    public ulong FaultsZero;
    public ulong FaultsSwapinLz4;
    public ulong FaultsSwapinSame;
    public ulong FaultsSwapinRaw;
    public ulong FaultsWp;
    public ulong FaultsWpCancel;
    public ulong FaultsSpurious;
    public ulong ResidentPages;
    public ulong PeakResidentPages;
    public ulong PopulatedPages;
    public ulong EvictedPagesTotal;
    public ulong ZeroCopiesReleased;
    public ulong ThrottleWaits;
    public ulong FaultLogOverflows;
    public ulong ServiceErrors;
    public ulong ServiceBusyNs;
    public ulong FaultsSwapinFile;
    public ulong ChecksumFailures;
    public ulong ReadErrors;
    public ulong BadPageFaults;
    public ulong CramPlacedPages;
    public ulong CramPlacedBytes;
    public ulong CramWritablePages;
    public ulong CramMaxWritable;
    public ulong CramMadeWritable;
    public ulong CramPromotions;
    public ulong CramPromotionCopyNs;
    public ulong CramPlacementRefusals;
    public ulong ReadaheadPages;
    public ulong CleanCopyPages;
    public ulong CleanCopyBytes;
    public ulong PrefetchedPages;
    public ulong DiscardedPages;
    public ulong WorkingsetActivations;
    public ulong PageTablePages;
    public ulong MemoryLimitWaits;
    public ulong FileReads;
    public ulong FileReadBytes;
    public ulong FileReadsSequential;
    public fixed ulong SwapinLatencyUsLog2[SharedLayout.SwapinLatencyBuckets];
    public fixed ulong FaultLatencyUsLog2[SharedLayout.SwapinLatencyBuckets];
    public ulong FaultsSwapinZstd;
}

/// <summary>The engine's configuration (cram_engine_config).</summary>
[NativeStruct("cram_engine_config")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeEngineConfig
{
    public uint ForcedMode;
    public uint SpinUs;
    public ulong SoftLimitPages;
    public ulong HardLimitPages;
    public uint ThrottleMaxUs;
    public uint FaultAroundPages;
    public uint FaultService; // enum cram_fault_service: 0 service thread, 1 faulting thread, 2 auto
    public uint ReadaheadHelpers;
    public ulong LatencyProbeUs;
}

/// <summary>The part of the engine C# reads and writes directly (cram_shared); each field has one writer, named in the header.</summary>
[NativeStruct("cram_shared")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeShared
{
    public NativeStats Stats;
    public ulong SlotDirectory;
    public ulong HandleDirectory;
    public ulong StaleHead;
    public ulong FaultLog;
    public ulong FaultLogHead;
    public ulong FaultLogTail;
    public uint UffdMode;
    public uint ReclaimStalled;
    public int BackingFd;
    public uint BackingDirect;
    public ulong CramCapacityBytes;
    public ulong CramWritableLimit;
    public uint CramWriteControl;
    public uint ReclaimRunning;
    public ulong ActivateDistancePages;
    public ulong MemoryWaitUs;
}

/// <summary>What an entry of the contract describes (cram_contract_kind).</summary>
[NativeEnum("CRAM_CONTRACT_")]
internal enum ContractKind : uint
{
    Struct = 1,
    Field = 2,
    Enum = 3,
    Constant = 4,
}

/// <summary>One entry of the contract as the C compiler sees it (cram_contract_entry).</summary>
[NativeStruct("cram_remote_config")]
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeRemoteConfig
{
    public fixed byte Key[32];
    public fixed byte Prefix[56];
    public fixed byte Password[64];
    public uint TimeoutMs;
    public uint Lanes;
    public uint Sealed;
    public uint Tls;
    public fixed byte TlsServerName[256];
    public fixed byte TlsCaFile[256];
    public fixed byte TlsCertFile[256];
    public fixed byte TlsKeyFile[256];
}

[NativeStruct("cram_remote_stats")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeRemoteStats
{
    public ulong Fetches;
    public ulong Requests;
    public ulong FetchBytes;
    public ulong FetchRetries;
    public ulong FetchFailures;
    public ulong AuthFailures;
    public ulong FetchNs;
    public ulong OpenNs;
    public ulong DecodeNs;
    public ulong Waits;
    public ulong QueuedPeak;
    public ulong Connects;
    public ulong Redirects;
    public ulong Inflight;
    public ulong TlsFailures;
}

[NativeStruct("cram_contract_entry")]
[StructLayout(LayoutKind.Sequential)]
internal struct NativeContractEntry
{
    public ulong Name;
    public ulong Value;
    public uint Kind;
    public uint Size;
}
