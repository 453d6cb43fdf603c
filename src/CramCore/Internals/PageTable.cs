using System.Runtime.CompilerServices;

namespace CramCore;

/// <summary>
/// Page states and the encoding of a page-table entry. The state machine, with every transition
/// and who makes it, is written down once, in native/cramnative.h ("Page-table entry"); this file
/// only mirrors the encoding. Transitions are compare-and-swap on the entry from both C and C#.
/// </summary>
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
}

internal static unsafe class PageTable
{
    public const int PageSize = 4096;
    public const int PageShift = 12;
    public const ulong StateMask = 0xF;
    public const ulong Referenced = 0x10;
    public const int SlotShift = 16;
    public const ulong ZeroSlot = 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PageState State(ulong pte) => (PageState)(pte & StateMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Slot(ulong pte) => pte >> SlotShift;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Make(PageState state, ulong slot) => (slot << SlotShift) | (ulong)state;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Load(ulong* pte) => Volatile.Read(ref *pte);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryTransition(ulong* pte, ulong expected, ulong desired) =>
        Interlocked.CompareExchange(ref *pte, desired, expected) == expected;

    /// <summary>Resident means mapped in the region: every state but EMPTY and EVICTED.</summary>
    public static bool IsResident(PageState s) => s is not (PageState.Empty or PageState.Evicted);

    /// <summary>States whose entry names a slot that holds a copy of the page.</summary>
    public static bool HoldsSlot(PageState s) => s is PageState.Clean or PageState.Dropping or PageState.Evicted;
}
