using System.Runtime.InteropServices;

namespace CramCore.Native;

/// <summary>P/Invoke declarations, one partial class per native library (dotnet/runtime style).</summary>
internal static partial class Interop
{
    /// <summary>libCramNative.so: exports <c>CramNative_*</c>, returning 0, or -1 with errno (see <see cref="Errno"/>).</summary>
    internal static unsafe partial class CramNative
    {
        internal const string Library = "CramNative";

        static CramNative() => NativeLibraryResolver.EnsureRegistered();

        /// <summary>Fills up to <paramref name="capacity"/> entries of the contract; <paramref name="count"/> is the total.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_GetContract", SetLastError = true)]
        internal static partial int GetContract(NativeContractEntry* entries, int capacity, int* count);

        [LibraryImport(Library, EntryPoint = "CramNative_EngineCreate", SetLastError = true)]
        internal static partial int EngineCreate(NativeEngineConfig* config, nint* engine, NativeShared** shared);

        [LibraryImport(Library, EntryPoint = "CramNative_EngineDestroy", SetLastError = true)]
        internal static partial int EngineDestroy(nint engine);

        [LibraryImport(Library, EntryPoint = "CramNative_MeasureFloor", SetLastError = true)]
        internal static partial int MeasureFloor(int samples, NativeFloor* floor);

        [LibraryImport(Library, EntryPoint = "CramNative_EngineFaultService", SetLastError = true)]
        internal static partial int EngineFaultService(nint engine, uint* service);

        /// <summary>Maps a region and its page table; returns its id, base address and page-table address.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_RegionCreate", SetLastError = true)]
        internal static partial int RegionCreate(nint engine, ulong length, uint* regionId, ulong* baseAddress, ulong* pageTable);

        [LibraryImport(Library, EntryPoint = "CramNative_RegionDeactivate", SetLastError = true)]
        internal static partial int RegionDeactivate(nint engine, uint regionId);

        /// <summary>Destroys a deactivated region: fixes the counters, pushes its slots on the stale list, unmaps it.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_RegionDestroy", SetLastError = true)]
        internal static partial int RegionDestroy(nint engine, uint regionId);

        /// <summary>Write-protects pages, given sorted ascending (EINVAL otherwise).</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_WriteProtectPages", SetLastError = true)]
        internal static partial int WriteProtectPages(nint engine, uint regionId, ulong* pages, int count);

        /// <summary>Drops pages still CLEAN (given sorted); the first <paramref name="dropped"/> entries are those dropped, in order.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_DropPages", SetLastError = true)]
        internal static partial int DropPages(nint engine, uint regionId, ulong* pages, int count, int* dropped);

        [LibraryImport(Library, EntryPoint = "CramNative_WaitReclaimSignal", SetLastError = true)]
        internal static partial int WaitReclaimSignal(nint engine, int timeoutMs, int* signalled);

        [LibraryImport(Library, EntryPoint = "CramNative_ReclaimActivity", SetLastError = true)]
        internal static partial int ReclaimActivity(nint engine, ulong* activity);

        [LibraryImport(Library, EntryPoint = "CramNative_WaitReclaimIdle", SetLastError = true)]
        internal static partial int WaitReclaimIdle(nint engine, ulong seenActivity, int timeoutMs, int* signalled);

        [LibraryImport(Library, EntryPoint = "CramNative_SignalReclaim", SetLastError = true)]
        internal static partial int SignalReclaim(nint engine);

        /// <summary>The remote tier's read half: loads libcrypto (sealed), starts the fetchers (cramnative.h, "Remote tier").</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_RemoteConfigure", SetLastError = true)]
        internal static partial int RemoteConfigure(nint engine, NativeRemoteConfig* config);

        /// <summary>Node <paramref name="index"/> is at IPv4 <paramref name="address"/> (network order) and <paramref name="port"/>.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_RemoteSetEndpoint", SetLastError = true)]
        internal static partial int RemoteSetEndpoint(nint engine, uint index, uint address, uint port);

        [LibraryImport(Library, EntryPoint = "CramNative_RemoteStats", SetLastError = true)]
        internal static partial int RemoteStats(nint engine, NativeRemoteStats* stats);

        /// <summary>Moves pool objects and repoints their handles, under the engine's lock when given one.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_PoolMove", SetLastError = true)]
        internal static partial int PoolMove(nint engine, ulong handleDirectory, NativePoolMove* moves, int count);

        /// <summary>Changes the resident limits at run time (0 = none).</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_SetResidentLimit", SetLastError = true)]
        internal static partial int SetResidentLimit(nint engine, ulong softLimitPages, ulong hardLimitPages);

        /// <summary>Step 2 of a backend move: rewrites each slot still naming its old location, under the engine's lock.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_SlotsMove", SetLastError = true)]
        internal static partial int SlotsMove(nint engine, NativeSlotMove* moves, int count, int* moved);

        /// <summary>Recompression's rewrite: each slot still naming its old pool handle, with its page EVICTED, takes the new copy and codec, under the engine's lock.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_SlotsRecode", SetLastError = true)]
        internal static partial int SlotsRecode(nint engine, NativeSlotRecode* recodes, int count, int* recoded);

        /// <summary>Recompression's candidates from a cursor: EVICTED pages with LZ4 pool copies (or zstd with a dictionary in the mask), evicted at least a distance ago.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_FindColdEntries", SetLastError = true)]
        internal static partial int FindColdEntries(nint engine, uint* regionId, ulong* page, ulong minDistance, uint recodeDictionaries,
            ulong stride, ulong* tick, NativeColdEntry* entries, int capacity, int* found, int* wrapped);

        /// <summary>Sets (or, with length 0, removes) the fault service's zstd dictionary at an index 1..3.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_ZstdDictionarySet", SetLastError = true)]
        internal static partial int ZstdDictionarySet(nint engine, uint index, byte* bytes, ulong length, ulong* memoryBytes);

        /// <summary>A region's pages by state, walking only the blocks first touch marked, without the engine lock.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_RegionCensus", SetLastError = true)]
        internal static partial int RegionCensus(nint engine, uint regionId, NativeRegionCensus* census);

        [LibraryImport(Library, EntryPoint = "CramNative_FindPages", SetLastError = true)]
        internal static partial int FindPages(nint engine, uint regionId, ulong first, ulong end, uint stateMask, ulong* pages, int capacity, int* found, ulong* next);

        [LibraryImport(Library, EntryPoint = "CramNative_PrefetchPages", SetLastError = true)]
        internal static partial int PrefetchPages(nint engine, uint regionId, ulong first, ulong end, ulong* next, ulong* brought, int* atLimit);

        [LibraryImport(Library, EntryPoint = "CramNative_DiscardPages", SetLastError = true)]
        internal static partial int DiscardPages(nint engine, uint regionId, ulong first, ulong end, ulong* discarded);

        /// <summary>EVICTING → PLACED for each page the CRAM node's ledger admits.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_PlacePages", SetLastError = true)]
        internal static partial int PlacePages(nint engine, uint regionId, NativeCramPlace* places, int count, int* placed);

        /// <summary>PLACED → EVICTED with each slot rewritten to its pool copy (entries leave the CRAM node through virtual swap).</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_MoveOutPages", SetLastError = true)]
        internal static partial int MoveOutPages(nint engine, uint regionId, NativeCramMoveOut* moves, int count, int* moved);

        /// <summary>PLACED_WRITABLE → PLACED (write-protect, measure again); the first <paramref name="replaced"/> entries become those re-placed.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_ReplacePages", SetLastError = true)]
        internal static partial int ReplacePages(nint engine, uint regionId, ulong* pages, int count, int* replaced);

        /// <summary>The reaper's mark: sets bit <c>id</c> of <paramref name="named"/> for every slot a page table names.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_MarkNamedSlots", SetLastError = true)]
        internal static partial int MarkNamedSlots(nint engine, ulong* named, ulong bits);

        /// <summary>Creates the backing file (O_EXCL, 0600, O_DIRECT where possible); unlinks it unless <paramref name="keep"/> is 1.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_BackingFileOpen", SetLastError = true)]
        internal static partial int BackingFileOpen(byte* path, int keep, int* fd, int* direct);

        [LibraryImport(Library, EntryPoint = "CramNative_BackingFileWrite", SetLastError = true)]
        internal static partial int BackingFileWrite(int fd, byte* data, ulong length, ulong offset);

        [LibraryImport(Library, EntryPoint = "CramNative_BackingFileRead", SetLastError = true)]
        internal static partial int BackingFileRead(int fd, byte* data, ulong length, ulong offset);

        /// <summary>Punches a hole where a dead segment was.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_BackingFileDiscard", SetLastError = true)]
        internal static partial int BackingFileDiscard(int fd, ulong offset, ulong length);

        /// <summary>CRC-32C of <paramref name="length"/> bytes, as the fault service checks stored bytes.</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_Checksum", SetLastError = true)]
        internal static partial int Checksum(byte* data, uint length, uint* checksum);

        [LibraryImport(Library, EntryPoint = "CramNative_ArenaMap", SetLastError = true)]
        internal static partial int ArenaMap(ulong bytes, int lockMemory, ulong* address);

        [LibraryImport(Library, EntryPoint = "CramNative_ArenaUnmap", SetLastError = true)]
        internal static partial int ArenaUnmap(ulong address, ulong bytes);

        [LibraryImport(Library, EntryPoint = "CramNative_Discard", SetLastError = true)]
        internal static partial int Discard(ulong address, ulong bytes);

        /// <summary>Backs pages about to be written in one call (MADV_POPULATE_WRITE; best effort).</summary>
        [LibraryImport(Library, EntryPoint = "CramNative_Populate", SetLastError = true)]
        internal static partial int Populate(ulong address, ulong bytes);
    }
}
