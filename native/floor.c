/*
 * `cram bench floor`: what this host charges for the primitives a fault service is built from,
 * measured by the shipped library in one run (bench/native/fault-floor.c is the longer study).
 */
#define _GNU_SOURCE
#include "internal.h"

#define FLOOR_REGION (1ull << 30)

static int floor_cmp(const void* a, const void* b)
{
    uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
    return x < y ? -1 : x > y;
}

static uint64_t floor_rand(uint64_t* state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

/* p50 in microseconds of `samples` first reads of random pages of `r`, each after a page of other work. */
static double floor_random_reads(unsigned char* r, int32_t samples, uint64_t* lat, unsigned char* work)
{
    uint64_t seed = 3;
    for (int32_t k = 0; k < samples; k++) {
        uint64_t p = floor_rand(&seed) % (FLOOR_REGION / CRAM_PAGE_SIZE);
        memset(work, k, CRAM_PAGE_SIZE);
        uint64_t t0 = now_ns();
        (void)*(volatile unsigned char*)(r + p * CRAM_PAGE_SIZE);
        lat[k] = now_ns() - t0;
    }
    qsort(lat, (size_t)samples, sizeof *lat, floor_cmp);
    return lat[samples / 2] / 1e3;
}

static unsigned char* floor_uffd_region(int* uffd, uint64_t features)
{
    *uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (*uffd < 0) return NULL;
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    unsigned char* r = mmap(NULL, FLOOR_REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)r, FLOOR_REGION }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (ioctl(*uffd, UFFDIO_API, &api) != 0 || r == MAP_FAILED || ioctl(*uffd, UFFDIO_REGISTER, &reg) != 0) {
        int err = errno;
        if (r != MAP_FAILED) munmap(r, FLOOR_REGION);
        close(*uffd);
        errno = err;
        return NULL;
    }
    return r;
}

typedef struct { int uffd; const unsigned char* source; volatile int stop; } floor_service;

static void* floor_serve(void* arg)
{
    floor_service* s = arg;
    struct uffd_msg m;
    while (!s->stop) {
        if (read(s->uffd, &m, sizeof m) != sizeof m) { __builtin_ia32_pause(); continue; }
        struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(uint64_t)(CRAM_PAGE_SIZE - 1),
                                 .src = (uint64_t)(uintptr_t)s->source, .len = CRAM_PAGE_SIZE };
        (void)ioctl(s->uffd, UFFDIO_COPY, &c);
    }
    return NULL;
}

EXPORT int CramNative_MeasureFloor(int32_t samples, cram_floor* out)
{
    if (!out || samples < 100 || samples > 1000000) { errno = EINVAL; return -1; }
    memset(out, 0, sizeof *out);
    uint64_t* lat = map_anon((uint64_t)samples * sizeof(uint64_t));
    unsigned char* work = map_anon(3 * CRAM_PAGE_SIZE);
    if (!lat || !work) return -1;
    unsigned char* source = work + CRAM_PAGE_SIZE;     /* the page every fault installs */
    unsigned char* compressed = work + 2 * CRAM_PAGE_SIZE;
    for (int i = 0; i < (int)CRAM_PAGE_SIZE; i++) source[i] = (unsigned char)("cramcore floor "[i % 15] + (i / 512));
    int err = 0, uffd = -1;

    /* 1. The kernel's own first touch. */
    unsigned char* plain = mmap(NULL, FLOOR_REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (plain == MAP_FAILED) { err = errno; goto done; }
    out->kernel_first_touch_us = floor_random_reads(plain, samples, lat, work);
    munmap(plain, FLOOR_REGION);

    /* 2. userfaultfd answered by a spinning service thread. */
    unsigned char* r = floor_uffd_region(&uffd, 0);
    if (!r) { err = errno; goto done; }
    floor_service service = { .uffd = uffd, .source = source, .stop = 0 };
    pthread_t t;
    if ((err = pthread_create(&t, NULL, floor_serve, &service)) != 0) { munmap(r, FLOOR_REGION); close(uffd); goto done; }
    out->uffd_service_thread_us = floor_random_reads(r, samples, lat, work);
    service.stop = 1;
    pthread_join(t, NULL);
    munmap(r, FLOOR_REGION);
    close(uffd);

    /* 3. userfaultfd answered by the faulting thread itself (SIGBUS mode, CramCore's handler). */
    r = floor_uffd_region(&uffd, UFFD_FEATURE_SIGBUS);
    if (!r) { err = errno; goto done; }
    if (sigbus_probe_start(uffd, (uint64_t)(uintptr_t)r, FLOOR_REGION, source) != 0) { err = errno; munmap(r, FLOOR_REGION); close(uffd); goto done; }
    out->uffd_faulting_thread_us = floor_random_reads(r, samples, lat, work);

    /* 4. UFFDIO_COPY of a random page whose page table exists (the region's other pages are mapped). */
    uint64_t seed = 5, copy_ns = 0;
    int32_t copies = samples < 4000 ? samples : 4000;
    for (int32_t k = 0; k < copies; k++) {
        uint64_t block = floor_rand(&seed) % (FLOOR_REGION / CRAM_PAGE_SIZE / 512);
        uint64_t base = (uint64_t)(uintptr_t)r + block * 512 * CRAM_PAGE_SIZE;
        (void)*(volatile unsigned char*)(uintptr_t)base; /* the page table (through the probe) */
        uint64_t dst = base + (1 + floor_rand(&seed) % 511) * CRAM_PAGE_SIZE;
        struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)source, .len = CRAM_PAGE_SIZE };
        uint64_t t0 = now_ns();
        int rc = ioctl(uffd, UFFDIO_COPY, &c);
        copy_ns += now_ns() - t0;
        if (rc != 0 && errno != EEXIST) { err = errno; break; }
    }
    out->uffdio_copy_us = copy_ns / (double)copies / 1e3;
    sigbus_probe_stop();
    munmap(r, FLOOR_REGION);
    close(uffd);
    if (err) goto done;

    /* 5. LZ4 decompression of a page (the same compressible page each time: warm caches, as a fault's source is). */
    int n = LZ4_compress_default((const char*)source, (char*)compressed, (int)CRAM_PAGE_SIZE, (int)CRAM_PAGE_SIZE);
    if (n <= 0) { err = EIO; goto done; }
    for (int32_t k = 0; k < samples; k++) {
        uint64_t t0 = now_ns();
        (void)LZ4_decompress_safe((const char*)compressed, (char*)work, n, (int)CRAM_PAGE_SIZE);
        lat[k] = now_ns() - t0;
    }
    qsort(lat, (size_t)samples, sizeof *lat, floor_cmp);
    out->lz4_decompress_us = lat[samples / 2] / 1e3;
done:
    munmap(lat, (uint64_t)samples * sizeof(uint64_t));
    munmap(work, 3 * CRAM_PAGE_SIZE);
    if (err) { errno = err; return -1; }
    return 0;
}
