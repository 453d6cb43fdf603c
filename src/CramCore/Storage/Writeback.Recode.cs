using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// Writeback's recompression (cramnative.h, "Codecs"): the LZ4 copies of a batch are re-encoded
/// with zstd and the recompressor's current dictionary before they are appended, within the
/// recompression CPU budget, and their slots rewritten with CramNative_SlotsRecode instead of moved.
/// Only in the writeback thread's own rounds (the pool above its high watermark, nobody waiting): a
/// reclaim pass that waits for room (the pool full) or a caller of CramMaintenance.WriteBack has
/// writeback on its critical path, and a zstd encoding costs some 20 times what moving a copy does —
/// measured: re-encoding there took `cram bench swap --backing-file`'s fill from 266 to 227 MiB/s and
/// `cram bench writeback` from 916 to 264 MiB/s, for 1–2 % fewer bytes — so there copies move as they are.
/// </summary>
internal sealed unsafe partial class Writeback
{
    /// <summary>A batch entry moved with the bytes it has in the pool.</summary>
    private const byte AsIs = 0xFF;

    /// <summary>A batch entry that may be re-encoded (an LZ4 copy; <see cref="Reencode"/> decides).</summary>
    private const byte Candidate = 0xFE;

    private readonly Recompressor? _recompressor; // its dictionaries and budget; null: copies move as they are
    private readonly ZstdCodec? _encoder;         // this thread's, sharing the recompressor's dictionaries
    private readonly byte* _decoded, _encoded;    // one page, and its zstd encoding
    private readonly NativeSlotRecode[] _recodes = new NativeSlotRecode[BatchEntries];
    private readonly NativeSlotMove[] _asIs = new NativeSlotMove[BatchEntries];
    private readonly int[] _entryOf = new int[BatchEntries];
    private long _recompressedPages, _recompressedBytesSaved;

    /// <summary>Copies written back re-encoded with zstd (cumulative).</summary>
    public long RecompressedPages => Interlocked.Read(ref _recompressedPages);

    /// <summary>Bytes the re-encoding saved the file and the store, against the LZ4 copies (cumulative).</summary>
    public long RecompressedBytesSaved => Interlocked.Read(ref _recompressedBytesSaved);

    /// <summary>Writeback's buffers — a batch's copies, a segment read back for compaction, an extent opened — and its encoder (the dictionaries are the recompressor's).</summary>
    public long MemoryBytes => (long)BatchEntries * SharedLayout.PageSize + BackingFile.SegmentBytes + SharedLayout.PageSize
        + (_encoder is null ? 0 : _encoder.MemoryBytes + 2L * SharedLayout.PageSize);

    /// <summary>An LZ4 copy the recompressor has not found incompressible, that no resident page keeps (the rewrite would be refused).</summary>
    private bool Reencodable(byte flags) =>
        _encoder is not null && (flags & (SlotFlags.Raw | SlotFlags.Zstd | SlotFlags.CleanCopy)) == 0 && !SlotFlags.IsKept(flags);

    /// <summary>
    /// Holding no lock but 2a: each candidate of the first <paramref name="n"/> entries is decoded
    /// and encoded with zstd and <paramref name="dictionary"/> (leased), while the budget allows,
    /// and kept in place of its LZ4 copy where it is smaller.
    /// </summary>
    private void Reencode(int n, int dictionary)
    {
        for (int i = 0; i < n; i++)
        {
            if (_codecs[i] != Candidate)
            {
                continue;
            }
            _codecs[i] = AsIs;
            if (_stopping || !MayReencode || !_recompressor!.Budget.WritebackMayEncode()) // a reclaim pass may ask for room meanwhile
            {
                continue;
            }
            long start = _time.GetTimestamp();
            byte* staged = _staged + (long)i * SharedLayout.PageSize;
            if (Interop.Lz4.DecompressSafe(staged, _decoded, _poolLengths[i], SharedLayout.PageSize) == SharedLayout.PageSize)
            {
                int length = _encoder!.Compress(_decoded, dictionary, _encoded, _poolLengths[i] - 1);
                if (length > 0)
                {
                    Buffer.MemoryCopy(_encoded, staged, SharedLayout.PageSize, length);
                    _lengths[i] = length;
                    _checksums[i] = Checksum.Crc32C(staged, length);
                    _codecs[i] = (byte)(SlotFlags.Zstd | (dictionary << SlotFlags.DictShift));
                }
            }
            _recompressor.Budget.Spend(_time.GetTimestamp() - start);
        }
    }

    /// <summary>
    /// Step 2 for the first <paramref name="n"/> entries (under lock 3): the re-encoded ones'
    /// slots rewritten by CramNative_SlotsRecode, the others moved by CramNative_SlotsMove; a refused
    /// rewrite or move has its new extent released. Sets each entry's <see cref="NativeSlotMove.Moved"/>;
    /// returns how many moved.
    /// </summary>
    private int MoveOrRecode(int n)
    {
        int moves = 0, recodes = 0;
        for (int i = 0; i < n; i++)
        {
            ref NativeSlotMove m = ref _moves[i];
            if (_codecs[i] == AsIs)
            {
                _entryOf[moves] = i;
                _asIs[moves++] = m;
                continue;
            }
            _recodes[recodes++] = new NativeSlotRecode
            {
                Slot = m.Slot, FromBackend = SlotBackend.Pool, FromLocation = m.FromLocation, ToBackend = m.ToBackend, ToLocation = m.ToLocation,
                Region = SlotFlags.AnyPage, Checksum = _checksums[i], Length = (ushort)_lengths[i], Flags = _codecs[i],
            };
        }
        int moved = 0;
        if (recodes > 0)
        {
            fixed (NativeSlotRecode* r = _recodes)
            {
                Interop.ThrowIfFailed(_engine.SlotsRecode(r, recodes, out int recoded), "Rewriting recompressed slots written back");
                moved += recoded;
            }
            for (int i = 0, k = 0; i < n; i++)
            {
                if (_codecs[i] != AsIs)
                {
                    _moves[i].Moved = _recodes[k++].Recoded;
                }
            }
        }
        if (moves > 0)
        {
            fixed (NativeSlotMove* m = _asIs)
            {
                Interop.ThrowIfFailed(_engine.SlotsMove(m, moves, out int n2), "Moving slots to the backing file");
                moved += n2;
            }
            for (int k = 0; k < moves; k++)
            {
                _moves[_entryOf[k]].Moved = _asIs[k].Moved;
            }
        }
        for (int i = 0; i < n; i++)
        {
            if (_moves[i].Moved == 0)
            {
                _tier.Release(_moves[i].ToLocation, _lengths[i]); // went stale or bad, or a resident page keeps it
                if (_codecs[i] != AsIs)
                {
                    RequeueIfPooled(_moves[i].Slot); // kept by a resident page: still pooled, a later batch
                }
            }
        }
        return moved;
    }

    private void DisposeEncoder()
    {
        _encoder?.Dispose();
        if (_decoded is not null)
        {
            NativeMemory.AlignedFree(_decoded);
            NativeMemory.AlignedFree(_encoded);
        }
    }
}
