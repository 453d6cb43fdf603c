/*
 * userfaultfd primitives: open (in the order of cramnative.h's modes), copy, zero page, write-protect, wake.
 */
#define _GNU_SOURCE
#include "internal.h"

/* ------------------------------------------------------------------ userfaultfd plumbing */

int uffd_open(uint32_t forced_mode, uint32_t* mode_out)
{
    int fd = -1, err = ENOSYS;
    if (forced_mode == 0 || forced_mode == CRAM_UFFD_MODE_SYSCALL) {
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) { *mode_out = CRAM_UFFD_MODE_SYSCALL; return fd; }
        err = errno;
    }
    if (forced_mode == 0 || forced_mode == CRAM_UFFD_MODE_DEVICE) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            if (fd < 0) err = errno;
            close(dev);
            if (fd >= 0) { *mode_out = CRAM_UFFD_MODE_DEVICE; return fd; }
        } else if (forced_mode == CRAM_UFFD_MODE_DEVICE || err == ENOSYS) {
            err = errno;
        }
    }
    if (forced_mode == 0 || forced_mode == CRAM_UFFD_MODE_USER_MODE_ONLY) {
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
        if (fd >= 0) { *mode_out = CRAM_UFFD_MODE_USER_MODE_ONLY; return fd; }
        if (forced_mode == CRAM_UFFD_MODE_USER_MODE_ONLY || err != EPERM) err = errno;
    }
    errno = err;
    return -1;
}

/* The resolving ioctls never wake the faulting thread: the service first publishes the page's
 * new state, log entry and counters, then wakes it, so the thread resumes into a consistent world. */
int uffd_copy(int uffd, uint64_t dst, const void* src, uint64_t len, int write_protect)
{
    struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len,
                             .mode = UFFDIO_COPY_MODE_DONTWAKE | (write_protect ? UFFDIO_COPY_MODE_WP : 0) };
    for (;;) {
        if (ioctl(uffd, UFFDIO_COPY, &c) == 0) return 0;
        if (errno == EAGAIN) { /* mm changed under us; retry the rest */
            if (c.copy > 0) { c.dst += (uint64_t)c.copy; c.src += (uint64_t)c.copy; c.len -= (uint64_t)c.copy; }
            c.copy = 0;
            continue;
        }
        return -1;
    }
}

int uffd_zeropage(int uffd, uint64_t dst, uint64_t len)
{
    struct uffdio_zeropage z = { .range = { .start = dst, .len = len }, .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };
    for (;;) {
        if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0) return 0;
        if (errno == EAGAIN) { z.zeropage = 0; continue; }
        return -1;
    }
}

int uffd_writeprotect(int uffd, uint64_t start, uint64_t len, int protect)
{
    struct uffdio_writeprotect w = { .range = { .start = start, .len = len },
                                     .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : UFFDIO_WRITEPROTECT_MODE_DONTWAKE };
    for (;;) {
        if (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0) return 0;
        if (errno == EAGAIN) continue;
        return -1;
    }
}

void uffd_wake(int uffd, uint64_t start, uint64_t len)
{
    struct uffdio_range r = { .start = start, .len = len };
    (void)ioctl(uffd, UFFDIO_WAKE, &r);
}

