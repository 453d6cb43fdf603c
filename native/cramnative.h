/*
 * CramCore native helper: the userfaultfd fault service and the data layouts it shares with C#.
 *
 * Every structure in this header is mirrored in src/CramCore/Internals/NativeLayout.cs and
 * checked field by field by the layout test (CramNative_GetLayout). Change both or neither.
 *
 * Exports follow the dotnet/runtime convention: CramNative_* functions return 0 on success and
 * -1 with errno set on failure.
 */
#ifndef CRAMNATIVE_H
#define CRAMNATIVE_H

#include <stdint.h>

#define CRAM_PAGE_SIZE 4096u
#define CRAM_PAGE_SHIFT 12
#define CRAM_MAX_REGIONS 256

/* ---------------------------------------------------------------------------------------------
 * Page-table entry: one 64-bit word per 4 KiB page.
 *
 *   bits  0..3   state (CRAM_PTE_*)
 *   bit   4      referenced (set by the fault service, cleared by the reclaim clock)
 *   bits  5..15  reserved, zero
 *   bits 16..63  virtual slot id (valid in CLEAN, DROPPING, EVICTED; slot 0 = zero-filled page)
 *
 * The page-state machine (the one authoritative description; PageTable.cs repeats only names):
 *
 *   EMPTY ──MISSING fault (service)──▶ DIRTY          zero page installed, never compressed
 *   DIRTY ──reclaim claims (C#, CAS)──▶ EVICTING      then UFFDIO_WRITEPROTECT, then read+compress
 *   EVICTING ──compressed+stored (C#, CAS)──▶ CLEAN(slot)
 *   EVICTING ──does not compress (C#, CAS)──▶ INCOMPRESSIBLE   stays resident and write-protected;
 *                                                      "does not compress": LZ4 failed, or the
 *                                                      estimator (PageEstimator.cs) was confident
 *                                                      it would and LZ4 was not tried
 *   EVICTING ──compressed pool full (C#, CAS)──▶ DIRTY   still write-protected: its next write
 *                                                      takes the DIRTY path through UNPROTECTING
 *   EVICTING ──WP fault (service)──▶ UNPROTECTING ──▶ DIRTY   eviction cancelled; reclaim's
 *                                                      publish CAS then fails and it frees what it
 *                                                      stored: no lost write
 *   CLEAN ──WP fault (service)──▶ UNPROTECTING ──▶ DIRTY   copy is stale: slot pushed on the
 *                                                      stale list
 *   UNPROTECTING: only the service holds it, around the UFFDIO_WRITEPROTECT that clears the
 *             protection. Without it, reclaim could claim the page (DIRTY→EVICTING→CLEAN, write-
 *             protecting it again) before the service's clear lands, leaving a CLEAN page
 *             writable, and a write to it would be lost on the next drop. Every move to DIRTY
 *             through it appends the page to the fault-in log, so reclaim sees it again.
 *   CLEAN ──drop (native, CAS)──▶ DROPPING ──MADV_DONTNEED──▶ EVICTED(slot)
 *   DROPPING: only native code holds this state, for the length of one madvise batch; the
 *             service waits for it to end (it never waits for managed code).
 *   EVICTED ──read MISSING fault──▶ CLEAN(slot)       page rebuilt, mapped write-protected;
 *                                                      evicting it again costs only MADV_DONTNEED
 *   EVICTED ──write MISSING fault──▶ DIRTY            rebuilt writable at once (one fault);
 *                                                      slot pushed on the stale list
 *   INCOMPRESSIBLE ──WP fault──▶ UNPROTECTING ──▶ DIRTY   re-enters the reclaim queue once written
 *   DIRTY ──WP fault──▶ UNPROTECTING ──▶ DIRTY         a stray protection (a failed eviction) is cleared
 *   any ──region destroyed──▶ (gone)                  after the service has been fenced out
 * ------------------------------------------------------------------------------------------- */
enum cram_pte_state {
    CRAM_PTE_EMPTY = 0,
    CRAM_PTE_DIRTY = 1,
    CRAM_PTE_CLEAN = 2,
    CRAM_PTE_EVICTING = 3,
    CRAM_PTE_DROPPING = 4,
    CRAM_PTE_EVICTED = 5,
    CRAM_PTE_INCOMPRESSIBLE = 6,
    CRAM_PTE_UNPROTECTING = 7,
};

#define CRAM_PTE_STATE_MASK 0xFull
#define CRAM_PTE_REFERENCED 0x10ull
#define CRAM_PTE_SLOT_SHIFT 16
#define CRAM_PTE_STATE(p) ((uint32_t)((p) & CRAM_PTE_STATE_MASK))
#define CRAM_PTE_SLOT(p) ((p) >> CRAM_PTE_SLOT_SHIFT)
#define CRAM_PTE_MAKE(state, slot) (((uint64_t)(slot) << CRAM_PTE_SLOT_SHIFT) | (uint64_t)(state))

/* Slot id 0 never names a slot: it means "the page is all zero bytes". */
#define CRAM_SLOT_ZERO 0ull

/* ---------------------------------------------------------------------------------------------
 * Virtual swap slot table. A slot says which backend holds a page's data. The table is a
 * two-level radix: directory[id >> CRAM_SLOT_CLUSTER_SHIFT] points to a cluster of
 * CRAM_SLOT_CLUSTER_SIZE slots, allocated on demand by managed code and published before any
 * page-table entry names a slot in it.
 * ------------------------------------------------------------------------------------------- */
#define CRAM_SLOT_CLUSTER_SHIFT 14
#define CRAM_SLOT_CLUSTER_SIZE (1u << CRAM_SLOT_CLUSTER_SHIFT)
#define CRAM_SLOT_DIRECTORY_SIZE (1u << 18)

enum cram_backend {
    CRAM_BACKEND_FREE = 0,
    CRAM_BACKEND_SAME_FILLED = 1, /* data = the 8-byte value repeated over the page */
    CRAM_BACKEND_LZ4 = 2,         /* data = pool handle of length bytes of LZ4 block data */
    CRAM_BACKEND_RAW = 3,         /* data = pool handle of an uncompressed 4 KiB copy */
};

/* ---------------------------------------------------------------------------------------------
 * Compressed-pool handles. A slot of backend LZ4 or RAW holds a handle id; the handle says where
 * the object's bytes are now. Compaction moves objects and rewrites only the handle, under the
 * engine lock the fault service holds while it resolves faults (CramNative_PoolMove), so the
 * service never reads an object mid-move. Directory and clusters are allocated by managed code.
 * ------------------------------------------------------------------------------------------- */
#define CRAM_HANDLE_CLUSTER_SHIFT 14
#define CRAM_HANDLE_CLUSTER_SIZE (1u << CRAM_HANDLE_CLUSTER_SHIFT)
#define CRAM_HANDLE_DIRECTORY_SIZE (1u << 18)

typedef struct cram_pool_handle {
    uint64_t address; /* the object's bytes */
    uint32_t length;  /* object length in bytes */
    uint32_t zspage;  /* the class page holding it (managed bookkeeping) */
} cram_pool_handle;

typedef struct cram_pool_move {
    uint64_t handle;      /* which object */
    uint64_t destination; /* where its bytes go */
    uint32_t zspage;      /* its new class page */
    uint32_t reserved;
} cram_pool_move;

typedef struct cram_slot {
    uint64_t data;       /* value or storage address, by backend */
    uint32_t length;     /* stored bytes (0 for SAME_FILLED) */
    uint16_t backend;    /* enum cram_backend */
    uint16_t flags;      /* reserved */
    uint64_t next_stale; /* link of the stale list (slot id, 0 ends it) */
} cram_slot;

/* ---------------------------------------------------------------------------------------------
 * Counters kept by the fault service (and by native drop). Read by C# without locks.
 * ------------------------------------------------------------------------------------------- */
typedef struct cram_stats {
    uint64_t faults_zero;           /* MISSING on a never-touched page */
    uint64_t faults_swapin_lz4;     /* MISSING on an evicted page, LZ4-decompressed */
    uint64_t faults_swapin_same;    /* MISSING on an evicted same-filled or zero page */
    uint64_t faults_swapin_raw;     /* MISSING on an evicted page stored uncompressed */
    uint64_t faults_wp;             /* WP on a clean or incompressible page */
    uint64_t faults_wp_cancel;      /* WP that cancelled an eviction in progress */
    uint64_t faults_spurious;       /* messages for pages already resolved */
    uint64_t resident_pages;        /* pages mapped in all regions */
    uint64_t peak_resident_pages;   /* high-water mark of resident_pages */
    uint64_t populated_pages;       /* pages that are not EMPTY (resident or evicted) */
    uint64_t evicted_pages_total;   /* pages dropped by MADV_DONTNEED (cumulative) */
    uint64_t zero_copies;           /* pages whose copy is slot 0 (CLEAN(0) or EVICTED(0)) */
    uint64_t throttle_waits;        /* faults delayed because resident exceeded the hard limit */
    uint64_t fault_log_overflows;   /* fault-in log entries dropped because the log was full */
    uint64_t service_errors;        /* ioctl failures other than EEXIST/ENOENT */
    uint64_t service_busy_ns;       /* time the service spent resolving faults */
} cram_stats;

/* Fault-in log: the service appends (region << 48 | page) for every page it makes resident;
 * reclaim drains it in order, which gives second-chance over fault-in order. */
#define CRAM_FAULT_LOG_SIZE (1u << 16)

enum cram_uffd_mode {
    CRAM_UFFD_MODE_NONE = 0,
    CRAM_UFFD_MODE_SYSCALL = 1,       /* userfaultfd(2), kernel faults included */
    CRAM_UFFD_MODE_DEV = 2,           /* /dev/userfaultfd, kernel faults included */
    CRAM_UFFD_MODE_USER_ONLY = 3,     /* UFFD_USER_MODE_ONLY: syscalls on evicted pages EFAULT */
};

typedef struct cram_engine_config {
    uint32_t forced_mode;        /* 0 = try SYSCALL, DEV, USER_ONLY in order; else only that */
    uint32_t spin_us;            /* service busy-polls this long before it blocks */
    uint64_t soft_limit_pages;   /* resident pages above which reclaim is signalled (0 = none) */
    uint64_t hard_limit_pages;   /* resident pages above which faults are throttled (0 = none) */
    uint32_t throttle_max_us;    /* longest a fault waits for reclaim at the hard limit */
    uint32_t fault_around_pages; /* first-touch write faults fill this many EMPTY pages (1..64) */
} cram_engine_config;

typedef struct cram_region_desc {
    uint64_t base;       /* region start address */
    uint64_t length;     /* bytes, multiple of CRAM_PAGE_SIZE */
    uint64_t pte;        /* address of the page table: length / 4096 words */
    uint32_t id;         /* index in the engine's region table */
    uint32_t active;     /* 1 while the service may resolve faults in it */
} cram_region_desc;

/* The part of the engine that C# reads and writes directly. */
typedef struct cram_shared {
    cram_stats stats;
    uint64_t slot_directory;  /* address of CRAM_SLOT_DIRECTORY_SIZE cluster addresses */
    uint64_t handle_directory; /* the compressed pool's handle directory (set by C# before any region) */
    uint64_t stale_head;      /* Treiber list of stale slots: service pushes, C# takes all */
    uint64_t fault_log;       /* address of CRAM_FAULT_LOG_SIZE entries */
    uint64_t fault_log_head;  /* next entry the service writes (monotonic) */
    uint64_t fault_log_tail;  /* next entry C# reads (monotonic) */
    uint32_t uffd_mode;       /* enum cram_uffd_mode */
    uint32_t region_count;    /* high-water index in regions[] */
    uint32_t reclaim_stalled; /* set by C# when reclaim finds nothing to evict: faults stop waiting */
    uint32_t reserved;
    cram_region_desc regions[CRAM_MAX_REGIONS];
} cram_shared;

/* Offsets and sizes the layout test compares with the C# mirror. */
typedef struct cram_layout {
    uint32_t sizeof_slot, off_slot_data, off_slot_length, off_slot_backend, off_slot_next_stale;
    uint32_t sizeof_handle, off_handle_address, off_handle_length, off_handle_zspage;
    uint32_t sizeof_move, off_move_handle, off_move_destination, off_move_zspage;
    uint32_t off_shared_handle_directory, handle_cluster_shift, handle_directory_size;
    uint32_t sizeof_stats, off_stats_resident_pages, off_stats_zero_copies, off_stats_service_busy_ns;
    uint32_t sizeof_region, off_region_pte, off_region_active;
    uint32_t sizeof_shared, off_shared_slot_directory, off_shared_stale_head, off_shared_fault_log_head,
        off_shared_fault_log_tail, off_shared_uffd_mode, off_shared_reclaim_stalled, off_shared_regions;
    uint32_t sizeof_config, off_config_hard_limit_pages, off_config_fault_around_pages;
    uint32_t pte_slot_shift, slot_cluster_shift, slot_directory_size, fault_log_size, max_regions;
} cram_layout;

typedef struct cram_engine cram_engine;

#ifdef __cplusplus
extern "C" {
#endif

int CramNative_GetLayout(cram_layout* layout);
int CramNative_EngineCreate(const cram_engine_config* config, cram_engine** engine, cram_shared** shared);
int CramNative_EngineDestroy(cram_engine* engine);
int CramNative_RegionCreate(cram_engine* engine, uint64_t length, uint32_t* region_id);
int CramNative_RegionDeactivate(cram_engine* engine, uint32_t region_id);
int CramNative_RegionDestroy(cram_engine* engine, uint32_t region_id);
int CramNative_WriteProtectPages(cram_engine* engine, uint32_t region_id, const uint64_t* pages, int32_t count);
int CramNative_DropPages(cram_engine* engine, uint32_t region_id, uint64_t* pages, int32_t count, int32_t* dropped);
int CramNative_WaitReclaimSignal(cram_engine* engine, int32_t timeout_ms, int32_t* signalled);
int CramNative_SignalReclaim(cram_engine* engine);
int CramNative_PoolMove(cram_engine* engine, uint64_t handle_directory, const cram_pool_move* moves, int32_t count);
int CramNative_ArenaMap(uint64_t bytes, int32_t lock, uint64_t* address);
int CramNative_ArenaUnmap(uint64_t address, uint64_t bytes);
int CramNative_Discard(uint64_t address, uint64_t bytes);

#ifdef __cplusplus
}
#endif

#endif
