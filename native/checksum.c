/*
 * CRC-32C (Castagnoli), as the service checks stored bytes; SSE4.2 where the CPU has it.
 */
#define _GNU_SOURCE
#include "internal.h"

/* ------------------------------------------------------------------ CRC32C */

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;
static int crc32c_hardware;

static void crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
    __builtin_cpu_init();
    crc32c_hardware = __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const unsigned char* p, size_t n)
{
    uint64_t c = crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    for (; n; n--, p++) crc = __builtin_ia32_crc32qi(crc, *p);
    return crc;
}

/* CRC-32C (Castagnoli, reflected, init and final xor ~0): BitOperations.Crc32C in C# computes the same. */
uint32_t crc32c(const void* data, size_t n)
{
    pthread_once(&crc32c_once, crc32c_init);
    const unsigned char* p = data;
    uint32_t crc = ~0u;
    if (crc32c_hardware) return ~crc32c_sse42(crc, p, n);
    for (; n; n--, p++) crc = (crc >> 8) ^ crc32c_table[(crc ^ *p) & 0xFF];
    return ~crc;
}


EXPORT int CramNative_Checksum(const void* data, uint32_t length, uint32_t* checksum)
{
    if (!checksum || (length && !data)) { errno = EINVAL; return -1; }
    *checksum = crc32c(data, length);
    return 0;
}
