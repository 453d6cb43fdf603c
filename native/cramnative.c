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
#include <signal.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define EXPORT __attribute__((visibility("default")))

/* The system liblz4.so.1 (no -dev package needed): the one function we use, as in lz4.h 1.9. */
extern int LZ4_decompress_safe(const char* src, char* dst, int compressedSize, int dstCapacity);
extern int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);

#define FAULT_AROUND_MAX 64u
#define FIRST_TOUCH_STREAMS 4
#define SWAPIN_STREAMS 4
#define READAHEAD_MIN 8      /* pages brought in ahead by the second fault of a sequential stream */
#define READAHEAD_MAX 128     /* the window doubles up to this */
#define READAHEAD_CHUNK 8    /* pages per UFFDIO_COPY: the reader resumes after the first chunk */
#define MSG_BATCH 32
/* One bit of a region's touched map covers the page-table entries of one 4 KiB page of the table. */
#define TOUCHED_BLOCK_SHIFT 9
#define TOUCHED_BLOCK_PAGES (1ull << TOUCHED_BLOCK_SHIFT)
/* UFFDIO_POISON (Linux 6.6) and its feature bit, for headers older than the kernel. */
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
    struct uffdio_range range;
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)
#endif
#define POISON_MODE_DONTWAKE 1ull

/* A region as the service sees it. Private to native code: C# gets base and page table from
 * CramNative_RegionCreate and never reads this table. */
typedef struct cram_region_desc {
    uint64_t base;   /* region start address */
    uint64_t length; /* bytes, multiple of CRAM_PAGE_SIZE */
    uint64_t* pte;   /* the page table: length / CRAM_PAGE_SIZE words */
    uint64_t* touched; /* bit b: a page of PTE block b (TOUCHED_BLOCK_PAGES entries) left EMPTY */
    uint64_t touched_blocks; /* bits set in touched: pages of the page table in use (cram_stats.page_table_pages) */
    uint32_t id;     /* index in regions[] */
    uint32_t active; /* 1 while the service may resolve faults in it */
    uint64_t faults_first_touch;   /* this region's share of the fault counters (cram_region_census) */
    uint64_t faults_swapin;
    uint64_t faults_write_protect;
} cram_region_desc;

struct cram_engine {
    cram_shared* shared;
    cram_engine_config config;
    int uffd;
    int stop_fd;
    int reclaim_fd;
    int reclaim_signalled;
    int pidfd; /* this process, for process_madvise (-1: not available, drop run by run); drops run one at a time (maintenance lock) */
    pthread_t service;
    pthread_mutex_t lock; /* held by the service while it resolves a batch, and by region create/destroy */
    unsigned char* zero_pages; /* FAULT_AROUND_MAX read-only zero pages */
    unsigned char* page_buf;   /* one page the service rebuilds into */
    unsigned char* file_buf;   /* two pages, page-aligned: the covering pages of a file extent */
    uint32_t poison;           /* UFFDIO_POISON is available */
    /* Per region, the page after each of the last FIRST_TOUCH_STREAMS first-touch runs: a first touch
     * there continues a sequential stream (threads filling chunks of their own each have one). */
    uint64_t next_first_touch[CRAM_MAX_REGIONS][FIRST_TOUCH_STREAMS];
    uint8_t next_stream[CRAM_MAX_REGIONS];
    /* Per region, read swap-in streams (swapin_readahead): the page after each one's last window,
     * and the window it reached. */
    uint64_t next_swapin[CRAM_MAX_REGIONS][SWAPIN_STREAMS];
    uint32_t swapin_window[CRAM_MAX_REGIONS][SWAPIN_STREAMS];
    uint8_t next_swapin_stream[CRAM_MAX_REGIONS];
    unsigned char* readahead_buf; /* READAHEAD_CHUNK pages the service decompresses ahead into */
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
_Static_assert(CRAM_PTE_PLACED_WRITABLE < CONTRACT_ENUM_LIMIT && CRAM_BACKEND_CRAM < CONTRACT_ENUM_LIMIT &&
               CRAM_UFFD_MODE_USER_MODE_ONLY < CONTRACT_ENUM_LIMIT && CRAM_CONTRACT_CONSTANT < CONTRACT_ENUM_LIMIT,
               "an enumerator of the contract is not listed by contract_enums");

static void contract_enums(contract_builder* b)
{
    for (uint32_t v = 0; v < CONTRACT_ENUM_LIMIT; v++) {
        switch ((enum cram_pte_state)v) {
        ENUMERATOR(CRAM_PTE_EMPTY); ENUMERATOR(CRAM_PTE_DIRTY); ENUMERATOR(CRAM_PTE_CLEAN);
        ENUMERATOR(CRAM_PTE_EVICTING); ENUMERATOR(CRAM_PTE_DROPPING); ENUMERATOR(CRAM_PTE_EVICTED);
        ENUMERATOR(CRAM_PTE_INCOMPRESSIBLE); ENUMERATOR(CRAM_PTE_UNPROTECTING);
        ENUMERATOR(CRAM_PTE_PLACED); ENUMERATOR(CRAM_PTE_PLACED_WRITABLE);
        }
        switch ((enum cram_backend)v) {
        ENUMERATOR(CRAM_BACKEND_FREE); ENUMERATOR(CRAM_BACKEND_SAME_FILLED);
        ENUMERATOR(CRAM_BACKEND_POOL); ENUMERATOR(CRAM_BACKEND_FILE); ENUMERATOR(CRAM_BACKEND_CRAM);
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
    FIELD(cram_slot, location); FIELD(cram_slot, checksum); FIELD(cram_slot, length); FIELD(cram_slot, backend);
    FIELD(cram_slot, flags);

    STRUCT(cram_slot_move);
    FIELD(cram_slot_move, slot); FIELD(cram_slot_move, from_location); FIELD(cram_slot_move, to_location);
    FIELD(cram_slot_move, from_backend); FIELD(cram_slot_move, to_backend); FIELD(cram_slot_move, reserved);
    FIELD(cram_slot_move, moved);

    STRUCT(cram_move_out);
    FIELD(cram_move_out, page); FIELD(cram_move_out, slot); FIELD(cram_move_out, handle); FIELD(cram_move_out, length);
    FIELD(cram_move_out, checksum); FIELD(cram_move_out, moved); FIELD(cram_move_out, raw);

    STRUCT(cram_region_census);
    FIELD(cram_region_census, populated_pages); FIELD(cram_region_census, resident_pages);
    FIELD(cram_region_census, evicted_pages); FIELD(cram_region_census, clean_copy_pages);
    FIELD(cram_region_census, placed_pages); FIELD(cram_region_census, same_filled_pages);
    FIELD(cram_region_census, stored_bytes); FIELD(cram_region_census, faults_first_touch);
    FIELD(cram_region_census, faults_swapin); FIELD(cram_region_census, faults_write_protect);

    STRUCT(cram_place);
    FIELD(cram_place, page); FIELD(cram_place, slot); FIELD(cram_place, size); FIELD(cram_place, placed);

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
    FIELD(cram_stats, service_busy_ns); FIELD(cram_stats, faults_swapin_file); FIELD(cram_stats, checksum_failures);
    FIELD(cram_stats, read_errors); FIELD(cram_stats, bad_page_faults);
    FIELD(cram_stats, cram_placed_pages); FIELD(cram_stats, cram_placed_bytes); FIELD(cram_stats, cram_writable_pages);
    FIELD(cram_stats, cram_max_writable); FIELD(cram_stats, cram_made_writable); FIELD(cram_stats, cram_promotions);
    FIELD(cram_stats, cram_promotion_copy_ns); FIELD(cram_stats, cram_placement_refusals);
    FIELD(cram_stats, readahead_pages);
    FIELD(cram_stats, clean_copy_pages);
    FIELD(cram_stats, clean_copy_bytes);
    FIELD(cram_stats, prefetched_pages);
    FIELD(cram_stats, discarded_pages);
    FIELD(cram_stats, workingset_activations);
    FIELD(cram_stats, page_table_pages);
    FIELD(cram_stats, memory_limit_waits);
    FIELD(cram_stats, swapin_latency_us_log2);

    STRUCT(cram_engine_config);
    FIELD(cram_engine_config, forced_mode); FIELD(cram_engine_config, spin_us);
    FIELD(cram_engine_config, soft_limit_pages); FIELD(cram_engine_config, hard_limit_pages);
    FIELD(cram_engine_config, throttle_max_us); FIELD(cram_engine_config, fault_around_pages);

    STRUCT(cram_shared);
    FIELD(cram_shared, stats); FIELD(cram_shared, slot_directory); FIELD(cram_shared, handle_directory);
    FIELD(cram_shared, stale_head); FIELD(cram_shared, fault_log); FIELD(cram_shared, fault_log_head);
    FIELD(cram_shared, fault_log_tail); FIELD(cram_shared, uffd_mode); FIELD(cram_shared, reclaim_stalled);
    FIELD(cram_shared, backing_fd); FIELD(cram_shared, backing_direct);
    FIELD(cram_shared, cram_capacity_bytes); FIELD(cram_shared, cram_writable_limit);
    FIELD(cram_shared, cram_write_control); FIELD(cram_shared, reclaim_running); FIELD(cram_shared, activate_distance_pages);
    FIELD(cram_shared, memory_wait_us);

    STRUCT(cram_contract_entry);
    FIELD(cram_contract_entry, name); FIELD(cram_contract_entry, value); FIELD(cram_contract_entry, kind);
    FIELD(cram_contract_entry, size);
}

static void contract_constants(contract_builder* b)
{
    CONSTANT(CRAM_PAGE_SIZE); CONSTANT(CRAM_PAGE_SHIFT); CONSTANT(CRAM_MAX_REGIONS); CONSTANT(CRAM_SWAPIN_LATENCY_BUCKETS);
    CONSTANT(CRAM_PTE_STATE_MASK); CONSTANT(CRAM_PTE_REFERENCED); CONSTANT(CRAM_PTE_SLOT_SHIFT);
    CONSTANT(CRAM_PTE_ACTIVE); CONSTANT(CRAM_PTE_STAMPED); CONSTANT(CRAM_PTE_TRIAL); CONSTANT(CRAM_PTE_SLOT_MASK); CONSTANT(CRAM_PTE_STAMP_SHIFT);
    CONSTANT(CRAM_EVICTION_STAMP_UNIT);
    CONSTANT(CRAM_SLOT_ZERO);
    CONSTANT(CRAM_SLOT_RAW); CONSTANT(CRAM_SLOT_STALE); CONSTANT(CRAM_SLOT_BAD); CONSTANT(CRAM_SLOT_REFERENCED);
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

/* Slot flags live in the top byte of the 32-bit word at offset 12 (length, backend, flags); both
 * sides change them with 32-bit atomics on that word (cramnative.h, cram_slot). */
#define SLOT_FLAGS_SHIFT 24
static inline uint32_t* slot_word(cram_slot* slot) { return (uint32_t*)(void*)&slot->length; }
static inline uint32_t slot_flags(cram_slot* slot)
{
    return __atomic_load_n(slot_word(slot), __ATOMIC_ACQUIRE) >> SLOT_FLAGS_SHIFT;
}
static inline void slot_flags_or(cram_slot* slot, uint32_t flags)
{
    __atomic_fetch_or(slot_word(slot), flags << SLOT_FLAGS_SHIFT, __ATOMIC_ACQ_REL);
}

/* A page moved into CLEAN (sign +1) or out of it (-1): cramnative.h, "Clean copies". */
static void clean_copy_count(cram_shared* s, uint64_t id, int sign)
{
    uint64_t bytes = id == CRAM_SLOT_ZERO ? 0 : slot_get(s, id)->length;
    if (sign > 0) {
        __atomic_fetch_add(&s->stats.clean_copy_pages, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->stats.clean_copy_bytes, bytes, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_sub(&s->stats.clean_copy_pages, 1, __ATOMIC_RELAXED);
        __atomic_fetch_sub(&s->stats.clean_copy_bytes, bytes, __ATOMIC_RELAXED);
    }
}

/* The copy in `id` no longer matches the page: mark it stale and hand it to managed code to free
 * (its checksum field becomes the list's link). */
static void stale_push(cram_shared* s, uint64_t id)
{
    if (id == CRAM_SLOT_ZERO) {
        add_counter(&s->stats.zero_copies_released, 1);
        return;
    }
    cram_slot* slot = slot_get(s, id);
    slot_flags_or(slot, CRAM_SLOT_STALE);
    uint64_t head = load_acquire(&s->stale_head);
    do {
        __atomic_store_n(&slot->checksum, (uint32_t)head, __ATOMIC_RELAXED);
    } while (!__atomic_compare_exchange_n(&s->stale_head, &head, id, 1, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE));
}

/* Whether a page in `state` names its slot (the slot's copy is the page's): the one list region
 * destroy and the reaper's mark both use. */
static inline int pte_names_slot(uint32_t state)
{
    return state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING || state == CRAM_PTE_EVICTED ||
           state == CRAM_PTE_PLACED || state == CRAM_PTE_PLACED_WRITABLE;
}

/* The CRAM node's ledger (cramnative.h, "CRAM node"): would placed_bytes + writable pages at a whole
 * page each still fit the device? Under the engine lock, where the ledger changes. */
static inline int cram_ledger_fits(const cram_shared* s, uint64_t placed_bytes, uint64_t writable_pages)
{
    return placed_bytes + writable_pages * CRAM_PAGE_SIZE <= s->cram_capacity_bytes;
}

/* The next block at or after `block` that first touch has marked, or `blocks` if none. */
static uint64_t touched_next(const cram_region_desc* r, uint64_t block, uint64_t blocks)
{
    while (block < blocks) {
        uint64_t word = r->touched[block >> 6] >> (block & 63);
        if (word) return block + (uint64_t)__builtin_ctzll(word);
        block = (block | 63) + 1;
    }
    return blocks;
}

/* The next page at or after `page` in a block first touch has marked, or the region's page count
 * if none: for (i = touched_page_next(r, 0); i < pages; i = touched_page_next(r, i + 1)) visits the
 * pages that can be other than EMPTY, O(touched) rather than O(virtual size). */
static uint64_t touched_page_next(const cram_region_desc* r, uint64_t page)
{
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    if (page >= pages) return pages;
    uint64_t blocks = (pages + TOUCHED_BLOCK_PAGES - 1) >> TOUCHED_BLOCK_SHIFT;
    uint64_t block = page >> TOUCHED_BLOCK_SHIFT;
    uint64_t next = touched_next(r, block, blocks);
    if (next == block) return page; /* still inside a marked block */
    return next == blocks ? pages : next << TOUCHED_BLOCK_SHIFT;
}

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
static uint32_t crc32c(const void* data, size_t n)
{
    pthread_once(&crc32c_once, crc32c_init);
    const unsigned char* p = data;
    uint32_t crc = ~0u;
    if (crc32c_hardware) return ~crc32c_sse42(crc, p, n);
    for (; n; n--, p++) crc = (crc >> 8) ^ crc32c_table[(crc ^ *p) & 0xFF];
    return ~crc;
}

static void fault_log_append(cram_shared* s, uint32_t region, uint64_t page)
{
    uint64_t head = s->fault_log_head; /* written under the engine lock only */
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
    uint64_t soft = __atomic_load_n(&e->config.soft_limit_pages, __ATOMIC_RELAXED);
    if (soft && now > soft) signal_reclaim(e);
}

/* Before a fault adds a resident page: if resident is at the hard limit, give reclaim a bounded
 * time to catch up. Bounded, because reclaim is managed code that a GC may be suspending; and
 * not at all while reclaim reports it has nothing left to evict (say, incompressible data):
 * then the limit cannot be held and waiting would only slow the application down. Called by the
 * service with the engine lock held; it lets the lock go while it waits, because reclaim takes it
 * (writeback's slot moves, pool compaction): the caller re-finds its region afterwards. */
static void throttle(cram_engine* e)
{
    cram_stats* st = &e->shared->stats;
    uint32_t* stalled = &e->shared->reclaim_stalled;
    uint64_t* memory_wait = &e->shared->memory_wait_us;
    uint64_t wait_us = __atomic_load_n(memory_wait, __ATOMIC_ACQUIRE);
    if (wait_us) {
        /* The memory limit cannot be held ("Memory limit" in cramnative.h): every page added waits
         * this long, or until managed code says memory is back under the limit, then proceeds. */
        add_counter(&st->memory_limit_waits, 1);
        signal_reclaim(e);
        uint64_t until = now_ns() + wait_us * 1000ull;
        struct timespec pause = { 0, 50000 };
        pthread_mutex_unlock(&e->lock);
        while (__atomic_load_n(memory_wait, __ATOMIC_ACQUIRE) && now_ns() < until)
            nanosleep(&pause, NULL);
        pthread_mutex_lock(&e->lock);
        return;
    }
    uint64_t hard = __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED);
    if (!hard || __atomic_load_n(&st->resident_pages, __ATOMIC_RELAXED) < hard)
        return;
    signal_reclaim(e);
    if (__atomic_load_n(stalled, __ATOMIC_ACQUIRE)) return;
    add_counter(&st->throttle_waits, 1);
    uint64_t deadline = now_ns() + (uint64_t)e->config.throttle_max_us * 1000ull;
    struct timespec nap = { 0, 20000 };
    pthread_mutex_unlock(&e->lock);
    while (__atomic_load_n(&st->resident_pages, __ATOMIC_RELAXED) >= __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED) &&
           __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED) &&
           !__atomic_load_n(stalled, __ATOMIC_ACQUIRE) && now_ns() < deadline)
        nanosleep(&nap, NULL);
    pthread_mutex_lock(&e->lock);
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
    uint64_t hard = __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED);
    if (__atomic_load_n(&s->memory_wait_us, __ATOMIC_RELAXED) || (hard && __atomic_load_n(&s->stats.resident_pages, __ATOMIC_RELAXED) >= hard))
        around = 1; /* at the hard limit (a throttled fault that gave up waiting) or over the memory limit: one page a fault */
    /* Fault around only where a first touch continues a sequential stream, or lands right after a
     * page already in use (a fill that another thread's chunk precedes), for a write or a read, and
     * then with writable zero pages even for a read: managed fills read their destination first
     * (the JIT's null check), and a shared zero page there costs every page a second fault, a
     * copy-on-write that flushes the TLB of every CPU the process runs on (measured: fill 2.4x
     * faster). A sparse first touch - a hash table's pattern - maps its one page; a lone read maps
     * the shared zero page, which costs no memory. */
    uint64_t* streams = e->next_first_touch[r->id];
    int stream = -1;
    for (int k = 0; k < FIRST_TOUCH_STREAMS; k++)
        if (page != 0 && streams[k] == page) stream = k;
    int sequential = stream >= 0 || (page != 0 && CRAM_PTE_STATE(load_acquire(&ptes[page - 1])) != CRAM_PTE_EMPTY);
    if (sequential && around > 1) {
        uint64_t lo = page - page % around, hi = lo + around - 1;
        if (hi >= pages) hi = pages - 1;
        while (first > lo && CRAM_PTE_STATE(load_acquire(&ptes[first - 1])) == CRAM_PTE_EMPTY) first--;
        while (last < hi && CRAM_PTE_STATE(load_acquire(&ptes[last + 1])) == CRAM_PTE_EMPTY) last++;
    }
    uint64_t n = last - first + 1;
    uint64_t addr = r->base + (first << CRAM_PAGE_SHIFT);
    int rc = write || n > 1 ? uffd_copy(e->uffd, addr, e->zero_pages, n << CRAM_PAGE_SHIFT, 0)
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
    if (stream < 0) { /* a new stream replaces the oldest */
        stream = e->next_stream[r->id];
        e->next_stream[r->id] = (uint8_t)((stream + 1) % FIRST_TOUCH_STREAMS);
    }
    streams[stream] = last + 1;
    uint64_t made = 0;
    for (uint64_t i = first; i <= last; i++) {
        if (cas(&ptes[i], CRAM_PTE_MAKE(CRAM_PTE_EMPTY, 0), CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0))) {
            fault_log_append(s, r->id, i);
            made++;
        }
    }
    for (uint64_t b = first >> TOUCHED_BLOCK_SHIFT; b <= last >> TOUCHED_BLOCK_SHIFT; b++) {
        uint64_t bit = 1ull << (b & 63);
        if (r->touched[b >> 6] & bit) continue;
        r->touched[b >> 6] |= bit; /* under the engine lock, like every reader */
        r->touched_blocks++;
        add_counter(&s->stats.page_table_pages, 1);
    }
    add_counter(&s->stats.faults_zero, 1);
    add_counter(&r->faults_first_touch, 1);
    add_counter(&s->stats.populated_pages, made);
    resident_add(e, made);
    uffd_wake(e->uffd, addr, n << CRAM_PAGE_SHIFT); /* threads faulting anywhere in the run */
}

/* Pages whose stored bytes cannot be trusted are never mapped: poison the page, so this access and
 * every later one gets SIGBUS from the kernel (as on a swap read error), or, without UFFDIO_POISON,
 * send SIGBUS to the faulting thread and let it retry into the signal. */
static void fail_access(cram_engine* e, uint64_t addr, uint32_t tid, uint64_t slot_id, const char* why)
{
    add_counter(&e->shared->stats.bad_page_faults, 1);
    /* The process is about to get SIGBUS: say why, once per fault, as the kernel logs a swap read error. */
    char line[200];
    int n = snprintf(line, sizeof line, "cramcore: page at 0x%llx not mapped: %s (slot %llu); SIGBUS to thread %u\n",
                     (unsigned long long)addr, why, (unsigned long long)slot_id, tid);
    if (n > 0) { ssize_t w = write(STDERR_FILENO, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1)); (void)w; }
    if (e->poison) {
        struct uffdio_poison p = { .range = { .start = addr, .len = CRAM_PAGE_SIZE }, .mode = 0 };
        if (ioctl(e->uffd, UFFDIO_POISON, &p) == 0 || errno == EEXIST) return; /* wakes the thread */
    }
    if (tid == 0 || syscall(SYS_tgkill, getpid(), (pid_t)tid, SIGBUS) != 0) add_counter(&e->shared->stats.service_errors, 1);
    uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
}

/* Reads a file extent's covering pages into file_buf (page-aligned, as O_DIRECT needs); a failed or
 * short read is retried once. Returns the extent's first byte, or NULL. */
static const unsigned char* file_read(cram_engine* e, uint64_t location, uint32_t length)
{
    int fd = e->shared->backing_fd;
    uint64_t first = location & ~(uint64_t)(CRAM_PAGE_SIZE - 1);
    uint64_t span = ((location + length + CRAM_PAGE_SIZE - 1) & ~(uint64_t)(CRAM_PAGE_SIZE - 1)) - first;
    for (int attempt = 0; attempt < 2 && fd >= 0; attempt++) {
        ssize_t n = pread(fd, e->file_buf, span, (off_t)first);
        if (n == (ssize_t)span) return e->file_buf + (location - first);
    }
    add_counter(&e->shared->stats.read_errors, 1);
    return NULL;
}

/* The native read half of the backend contract (cramnative.h, "Virtual swap"): the page's bytes for
 * `slot`, checked against its checksum, or NULL if they cannot be trusted (counted; *why says why).
 * The page is rebuilt into `dst`, except a raw copy in the pool, which is returned where it lies. */
static const void* slot_read(cram_engine* e, cram_slot* slot, unsigned char* dst, uint64_t** counter, const char** why)
{
    cram_shared* s = e->shared;
    const unsigned char* stored;
    switch (slot->backend) {
    case CRAM_BACKEND_SAME_FILLED: {
        uint64_t* words = (uint64_t*)dst;
        for (uint32_t i = 0; i < CRAM_PAGE_SIZE / 8; i++) words[i] = slot->location;
        *counter = &s->stats.faults_swapin_same;
        return dst;
    }
    case CRAM_BACKEND_POOL:
        stored = (const unsigned char*)(uintptr_t)handle_get(s->handle_directory, slot->location)->address;
        break;
    case CRAM_BACKEND_FILE:
        if (!(stored = file_read(e, slot->location, slot->length))) { *why = "backing-file read failed twice"; return NULL; }
        add_counter(&s->stats.faults_swapin_file, 1);
        break;
    default:
        add_counter(&s->stats.service_errors, 1);
        *why = "slot names no backend";
        return NULL;
    }
    if (crc32c(stored, slot->length) != slot->checksum) {
        add_counter(&s->stats.checksum_failures, 1);
        *why = slot->backend == CRAM_BACKEND_FILE ? "stored copy in the backing file failed its checksum"
                                                  : "stored copy in the pool failed its checksum";
        return NULL;
    }
    if (slot_flags(slot) & CRAM_SLOT_RAW) {
        *counter = &s->stats.faults_swapin_raw;
        return stored;
    }
    *counter = &s->stats.faults_swapin_lz4;
    if (LZ4_decompress_safe((const char*)stored, (char*)dst, (int)slot->length, CRAM_PAGE_SIZE) != (int)CRAM_PAGE_SIZE) {
        add_counter(&s->stats.service_errors, 1); /* checksum matched: the copy was stored wrong */
        *why = "stored copy does not decompress";
        return NULL;
    }
    return dst;
}

/* Decodes the EVICTED pages from q on (before end, READAHEAD_CHUNK at most) into readahead_buf and
 * their page-table words into olds[]; stops at the first page it cannot bring in ahead: not EVICTED, found
 * bad, unreadable, or (unless `file`) backed by the file. Returns how many it decoded. */
static uint32_t decode_ahead(cram_engine* e, cram_region_desc* r, uint64_t q, uint64_t end, int file, uint64_t* olds)
{
    cram_shared* s = e->shared;
    uint32_t n = 0;
    while (q < end && n < READAHEAD_CHUNK) {
        uint64_t p = load_acquire(&r->pte[q]);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_EVICTED) break;
        uint64_t id = CRAM_PTE_SLOT(p);
        unsigned char* dst = e->readahead_buf + ((uint64_t)n << CRAM_PAGE_SHIFT);
        if (id == CRAM_SLOT_ZERO) {
            memset(dst, 0, CRAM_PAGE_SIZE);
        } else {
            cram_slot* slot = slot_get(s, id);
            uint64_t* counter;
            const char* why;
            const void* src;
            if ((slot_flags(slot) & CRAM_SLOT_BAD) || (!file && slot->backend == CRAM_BACKEND_FILE) ||
                !(src = slot_read(e, slot, dst, &counter, &why)))
                break; /* its own fault deals with it (and fails it, if it is bad) */
            if (src != dst) memcpy(dst, src, CRAM_PAGE_SIZE);
            slot_flags_or(slot, CRAM_SLOT_REFERENCED);
        }
        olds[n++] = p;
        q++;
    }
    return n;
}

/* Installs the n pages decode_ahead prepared at pages [first, first + n): one UFFDIO_COPY
 * (write-protected), each EVICTED->CLEAN, logged, then a wake for whoever waits in them. -1 if the
 * copy failed: nothing was installed that the page table does not know of (only code holding the
 * engine lock maps pages, and these had none); the pages stay EVICTED for their own faults. The
 * pages are added to *counter before the wake. */
static int install_ahead(cram_engine* e, cram_region_desc* r, uint64_t first, const uint64_t* olds, uint32_t n, uint64_t* counter)
{
    cram_shared* s = e->shared;
    uint64_t addr = r->base + (first << CRAM_PAGE_SHIFT);
    if (uffd_copy(e->uffd, addr, e->readahead_buf, (uint64_t)n << CRAM_PAGE_SHIFT, 1) != 0) {
        add_counter(&s->stats.service_errors, 1);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!cas(&r->pte[first + i], olds[i], CRAM_PTE_MAKE(CRAM_PTE_CLEAN, CRAM_PTE_SLOT(olds[i]))))
            add_counter(&s->stats.service_errors, 1);
        else
            clean_copy_count(s, CRAM_PTE_SLOT(olds[i]), +1);
        fault_log_append(s, r->id, first + i);
    }
    add_counter(counter, n);
    resident_add(e, n);
    /* Last: a reader that resumes finds the pages counted. */
    uffd_wake(e->uffd, addr, (uint64_t)n << CRAM_PAGE_SHIFT); /* readers already waiting in the chunk */
    return 0;
}

/* Swap readahead (cramnative.h, "Readahead"): a read swap-in that continues a sequential stream of
 * read swap-ins brings in the evicted pages after it, as the kernel's swap readahead does, so a
 * sequential reader faults once per window instead of once per page. The window starts at
 * READAHEAD_MIN pages and doubles up to READAHEAD_MAX; it never takes resident memory past the soft
 * limit. Pages come in READAHEAD_CHUNK at a time: one UFFDIO_COPY per chunk, the chunk's states
 * published, then a wake for whoever waits in it; the faulting page itself was woken before any of
 * this, so the reader runs on while the service decompresses the next chunk (measured: this
 * overlap gives 278-290 MiB/s against 245-254 with the whole window done before the wake). A readahead page is installed as a read swap-in installs one: write-protected, CLEAN,
 * keeping its slot. Pages not EVICTED, backed by the file (a read there costs more than a fault
 * saves) or found bad are left to their own faults. Under the engine lock, like every fault. */
static void swapin_readahead(cram_engine* e, cram_region_desc* r, uint64_t page)
{
    cram_shared* s = e->shared;
    uint64_t* next = e->next_swapin[r->id];
    uint32_t* window = e->swapin_window[r->id];
    int k = -1;
    for (int i = 0; i < SWAPIN_STREAMS; i++)
        if (next[i] && page >= next[i] && page - next[i] < READAHEAD_MAX) k = i;
    if (k < 0) { /* a new stream replaces the oldest; its first fault brings in only itself */
        k = e->next_swapin_stream[r->id];
        e->next_swapin_stream[r->id] = (uint8_t)((k + 1) % SWAPIN_STREAMS);
        next[k] = page + 1;
        window[k] = 0;
        return;
    }
    uint64_t w = window[k] ? window[k] * 2 : READAHEAD_MIN;
    if (w > READAHEAD_MAX) w = READAHEAD_MAX;
    window[k] = (uint32_t)w;
    uint64_t soft = __atomic_load_n(&e->config.soft_limit_pages, __ATOMIC_RELAXED);
    uint64_t resident = __atomic_load_n(&s->stats.resident_pages, __ATOMIC_RELAXED);
    if (soft && resident + w > soft) w = soft > resident ? soft - resident : 0;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    uint64_t end = page + 1 + w < pages ? page + 1 + w : pages;
    uint64_t ids[READAHEAD_CHUNK];
    uint64_t q = page + 1;
    while (q < end) {
        uint32_t n = decode_ahead(e, r, q, end, 0, ids);
        if (n == 0) { q++; continue; } /* resident already, or left to its own fault */
        if (install_ahead(e, r, q, ids, n, &s->stats.readahead_pages) != 0) break;
        q += n;
    }
    next[k] = end;
}

/* What a drop writes into an evicted page's word ("Working set" in cramnative.h): the eviction
 * count now, in stamp units, modulo 2^16, and the bit that says it is there. */
static uint64_t eviction_stamp(cram_shared* s)
{
    uint64_t now = __atomic_load_n(&s->stats.evicted_pages_total, __ATOMIC_RELAXED) / CRAM_EVICTION_STAMP_UNIT;
    return ((now & 0xFFFFull) << CRAM_PTE_STAMP_SHIFT) | CRAM_PTE_STAMPED;
}

/* Whether a page evicted with word p, refaulting now, is in the working set: its refault distance
 * (evictions since its drop) is below cram_shared.activate_distance_pages. */
static int refault_activates(cram_shared* s, uint64_t p)
{
    uint64_t threshold = __atomic_load_n(&s->activate_distance_pages, __ATOMIC_RELAXED);
    if (!threshold || !(p & CRAM_PTE_STAMPED)) return 0;
    uint64_t now = __atomic_load_n(&s->stats.evicted_pages_total, __ATOMIC_RELAXED) / CRAM_EVICTION_STAMP_UNIT;
    /* An upper bound: the stamp is the unit the drop fell in, so the distance is up to a unit more. */
    uint64_t distance = (((now - CRAM_PTE_STAMP(p)) & 0xFFFFull) + 1) * CRAM_EVICTION_STAMP_UNIT;
    return distance <= threshold;
}

/* A swap-in taken from its message at t0 is resolved now: count it in its latency bucket. */
static void swapin_latency(cram_shared* s, uint64_t t0)
{
    uint64_t us = (now_ns() - t0) / 1000;
    uint32_t b = us ? 64 - (uint32_t)__builtin_clzll(us) : 0;
    if (b >= CRAM_SWAPIN_LATENCY_BUCKETS) b = CRAM_SWAPIN_LATENCY_BUCKETS - 1;
    add_counter(&s->stats.swapin_latency_us_log2[b], 1);
}

static void resolve_swapin(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t pte, int write, uint32_t tid, uint64_t t0)
{
    cram_shared* s = e->shared;
    uint64_t* ptes = r->pte;
    uint64_t id = CRAM_PTE_SLOT(pte);
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    const void* src = e->zero_pages;
    uint64_t* counter = &s->stats.faults_swapin_same;
    if (id != CRAM_SLOT_ZERO) {
        cram_slot* slot = slot_get(s, id);
        const char* why = "stored copy was found bad before";
        if ((slot_flags(slot) & CRAM_SLOT_BAD) || !(src = slot_read(e, slot, e->page_buf, &counter, &why))) {
            slot_flags_or(slot, CRAM_SLOT_BAD); /* stays EVICTED and named; freed with its region */
            fail_access(e, addr, tid, id, why);
            return;
        }
        if (!write) slot_flags_or(slot, CRAM_SLOT_REFERENCED); /* writeback: recently used */
    }
    if (uffd_copy(e->uffd, addr, src, CRAM_PAGE_SIZE, !write) != 0) {
        if (errno != EEXIST) add_counter(&s->stats.service_errors, 1);
        uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
        return;
    }
    /* Only code holding the engine lock leaves EVICTED, so this CAS cannot fail while the region is active. */
    uint64_t next = write ? CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED : CRAM_PTE_MAKE(CRAM_PTE_CLEAN, id);
    if (refault_activates(s, pte)) {
        next |= CRAM_PTE_ACTIVE;
        add_counter(&s->stats.workingset_activations, 1);
    } else if (!write) {
        next |= CRAM_PTE_TRIAL; /* from far: evicted early, to see whether it comes back soon */
    }
    if (!cas(&ptes[page], pte, next)) add_counter(&s->stats.service_errors, 1);
    else if (!write) clean_copy_count(s, id, +1);
    if (write) stale_push(s, id);
    add_counter(counter, 1);
    add_counter(&r->faults_swapin, 1);
    fault_log_append(s, r->id, page);
    resident_add(e, 1);
    swapin_latency(s, t0); /* before the wake, so the thread that resumes finds its swap-in counted */
    uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
    if (!write && !__atomic_load_n(&e->shared->memory_wait_us, __ATOMIC_RELAXED)) swapin_readahead(e, r, page);
}

static void resolve_missing(cram_engine* e, cram_region_desc* r, uint64_t page, int write, uint32_t tid, uint64_t t0)
{
    uint64_t* pte = &r->pte[page];
    uint64_t p = wait_not_dropping(pte);
    switch (CRAM_PTE_STATE(p)) {
    case CRAM_PTE_EMPTY: resolve_first_touch(e, r, page, write); break;
    case CRAM_PTE_EVICTED: resolve_swapin(e, r, page, p, write, tid, t0); break;
    default: /* already resolved by an earlier message for the same page */
        add_counter(&e->shared->stats.faults_spurious, 1);
        uffd_wake(e->uffd, r->base + (page << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE);
        break;
    }
}

/* A write to a placed page (cramnative.h, "CRAM node"): writable in place if the budget and the
 * ledger allow, otherwise promoted to host memory. Under the engine lock, like every ledger change. */
static void resolve_placed_write(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t p)
{
    cram_shared* s = e->shared;
    cram_stats* st = &s->stats;
    uint64_t* pte = &r->pte[page];
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    uint64_t id = CRAM_PTE_SLOT(p);
    uint64_t writable = st->cram_writable_pages;
    int control = __atomic_load_n(&s->cram_write_control, __ATOMIC_ACQUIRE) != 0;
    int allow = !control || (writable < __atomic_load_n(&s->cram_writable_limit, __ATOMIC_ACQUIRE) &&
                             cram_ledger_fits(s, st->cram_placed_bytes, writable + 1));
    if (!cas(pte, p, CRAM_PTE_MAKE(CRAM_PTE_UNPROTECTING, 0))) return; /* the caller retries */
    if (!allow) {
        /* Promotion: a real device would copy the page out of its memory into host memory; the
         * emulation's page is already host memory, so the copy is made and timed, then dropped. */
        uint64_t t0 = now_ns();
        memcpy(e->page_buf, (const void*)(uintptr_t)addr, CRAM_PAGE_SIZE);
        __asm__ volatile("" ::: "memory");
        add_counter(&st->cram_promotion_copy_ns, now_ns() - t0);
    }
    if (uffd_writeprotect(e->uffd, addr, CRAM_PAGE_SIZE, 0) != 0) add_counter(&st->service_errors, 1);
    if (allow) {
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_PLACED_WRITABLE, id) | CRAM_PTE_REFERENCED);
        uint64_t now = __atomic_add_fetch(&st->cram_writable_pages, 1, __ATOMIC_RELAXED);
        if (now > st->cram_max_writable) __atomic_store_n(&st->cram_max_writable, now, __ATOMIC_RELAXED);
        add_counter(&st->cram_made_writable, 1);
        add_counter(&r->faults_write_protect, 1);
    } else {
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED);
        __atomic_fetch_sub(&st->cram_placed_pages, 1, __ATOMIC_RELAXED);
        __atomic_fetch_sub(&st->cram_placed_bytes, slot_get(s, id)->length, __ATOMIC_RELAXED);
        stale_push(s, id); /* the frame is freed and TRIMmed by the reaper */
        add_counter(&st->cram_promotions, 1);
        add_counter(&r->faults_write_protect, 1);
        resident_add(e, 1);
    }
    fault_log_append(s, r->id, page); /* reclaim re-places a writable page, or sees the promoted one */
    uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
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
        if (state == CRAM_PTE_PLACED) {
            resolve_placed_write(e, r, page, p);
            if (CRAM_PTE_STATE(load_acquire(pte)) == CRAM_PTE_PLACED) continue; /* lost a race: again */
            return;
        }
        if (state == CRAM_PTE_PLACED_WRITABLE) { /* writable already (a queued duplicate) */
            add_counter(&s->stats.faults_spurious, 1);
            uffd_wake(e->uffd, addr, CRAM_PAGE_SIZE);
            return;
        }
        /* CLEAN, EVICTING, INCOMPRESSIBLE or DIRTY: hold UNPROTECTING while the protection is
         * cleared, so reclaim cannot claim and re-protect the page in between. */
        if (!cas(pte, p, CRAM_PTE_MAKE(CRAM_PTE_UNPROTECTING, 0))) continue;
        if (uffd_writeprotect(e->uffd, addr, CRAM_PAGE_SIZE, 0) != 0) add_counter(&s->stats.service_errors, 1);
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED | (p & CRAM_PTE_ACTIVE)); /* a write keeps it in the working set */
        switch (state) {
        case CRAM_PTE_CLEAN:
            clean_copy_count(s, CRAM_PTE_SLOT(p), -1);
            stale_push(s, CRAM_PTE_SLOT(p));
            add_counter(&s->stats.faults_wp, 1);
            break;
        case CRAM_PTE_EVICTING: add_counter(&s->stats.faults_wp_cancel, 1); break;
        case CRAM_PTE_INCOMPRESSIBLE: add_counter(&s->stats.faults_wp, 1); break;
        default: add_counter(&s->stats.faults_spurious, 1); break;
        }
        if (state != CRAM_PTE_DIRTY) {
            fault_log_append(s, r->id, page); /* reclaim may have dropped its entry */
            add_counter(&r->faults_write_protect, 1);
        }
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
    uint64_t t0 = now_ns();
    if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
        throttle(e); /* a MISSING fault adds a resident page; the lock may be let go meanwhile */
        if (!(r = region_find(e, addr))) return;
    }
    uint64_t page = (addr - r->base) >> CRAM_PAGE_SHIFT;
    if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
        resolve_write_protect(e, r, page);
    else
        resolve_missing(e, r, page, (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0, m->arg.pagefault.feat.ptid, t0);
}

static void* service_main(void* arg)
{
    cram_engine* e = arg;
    struct uffd_msg msgs[MSG_BATCH];
    struct pollfd fds[2] = { { .fd = e->uffd, .events = POLLIN }, { .fd = e->stop_fd, .events = POLLIN } };
    uint64_t spin_ns = (uint64_t)e->config.spin_us * 1000ull;
    cpu_set_t cpus; /* on a single CPU, spinning only keeps the faulting thread from running */
    if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) == 1) spin_ns = 0;
    for (;;) {
        ssize_t n = read(e->uffd, msgs, sizeof msgs);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EINTR) break;
            /* Nothing pending: busy-poll briefly (wake-ups dominate fault latency), then block. */
            /* Not while background reclaim runs: then the CPUs are taken, and a spinning service
             * only delays the thread it has just woken (measured at the limit: p50 +3-4 us). */
            uint64_t spin = __atomic_load_n(&e->shared->reclaim_running, __ATOMIC_RELAXED) ? 0 : spin_ns;
            uint64_t until = now_ns() + spin;
            while (spin && (n = read(e->uffd, msgs, sizeof msgs)) < 0 && errno == EAGAIN && now_ns() < until)
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
    if (e->pidfd >= 0) close(e->pidfd);
    if (e->zero_pages) munmap(e->zero_pages, FAULT_AROUND_MAX * CRAM_PAGE_SIZE);
    if (e->page_buf) munmap(e->page_buf, CRAM_PAGE_SIZE);
    if (e->file_buf) munmap(e->file_buf, 2 * CRAM_PAGE_SIZE);
    if (e->readahead_buf) munmap(e->readahead_buf, READAHEAD_CHUNK * CRAM_PAGE_SIZE);
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
    e->uffd = e->stop_fd = e->reclaim_fd = e->pidfd = -1;
    pthread_mutex_init(&e->lock, NULL);
    e->config = *config;
    if (e->config.fault_around_pages == 0) e->config.fault_around_pages = 1;
    int err = ENOMEM;
    e->shared = map_anon(sizeof(cram_shared));
    e->zero_pages = map_anon(FAULT_AROUND_MAX * CRAM_PAGE_SIZE);
    e->page_buf = map_anon(CRAM_PAGE_SIZE);
    e->file_buf = map_anon(2 * CRAM_PAGE_SIZE);
    e->readahead_buf = map_anon(READAHEAD_CHUNK * CRAM_PAGE_SIZE);
    if (!e->shared || !e->zero_pages || !e->page_buf || !e->file_buf || !e->readahead_buf) goto fail;
    e->shared->backing_fd = -1;
    void* log = map_anon(CRAM_FAULT_LOG_SIZE * sizeof(uint64_t));
    e->shared->fault_log = (uint64_t)(uintptr_t)log;
    if (!log) goto fail;

    /* Ask a probe descriptor what the kernel offers, then ask for write-protect faults (required),
     * the faulting thread's id and UFFDIO_POISON (both optional: how a bad page is failed). */
    uint32_t mode = CRAM_UFFD_MODE_AUTO; /* replaced by the mode obtained */
    int probe = uffd_open(config->forced_mode, &mode);
    if (probe < 0) { err = errno; goto fail; }
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    int probed = ioctl(probe, UFFDIO_API, &api);
    err = errno;
    close(probe);
    if (probed != 0) { err = err == EINVAL ? EPROTONOSUPPORT : err; goto fail; }
    if (!(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) { err = EPROTONOSUPPORT; goto fail; }
    uint64_t wanted = UFFD_FEATURE_PAGEFAULT_FLAG_WP | (api.features & (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON));
    e->uffd = uffd_open(config->forced_mode, &mode);
    if (e->uffd < 0) { err = errno; goto fail; }
    api = (struct uffdio_api){ .api = UFFD_API, .features = wanted };
    if (ioctl(e->uffd, UFFDIO_API, &api) != 0) { err = errno == EINVAL ? EPROTONOSUPPORT : errno; goto fail; }
    e->poison = (api.features & UFFD_FEATURE_POISON) != 0;
    e->shared->uffd_mode = mode;

    e->stop_fd = eventfd(0, EFD_CLOEXEC);
    e->reclaim_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->stop_fd < 0 || e->reclaim_fd < 0) { err = errno; goto fail; }
#ifdef SYS_pidfd_open
    e->pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0); /* -1 on old kernels: the fallback */
#endif
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

/* Bytes of a region's touched map: one bit per TOUCHED_BLOCK_PAGES pages, in whole words. */
static uint64_t touched_bytes(uint64_t length)
{
    uint64_t blocks = ((length >> CRAM_PAGE_SHIFT) + TOUCHED_BLOCK_PAGES - 1) >> TOUCHED_BLOCK_SHIFT;
    return ((blocks + 63) / 64) * sizeof(uint64_t);
}

static void region_release(cram_engine* e, cram_region_desc* r)
{
    struct uffdio_range range = { .start = r->base, .len = r->length };
    (void)ioctl(e->uffd, UFFDIO_UNREGISTER, &range);
    munmap((void*)(uintptr_t)r->base, r->length);
    munmap(r->pte, (r->length >> CRAM_PAGE_SHIFT) * sizeof(uint64_t));
    if (r->touched) munmap(r->touched, touched_bytes(r->length));
    add_counter(&e->shared->stats.page_table_pages, (uint64_t)0 - r->touched_blocks);
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
    void* touched = map_anon(touched_bytes(length));
    if (!pte || !touched) {
        int err = errno;
        munmap(base, length);
        if (pte) munmap(pte, (length >> CRAM_PAGE_SHIFT) * sizeof(uint64_t));
        if (touched) munmap(touched, touched_bytes(length));
        errno = err;
        return -1;
    }
    (void)madvise(base, length, MADV_NOHUGEPAGE);
    /* A child forked without exec (a native library's fork()) would inherit the mapping without the
     * userfaultfd registration and read evicted pages as zeros: silent corruption. With
     * MADV_DONTFORK the child has no mapping there at all, so a touch faults loudly (SIGSEGV, or
     * EFAULT from a system call). */
    int err = madvise(base, length, MADV_DONTFORK) == 0 ? 0 : errno;
    struct uffdio_register reg = { .range = { .start = (uint64_t)(uintptr_t)base, .len = length },
                                   .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };
    if (!err) {
        if (ioctl(e->uffd, UFFDIO_REGISTER, &reg) != 0) err = errno;
        else if (!(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)) || !(reg.ioctls & (1ull << _UFFDIO_COPY))) err = EPROTONOSUPPORT;
    }
    if (err) {
        munmap(base, length);
        munmap(pte, (length >> CRAM_PAGE_SHIFT) * sizeof(uint64_t));
        munmap(touched, touched_bytes(length));
        errno = err;
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    uint32_t id = 0;
    while (id < CRAM_MAX_REGIONS && e->regions[id].base) id++;
    if (id == CRAM_MAX_REGIONS) {
        pthread_mutex_unlock(&e->lock);
        cram_region_desc tmp = { .base = (uint64_t)(uintptr_t)base, .length = length, .pte = pte, .touched = touched };
        region_release(e, &tmp);
        errno = EMFILE;
        return -1;
    }
    cram_region_desc* r = &e->regions[id];
    r->base = (uint64_t)(uintptr_t)base;
    r->length = length;
    r->pte = pte;
    r->touched = touched;
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

/* A page leaves the page table (region destroy, discard) in state p: its slot, if it names one, is
 * pushed on the stale list, and the counters it was in are fixed (clean copies, the node's ledger;
 * *resident and *populated count up for the caller to take off). */
static void page_forget(cram_shared* s, uint64_t p, uint64_t* resident, uint64_t* populated)
{
    uint32_t state = CRAM_PTE_STATE(p);
    if (state == CRAM_PTE_EMPTY) return;
    (*populated)++;
    if (state == CRAM_PTE_PLACED || state == CRAM_PTE_PLACED_WRITABLE) { /* on the node's account */
        __atomic_fetch_sub(&s->stats.cram_placed_pages, 1, __ATOMIC_RELAXED);
        __atomic_fetch_sub(&s->stats.cram_placed_bytes, slot_get(s, CRAM_PTE_SLOT(p))->length, __ATOMIC_RELAXED);
        if (state == CRAM_PTE_PLACED_WRITABLE) __atomic_fetch_sub(&s->stats.cram_writable_pages, 1, __ATOMIC_RELAXED);
        stale_push(s, CRAM_PTE_SLOT(p));
        return;
    }
    if (state != CRAM_PTE_EVICTED) (*resident)++;
    if (state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING) clean_copy_count(s, CRAM_PTE_SLOT(p), -1);
    if (pte_names_slot(state)) stale_push(s, CRAM_PTE_SLOT(p));
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
    for (uint64_t i = touched_page_next(r, 0); i < pages; i = touched_page_next(r, i + 1))
        page_forget(s, r->pte[i], &resident, &populated);
    __atomic_fetch_sub(&s->stats.resident_pages, resident, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&s->stats.populated_pages, populated, __ATOMIC_RELAXED);
    region_release(e, r);
    memset(e->next_first_touch[region_id], 0, sizeof e->next_first_touch[region_id]);
    e->next_stream[region_id] = 0;
    memset(e->next_swapin[region_id], 0, sizeof e->next_swapin[region_id]);
    memset(e->swapin_window[region_id], 0, sizeof e->swapin_window[region_id]);
    e->next_swapin_stream[region_id] = 0;
    pthread_mutex_unlock(&e->lock);
    return 0;
}

EXPORT int CramNative_RegionCensus(cram_engine* e, uint32_t region_id, cram_region_census* census)
{
    if (!e || !census || region_id >= CRAM_MAX_REGIONS || !e->regions[region_id].base) { errno = EINVAL; return -1; }
    cram_region_desc* r = &e->regions[region_id];
    cram_shared* s = e->shared;
    memset(census, 0, sizeof *census);
    census->faults_first_touch = __atomic_load_n(&r->faults_first_touch, __ATOMIC_RELAXED);
    census->faults_swapin = __atomic_load_n(&r->faults_swapin, __ATOMIC_RELAXED);
    census->faults_write_protect = __atomic_load_n(&r->faults_write_protect, __ATOMIC_RELAXED);
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    for (uint64_t i = touched_page_next(r, 0); i < pages; i = touched_page_next(r, i + 1)) {
        uint64_t p = load_acquire(&r->pte[i]);
        uint32_t state = CRAM_PTE_STATE(p);
        if (state == CRAM_PTE_EMPTY) continue;
        census->populated_pages++;
        switch (state) {
        case CRAM_PTE_EVICTED: census->evicted_pages++; break;
        case CRAM_PTE_PLACED: case CRAM_PTE_PLACED_WRITABLE: census->placed_pages++; break;
        case CRAM_PTE_CLEAN: case CRAM_PTE_DROPPING: census->clean_copy_pages++; census->resident_pages++; break;
        default: census->resident_pages++; break;
        }
        if (state == CRAM_PTE_EVICTED || state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING) {
            uint64_t id = CRAM_PTE_SLOT(p);
            cram_slot* slot = id == CRAM_SLOT_ZERO ? NULL : slot_get(s, id);
            if (!slot || slot->backend == CRAM_BACKEND_SAME_FILLED) census->same_filled_pages++;
            else census->stored_bytes += slot->length;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ batched page operations */

/* The region if it is active (the service may resolve faults in it), else NULL. */
static cram_region_desc* region_active(cram_engine* e, uint32_t region_id)
{
    if (!e || region_id >= CRAM_MAX_REGIONS || !__atomic_load_n(&e->regions[region_id].active, __ATOMIC_ACQUIRE)) return NULL;
    return &e->regions[region_id];
}

static int region_checked(cram_engine* e, uint32_t region_id, const uint64_t* pages, int32_t count, cram_region_desc** out)
{
    cram_region_desc* r = region_active(e, region_id);
    if (!r || count < 0 || (count && !pages)) {
        errno = EINVAL;
        return -1;
    }
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

/* Drops the DROPPING pages pages[from..n) (sorted), up to DROP_RUNS_MAX runs of them; returns
 * where it stopped. The runs go to the kernel in one process_madvise call where it takes
 * MADV_DONTNEED for the calling process (Linux 6.13+): one TLB shootdown for the batch instead of
 * one per run, which is most of an eviction's cost when victims are scattered (random swap-ins at
 * the limit). Runs it did not get to (every run, on older kernels) are dropped one madvise each.
 * Each page ends EVICTED, or CLEAN if its madvise failed (errno in *err); dropped pages are
 * compacted to the front of pages[] (at *evicted). */
#define DROP_RUNS_MAX 256
static int32_t drop_runs(cram_engine* e, cram_region_desc* r, uint64_t* pages, int32_t from, int32_t n, int32_t* evicted, int* err)
{
    struct iovec runs[DROP_RUNS_MAX];
    int32_t start[DROP_RUNS_MAX + 1];
    int32_t nruns = 0, i = from;
    uint64_t stamp = eviction_stamp(e->shared);
    while (i < n && nruns < DROP_RUNS_MAX) {
        int32_t j = i + 1;
        while (j < n && pages[j] == pages[j - 1] + 1) j++;
        runs[nruns] = (struct iovec){ (void*)(uintptr_t)(r->base + (pages[i] << CRAM_PAGE_SHIFT)), (size_t)(j - i) << CRAM_PAGE_SHIFT };
        start[nruns++] = i;
        i = j;
    }
    start[nruns] = i;
    uint64_t advised = 0; /* bytes of the leading runs process_madvise dropped */
#ifdef SYS_process_madvise
    if (e->pidfd >= 0 && nruns > 1) {
        long done = syscall(SYS_process_madvise, e->pidfd, runs, (size_t)nruns, MADV_DONTNEED, 0u);
        if (done > 0) advised = (uint64_t)done;
        else if (done < 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM || errno == EBADF)) {
            close(e->pidfd); /* a kernel before 6.13, or a sandbox that forbids it: run by run from now on */
            e->pidfd = -1;
        }
    }
#endif
    for (int32_t k = 0; k < nruns; k++) {
        int ok;
        if (advised >= runs[k].iov_len) {
            advised -= runs[k].iov_len;
            ok = 1;
        } else {
            advised = 0;
            /* Cannot fail on our own anonymous mapping; if it ever does, those pages are still mapped
             * (and write-protected), so they go back to CLEAN rather than claim to be evicted. */
            ok = madvise(runs[k].iov_base, runs[k].iov_len, MADV_DONTNEED) == 0;
            if (!ok) *err = errno;
        }
        for (int32_t m = start[k]; m < start[k + 1]; m++) {
            uint64_t* pte = &r->pte[pages[m]];
            store_release(pte, ok ? CRAM_PTE_MAKE(CRAM_PTE_EVICTED, CRAM_PTE_SLOT(*pte)) | stamp
                                  : CRAM_PTE_MAKE(CRAM_PTE_CLEAN, CRAM_PTE_SLOT(*pte)));
            if (ok) {
                clean_copy_count(e->shared, CRAM_PTE_SLOT(*pte), -1);
                pages[(*evicted)++] = pages[m];
            }
        }
    }
    return i;
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
    for (int32_t from = 0; from < n;) from = drop_runs(e, r, pages, from, n, &evicted, &err);
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

/* Step 2 of a backend move: under the lock the service resolves faults under, so a fault reads the
 * slot either before (old location, still valid) or after (new location), never in between. */
EXPORT int CramNative_SetResidentLimit(cram_engine* e, uint64_t soft_limit_pages, uint64_t hard_limit_pages)
{
    if (!e || (soft_limit_pages && hard_limit_pages < soft_limit_pages)) { errno = EINVAL; return -1; }
    __atomic_store_n(&e->config.soft_limit_pages, soft_limit_pages, __ATOMIC_RELAXED);
    __atomic_store_n(&e->config.hard_limit_pages, hard_limit_pages, __ATOMIC_RELAXED);
    if (soft_limit_pages && __atomic_load_n(&e->shared->stats.resident_pages, __ATOMIC_RELAXED) > soft_limit_pages) signal_reclaim(e);
    return 0;
}

EXPORT int CramNative_SlotsMove(cram_engine* e, cram_slot_move* moves, int32_t count, int32_t* moved)
{
    if (!e || !moved || count < 0 || (count && !moves)) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    int32_t n = 0;
    pthread_mutex_lock(&e->lock);
    for (int32_t i = 0; i < count; i++) {
        cram_slot_move* m = &moves[i];
        cram_slot* slot = slot_get(s, m->slot);
        m->moved = slot->backend == m->from_backend && slot->location == m->from_location &&
                   !(slot_flags(slot) & (CRAM_SLOT_STALE | CRAM_SLOT_BAD));
        if (!m->moved) continue;
        slot->location = m->to_location;
        slot->backend = m->to_backend;
        n++;
    }
    pthread_mutex_unlock(&e->lock);
    *moved = n;
    return 0;
}

/* The reaper's mark (cramnative.h). Under the lock, no page is UNPROTECTING (the service holds that
 * state only inside a batch) and every stale push has happened or will happen after the mark. */
EXPORT int CramNative_MarkNamedSlots(cram_engine* e, uint64_t* named, uint64_t bits)
{
    if (!e || (bits && !named)) { errno = EINVAL; return -1; }
    pthread_mutex_lock(&e->lock);
    for (uint32_t id = 0; id < e->region_count; id++) {
        cram_region_desc* r = &e->regions[id];
        if (!r->base || !__atomic_load_n(&r->active, __ATOMIC_ACQUIRE)) continue;
        uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
        for (uint64_t i = touched_page_next(r, 0); i < pages; i = touched_page_next(r, i + 1)) {
            uint64_t p = load_acquire(&r->pte[i]);
            uint32_t state = CRAM_PTE_STATE(p);
            uint64_t slot = CRAM_PTE_SLOT(p);
            if (pte_names_slot(state) && slot < bits)
                named[slot >> 6] |= 1ull << (slot & 63);
        }
    }
    pthread_mutex_unlock(&e->lock);
    return 0;
}

EXPORT int CramNative_PlacePages(cram_engine* e, uint32_t region_id, cram_place* places, int32_t count, int32_t* placed)
{
    cram_region_desc* r = region_active(e, region_id);
    if (!r || !placed || (count && !places) || count < 0) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    cram_stats* st = &s->stats;
    int32_t n = 0;
    pthread_mutex_lock(&e->lock);
    int control = s->cram_write_control != 0;
    for (int32_t i = 0; i < count; i++) {
        cram_place* pl = &places[i];
        pl->placed = 0;
        if (pl->page >= r->length >> CRAM_PAGE_SHIFT) { pthread_mutex_unlock(&e->lock); errno = ERANGE; return -1; }
        if (!cram_ledger_fits(s, st->cram_placed_bytes + pl->size, control ? st->cram_writable_pages : 0)) {
            add_counter(&st->cram_placement_refusals, 1);
            continue;
        }
        if (!cas(&r->pte[pl->page], CRAM_PTE_MAKE(CRAM_PTE_EVICTING, 0), CRAM_PTE_MAKE(CRAM_PTE_PLACED, pl->slot)))
            continue; /* a write cancelled the eviction */
        pl->placed = 1;
        st->cram_placed_bytes += pl->size;
        st->cram_placed_pages++;
        n++;
    }
    __atomic_fetch_sub(&st->resident_pages, (uint64_t)n, __ATOMIC_RELAXED); /* now on the device's account */
    pthread_mutex_unlock(&e->lock);
    *placed = n;
    return 0;
}

EXPORT int CramNative_FindPages(cram_engine* e, uint32_t region_id, uint64_t first, uint64_t end, uint32_t state_mask,
                                uint64_t* pages, int32_t capacity, int32_t* found, uint64_t* next)
{
    if (!e || !found || !next || capacity < 0 || (capacity && !pages) || first > end || region_id >= CRAM_MAX_REGIONS ||
        !e->regions[region_id].base) {
        errno = EINVAL;
        return -1;
    }
    cram_region_desc* r = &e->regions[region_id];
    uint64_t count = r->length >> CRAM_PAGE_SHIFT;
    if (end > count) end = count;
    int32_t n = 0;
    uint64_t i = touched_page_next(r, first);
    for (; i < end && n < capacity; i = touched_page_next(r, i + 1))
        if (state_mask & (1u << CRAM_PTE_STATE(load_acquire(&r->pte[i])))) pages[n++] = i;
    *found = n;
    *next = i < end ? i : end;
    return 0;
}

#define PREFETCH_MAX_PAGES 128  /* pages one CramNative_PrefetchPages call brings in, at most */
#define PREFETCH_SCAN_MAX 4096  /* pages it looks at, at most */

EXPORT int CramNative_PrefetchPages(cram_engine* e, uint32_t region_id, uint64_t first, uint64_t end,
                                    uint64_t* next, uint64_t* brought, int32_t* at_limit)
{
    if (!e || !next || !brought || !at_limit || first > end || region_id >= CRAM_MAX_REGIONS) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    uint64_t ids[READAHEAD_CHUNK];
    uint64_t q = first, n_brought = 0, scanned = 0;
    int err = 0, limit = 0, started = 0;
    /* One chunk per hold of the engine lock (as the service holds it: it orders this with every
     * fault), so a fault waits for one chunk at most. */
    while (q < end && n_brought < PREFETCH_MAX_PAGES && scanned < PREFETCH_SCAN_MAX && !limit) {
        pthread_mutex_lock(&e->lock);
        cram_region_desc* r = region_active(e, region_id);
        if (!r) { pthread_mutex_unlock(&e->lock); err = EINVAL; break; }
        uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
        if (end > pages) end = pages;
        if (!started) { q = touched_page_next(r, q); started = 1; } /* past end when nothing is left: clamped below */
        uint64_t want = READAHEAD_CHUNK < PREFETCH_MAX_PAGES - n_brought ? READAHEAD_CHUNK : PREFETCH_MAX_PAGES - n_brought;
        uint64_t soft = __atomic_load_n(&e->config.soft_limit_pages, __ATOMIC_RELAXED);
        uint64_t resident = __atomic_load_n(&s->stats.resident_pages, __ATOMIC_RELAXED);
        if (soft && resident + want >= soft) { /* this chunk is the last one the limit allows */
            limit = 1;
            want = soft > resident ? soft - resident : 0;
        }
        if (__atomic_load_n(&s->memory_wait_us, __ATOMIC_RELAXED)) { /* over the memory limit: nothing ahead of need */
            limit = 1;
            want = 0;
        }
        uint32_t n = 0;
        while (want && q < end && scanned < PREFETCH_SCAN_MAX &&
               (n = decode_ahead(e, r, q, end - q < want ? end : q + want, 1, ids)) == 0) {
            q = touched_page_next(r, q + 1); /* resident, empty, or left to its own fault (a bad copy fails there) */
            scanned++;
        }
        if (n && install_ahead(e, r, q, ids, n, &s->stats.prefetched_pages) != 0) err = errno;
        else if (n) {
            n_brought += n;
            scanned += n;
            q += n;
        }
        pthread_mutex_unlock(&e->lock);
        if (err) break;
    }
    if (q > end) q = end;
    *next = q;
    *brought = n_brought;
    *at_limit = limit && q < end;
    if (err) { errno = err; return -1; }
    return 0;
}

EXPORT int CramNative_DiscardPages(cram_engine* e, uint32_t region_id, uint64_t first, uint64_t end, uint64_t* discarded)
{
    if (!e || !discarded || first > end) { errno = EINVAL; return -1; }
    pthread_mutex_lock(&e->lock); /* the service holds no UNPROTECTING while we hold it */
    cram_region_desc* r = region_active(e, region_id);
    if (!r) { pthread_mutex_unlock(&e->lock); errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    if (end > pages) end = pages;
    /* Nothing may be mid-eviction (the caller pauses reclaim): check before changing anything. */
    for (uint64_t i = touched_page_next(r, first); i < end; i = touched_page_next(r, i + 1)) {
        uint32_t state = CRAM_PTE_STATE(load_acquire(&r->pte[i]));
        if (state == CRAM_PTE_EVICTING || state == CRAM_PTE_DROPPING || state == CRAM_PTE_UNPROTECTING) {
            pthread_mutex_unlock(&e->lock);
            errno = EBUSY;
            return -1;
        }
    }
    /* Zap the mapped pages, one madvise per run of marked blocks (nothing outside them was ever
     * mapped). The kernel checks the range before it zaps anything, so a failure changes nothing. */
    for (uint64_t i = touched_page_next(r, first); i < end;) {
        uint64_t run_end = ((i >> TOUCHED_BLOCK_SHIFT) + 1) << TOUCHED_BLOCK_SHIFT;
        while (run_end < end && touched_page_next(r, run_end) == run_end) run_end += TOUCHED_BLOCK_PAGES;
        if (run_end > end) run_end = end;
        if (madvise((void*)(uintptr_t)(r->base + (i << CRAM_PAGE_SHIFT)), (run_end - i) << CRAM_PAGE_SHIFT, MADV_DONTNEED) != 0) {
            int err = errno;
            pthread_mutex_unlock(&e->lock);
            errno = err;
            return -1;
        }
        i = touched_page_next(r, run_end);
    }
    uint64_t populated = 0, resident = 0;
    for (uint64_t i = touched_page_next(r, first); i < end; i = touched_page_next(r, i + 1)) {
        uint64_t p = load_acquire(&r->pte[i]);
        if (CRAM_PTE_STATE(p) == CRAM_PTE_EMPTY) continue;
        page_forget(s, p, &resident, &populated);
        store_release(&r->pte[i], CRAM_PTE_MAKE(CRAM_PTE_EMPTY, 0));
    }
    __atomic_fetch_sub(&s->stats.resident_pages, resident, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&s->stats.populated_pages, populated, __ATOMIC_RELAXED);
    add_counter(&s->stats.discarded_pages, populated);
    pthread_mutex_unlock(&e->lock);
    *discarded = populated;
    return 0;
}

EXPORT int CramNative_MoveOutPages(cram_engine* e, uint32_t region_id, cram_move_out* moves, int32_t count, int32_t* moved)
{
    cram_region_desc* r = region_active(e, region_id);
    if (!r || !moved || (count && !moves) || count < 0) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    cram_stats* st = &s->stats;
    int32_t n = 0;
    int err = 0;
    pthread_mutex_lock(&e->lock); /* the service sees the page PLACED with its frame, or EVICTED with the copy */
    for (int32_t i = 0; i < count; i++) {
        cram_move_out* m = &moves[i];
        m->moved = 0;
        if (m->page >= r->length >> CRAM_PAGE_SHIFT) { err = ERANGE; break; }
        uint64_t* pte = &r->pte[m->page];
        if (load_acquire(pte) != CRAM_PTE_MAKE(CRAM_PTE_PLACED, m->slot)) continue; /* written or re-placed meanwhile */
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_DROPPING, m->slot));
        cram_slot* slot = slot_get(s, m->slot);
        uint32_t old = slot->length;
        if (madvise((void*)(uintptr_t)(r->base + (m->page << CRAM_PAGE_SHIFT)), CRAM_PAGE_SIZE, MADV_DONTNEED) != 0) {
            err = errno;
            store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_PLACED, m->slot)); /* still mapped, still on the node */
            break;
        }
        slot->location = m->handle;
        slot->checksum = m->checksum;
        slot->length = (uint16_t)m->length;
        slot->backend = CRAM_BACKEND_POOL;
        if (m->raw) slot_flags_or(slot, CRAM_SLOT_RAW);
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_EVICTED, m->slot));
        st->cram_placed_pages--;
        st->cram_placed_bytes -= old;
        m->moved = 1;
        n++;
    }
    add_counter(&st->evicted_pages_total, (uint64_t)n);
    pthread_mutex_unlock(&e->lock);
    *moved = n;
    if (err) { errno = err; return -1; }
    return 0;
}

EXPORT int CramNative_ReplacePages(cram_engine* e, uint32_t region_id, uint64_t* pages, int32_t count, int32_t* replaced)
{
    cram_region_desc* r;
    if (!replaced) { errno = EINVAL; return -1; }
    if (region_checked(e, region_id, pages, count, &r) != 0) return -1;
    cram_shared* s = e->shared;
    cram_stats* st = &s->stats;
    int32_t n = 0;
    pthread_mutex_lock(&e->lock); /* the service sees PLACED_WRITABLE or PLACED, never in between */
    for (int32_t i = 0; i < count; i++) {
        uint64_t* pte = &r->pte[pages[i]];
        uint64_t p = load_acquire(pte);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_PLACED_WRITABLE) continue;
        uint64_t addr = r->base + (pages[i] << CRAM_PAGE_SHIFT);
        if (uffd_writeprotect(e->uffd, addr, CRAM_PAGE_SIZE, 1) != 0) { add_counter(&st->service_errors, 1); continue; }
        /* Stable now: measure what the device holds (LZ4 as the proxy for its inline compression). */
        cram_slot* slot = slot_get(s, CRAM_PTE_SLOT(p));
        int size = LZ4_compress_default((const char*)(uintptr_t)addr, (char*)e->file_buf, CRAM_PAGE_SIZE, 2 * CRAM_PAGE_SIZE);
        uint32_t measured = size > 0 && size < (int)CRAM_PAGE_SIZE ? (uint32_t)size : CRAM_PAGE_SIZE;
        st->cram_placed_bytes = st->cram_placed_bytes - slot->length + measured;
        slot->length = (uint16_t)measured;
        store_release(pte, CRAM_PTE_MAKE(CRAM_PTE_PLACED, CRAM_PTE_SLOT(p)));
        st->cram_writable_pages--;
        pages[n++] = pages[i];
    }
    pthread_mutex_unlock(&e->lock);
    *replaced = n;
    return 0;
}

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

EXPORT int CramNative_Checksum(const void* data, uint32_t length, uint32_t* checksum)
{
    if (!checksum || (length && !data)) { errno = EINVAL; return -1; }
    *checksum = crc32c(data, length);
    return 0;
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
