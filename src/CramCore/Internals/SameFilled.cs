using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace CramCore;

/// <summary>Detects pages whose 8-byte words are all equal (zero pages included).</summary>
internal static unsafe class SameFilled
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Check(byte* page, out ulong value)
    {
        value = *(ulong*)page;
        if (Vector256.IsHardwareAccelerated)
        {
            var fill = Vector256.Create(value);
            for (int i = 0; i < PageTable.PageSize; i += 4 * Vector256<byte>.Count)
            {
                var a = Vector256.Load((ulong*)(page + i)) ^ fill;
                var b = Vector256.Load((ulong*)(page + i + 32)) ^ fill;
                var c = Vector256.Load((ulong*)(page + i + 64)) ^ fill;
                var d = Vector256.Load((ulong*)(page + i + 96)) ^ fill;
                if ((a | b | c | d) != Vector256<ulong>.Zero)
                {
                    return false;
                }
            }
            return true;
        }
        ulong* words = (ulong*)page;
        for (int i = 1; i < PageTable.PageSize / 8; i++)
        {
            if (words[i] != value)
            {
                return false;
            }
        }
        return true;
    }
}
