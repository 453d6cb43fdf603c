/*
 * CramCore native helper: userfaultfd fault service, region mapping and the batched page
 * operations reclaim needs. It never calls managed code: a managed fault handler deadlocks with
 * the GC, which waits for a thread blocked in a fault while the handler is suspended for that GC.
 * The page-state machine and the lock order are written down once, in cramnative.h.
 */
#define _GNU_SOURCE
#include "cramnative.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define EXPORT __attribute__((visibility("default")))

/* The system liblz4.so.1 (no -dev package needed): the one function we use, as in lz4.h 1.9. */
extern int LZ4_decompress_safe(const char* src, char* dst, int compressedSize, int dstCapacity);

#define FAULT_AROUND_MAX 64u
#define MSG_BATCH 32

/* A region as the service sees it. Private to native code: C# gets base and page table from
 * CramNative_RegionCreate and never reads this table. */
typedef struct cram_region_desc {
    uint64_t base;   /* region start address */
    uint64_t length; /* bytes, multiple of CRAM_PAGE_SIZE */
    uint64_t* pte;   /* the page table: length / CRAM_PAGE_SIZE words */
    uint32_t id;     /* index in regions[] */
    uint32_t active; /* 1 while the service may resolve faults in it */
} cram_region_desc;

struct cram_engine {
    cram_shared* shared;
    cram_engine_config config;
    int uffd;
    int stop_fd;
    int reclaim_fd;
    int reclaim_signalled;
    pthread_t service;
    pthread_mutex_t lock; /* held by the service while it resolves a batch, and by region create/destroy */
    unsigned char* zero_pages; /* FAULT_AROUND_MAX read-only zero pages */
    unsigned char* page_buf;   /* one page the service rebuilds into */
    uint64_t next_first_touch[CRAM_MAX_REGIONS]; /* page after the last first-touch run, per region */
    uint32_t region_count;                       /* high-water index in regions[] */
    cram_region_desc regions[CRAM_MAX_REGIONS];
};

static inline uint64_t load_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store_release(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int cas(uint64_t* p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline void add_counter(uint64_t* counter, uint64_t n) { __atomic_fetch_add(counter, n, __ATOMIC_RELAXED); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ the contract as data */

typedef struct contract_builder {
    cram_contract_entry* entries;
    int32_t capacity, count;
} contract_builder;

static void contract_add(contract_builder* b, const char* name, uint64_t value, uint32_t kind, uint32_t size)
{
    if (b->count < b->capacity)
        b->entries[b->count] = (cram_contract_entry){ .name = (uint64_t)(uintptr_t)name, .value = value, .kind = kind, .size = size };
    b->count++;
}

#define STRUCT(t) contract_add(b, #t, sizeof(t), CRAM_CONTRACT_STRUCT, 0)
#define FIELD(t, f) contract_add(b, #t "." #f, offsetof(t, f), CRAM_CONTRACT_FIELD, sizeof(((t*)0)->f))
#define CONSTANT(c) contract_add(b, #c, (uint64_t)(c), CRAM_CONTRACT_CONSTANT, 0)
#define ENUMERATOR(e) case e: contract_add(b, #e, (uint64_t)(e), CRAM_CONTRACT_ENUM, 0); break

/* One switch per enum, without a default: -Wswitch (in -Wall, an error with -Werror) fails the
 * build when an enumerator is added without its line here. The contract's enumerators are small
 * codes; every value below CONTRACT_ENUM_LIMIT is tried. */
#define CONTRACT_ENUM_LIMIT 1024u
_Static_assert(CRAM_PTE_UNPROTECTING < CONTRACT_ENUM_LIMIT && CRAM_BACKEND_RAW < CONTRACT_ENUM_LIMIT &&
               CRAM_UFFD_MODE_USER_MODE_ONLY < CONTRACT_ENUM_LIMIT && CRAM_CONTRACT_CONSTANT < CONTRACT_ENUM_LIMIT,
               "an enumerator of the contract is not listed by contract_enums");

static void contract_enums(contract_builder* b)
{
    for (uint32_t v = 0; v < CONTRACT_ENUM_LIMIT; v++) {
        switch ((enum cram_pte_state)v) {
        ENUMERATOR(CRAM_PTE_EMPTY); ENUMERATOR(CRAM_PTE_DIRTY); ENUMERATOR(CRAM_PTE_CLEAN);
        ENUMERATOR(CRAM_PTE_EVICTING); ENUMERATOR(CRAM_PTE_DROPPING); ENUMERATOR(CRAM_PTE_EVICTED);
        ENUMERATOR(CRAM_PTE_INCOMPRESSIBLE); ENUMERATOR(CRAM_PTE_UNPROTECTING);
        }
        switch ((enum cram_backend)v) {
        ENUMERATOR(CRAM_BACKEND_FREE); ENUMERATOR(CRAM_BACKEND_SAME_FILLED);
        ENUMERATOR(CRAM_BACKEND_LZ4); ENUMERATOR(CRAM_BACKEND_RAW);
        }
        switch ((enum cram_uffd_mode)v) {
        ENUMERATOR(CRAM_UFFD_MODE_AUTO); ENUMERATOR(CRAM_UFFD_MODE_SYSCALL);
        ENUMERATOR(CRAM_UFFD_MODE_DEVICE); ENUMERATOR(CRAM_UFFD_MODE_USER_MODE_ONLY);
        }
        switch ((enum cram_contract_kind)v) {
        ENUMERATOR(CRAM_CONTRACT_STRUCT); ENUMERATOR(CRAM_CONTRACT_FIELD);
        ENUMERATOR(CRAM_CONTRACT_ENUM); ENUMERATOR(CRAM_CONTRACT_CONSTANT);
        }
    }
}

static void contract_structs(contract_builder* b)
{
    STRUCT(cram_slot);
    FIELD(cram_slot, data); FIELD(cram_slot, length); FIELD(cram_slot, backend); FIELD(cram_slot, flags);
    FIELD(cram_slot, next_stale);

    STRUCT(cram_pool_handle);
    FIELD(cram_pool_handle, address); FIELD(cram_pool_handle, length); FIELD(cram_pool_handle, zspage);

    STRUCT(cram_pool_move);
    FIELD(cram_pool_move, handle); FIELD(cram_pool_move, destination); FIELD(cram_pool_move, zspage);
    FIELD(cram_pool_move, reserved);

    STRUCT(cram_stats);
    FIELD(cram_stats, faults_zero); FIELD(cram_stats, faults_swapin_lz4); FIELD(cram_stats, faults_swapin_same);
    FIELD(cram_stats, faults_swapin_raw); FIELD(cram_stats, faults_wp); FIELD(cram_stats, faults_wp_cancel);
    FIELD(cram_stats, faults_spurious); FIELD(cram_stats, resident_pages); FIELD(cram_stats, peak_resident_pages);
    FIELD(cram_stats, populated_pages); FIELD(cram_stats, evicted_pages_total); FIELD(cram_stats, zero_copies_released);
    FIELD(cram_stats, throttle_waits); FIELD(cram_stats, fault_log_overflows); FIELD(cram_stats, service_errors);
    FIELD(cram_stats, service_busy_ns);

    STRUCT(cram_engine_config);
    FIELD(cram_engine_config, forced_mode); FIELD(cram_engine_config, spin_us);
    FIELD(cram_engine_config, soft_limit_pages); FIELD(cram_engine_config, hard_limit_pages);
    FIELD(cram_engine_config, throttle_max_us); FIELD(cram_engine_config, fault_around_pages);

    STRUCT(cram_shared);
    FIELD(cram_shared, stats); FIELD(cram_shared, slot_directory); FIELD(cram_shared, handle_directory);
    FIELD(cram_shared, stale_head); FIELD(cram_shared, fault_log); FIELD(cram_shared, fault_log_head);
    FIELD(cram_shared, fault_log_tail); FIELD(cram_shared, uffd_mode); FIELD(cram_shared, reclaim_stalled);

    STRUCT(cram_contract_entry);
    FIELD(cram_contract_entry, name); FIELD(cram_contract_entry, value); FIELD(cram_contract_entry, kind);
    FIELD(cram_contract_entry, size);
}

static void contract_constants(contract_builder* b)
{
    CONSTANT(CRAM_PAGE_SIZE); CONSTANT(CRAM_PAGE_SHIFT); CONSTANT(CRAM_MAX_REGIONS);
    CONSTANT(CRAM_PTE_STATE_MASK); CONSTANT(CRAM_PTE_REFERENCED); CONSTANT(CRAM_PTE_SLOT_SHIFT);
    CONSTANT(CRAM_SLOT_ZERO);
    CONSTANT(CRAM_DIRECTORY_CLUSTER_SHIFT); CONSTANT(CRAM_DIRECTORY_CLUSTER_SIZE); CONSTANT(CRAM_DIRECTORY_SIZE);
    CONSTANT(CRAM_FAULT_LOG_SIZE); CONSTANT(CRAM_FAULT_LOG_REGION_SHIFT);
}

EXPORT int CramNative_GetContract(cram_contract_entry* entries, int32_t capacity, int32_t* count)
{
    if (!count || capacity < 0 || (capacity && !entries)) { errno = EINVAL; return -1; }
    contract_builder builder = { .entries = entries, .capacity = capacity, .count = 0 }, *b = &builder;
    contract_structs(b);
    contract_enums(b);
    contract_constants(b);
    *count = b->count;
    return 0;
}

#undef STRUCT
#undef FIELD
#undef CONSTANT
#undef ENUMERATOR

/* ------------------------------------------------------------------ userfaultfd plumbing */

static int uffd_open(uint32_t forced_mode, uint32_t* mode_out)
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
static int uffd_copy(int uffd, uint64_t dst, const void* src, uint64_t len, int write_protect)
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

static int uffd_zeropage(int uffd, uint64_t dst, uint64_t len)
{
    struct uffdio_zeropage z = { .range = { .start = dst, .len = len }, .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };
    for (;;) {
        if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0) return 0;
        if (errno == EAGAIN) { z.zeropage = 0; continue; }
        return -1;
    }
}

static int uffd_writeprotect(int uffd, uint64_t start, uint64_t len, int protect)
{
    struct uffdio_writeprotect w = { .range = { .start = start, .len = len },
                                     .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : UFFDIO_WRITEPROTECT_MODE_DONTWAKE };
    for (;;) {
        if (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0) return 0;
        if (errno == EAGAIN) continue;
        return -1;
    }
}

static void uffd_wake(int uffd, uint64_t start, uint64_t len)
{
    struct uffdio_range r = { .start = start, .len = len };
    (void)ioctl(uffd, UFFDIO_WAKE, &r);
}

/* ------------------------------------------------------------------ shared-state helpers */

/* The one lookup in a clustered directory (cramnative.h): the cluster was published before the id. */
static inline void* directory_get(uint64_t directory, uint64_t id, size_t record_size)
{
    const uint64_t* dir = (const uint64_t*)(uintptr_t)directory;
    unsigned char* cluster = (unsigned char*)(uintptr_t)load_acquire(&dir[id >> CRAM_DIRECTORY_CLUSTER_SHIFT]);
    return cluster + (id & (CRAM_DIRECTORY_CLUSTER_SIZE - 1)) * record_size;
}

static inline cram_slot* slot_get(cram_shared* s, uint64_t id)
{
    return directory_get(s->slot_directory, id, sizeof(cram_slot));
}

static inline cram_pool_handle* handle_get(uint64_t directory, uint64_t id)
{
    return directory_get(directory, id, sizeof(cram_pool_handle));
}

/* The copy in `id` no longer matches the page: hand it to managed code to free. */
static void stale_push(cram_shared* s, uint64_t id)
{
    if (id == CRAM_SLOT_ZERO) {
        add_counter(&s->stats.zero_copies_released, 1);
        return;
    }
    cram_slot* slot = slot_get(s, id);
    uint64_t head = load_acquire(&s->stale_head);
    do {
        slot->next_stale = head;
    } while (!__atomic_compare_exchange_n(&s->stale_head, &head, id, 1, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE));
}

static void fault_log_append(cram_shared* s, uint32_t region, uint64_t page)
{
    uint64_t head = s->fault_log_head; /* only the service writes head */
    uint64_t tail = load_acquire(&s->fault_log_tail);
    if (head - tail >= CRAM_FAULT_LOG_SIZE) { add_counter(&s->stats.fault_log_overflows, 1); return; }
    uint64_t* log = (uint64_t*)(uintptr_t)s->fault_log;
    log[head & (CRAM_FAULT_LOG_SIZE - 1)] = CRAM_FAULT_LOG_ENTRY(region, page);
    store_release(&s->fault_log_head, head + 1);
}

static void signal_reclaim(cram_engine* e)
{
    if (__atomic_exchange_n(&e->reclaim_signalled, 1, __ATOMIC_ACQ_REL) == 0) {
        uint64_t one = 1;
        ssize_t r = write(e->reclaim_fd, &one, sizeof one);
        (void)r;
    }
}

static void resident_add(cram_engine* e, uint64_t n)
{
    cram_stats* st = &e->shared->stats;
    uint64_t now = __atomic_add_fetch(&st->resident_pages, n, __ATOMIC_RELAXED);
    uint64_t peak = __atomic_load_n(&st->peak_resident_pages, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&st->peak_resident_pages, &peak, now, 1,
                                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { }
    if (e->config.soft_limit_pages && now > e->config.soft_limit_pages) signal_reclaim(e);
}

/* Before a fault adds a resident page: if resident is at the hard limit, give reclaim a bounded
 * time to catch up. Bounded, because reclaim is managed code that a GC may be suspending; and
 * not at all while reclaim reports it has nothing left to evict (say, incompressible data):
 * then the limit cannot be held and waiting would only slow the application down. */
static void throttle(cram_engine* e)
{
    cram_stats* st = &e->shared->stats;
    uint32_t* stalled = &e->shared->reclaim_stalled;
    if (!e->config.hard_limit_pages ||
        __atomic_load_n(&st->resident_pages, __ATOMIC_RELAXED) < e->config.hard_limit_pages)
        return;
    signal_reclaim(e);
    if (__atomic_load_n(stalled, __ATOMIC_ACQUIRE)) return;
    add_counter(&st->throttle_waits, 1);
    uint64_t deadline = now_ns() + (uint64_t)e->config.throttle_max_us * 1000ull;
    struct timespec nap = { 0, 20000 };
    while (__atomic_load_n(&st->resident_pages, __ATOMIC_RELAXED) >= e->config.hard_limit_pages &&
           !__atomic_load_n(stalled, __ATOMIC_ACQUIRE) && now_ns() < deadline)
        nanosleep(&nap, NULL);
}

/* ------------------------------------------------------------------ fault resolution */

static cram_region_desc* region_find(cram_engine* e, uint64_t addr)
{
    uint32_t n = e->region_count;
    for (uint32_t i = 0; i < n; i++) {
        cram_region_desc* r = &e->regions[i];
        if (r->active && addr - r->base < r->length) return r;
    }
    return NULL;
}

/* DROPPING is held by native code for one madvise batch: wait for it without calling managed code. */
static uint64_t wait_not_dropping(uint64_t* pte)
{
    uint64_t p;
    while (CRAM_PTE_STATE(p = load_acquire(pte)) == CRAM_PTE_DROPPING) sched_yield();
    return p;
}

static void resolve_first_touch(cram_engine* e, cram_region_desc* r, uint64_t page, int write)
{
    cram_shared* s = e->shared;
    uint64_t* ptes = r->pte;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    uint64_t first = page, last = page; /* inclusive run of EMPTY pages around the fault */
    uint32_t around = e->config.fault_around_pages;
    /* Fault around on a write, or on a read that continues a sequential first touch (memmove-style
     * fills read their destination first); reads get the shared zero page, which costs no memory. */
    int sequential = page != 0 && e->next_first_touch[r->id] == page;
    if ((write || sequential) && around > 1) {
        uint64_t lo = page - page % around, hi = lo + around - 1;
        if (hi >= pages) hi = pages - 1;
        while (first > lo && CRAM_PTE_STATE(load_acquire(&ptes[first - 1])) == CRAM_PTE_EMPTY) first--;
        while (last < hi && CRAM_PTE_STATE(load_acquire(&ptes[last + 1])) == CRAM_PTE_EMPTY) last++;
    }
    uint64_t n = last - first + 1;
    throttle(e);
    uint64_t addr = r->base + (first << CRAM_PAGE_SHIFT);
    int rc = write ? uffd_copy(e->uffd, addr, e->zero_pages, n << CRAM_PAGE_SHIFT, 0)
                   : uffd_zeropage(e->uffd, addr, n << CRAM_PAGE_SHIFT);
    if (rc != 0 && n > 1) { /* something in the run was present after all: do just the page */
        first = last = page;
        n = 1;
        addr = r->base + (page << CRAM_PAGE_SHIFT);
        rc = uffd_copy(e->uffd, addr, e->zero_pages, CRAM_PAGE_SIZE, 0);
    }
    if (rc != 0) {
        if (errno != EEXIST) add_counter(&s->stats.service_errors, 1);
        uffd_wake(e->uffd, r->base + (page << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE);
        return;
    }
    e->next_first_touch[r->id] = last + 1;
    uint64_t made = 0;
    for (uint64_t i = first; i <= last; i++) {
        if (cas(&ptes[i], CRAM_PTE_MAKE(CRAM_PTE_EMPTY, 0), CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0))) {
            fault_log_append(s, r->id, i);
            made++;
        }
    }
    add_counter(&s->stats.faults_zero, 1);
    add_counter(&s->stats.populated_pages, made);
    resident_add(e, made);
    uffd_wake(e->uffd, addr, n << CRAM_PAGE_SHIFT); /* threads faulting anywhere in the run */
}

static void resolve_swapin(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t pte, int write)
{
    cram_shared* s = e->shared;
    uint64_t* ptes = r->pte;
    uint64_t id = CRAM_PTE_SLOT(pte);
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    const void* src = e->zero_pages;
    uint64_t* counter = &s->stats.faults_swapin_same;
    if (id != CRAM_SLOT_ZERO) {
        cram_slot* slot = slot_get(s, id);
        switch (slot->backend) {
        case CRAM_BACKEND_SAME_FILLED: {
            uint64_t* words = (uint64_t*)e->page_buf;
            for (uint32_t i = 0; i < CRAM_PAGE_SIZE / 8; i++) words[i] = slot->data;
            src = e->page_buf;
            break;
        }
        case CRAM_BACKEND_LZ4:
            if (LZ4_decompress_safe((const char*)(uintptr_t)handle_get(s->handle_directory, slot->data)->address,
                                    (char*)e->page_buf, (int)slot->length, CRAM_PAGE_SIZE) != (int)CRAM_PAGE_SIZE) {
                /* A corrupt copy cannot be rebuilt; fail loudly in the counters. */
                add_counter(&s->stats.service_errors, 1);
                memset(e->page_buf, 0, CRAM_PAGE_SIZE);
            }
            src = e->page_buf;
            counter = &s->stats.faults_swapin_lz4;
            break;
        case CRAM_BACKEND_RAW:
            src = (const void*)(uintptr_t)handle_get(s->handle_directory, slot->data)->address;
            counter = &s->stats.faults_swapin_raw;
            break;
        default:
            add_counter(&s->stats.service_errors, 1);
            break;
        }
    }
    throttle(e);
    if (uffd_copy(e->uffd, addr, src, CRAM_PAGE_SIZE, !write) != 0) {
        if (errno != EEXIST) add_counter(&s->stats.service_errors, 1);
        uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
        return;
    }
    /* Only the service leaves EVICTED, so this CAS cannot fail while the region is active. */
    uint64_t next = write ? CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED : CRAM_PTE_MAKE(CRAM_PTE_CLEAN, id);
    if (!cas(&ptes[page], pte, next)) add_counter(&s->stats.service_errors, 1);
    if (write) stale_push(s, id);
    add_counter(counter, 1);
    fault_log_append(s, r->id, page);
    resident_add(e, 1);
    uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
}

static void resolve_missing(cram_engine* e, cram_region_desc* r, uint64_t page, int write)
{
    uint64_t* pte = &r->pte[page];
    uint64_t p = wait_not_dropping(pte);
    switch (CRAM_PTE_STATE(p)) {
    case CRAM_PTE_EMPTY: resolve_first_touch(e, r, page, write); break;
    case CRAM_PTE_EVICTED: resolve_swapin(e, r, page, p, write); break;
    default: /* already resolved by an earlier message for the same page */
        add_counter(&e->shared->stats.faults_spurious, 1);
        uffd_wake(e->uffd, r->base + (page << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE);
        break;
    }
}

static void resolve_write_protect(cram_engine* e, cram_region_desc* r, uint64_t page)
{
    cram_shared* s = e->shared;
    uint64_t* pte = &r->pte[page];
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    for (;;) {
        uint64_t p = wait_not_dropping(pte);
        uint32_t state = CRAM_PTE_STATE(p);
        if (state == CRAM_PTE_EVICTED || state == CRAM_PTE_EMPTY) {
            /* Dropped after the fault was queued: the retried access raises a MISSING fault. */
            add_counter(&s->stats.faults_spurious, 1);
            uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
            return;
        }
        /* CLEAN, EVICTING, INCOMPRESSIBLE or DIRTY: hold UNPROTECTING while the protection is
         * cleared, so reclaim cannot claim and re-protect the page in between. */
        if (!cas(pte, p, CRAM_PTE_MAKE(CRAM_PTE_UNPROTECTING, 0))) continue;
        if (uffd_writeprotect(e->uffd, addr, CRAM_PAGE_SIZE, 0) != 0) add_counter(&s->stats.service_errors, 1);
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED);
        switch (state) {
        case CRAM_PTE_CLEAN:
            stale_push(s, CRAM_PTE_SLOT(p));
            add_counter(&s->stats.faults_wp, 1);
            break;
        case CRAM_PTE_EVICTING: add_counter(&s->stats.faults_wp_cancel, 1); break;
        case CRAM_PTE_INCOMPRESSIBLE: add_counter(&s->stats.faults_wp, 1); break;
        default: add_counter(&s->stats.faults_spurious, 1); break;
        }
        if (state != CRAM_PTE_DIRTY) fault_log_append(s, r->id, page); /* reclaim may have dropped its entry */
        uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
        return;
    }
}

static void handle_message(cram_engine* e, const struct uffd_msg* m)
{
    if (m->event != UFFD_EVENT_PAGEFAULT) return;
    uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(CRAM_PAGE_SIZE - 1);
    cram_region_desc* r = region_find(e, addr);
    if (!r) return; /* region went away after the fault was queued */
    uint64_t page = (addr - r->base) >> CRAM_PAGE_SHIFT;
    if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
        resolve_write_protect(e, r, page);
    else
        resolve_missing(e, r, page, (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0);
}

static void* service_main(void* arg)
{
    cram_engine* e = arg;
    struct uffd_msg msgs[MSG_BATCH];
    struct pollfd fds[2] = { { .fd = e->uffd, .events = POLLIN }, { .fd = e->stop_fd, .events = POLLIN } };
    uint64_t spin_ns = (uint64_t)e->config.spin_us * 1000ull;
    for (;;) {
        ssize_t n = read(e->uffd, msgs, sizeof msgs);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EINTR) break;
            /* Nothing pending: busy-poll briefly (wake-ups dominate fault latency), then block. */
            uint64_t until = now_ns() + spin_ns;
            while (spin_ns && (n = read(e->uffd, msgs, sizeof msgs)) < 0 && errno == EAGAIN && now_ns() < until)
                __builtin_ia32_pause();
            if (n <= 0) {
                if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
                if (fds[1].revents) break;
                continue;
            }
        }
        uint64_t t0 = now_ns();
        pthread_mutex_lock(&e->lock);
        for (ssize_t i = 0; i < n / (ssize_t)sizeof(struct uffd_msg); i++) handle_message(e, &msgs[i]);
        pthread_mutex_unlock(&e->lock);
        add_counter(&e->shared->stats.service_busy_ns, now_ns() - t0);
    }
    return NULL;
}

/* ------------------------------------------------------------------ engine and regions */

static void* map_anon(uint64_t bytes)
{
    void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void engine_free(cram_engine* e)
{
    if (e->uffd >= 0) close(e->uffd);
    if (e->stop_fd >= 0) close(e->stop_fd);
    if (e->reclaim_fd >= 0) close(e->reclaim_fd);
    if (e->zero_pages) munmap(e->zero_pages, FAULT_AROUND_MAX * CRAM_PAGE_SIZE);
    if (e->page_buf) munmap(e->page_buf, CRAM_PAGE_SIZE);
    if (e->shared) {
        if (e->shared->fault_log) munmap((void*)(uintptr_t)e->shared->fault_log, CRAM_FAULT_LOG_SIZE * sizeof(uint64_t));
        munmap(e->shared, sizeof(cram_shared));
    }
    pthread_mutex_destroy(&e->lock);
    free(e);
}

EXPORT int CramNative_EngineCreate(const cram_engine_config* config, cram_engine** out, cram_shared** shared_out)
{
    if (!config || !out || !shared_out || config->fault_around_pages > FAULT_AROUND_MAX ||
        config->forced_mode > CRAM_UFFD_MODE_USER_MODE_ONLY) {
        errno = EINVAL;
        return -1;
    }
    cram_engine* e = calloc(1, sizeof *e);
    if (!e) return -1;
    e->uffd = e->stop_fd = e->reclaim_fd = -1;
    pthread_mutex_init(&e->lock, NULL);
    e->config = *config;
    if (e->config.fault_around_pages == 0) e->config.fault_around_pages = 1;
    int err = ENOMEM;
    e->shared = map_anon(sizeof(cram_shared));
    e->zero_pages = map_anon(FAULT_AROUND_MAX * CRAM_PAGE_SIZE);
    e->page_buf = map_anon(CRAM_PAGE_SIZE);
    if (!e->shared || !e->zero_pages || !e->page_buf) goto fail;
    void* log = map_anon(CRAM_FAULT_LOG_SIZE * sizeof(uint64_t));
    e->shared->fault_log = (uint64_t)(uintptr_t)log;
    if (!log) goto fail;

    uint32_t mode = CRAM_UFFD_MODE_AUTO; /* replaced by the mode obtained */
    e->uffd = uffd_open(config->forced_mode, &mode);
    if (e->uffd < 0) { err = errno; goto fail; }
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
    if (ioctl(e->uffd, UFFDIO_API, &api) != 0) { err = errno == EINVAL ? EPROTONOSUPPORT : errno; goto fail; }
    if (!(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) { err = EPROTONOSUPPORT; goto fail; }
    e->shared->uffd_mode = mode;

    e->stop_fd = eventfd(0, EFD_CLOEXEC);
    e->reclaim_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->stop_fd < 0 || e->reclaim_fd < 0) { err = errno; goto fail; }
    if ((err = pthread_create(&e->service, NULL, service_main, e)) != 0) goto fail;
    pthread_setname_np(e->service, "cram-fault");
    *out = e;
    *shared_out = e->shared;
    return 0;
fail:
    engine_free(e);
    errno = err;
    return -1;
}

static void region_release(cram_engine* e, cram_region_desc* r)
{
    struct uffdio_range range = { .start = r->base, .len = r->length };
    (void)ioctl(e->uffd, UFFDIO_UNREGISTER, &range);
    munmap((void*)(uintptr_t)r->base, r->length);
    munmap(r->pte, (r->length >> CRAM_PAGE_SHIFT) * sizeof(uint64_t));
    memset(r, 0, sizeof *r);
}

EXPORT int CramNative_EngineDestroy(cram_engine* e)
{
    if (!e) { errno = EINVAL; return -1; }
    uint64_t one = 1;
    if (write(e->stop_fd, &one, sizeof one) != sizeof one) return -1;
    pthread_join(e->service, NULL);
    for (uint32_t i = 0; i < e->region_count; i++)
        if (e->regions[i].base) region_release(e, &e->regions[i]);
    engine_free(e);
    return 0;
}

EXPORT int CramNative_RegionCreate(cram_engine* e, uint64_t length, uint32_t* region_id, uint64_t* base_out, uint64_t* pte_out)
{
    if (!e || !region_id || !base_out || !pte_out || length == 0 || (length & (CRAM_PAGE_SIZE - 1))) { errno = EINVAL; return -1; }
    void* base = map_anon(length);
    if (!base) return -1;
    void* pte = map_anon((length >> CRAM_PAGE_SHIFT) * sizeof(uint64_t));
    if (!pte) { int err = errno; munmap(base, length); errno = err; return -1; }
    (void)madvise(base, length, MADV_NOHUGEPAGE);
    struct uffdio_register reg = { .range = { .start = (uint64_t)(uintptr_t)base, .len = length },
                                   .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };
    int err = 0;
    if (ioctl(e->uffd, UFFDIO_REGISTER, &reg) != 0) err = errno;
    else if (!(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)) || !(reg.ioctls & (1ull << _UFFDIO_COPY))) err = EPROTONOSUPPORT;
    if (err) {
        munmap(base, length);
        munmap(pte, (length >> CRAM_PAGE_SHIFT) * sizeof(uint64_t));
        errno = err;
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    uint32_t id = 0;
    while (id < CRAM_MAX_REGIONS && e->regions[id].base) id++;
    if (id == CRAM_MAX_REGIONS) {
        pthread_mutex_unlock(&e->lock);
        cram_region_desc tmp = { .base = (uint64_t)(uintptr_t)base, .length = length, .pte = pte };
        region_release(e, &tmp);
        errno = EMFILE;
        return -1;
    }
    cram_region_desc* r = &e->regions[id];
    r->base = (uint64_t)(uintptr_t)base;
    r->length = length;
    r->pte = pte;
    r->id = id;
    __atomic_store_n(&r->active, 1, __ATOMIC_RELEASE);
    if (id + 1 > e->region_count) e->region_count = id + 1;
    pthread_mutex_unlock(&e->lock);
    *region_id = id;
    *base_out = r->base;
    *pte_out = (uint64_t)(uintptr_t)pte;
    return 0;
}

/* Fences the service out of a region: it checks `active` under the lock, so once this returns it
 * never reads the region's page table again. Faults in the region are no longer resolved. */
EXPORT int CramNative_RegionDeactivate(cram_engine* e, uint32_t region_id)
{
    if (!e || region_id >= CRAM_MAX_REGIONS || !e->regions[region_id].base) { errno = EINVAL; return -1; }
    pthread_mutex_lock(&e->lock);
    __atomic_store_n(&e->regions[region_id].active, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&e->lock);
    return 0;
}

/* Destroys a deactivated region (reclaim must be paused, so no page is EVICTING or DROPPING):
 * takes its pages out of the counters, pushes every slot its page table still names on the stale
 * list (managed code frees them, as it frees any stale copy), then unregisters and unmaps it. */
EXPORT int CramNative_RegionDestroy(cram_engine* e, uint32_t region_id)
{
    if (!e || region_id >= CRAM_MAX_REGIONS || !e->regions[region_id].base ||
        __atomic_load_n(&e->regions[region_id].active, __ATOMIC_ACQUIRE)) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    cram_region_desc* r = &e->regions[region_id];
    cram_shared* s = e->shared;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT, populated = 0, resident = 0;
    for (uint64_t i = 0; i < pages; i++) {
        uint64_t p = r->pte[i];
        uint32_t state = CRAM_PTE_STATE(p);
        if (state == CRAM_PTE_EMPTY) continue;
        populated++;
        if (state != CRAM_PTE_EVICTED) resident++;
        if (state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING || state == CRAM_PTE_EVICTED)
            stale_push(s, CRAM_PTE_SLOT(p));
    }
    __atomic_fetch_sub(&s->stats.resident_pages, resident, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&s->stats.populated_pages, populated, __ATOMIC_RELAXED);
    region_release(e, r);
    e->next_first_touch[region_id] = 0;
    pthread_mutex_unlock(&e->lock);
    return 0;
}

/* ------------------------------------------------------------------ batched page operations */

static int region_checked(cram_engine* e, uint32_t region_id, const uint64_t* pages, int32_t count, cram_region_desc** out)
{
    if (!e || region_id >= CRAM_MAX_REGIONS || count < 0 || (count && !pages) ||
        !__atomic_load_n(&e->regions[region_id].active, __ATOMIC_ACQUIRE)) {
        errno = EINVAL;
        return -1;
    }
    cram_region_desc* r = &e->regions[region_id];
    uint64_t n = r->length >> CRAM_PAGE_SHIFT;
    for (int32_t i = 0; i < count; i++) {
        if (pages[i] >= n) { errno = ERANGE; return -1; }
        if (i > 0 && pages[i] <= pages[i - 1]) { errno = EINVAL; return -1; } /* reclaim sorts once */
    }
    *out = r;
    return 0;
}

/* Write-protects the given pages (sorted ascending), one ioctl per run of contiguous pages. */
EXPORT int CramNative_WriteProtectPages(cram_engine* e, uint32_t region_id, const uint64_t* pages, int32_t count)
{
    cram_region_desc* r;
    if (region_checked(e, region_id, pages, count, &r) != 0) return -1;
    const uint64_t* sorted = pages;
    for (int32_t i = 0; i < count;) {
        int32_t j = i + 1;
        while (j < count && sorted[j] == sorted[j - 1] + 1) j++;
        if (uffd_writeprotect(e->uffd, r->base + (sorted[i] << CRAM_PAGE_SHIFT),
                              (uint64_t)(j - i) << CRAM_PAGE_SHIFT, 1) != 0)
            return -1;
        i = j;
    }
    return 0;
}

/* CLEAN → DROPPING → MADV_DONTNEED → EVICTED for each page still CLEAN; others are skipped.
 * `pages` (sorted ascending) is compacted in place: the first *dropped entries are the pages that
 * were evicted, still in order. */
EXPORT int CramNative_DropPages(cram_engine* e, uint32_t region_id, uint64_t* pages, int32_t count, int32_t* dropped)
{
    cram_region_desc* r;
    if (!dropped) { errno = EINVAL; return -1; }
    if (region_checked(e, region_id, pages, count, &r) != 0) return -1;
    uint64_t* ptes = r->pte;
    int32_t n = 0;
    for (int32_t i = 0; i < count; i++) {
        uint64_t p = load_acquire(&ptes[pages[i]]);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_CLEAN) continue;
        if (!cas(&ptes[pages[i]], p, CRAM_PTE_MAKE(CRAM_PTE_DROPPING, CRAM_PTE_SLOT(p)))) continue;
        pages[n++] = pages[i];
    }
    int err = 0;
    int32_t evicted = 0;
    for (int32_t i = 0; i < n;) {
        int32_t j = i + 1;
        while (j < n && pages[j] == pages[j - 1] + 1) j++;
        /* Cannot fail on our own anonymous mapping; if it ever does, those pages are still mapped
         * (and write-protected), so they go back to CLEAN rather than claim to be evicted. */
        int ok = madvise((void*)(uintptr_t)(r->base + (pages[i] << CRAM_PAGE_SHIFT)), (size_t)(j - i) << CRAM_PAGE_SHIFT,
                         MADV_DONTNEED) == 0;
        if (!ok) err = errno;
        for (int32_t k = i; k < j; k++) {
            uint64_t* pte = &ptes[pages[k]];
            store_release(pte, CRAM_PTE_MAKE(ok ? CRAM_PTE_EVICTED : CRAM_PTE_CLEAN, CRAM_PTE_SLOT(*pte)));
            if (ok) pages[evicted++] = pages[k];
        }
        i = j;
    }
    __atomic_fetch_sub(&e->shared->stats.resident_pages, (uint64_t)evicted, __ATOMIC_RELAXED);
    add_counter(&e->shared->stats.evicted_pages_total, (uint64_t)evicted);
    *dropped = evicted;
    if (err) { errno = err; return -1; }
    return 0;
}

EXPORT int CramNative_WaitReclaimSignal(cram_engine* e, int32_t timeout_ms, int32_t* signalled)
{
    if (!e || !signalled) { errno = EINVAL; return -1; }
    struct pollfd fd = { .fd = e->reclaim_fd, .events = POLLIN };
    int rc = poll(&fd, 1, timeout_ms);
    if (rc < 0 && errno != EINTR) return -1;
    *signalled = 0;
    if (rc > 0) {
        uint64_t v;
        if (read(e->reclaim_fd, &v, sizeof v) == sizeof v) *signalled = 1;
        __atomic_store_n(&e->reclaim_signalled, 0, __ATOMIC_RELEASE);
    }
    return 0;
}

EXPORT int CramNative_SignalReclaim(cram_engine* e)
{
    if (!e) { errno = EINVAL; return -1; }
    uint64_t one = 1;
    return write(e->reclaim_fd, &one, sizeof one) == sizeof one ? 0 : -1;
}

/* Compaction: copies each object to its new place and points its handle there. With an engine,
 * under the lock the fault service holds while resolving faults, so it never reads a half-moved
 * object or an old address that is about to be reused. */
EXPORT int CramNative_PoolMove(cram_engine* e, uint64_t handle_directory, const cram_pool_move* moves, int32_t count)
{
    if (!handle_directory || count < 0 || (count && !moves)) { errno = EINVAL; return -1; }
    if (e) pthread_mutex_lock(&e->lock);
    for (int32_t i = 0; i < count; i++) {
        cram_pool_handle* h = handle_get(handle_directory, moves[i].handle);
        memmove((void*)(uintptr_t)moves[i].destination, (const void*)(uintptr_t)h->address, h->length);
        __atomic_store_n(&h->address, moves[i].destination, __ATOMIC_RELEASE);
        h->zspage = moves[i].zspage;
    }
    if (e) pthread_mutex_unlock(&e->lock);
    return 0;
}

/* Pool arenas: anonymous, NORESERVE (pages cost memory only once touched), optionally mlocked. */
EXPORT int CramNative_ArenaMap(uint64_t bytes, int32_t lock, uint64_t* address)
{
    if (!address || bytes == 0 || (bytes & (CRAM_PAGE_SIZE - 1))) { errno = EINVAL; return -1; }
    void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    (void)madvise(p, bytes, MADV_NOHUGEPAGE); /* pages are discarded one zspage at a time */
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
