/*
 * The backing file and the pool's arenas.
 */
#define _GNU_SOURCE
#include "internal.h"

EXPORT int CramNative_BackingFileOpen(const char* path, int32_t keep, int32_t* fd_out, int32_t* direct_out)
{
    if (!path || !fd_out || !direct_out) { errno = EINVAL; return -1; }
    int direct = 1;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600);
    if (fd < 0 && errno == EINVAL) { /* the file system has no O_DIRECT: buffered, page-aligned anyway */
        direct = 0;
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) return -1;
    if (!keep && unlink(path) != 0) { int err = errno; close(fd); errno = err; return -1; }
    *fd_out = fd;
    *direct_out = direct;
    return 0;
}

EXPORT int CramNative_BackingFileWrite(int32_t fd, const void* data, uint64_t length, uint64_t offset)
{
    const unsigned char* p = data;
    while (length) {
        ssize_t n = pwrite(fd, p, length, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) { errno = EIO; return -1; }
        p += n; length -= (uint64_t)n; offset += (uint64_t)n;
    }
    return 0;
}

EXPORT int CramNative_BackingFileRead(int32_t fd, void* data, uint64_t length, uint64_t offset)
{
    unsigned char* p = data;
    while (length) {
        ssize_t n = pread(fd, p, length, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) { errno = EIO; return -1; } /* past the end: never written */
        p += n; length -= (uint64_t)n; offset += (uint64_t)n;
    }
    return 0;
}

EXPORT int CramNative_BackingFileDiscard(int32_t fd, uint64_t offset, uint64_t length)
{
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}



/* Pool arenas: anonymous, NORESERVE (pages cost memory only once touched), optionally mlocked. */
EXPORT int CramNative_ArenaMap(uint64_t bytes, int32_t lock, uint64_t* address)
{
    if (!address || bytes == 0 || (bytes & (CRAM_PAGE_SIZE - 1))) { errno = EINVAL; return -1; }
    void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    (void)madvise(p, bytes, MADV_NOHUGEPAGE); /* pages are discarded one zspage at a time */
    if (madvise(p, bytes, MADV_DONTFORK) != 0) { int err = errno; munmap(p, bytes); errno = err; return -1; } /* as regions: no stale copy in a forked child */
    if (lock && mlock(p, bytes) != 0) { int err = errno; munmap(p, bytes); errno = err; return -1; }
    *address = (uint64_t)(uintptr_t)p;
    return 0;
}

EXPORT int CramNative_ArenaUnmap(uint64_t address, uint64_t bytes)
{
    return munmap((void*)(uintptr_t)address, bytes);
}

/* Gives the pages of a released zspage back to the kernel (they read as zero if touched again). */
EXPORT int CramNative_Discard(uint64_t address, uint64_t bytes)
{
    return madvise((void*)(uintptr_t)address, bytes, MADV_DONTNEED);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

EXPORT int CramNative_Populate(uint64_t address, uint64_t bytes)
{
    if (madvise((void*)(uintptr_t)address, bytes, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) return -1;
    return 0;
}
