/*
 * The fault-latency probe: swap-in latency as the application sees it, sampled, under the service
 * thread ("Fault latency" in cramnative.h).
 *
 * With the faulting-thread service every swap-in is timed by the thread that waits for it (its
 * SIGBUS handler). Under the service thread the faulting thread waits inside the kernel, where no
 * user-space code can time it, and the service's own time (swapin_latency_us_log2) leaves out the
 * kernel's fault entry, the message's trip to the service, the service's wake-up and the faulting
 * thread's. So a thread of the engine takes such faults itself, now and then, and times them: it
 * reads a page of its own area, registered MISSING on the engine's userfaultfd, and the service
 * resolves it as it resolves a pool swap-in - checksum, LZ4 decompression of a page, UFFDIO_COPY,
 * wake - from a compressed copy of a real page (the last one a swap-in decoded). Each probe's wait
 * goes into cram_stats.fault_latency_us_log2; nothing else counts it (not a fault, not a swap-in,
 * not activity for reclaim).
 *
 * When: at most one probe per config.latency_probe_us, and only after swap-ins happened since the
 * last one, so the samples fall among the application's faults and an engine that swaps nothing in
 * costs no CPU (the probe sleeps until the service sees a swap-in: probe_note_swapins). Each probe
 * takes two faults and times the second (probe_once). The probe area's pages are used once each and
 * zapped together (one MADV_DONTNEED, one TLB flush, per PROBE_PAGES / 2 probes). Started with the first drop (no swap-in can come before one); stopped before
 * the service, which must answer the probe's last fault.
 */
#define _GNU_SOURCE
#include "internal.h"

#define PROBE_PAGES 64

/* Swap-ins resolved so far (readahead's included): what makes a probe due. */
static uint64_t swapins(const cram_shared* s)
{
    return __atomic_load_n(&s->stats.faults_swapin_lz4, __ATOMIC_RELAXED) +
           __atomic_load_n(&s->stats.faults_swapin_same, __ATOMIC_RELAXED) +
           __atomic_load_n(&s->stats.faults_swapin_raw, __ATOMIC_RELAXED) +
           __atomic_load_n(&s->stats.faults_swapin_zstd, __ATOMIC_RELAXED);
}

/* Waits up to ns (0: until woken) on the probe's eventfd; 1 if the probe is to stop. */
static int probe_sleep(cram_engine* e, uint64_t ns)
{
    struct pollfd fd = { .fd = e->probe_fd, .events = POLLIN };
    struct timespec t = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
    if (ppoll(&fd, 1, ns ? &t : NULL, NULL) > 0) {
        uint64_t v;
        ssize_t r = read(e->probe_fd, &v, sizeof v);
        (void)r;
    }
    return __atomic_load_n(&e->probe_stop, __ATOMIC_ACQUIRE) != 0;
}

/* One probe: reads of two unused pages of the area, back to back; the second is timed, from before
 * the access to after it. The first puts the probe where an application's faulting thread is, on a
 * CPU and in the fault path: a thread that has just woken from its sleep pays for its own wake-up
 * placement on its first access (measured on a 2-vCPU VM, service thread, random swap-ins of
 * `cram bench swap`: timing the first access read one power-of-two bucket above the bench's own
 * timing of every access; the second falls in the bench's bucket). */
static void probe_once(cram_engine* e)
{
    if (e->probe_next + 2 > PROBE_PAGES) { /* every page mapped: zap them all, so each faults again */
        if (madvise(e->probe_area, PROBE_PAGES * CRAM_PAGE_SIZE, MADV_DONTNEED) != 0) return;
        e->probe_next = 0;
    }
    volatile const unsigned char* first = e->probe_area + (uint64_t)e->probe_next++ * CRAM_PAGE_SIZE;
    volatile const unsigned char* timed = e->probe_area + (uint64_t)e->probe_next++ * CRAM_PAGE_SIZE;
    (void)*first;
    uint64_t t0 = now_ns();
    (void)*timed;
    latency_count(e->shared->stats.fault_latency_us_log2, t0);
}

/* The probe's copy of a page: the sample a swap-in left (probe_take_sample), LZ4-compressed and
 * checksummed as the pool stores it. Written here only between probes, read by the service only
 * while it answers one. */
static void probe_store_sample(cram_engine* e)
{
    int n = LZ4_compress_default((const char*)e->probe_sample, (char*)e->probe_stored, CRAM_PAGE_SIZE, 2 * CRAM_PAGE_SIZE);
    if (n <= 0) return;
    e->probe_stored_length = (uint32_t)n;
    e->probe_stored_checksum = crc32c(e->probe_stored, (size_t)n);
}

static void* probe_main(void* arg)
{
    cram_engine* e = arg;
    uint64_t interval = (uint64_t)e->config.latency_probe_us * 1000ull;
    uint64_t seen = swapins(e->shared);
    __atomic_store_n(&e->probe_wants_sample, 1, __ATOMIC_RELEASE);
    for (;;) {
        if (probe_sleep(e, interval)) break;
        uint64_t now = swapins(e->shared);
        if (now == seen) {
            /* Nothing swapped in for an interval: sleep until the service sees a swap-in. The flag is
             * set before the count is read again, and the service counts before it reads the flag
             * (both behind a full barrier), so one of the two sees the other. */
            __atomic_store_n(&e->probe_idle, 1, __ATOMIC_SEQ_CST);
            if (swapins(e->shared) == seen && probe_sleep(e, 0)) break;
            __atomic_store_n(&e->probe_idle, 0, __ATOMIC_SEQ_CST);
            continue; /* a probe one interval after the first swap-in, among the ones that follow */
        }
        seen = now;
        if (__atomic_load_n(&e->probe_sample_ready, __ATOMIC_ACQUIRE)) {
            probe_store_sample(e);
            __atomic_store_n(&e->probe_sample_ready, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&e->probe_wants_sample, 1, __ATOMIC_RELEASE); /* a fresh page for a later probe */
        }
        if (e->probe_stored_length) probe_once(e);
    }
    return NULL;
}

void probe_ensure(cram_engine* e)
{
    uint32_t expected = 0;
    if (e->faulting_thread || !e->config.latency_probe_us || __atomic_load_n(&e->probe_started, __ATOMIC_ACQUIRE) ||
        !__atomic_compare_exchange_n(&e->probe_started, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    /* Without an area, a sample buffer or a thread the engine runs unprobed (FaultLatency stays empty). */
    unsigned char* area = map_anon(PROBE_PAGES * CRAM_PAGE_SIZE);
    e->probe_sample = map_anon(CRAM_PAGE_SIZE);
    e->probe_stored = map_anon(2 * CRAM_PAGE_SIZE);
    e->probe_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!area || !e->probe_sample || !e->probe_stored || e->probe_fd < 0) { if (area) munmap(area, PROBE_PAGES * CRAM_PAGE_SIZE); return; }
    struct uffdio_register reg = { .range = { .start = (uint64_t)(uintptr_t)area, .len = PROBE_PAGES * CRAM_PAGE_SIZE },
                                   .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (madvise(area, PROBE_PAGES * CRAM_PAGE_SIZE, MADV_DONTFORK) != 0 || ioctl(e->uffd, UFFDIO_REGISTER, &reg) != 0) {
        munmap(area, PROBE_PAGES * CRAM_PAGE_SIZE);
        return;
    }
    __atomic_store_n(&e->probe_area, area, __ATOMIC_RELEASE); /* the service answers faults in it from now on */
    if (pthread_create(&e->probe_thread, NULL, probe_main, e) != 0) return;
    pthread_setname_np(e->probe_thread, "cram-probe");
    __atomic_store_n(&e->probe_running, 1, __ATOMIC_RELEASE);
}

void probe_stop(cram_engine* e)
{
    if (!__atomic_load_n(&e->probe_running, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&e->probe_stop, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t w = write(e->probe_fd, &one, sizeof one);
    (void)w;
    pthread_join(e->probe_thread, NULL);
    e->probe_running = 0;
}

void probe_free(cram_engine* e)
{
    if (e->probe_area) munmap(e->probe_area, PROBE_PAGES * CRAM_PAGE_SIZE); /* unregisters it too */
    if (e->probe_sample) munmap(e->probe_sample, CRAM_PAGE_SIZE);
    if (e->probe_stored) munmap(e->probe_stored, 2 * CRAM_PAGE_SIZE);
    if (e->probe_fd >= 0) close(e->probe_fd);
}

int probe_owns(const cram_engine* e, uint64_t addr)
{
    const unsigned char* area = __atomic_load_n(&e->probe_area, __ATOMIC_ACQUIRE);
    return area && addr - (uint64_t)(uintptr_t)area < PROBE_PAGES * CRAM_PAGE_SIZE;
}

void probe_serve(cram_engine* e, uint64_t addr)
{
    ASSERT_ENGINE_LOCKED(e); /* answered in the service's batch, as a swap-in is */
    const void* src = e->page_buf;
    if (crc32c(e->probe_stored, e->probe_stored_length) != e->probe_stored_checksum ||
        LZ4_decompress_safe((const char*)e->probe_stored, (char*)e->page_buf, (int)e->probe_stored_length, CRAM_PAGE_SIZE) != (int)CRAM_PAGE_SIZE) {
        add_counter(&e->shared->stats.service_errors, 1); /* cannot happen: the probe's own copy */
        src = e->zero_pages;
    }
    if (uffd_copy(e->uffd, addr, src, CRAM_PAGE_SIZE, 0) != 0 && errno != EEXIST) add_counter(&e->shared->stats.service_errors, 1);
    uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
}

void probe_take_sample(cram_engine* e, const void* page)
{
    memcpy(e->probe_sample, page, CRAM_PAGE_SIZE);
    __atomic_store_n(&e->probe_wants_sample, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->probe_sample_ready, 1, __ATOMIC_RELEASE);
}

void probe_note_swapins(cram_engine* e)
{
    if (__atomic_load_n(&e->probe_idle, __ATOMIC_SEQ_CST) && __atomic_exchange_n(&e->probe_idle, 0, __ATOMIC_ACQ_REL)) {
        uint64_t one = 1;
        ssize_t w = write(e->probe_fd, &one, sizeof one);
        (void)w;
    }
}
