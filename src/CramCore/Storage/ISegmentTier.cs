using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// A tier below the pool that writeback packs entries into, segment by segment (seed 003): the
/// <see cref="BackingFile"/>, or the remote store (<see cref="Remote.RemoteSegments"/>). Writeback
/// (Writeback.cs) owns the protocol — choose and append under lock 3, write outside it, then move the
/// slots and free the pool objects — and calls only these members; a tier keeps its segments'
/// live bytes, so that a segment whose extents all died is given back (<see cref="Punch"/>).
/// All but <see cref="Write"/>, <see cref="Punch"/> and <see cref="Upkeep"/> run under lock 3.
/// </summary>
internal unsafe interface ISegmentTier
{
    /// <summary>The backend its slots name.</summary>
    SlotBackend Backend { get; }

    /// <summary>What it is, for messages: "the backing file /var/tmp/x", "the remote store 127.0.0.1:6379".</summary>
    string Description { get; }

    /// <summary>Room for an extent of <paramref name="length"/> stored bytes in the open segment.</summary>
    bool HasRoom(int length);

    /// <summary>Seals the open segment and opens another; false when the tier is at its size limit.</summary>
    bool OpenNextSegment();

    /// <summary>Marks the start of a batch of appends (a failed write takes them back).</summary>
    void MarkBatch();

    /// <summary>Appends an entry's stored bytes to the open segment (not yet written); returns its location.</summary>
    ulong Append(byte* data, int length, uint slot);

    /// <summary>Whether the extent at <paramref name="location"/> as appended holds <paramref name="data"/> (writeback's debug check).</summary>
    bool AppendedEquals(ulong location, byte* data, int length);

    /// <summary>What one <see cref="Write"/> puts in the tier: the open segment's bytes not yet written.</summary>
    BackingFile.PendingWrite PrepareWrite();

    /// <summary>Writes it (outside lock 3; writeback's I/O lock held, so nothing appends meanwhile).</summary>
    Errno Write(in BackingFile.PendingWrite write);

    /// <summary>After <see cref="Write"/>: commits its extents, or on <paramref name="error"/> takes them back.</summary>
    void Finish(in BackingFile.PendingWrite write, Errno error);

    /// <summary>An extent no slot names any more (the slot was freed, or a move was refused).</summary>
    void Release(ulong location, int length);

    /// <summary>Whether segments whose extents all died wait to be given back.</summary>
    bool HasDeadSegments { get; }

    /// <summary>Takes those segments; writeback <see cref="Punch"/>es each (outside lock 3), then hands it to <see cref="Reuse"/>.</summary>
    int[] TakeDeadSegments();

    /// <summary>Gives a dead segment's space back (a hole in the file; a deleted key on the store). Best effort.</summary>
    void Punch(int segment);

    /// <summary>A punched segment may be used again.</summary>
    void Reuse(int segment);

    /// <summary>Periodic upkeep outside lock 3 (it takes <paramref name="maintenance"/> for what it reads): the remote store's key leases.</summary>
    void Upkeep(Lock maintenance);

    /// <summary>Whether <see cref="Upkeep"/> has work now.</summary>
    bool UpkeepDue { get; }

    // Segment compaction (Writeback.CompactSegments): a segment mostly dead has its live extents
    // rewritten into the open segment, then it dies.

    /// <summary>Bytes of the tier's segments (live or dead extents).</summary>
    long UsedBytes { get; }

    /// <summary>Bytes of extents no slot names any more.</summary>
    long DeadBytes { get; }

    /// <summary>Sealed segments whose live bytes are below <paramref name="liveFraction"/> of a segment, emptiest first (under lock 3).</summary>
    List<int> SparseSegments(double liveFraction);

    /// <summary>The slot ids of a segment's extents, in order; some may be dead or reused (check each slot's location; under lock 3).</summary>
    IReadOnlyList<uint> SlotsOf(int segment);

    /// <summary>The bytes to read for a whole segment (under lock 3).</summary>
    int SegmentReadLength(int segment);

    /// <summary>Reads <paramref name="length"/> bytes of a segment into <paramref name="destination"/> (<see cref="BackingFile.SegmentBytes"/>, page-aligned). Outside lock 3.</summary>
    Errno ReadSegment(int segment, int length, byte* destination);

    /// <summary>The segment a location of this tier lies in.</summary>
    int SegmentOf(ulong location);

    /// <summary>
    /// The stored bytes of the extent at <paramref name="location"/> (<paramref name="length"/> stored
    /// bytes) in <paramref name="copy"/>, a copy of its segment read with <see cref="ReadSegment"/>:
    /// where they lie (the file), or opened into <paramref name="plain"/> (the store's sealed
    /// extents); null if they do not open.
    /// </summary>
    byte* StoredBytes(byte* copy, ulong location, int length, byte* plain);
}
