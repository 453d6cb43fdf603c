using CramCore.Native;

namespace CramCore.Storage;

internal sealed unsafe partial class CompressedPool
{
    private readonly NativePoolMove[] _moves;
    private readonly int[] _movedFrom;

    /// <summary>
    /// Moves objects out of the emptiest zspages of each class into the fullest ones (found by
    /// fullness group, as zsmalloc does) and releases the emptied zspages; then shrinks each
    /// remaining partial zspage and gives back retained pages. Every move goes through
    /// CramNative_PoolMove, under the lock the fault service holds while it resolves faults.
    /// Returns the bytes given back.
    /// </summary>
    public long Compact()
    {
        long before = Volatile.Read(ref _usedBytes);
        foreach (SizeClass c in _classes)
        {
            lock (c.Lock)
            {
                EmptySparseZspages(c);
                foreach (int id in c.Partial())
                {
                    ShrinkZspage(c, id);
                }
            }
        }
        Interlocked.Add(ref _usedBytes, -_arenas.DiscardRetained());
        return before - Volatile.Read(ref _usedBytes);
    }

    /// <summary>Empties the emptiest zspage into the fullest ones and releases it, while its objects fit elsewhere.</summary>
    private void EmptySparseZspages(SizeClass c)
    {
        int source;
        while ((source = c.Emptiest()) >= 0)
        {
            ref Zspage src = ref Page(source);
            // Free slots outside the source must hold all its objects.
            if (c.FreeSlots - (c.Capacity - src.InUse) < src.InUse)
            {
                return;
            }
            Ungroup(c, ref src); // not a target while it empties
            int moves = 0;
            for (int index = 0; index < src.FreeCursor; index++)
            {
                uint handle = src.Handles[index];
                if (handle == 0)
                {
                    continue;
                }
                int target = c.Fullest();
                ref Zspage dst = ref Page(target);
                int slot = TakeObject(ref dst, c);
                if (slot < 0)
                {
                    break; // the pool's limit: stop here; the source keeps the objects not moved
                }
                Regroup(c, ref dst, target);
                dst.Handles[slot] = handle;
                src.Handles[index] = 0;
                _movedFrom[moves] = index;
                _moves[moves++] = new NativePoolMove { Handle = handle, Destination = (ulong)(dst.Base + (long)slot * c.Size), Zspage = (uint)target };
            }
            fixed (NativePoolMove* m = _moves)
            {
                Interop.ThrowIfFailed(_engine.PoolMove(HandleDirectory, m, moves), "Moving pool objects");
            }
            for (int i = 0; i < moves; i++) // only now: the links overwrite the moved objects' first bytes
            {
                PushFree(ref src, c, _movedFrom[i]);
            }
            src.InUse -= moves;
            Interlocked.Add(ref _movedObjects, moves);
            if (src.InUse > 0)
            {
                Regroup(c, ref src, source);
                return;
            }
            Interlocked.Add(ref _compactedPages, src.TouchedPages);
            ReleaseZspage(c, source);
        }
    }

    /// <summary>
    /// Moves a zspage's objects down into its lowest free slots, then gives back the pages above
    /// the last object: the zspages that remain after <see cref="EmptySparseZspages"/> hold their
    /// free slots at page granularity no more.
    /// </summary>
    private void ShrinkZspage(SizeClass c, int id)
    {
        ref Zspage z = ref Page(id);
        int moves = 0;
        for (int low = 0, high = z.FreeCursor - 1; ; low++, high--)
        {
            while (low < high && z.Handles[low] != 0)
            {
                low++;
            }
            while (high > low && z.Handles[high] == 0)
            {
                high--;
            }
            if (low >= high)
            {
                break;
            }
            _moves[moves++] = new NativePoolMove { Handle = z.Handles[high], Destination = (ulong)(z.Base + (long)low * c.Size), Zspage = (uint)id };
            z.Handles[low] = z.Handles[high];
            z.Handles[high] = 0;
        }
        if (moves > 0)
        {
            fixed (NativePoolMove* m = _moves)
            {
                Interop.ThrowIfFailed(_engine.PoolMove(HandleDirectory, m, moves), "Moving pool objects");
            }
            Interlocked.Add(ref _movedObjects, moves);
        }
        // The live objects are now slots [0, InUse): no free slot below the cursor.
        z.FreeCursor = z.InUse;
        z.FreeHead = -1;
        int touched = (int)(((long)z.FreeCursor * c.Size + SharedLayout.PageSize - 1) >> SharedLayout.PageShift);
        if (touched < z.TouchedPages)
        {
            long offset = (long)touched << SharedLayout.PageShift, bytes = (long)(z.TouchedPages - touched) << SharedLayout.PageShift;
            _arenas.Discard(z.Base + offset, bytes);
            Interlocked.Add(ref _usedBytes, -bytes);
            Interlocked.Add(ref _compactedPages, z.TouchedPages - touched);
            z.TouchedPages = touched;
        }
    }
}
