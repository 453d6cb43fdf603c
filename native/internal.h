/*
 * CramCore native helper, internal header: what the units of libCramNative share and C# never
 * sees (the engine and region records, the atomics, the shared-state helpers, the functions one
 * unit calls in another). The contract with C# is cramnative.h; the page-state machine and the
 * lock order are written down there, once. The units:
 *   contract.c   the contract as data (CramNative_GetContract)
 *   uffd.c       userfaultfd primitives (open, copy, zero page, write-protect, wake)
 *   checksum.c   CRC-32C
 *   state.c      shared-state helpers: clean-copy counts, the stale list, the touched blocks' walk,
 *                and the CRAM_DEBUG checks of page-state transitions and of the engine lock
 *   fault.c      fault resolution and the service thread (first touch, swap-in, write-protect)
 *   readahead.c  swap-in readahead and prefetch (Advise WillNeed)
 *   regions.c    engine and region lifecycle, region census
 *   pages.c      the batched page operations reclaim, writeback and the CRAM node call
 *   io.c         the backing file, pool arenas
 *   remote.c     the remote tier's read half: fetchers, a RESP GETRANGE client, AES-GCM open
 * Nothing here calls managed code: a managed fault handler deadlocks with the GC, which waits for
 * a thread blocked in a fault while the handler is suspended for that GC.
 */
#ifndef CRAMNATIVE_INTERNAL_H
#define CRAMNATIVE_INTERNAL_H
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
#include <sys/stat.h>
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

/* The system libzstd.so.1 (no -dev package needed): what codec.c uses, as in zstd.h 1.5 (the static
 * context and the format parameter are in its "experimental" section, exported by the library). */
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
typedef struct ZSTD_DDict_s ZSTD_DDict;
extern size_t ZSTD_estimateDCtxSize(void);
extern ZSTD_DCtx* ZSTD_initStaticDCtx(void* workspace, size_t workspaceSize);
extern size_t ZSTD_DCtx_setParameter(ZSTD_DCtx* dctx, int param, int value);
extern size_t ZSTD_decompressDCtx(ZSTD_DCtx* dctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
extern size_t ZSTD_decompress_usingDDict(ZSTD_DCtx* dctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize, const ZSTD_DDict* ddict);
extern ZSTD_DDict* ZSTD_createDDict(const void* dictBuffer, size_t dictSize);
extern size_t ZSTD_freeDDict(ZSTD_DDict* ddict);
extern size_t ZSTD_sizeof_DDict(const ZSTD_DDict* ddict);
extern unsigned ZSTD_isError(size_t code);
#define ZSTD_D_FORMAT 1000          /* ZSTD_d_format (ZSTD_d_experimentalParam1) */
#define ZSTD_F_ZSTD1_MAGICLESS 1    /* ZSTD_f_zstd1_magicless */
#define CRAM_COLD_WALK_PAGES 4096   /* touched pages CramNative_FindColdEntries walks per hold of the engine lock */

#define FIRST_TOUCH_STREAMS 4
#define SWAPIN_STREAMS 4
#define READAHEAD_MIN 8      /* pages brought in ahead by the second fault of a sequential stream */
#define READAHEAD_MAX 128     /* the window doubles up to this */
#define READAHEAD_CHUNK 8    /* pages per UFFDIO_COPY: the reader resumes after the first chunk */
#define FILE_WINDOW_BYTES (512u << 10) /* the most a readahead window's file extents span for one read of them all */
#define UFFD_MSG_BATCH 32
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
    uint64_t activity;     /* batches of faults resolved (note_activity): what an idle reclaim worker waits for */
    uint32_t reclaim_idle; /* 1 while the reclaim worker sleeps until the next activity (CramNative_WaitReclaimIdle) */
    int pidfd; /* this process, for process_madvise (-1: not available, drop run by run); drops run one at a time (maintenance lock) */
    pthread_t service;
    pthread_mutex_t lock; /* held by the service while it resolves a batch, and by region create/destroy */
#ifdef CRAM_DEBUG
    pid_t lock_holder;    /* CRAM_DEBUG: the thread holding lock, 0 if none (engine_lock/engine_unlock) */
#endif
    unsigned char* zero_pages; /* CRAM_FAULT_AROUND_MAX read-only zero pages */
    unsigned char* page_buf;   /* one page the service rebuilds into */
    unsigned char* file_buf;   /* two pages, page-aligned: the covering pages of a file extent */
    unsigned char* file_window; /* FILE_WINDOW_BYTES + a page, page-aligned: a readahead window's extents, read at once */
    uint64_t file_window_start, file_window_length; /* the file bytes it holds; valid within one hold of the engine lock (0: none) */
    uint64_t file_last_end;     /* where the fault path's last read of the file ended (count_file_read) */
    uint64_t file_read_align;   /* the alignment a read of the file needs (fault.c, file_read_align; 0: not asked yet) */
    uint32_t poison;           /* UFFDIO_POISON is available */
    uint32_t faulting_thread;  /* CRAM_FAULT_SERVICE_FAULTING: no service thread; sigbus.c resolves faults */
    /* Per region, the page after each of the last FIRST_TOUCH_STREAMS first-touch runs: a first touch
     * there continues a sequential stream (threads filling chunks of their own each have one). */
    uint64_t next_first_touch[CRAM_MAX_REGIONS][FIRST_TOUCH_STREAMS];
    uint8_t next_stream[CRAM_MAX_REGIONS];
    /* Per region, read swap-in streams (swapin_readahead): the page after each one's last window,
     * and the window it reached. */
    uint64_t next_swapin[CRAM_MAX_REGIONS][SWAPIN_STREAMS];
    uint32_t swapin_window[CRAM_MAX_REGIONS][SWAPIN_STREAMS];
    uint8_t next_swapin_stream[CRAM_MAX_REGIONS];
    /* The readahead window being installed (readahead.c, "Readahead" in cramnative.h): decoded and
     * claimed under the lock by the fault that continued a stream (or a prefetch step), mapped chunk
     * by chunk outside it by whoever takes a chunk (that thread, once it lets the lock go, and the
     * helpers). */
    unsigned char* window_buf;            /* READAHEAD_MAX pages: the window's decoded pages */
    cram_region_desc* window_region;      /* the region the window is in (active while chunks remain: readahead_quiesce) */
    uint64_t* window_counter;             /* the stat its pages count in */
    uint64_t window_olds[READAHEAD_MAX];  /* each page's word before it was claimed (a failed copy restores it) */
    uint64_t window_first[READAHEAD_MAX]; /* chunk c: pages [window_first[c], + window_pages[c]) */
    uint16_t window_pages[READAHEAD_MAX];
    uint16_t window_offset[READAHEAD_MAX]; /* chunk c's first page in window_buf and window_olds */
    /* generation (32 bits) | chunks taken (16) | chunks ready (16): one word, so a chunk is taken with
     * one CAS that also checks it is ready and of this window (window_take). */
    uint64_t window_state;
    uint32_t window_sealed;  /* every chunk of the window is ready (no more come) */
    uint32_t window_done;    /* chunks installed (or failed) */
    uint32_t window_wake;    /* futex the helpers sleep on: bumped for each window and for stop */
    uint32_t window_stop;    /* helpers exit */
    uint32_t readahead_helpers_wanted; /* cram_engine_config.readahead_helpers */
    uint32_t readahead_helpers_started; /* 1 once the first drop started them (readahead_helpers_ensure) */
    uint32_t readahead_helper_count;    /* threads running */
    pthread_t readahead_helpers[CRAM_READAHEAD_HELPERS_MAX];
    /* The fault-latency probe (probe.c, "Fault latency" in cramnative.h): service thread only. */
    unsigned char* probe_area;        /* its pages, registered MISSING (NULL: no probe; the service reads it) */
    unsigned char* probe_sample;      /* a page a swap-in decoded (probe_take_sample) */
    unsigned char* probe_stored;      /* that page LZ4-compressed, what the service decodes for a probe */
    uint32_t probe_stored_length, probe_stored_checksum; /* 0: no copy yet (no probe) */
    uint32_t probe_wants_sample;      /* the probe asks the next swap-in for a page */
    uint32_t probe_sample_ready;      /* and it gave one */
    uint32_t probe_idle;              /* the probe sleeps until the next swap-in (probe_note_swapins) */
    uint32_t probe_next;              /* the area's next unused page */
    uint32_t probe_started, probe_running, probe_stop;
    int probe_fd;                     /* eventfd: wakes an idle probe, or stops it */
    pthread_t probe_thread;
    /* zstd decoding ("Codecs" in cramnative.h; codec.c): static contexts, which never allocate. */
    ZSTD_DCtx* zstd_dctx;                        /* slot_read's, under the engine lock */
    ZSTD_DCtx* zstd_remote_dctx;                 /* the remote fetchers', under zstd_remote_lock */
    void* zstd_space;                            /* both contexts' memory (2 * zstd_context_bytes) */
    uint64_t zstd_context_bytes;
    uint32_t zstd_remote_lock;                   /* a spin lock: fetchers (a SIGBUS handler among them) decode one at a time */
    ZSTD_DDict* zstd_dicts[CRAM_ZSTD_DICTIONARIES]; /* index 0 unused (no dictionary); set and removed under the engine lock */
    struct cram_remote* remote;                 /* the remote tier's read half (remote.c), NULL until configured */
    uint32_t region_count;                       /* high-water index in regions[] */
    cram_region_desc regions[CRAM_MAX_REGIONS];
};


/* Whether the readahead window read with file_window_read holds the file extent [location, +length). */
static inline int file_window_holds(const cram_engine* e, uint64_t location, uint64_t length)
{
    return e->file_window_length && location >= e->file_window_start &&
           location + length <= e->file_window_start + e->file_window_length;
}

/* Anonymous NORESERVE memory (pages cost only once touched), or NULL with errno. */
static inline void* map_anon(uint64_t bytes)
{
    void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static inline uint64_t load_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store_release(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int cas(uint64_t* p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline void add_counter(uint64_t* counter, uint64_t n) { __atomic_fetch_add(counter, n, __ATOMIC_RELAXED); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ shared-state helpers */
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


/* Whether a page in `state` names its slot (the slot's copy is the page's): the one list region
 * destroy and the reaper's mark both use. */
static inline int pte_names_slot(uint32_t state)
{
    return state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING || state == CRAM_PTE_EVICTED ||
           state == CRAM_PTE_PLACED || state == CRAM_PTE_PLACED_WRITABLE || state == CRAM_PTE_INSTALLING ||
           state == CRAM_PTE_FETCHING;
}

/* The CRAM node's ledger (cramnative.h, "CRAM node"): would placed_bytes + writable pages at a whole
 * page each still fit the device? Under the engine lock, where the ledger changes. */
static inline int cram_ledger_fits(const cram_shared* s, uint64_t placed_bytes, uint64_t writable_pages)
{
    return placed_bytes + writable_pages * CRAM_PAGE_SIZE <= s->cram_capacity_bytes;
}


/* ------------------------------------------------------------------ CRAM_DEBUG checks
 * A CRAM_DEBUG build (make debug, make test; run in CI) checks, at every page-table write the
 * native side makes, that the state change is one of cramnative.h's CRAM_PTE_TRANSITIONS, and
 * that cram_engine.lock is taken by a thread that does not hold it, released by the one that does,
 * and held wherever a function says it must be (ASSERT_ENGINE_LOCKED). A failed check prints what
 * and where, and aborts. Release builds compile none of it. */
int pte_transition_allowed(uint32_t from, uint32_t to); /* state.c: is from -> to in the table (or from == to)? */
#ifdef CRAM_DEBUG
void cram_debug_fail(const char* file, int line, const char* what, uint64_t a, uint64_t b); /* state.c: prints, aborts */
#define CRAM_CHECK(cond, what, a, b) ((cond) ? (void)0 : cram_debug_fail(__FILE__, __LINE__, what, (uint64_t)(a), (uint64_t)(b)))
#define ASSERT_ENGINE_LOCKED(e) CRAM_CHECK((e)->lock_holder == (pid_t)syscall(SYS_gettid), "cram_engine.lock not held", (e)->lock_holder, 0)
#else
#define CRAM_CHECK(cond, what, a, b) ((void)0)
#define ASSERT_ENGINE_LOCKED(e) ((void)0)
#endif

/* Engine locks the calling thread holds (sigbus.c: a thread that faults holding one is not served). */
extern __thread int t_engine_locked __attribute__((tls_model("initial-exec")));
/* Set by fail_access on the faulting thread: the handler passes this fault on instead of retrying it. */
extern __thread int t_fault_failed __attribute__((tls_model("initial-exec")));

static inline void engine_lock(cram_engine* e)
{
#ifdef CRAM_DEBUG
    pid_t self = (pid_t)syscall(SYS_gettid);
    CRAM_CHECK(__atomic_load_n(&e->lock_holder, __ATOMIC_RELAXED) != self, "cram_engine.lock taken twice by one thread", self, 0);
    pthread_mutex_lock(&e->lock);
    e->lock_holder = self;
#else
    pthread_mutex_lock(&e->lock);
#endif
    t_engine_locked++;
}

static inline void engine_unlock(cram_engine* e)
{
#ifdef CRAM_DEBUG
    ASSERT_ENGINE_LOCKED(e);
    e->lock_holder = 0;
#endif
    t_engine_locked--;
    pthread_mutex_unlock(&e->lock);
}

/* A page-table CAS that changes the state must follow the table (CRAM_DEBUG checks it). */
static inline int pte_cas(uint64_t* pte, uint64_t expected, uint64_t desired)
{
    CRAM_CHECK(pte_transition_allowed(CRAM_PTE_STATE(expected), CRAM_PTE_STATE(desired)),
               "page-state transition not in CRAM_PTE_TRANSITIONS (from, to)", CRAM_PTE_STATE(expected), CRAM_PTE_STATE(desired));
    return cas(pte, expected, desired);
}

/* A page-table store by the one holder of the page's current state (a held state such as DROPPING or
 * UNPROTECTING, or a state only code under the engine lock leaves); CRAM_DEBUG checks the change. */
static inline void pte_store(uint64_t* pte, uint64_t desired)
{
    CRAM_CHECK(pte_transition_allowed(CRAM_PTE_STATE(load_acquire(pte)), CRAM_PTE_STATE(desired)),
               "page-state transition not in CRAM_PTE_TRANSITIONS (from, to)", CRAM_PTE_STATE(load_acquire(pte)), CRAM_PTE_STATE(desired));
    store_release(pte, desired);
}

/* Functions one unit defines and others call (hidden: -fvisibility=hidden). */
/* checksum.c */
uint32_t crc32c(const void* data, size_t n);
/* fault.c */
const void* slot_read(cram_engine* e, cram_slot* slot, unsigned char* dst, uint64_t** counter, const char** why);
uint64_t eviction_stamp(cram_shared* s);
/* Whether a page evicted with word p, refaulting now, is in the working set (its refault distance is
 * below cram_shared.activate_distance_pages: "Working set" in cramnative.h). */
/* Counts a latency that began at t0 (now_ns) in its power-of-two microsecond bucket of `buckets`
 * (cram_stats.swapin_latency_us_log2 or fault_latency_us_log2). */
void latency_count(uint64_t* buckets, uint64_t t0);
int refault_activates(cram_shared* s, uint64_t p);
void fault_log_append(cram_shared* s, uint32_t region, uint64_t page);
void* service_main(void* arg);
void resident_add(cram_engine* e, uint64_t n);
void signal_reclaim(cram_engine* e);
/* A read of the backing file by the fault path: [offset, +bytes) (bytes > 0 if it read any). Counts it,
 * and whether it began where the previous one ended (or within its last page: a file sequential
 * for the device). Under the engine lock. */
void count_file_read(cram_engine* e, uint64_t offset, int64_t bytes);
/* readahead.c: the end of the window a read swap-in at page would bring in after it (0: it does not
 * continue a stream), and the read of the file extents of [q, end) in one pread (1 if read). */
uint64_t swapin_readahead_end(const cram_engine* e, const cram_region_desc* r, uint64_t page);
int file_window_read(cram_engine* e, cram_region_desc* r, uint64_t q, uint64_t end);
void note_activity(cram_engine* e);
/* fault.c: resolves the fault at addr that the calling thread took (the faulting-thread service).
 * 1 if addr is in one of e's active regions (the access can be retried), 0 otherwise. */
int resolve_on_faulting_thread(cram_engine* e, uint64_t addr, int write);
/* sigbus.c: the faulting-thread service's registry and handler ("Fault services" in cramnative.h). */
int sigbus_engine_add(cram_engine* e);    /* installs the handler with the first engine; -1 with errno */
void sigbus_engine_remove(cram_engine* e); /* and waits until no handler can still reach e */
void sigbus_quiesce(void);                 /* waits until no handler is between its lookup and its lock */
int sigbus_probe_start(int uffd, uint64_t base, uint64_t length, const void* source); /* floor.c's bare region */
void sigbus_probe_stop(void);
/* codec.c ("Codecs" in cramnative.h) */
int codec_init(cram_engine* e);  /* the static zstd contexts; -1 with errno */
void codec_free(cram_engine* e);
/* Decodes a zstd copy (flags: the slot's) into a page: 0, or -1 if it is not one. remote: the fetchers' context. */
int zstd_decode(cram_engine* e, int remote, uint32_t flags, const void* stored, uint32_t length, unsigned char* page);
/* probe.c ("Fault latency" in cramnative.h) */
void probe_ensure(cram_engine* e);      /* starts the probe with the first drop (service thread, config.latency_probe_us > 0) */
void probe_stop(cram_engine* e);        /* before the service stops: it answers the probe's last fault */
void probe_free(cram_engine* e);
int probe_owns(const cram_engine* e, uint64_t addr);  /* whether a fault's address is the probe's */
void probe_serve(cram_engine* e, uint64_t addr);      /* the service answers a probe's fault, under the engine lock */
void probe_take_sample(cram_engine* e, const void* page); /* a swap-in's page, when the probe wants one (under the lock) */
void probe_note_swapins(cram_engine* e);              /* after a swap-in is counted: wakes an idle probe */
/* pages.c */
cram_region_desc* region_active(cram_engine* e, uint32_t region_id);
/* readahead.c */
void swapin_readahead(cram_engine* e, cram_region_desc* r, uint64_t page);
/* The stream bookkeeping of a read swap-in at page (swapin_readahead's first step, which the remote
 * tier's claim takes alone): the end of the window to bring in after it (page + 1: none, a new
 * stream or the soft limit). Under the engine lock. */
uint64_t swapin_stream_step(cram_engine* e, cram_region_desc* r, uint64_t page);
/* Installs chunks of the current readahead window until none is left to take; without the engine
 * lock (the thread that resolved a fault calls it once it has let the lock go). */
void readahead_help(cram_engine* e);
/* Whether the current window has chunks no installer has taken yet (the thread that claimed it must
 * help before it waits for anything: with no helpers, nobody else maps them). */
int readahead_pending(const cram_engine* e);
/* Under the engine lock: waits until the current window's chunks are all installed (then no page
 * is INSTALLING and no installer reads a region or the window's buffer). */
void readahead_quiesce(cram_engine* e);
/* Starts the engine's readahead helpers the first time it is called (by the first drop: no window
 * can be claimed before a page is evicted, and no thread can be started from the SIGBUS handler
 * that claims one), so an engine that never evicts has none. A helper that cannot be started is
 * done without: the thread that claims a window maps what no helper takes. */
void readahead_helpers_ensure(cram_engine* e);
void readahead_helpers_stop(cram_engine* e);
/* Waits while the page is held by native code for one system call (DROPPING, INSTALLING); returns its
 * word. A page INSTALLING in a chunk nobody has taken yet is mapped by the waiter itself (with no
 * helpers, the thread that claimed the window may be this one, or may be waiting for the lock). */
static inline uint64_t wait_not_held(cram_engine* e, uint64_t* pte)
{
    uint64_t p;
    for (;;) {
        p = load_acquire(pte);
        uint32_t state = CRAM_PTE_STATE(p);
        if (state != CRAM_PTE_DROPPING && state != CRAM_PTE_INSTALLING) return p;
        if (state == CRAM_PTE_INSTALLING) readahead_help(e);
        sched_yield();
    }
}
/* remote.c ("Remote tier" in cramnative.h) */
/* Under the engine lock, a MISSING fault on EVICTED page `page` (word p) whose slot is REMOTE: claims
 * it FETCHING (logged, counted) and queues the fetch (service thread) or leaves it for the faulting
 * thread to run once it lets the lock go (remote_run_pending). */
int remote_claim(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t p, int write, uint64_t t0);
/* The remote claim of a read brings in, in the same request, the evicted remote pages after it up to
 * the stream's window whose extents follow its own (readahead); claimed FETCHING the same way.
 * 0 if nothing can fetch it (no read half configured, its node never published): the caller fails
 * the access as for an unreadable copy, rather than leave the thread waiting for ever. */
/* Advise(WillNeed) (CramNative_PrefetchPages), under the engine lock: if page is EVICTED with a
 * remote copy, claims it and the pages of [page + 1, end) whose extents follow (as a fault's
 * readahead) as one request, counted as prefetched, and sends it (service thread) or leaves it in
 * *run for the caller to run once it lets the lock go (remote_run). Returns the pages claimed (0: not
 * a remote page, or nothing can fetch it). */
struct remote_lane;
uint32_t remote_prefetch(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t end, struct remote_lane** run);
void remote_run(cram_engine* e, struct remote_lane* lane);
/* The faulting thread, after it let the engine lock go: runs the fetch its fault claimed, if any. */
void remote_run_pending(cram_engine* e);
/* Without the engine lock: waits until the page at pte is no longer FETCHING (the faulting-thread service). */
void remote_wait(cram_engine* e, uint64_t* pte);
/* Under the engine lock: waits until no fetch of region r is in flight (deactivation, discard, destroy). */
void remote_quiesce(cram_engine* e, const cram_region_desc* r);
void remote_note_wait(cram_engine* e);
/* Whether remote fetches are in flight (the service thread does not busy-poll then). */
int remote_busy(const cram_engine* e);
void remote_destroy(cram_engine* e);
/* regions.c */
void page_forget(cram_shared* s, uint64_t p, uint64_t* resident, uint64_t* populated);
/* state.c */
uint64_t touched_page_next(const cram_region_desc* r, uint64_t page);
void clean_copy_count(cram_shared* s, uint64_t id, int sign);
void stale_push(cram_shared* s, uint64_t id);
/* uffd.c */
int uffd_copy(int uffd, uint64_t dst, const void* src, uint64_t len, int write_protect);
int uffd_open(uint32_t forced_mode, uint32_t* mode_out);
int uffd_writeprotect(int uffd, uint64_t start, uint64_t len, int protect);
int uffd_zeropage(int uffd, uint64_t dst, uint64_t len);
void uffd_wake(int uffd, uint64_t start, uint64_t len);
/* Wakes the threads waiting in the kernel for [start, +len) — with the service thread; with the
 * faulting thread no thread waits (it is the one resolving), so there is nothing to do. */
static inline void engine_wake(cram_engine* e, uint64_t start, uint64_t len)
{
    if (!e->faulting_thread) uffd_wake(e->uffd, start, len);
}

#endif
