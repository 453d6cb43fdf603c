using System.Runtime.InteropServices;
using CramCore.Native;

namespace CramCore.Storage;

/// <summary>
/// The one path that frees slots and the locations they name (pool objects, file extents), under
/// the reclaimer's pass lock: <see cref="Drain"/> frees, in one batch, every slot the fault path
/// released (write faults, stale clean copies, destroyed regions); <see cref="Sweep"/> finds
/// zombies — slots in use that no page names and that are not on the stale list, which only a bug
/// (a lost stale push, a tier that forgot an entry) can leave — and frees them.
/// <para>Why the sweep is exact: slots are created and published only on the maintenance path,
/// which the sweep holds, so during it the set of slots in use can only shrink. The native mark
/// (CramNative_MarkNamedSlots) reads every page table under the engine lock, where no fault is
/// half-resolved, so each slot in use is then named, already pushed stale, or a zombie; the drain
/// after the mark frees every slot pushed up to then, and a slot pushed after the mark was named in
/// it. What remains unmarked is a zombie.</para>
/// </summary>
internal sealed unsafe class Reaper(INativeEngine engine, SlotTable slots)
{
    private long _zombies;

    /// <summary>Zombie slots found and freed (cumulative).</summary>
    public long ZombiesReaped => Interlocked.Read(ref _zombies);

    /// <summary>Frees, in one batch, every slot the fault path released. Returns how many.</summary>
    public int Drain() => slots.DrainStale();

    /// <summary>Mark, drain, sweep. Returns the zombies freed.</summary>
    public int Sweep()
    {
        ulong bits = slots.IdLimit;
        nuint words = (nuint)((bits + 63) / 64);
        ulong* named = (ulong*)NativeMemory.AllocZeroed(Math.Max(words, 1), sizeof(ulong));
        try
        {
            Interop.ThrowIfFailed(engine.MarkNamedSlots(named, bits), "Marking the slots page tables name");
            Drain();
            var zombies = new List<ulong>();
            slots.CollectUnnamed(named, bits, zombies);
            foreach (ulong id in zombies)
            {
                slots.Free(id);
            }
            Interlocked.Add(ref _zombies, zombies.Count);
            return zombies.Count;
        }
        finally
        {
            NativeMemory.Free(named);
        }
    }
}
