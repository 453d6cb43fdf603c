using System.Numerics;

namespace CramCore.Storage;

/// <summary>
/// CRC-32C (Castagnoli; initial and final xor ~0) of stored bytes: computed here when a copy is
/// stored, checked by the fault service (crc32c in native/checksum.c, the same function with the SSE4.2
/// instruction) before anything is mapped. <see cref="BitOperations.Crc32C(uint, ulong)"/> uses
/// the instruction where the CPU has it.
/// </summary>
internal static unsafe class Checksum
{
    public static uint Crc32C(byte* data, int length)
    {
        uint crc = ~0u;
        int i = 0;
        for (; i + 8 <= length; i += 8)
        {
            crc = BitOperations.Crc32C(crc, *(ulong*)(data + i)); // unaligned loads are fine on x64
        }
        for (; i < length; i++)
        {
            crc = BitOperations.Crc32C(crc, data[i]);
        }
        return ~crc;
    }
}
