/*
 * Fault resolution: the service thread, first touch, swap-in, write-protect faults, throttling.
 */
#define _GNU_SOURCE
#include "internal.h"

void fault_log_append(cram_shared* s, uint32_t region, uint64_t page)
{
    uint64_t head = s->fault_log_head; /* written under the engine lock only */
    uint64_t tail = load_acquire(&s->fault_log_tail);
    if (head - tail >= CRAM_FAULT_LOG_SIZE) { add_counter(&s->stats.fault_log_overflows, 1); return; }
    uint64_t* log = (uint64_t*)(uintptr_t)s->fault_log;
    log[head & (CRAM_FAULT_LOG_SIZE - 1)] = CRAM_FAULT_LOG_ENTRY(region, page);
    store_release(&s->fault_log_head, head + 1);
}

void signal_reclaim(cram_engine* e)
{
    if (__atomic_exchange_n(&e->reclaim_signalled, 1, __ATOMIC_ACQ_REL) == 0) {
        uint64_t one = 1;
        ssize_t r = write(e->reclaim_fd, &one, sizeof one);
        (void)r;
    }
}

/* Faults were resolved: wakes the reclaim worker if it sleeps idle (it has a fault log to pull,
 * frees to drain, a limit to hold). The activity count is written before the idle flag is read,
 * and the worker sets the flag before it reads the count (both sequentially consistent), so one
 * of the two always sees the other: the worker never sleeps through a fault. */
void note_activity(cram_engine* e)
{
    __atomic_add_fetch(&e->activity, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&e->reclaim_idle, __ATOMIC_SEQ_CST) && __atomic_exchange_n(&e->reclaim_idle, 0, __ATOMIC_ACQ_REL))
        signal_reclaim(e);
}

void count_file_read(cram_engine* e, uint64_t offset, int64_t bytes)
{
    ASSERT_ENGINE_LOCKED(e);
    cram_stats* st = &e->shared->stats;
    add_counter(&st->file_reads, 1);
    if (e->file_last_end && offset >= e->file_last_end - CRAM_PAGE_SIZE && offset <= e->file_last_end)
        add_counter(&st->file_reads_sequential, 1);
    if (bytes > 0) {
        add_counter(&st->file_read_bytes, (uint64_t)bytes);
        e->file_last_end = offset + (uint64_t)bytes;
    }
}

void resident_add(cram_engine* e, uint64_t n)
{
    cram_stats* st = &e->shared->stats;
    uint64_t now = __atomic_add_fetch(&st->resident_pages, n, __ATOMIC_RELAXED);
    uint64_t peak = __atomic_load_n(&st->peak_resident_pages, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&st->peak_resident_pages, &peak, now, 1,
                                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { }
    uint64_t soft = __atomic_load_n(&e->config.soft_limit_pages, __ATOMIC_RELAXED);
    if (soft && now > soft) signal_reclaim(e);
}

/* Before a fault adds resident pages: if `want` of them would take resident past the hard limit,
 * give reclaim a bounded time to make that room (want is 1 but for a first touch that continues a
 * stream, which waits for room for its fault-around block: at the limit, a fill then maps a block
 * a fault instead of one page a fault as eviction frees them one by one). Bounded, because reclaim is managed code that a GC may be suspending; and
 * not at all while reclaim reports it has nothing left to evict (say, incompressible data):
 * then the limit cannot be held and waiting would only slow the application down. Called by the
 * service with the engine lock held; it lets the lock go while it waits, because reclaim takes it
 * (writeback's slot moves, pool compaction): the caller re-finds its region afterwards. */
static void throttle(cram_engine* e, uint64_t want)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    if (!want) return; /* the fault adds no page */
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
        engine_unlock(e);
        while (__atomic_load_n(memory_wait, __ATOMIC_ACQUIRE) && now_ns() < until)
            nanosleep(&pause, NULL);
        engine_lock(e);
        return;
    }
    uint64_t hard = __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED);
    if (!hard || __atomic_load_n(&st->resident_pages, __ATOMIC_RELAXED) + want <= hard)
        return;
    signal_reclaim(e);
    if (__atomic_load_n(stalled, __ATOMIC_ACQUIRE)) return;
    add_counter(&st->throttle_waits, 1);
    uint64_t deadline = now_ns() + (uint64_t)e->config.throttle_max_us * 1000ull;
    struct timespec nap = { 0, 20000 };
    engine_unlock(e);
    while (__atomic_load_n(&st->resident_pages, __ATOMIC_RELAXED) + want > __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED) &&
           __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED) &&
           !__atomic_load_n(stalled, __ATOMIC_ACQUIRE) && now_ns() < deadline)
        nanosleep(&nap, NULL);
    engine_lock(e);
}

/* The first-touch stream (index in the region's streams) a first touch at page continues, or -1. */
static int first_touch_stream(const cram_engine* e, const cram_region_desc* r, uint64_t page)
{
    const uint64_t* streams = e->next_first_touch[r->id];
    int stream = -1;
    for (int k = 0; k < FIRST_TOUCH_STREAMS; k++)
        if (page != 0 && streams[k] == page) stream = k;
    return stream;
}

/* How many pages a MISSING fault at page would like room for below the hard limit: a fault-around
 * block for a first touch that continues a stream (a fill), capped at a sixteenth of the limit;
 * none for a page that is neither EMPTY nor EVICTED (a duplicate message, a page FETCHING: a
 * faulting thread woken by a signal retries its access and faults again, and must not wait at the
 * limit for a page it does not add); one for anything else. Under the engine lock, after pte_prefault. */
static uint64_t throttle_want(const cram_engine* e, const cram_region_desc* r, uint64_t page)
{
    uint64_t around = e->config.fault_around_pages;
    uint32_t state = CRAM_PTE_STATE(load_acquire(&r->pte[page]));
    if (state != CRAM_PTE_EMPTY && state != CRAM_PTE_EVICTED) return 0; /* resolved already, or being fetched: adds nothing */
    if (around <= 1 || page == 0 || state != CRAM_PTE_EMPTY) return 1;
    if (first_touch_stream(e, r, page) < 0) return 1;
    uint64_t cap = __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED) / 16;
    return around < cap ? around : cap > 1 ? cap : 1;
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

/* Whether page's block of the page table was ever touched (under the engine lock). A block never
 * touched is all EMPTY, and its page of the page table may not exist yet: reading it would map the
 * kernel's zero page, and the first write then fault again to replace it. */
static int block_touched(const cram_region_desc* r, uint64_t page)
{
    uint64_t b = page >> TOUCHED_BLOCK_SHIFT;
    return (r->touched[b >> 6] >> (b & 63)) & 1;
}

/* The first look at a faulting page's entry: in a block never touched, a write that changes nothing,
 * so the page-table page is made once, writable, instead of mapped as the zero page by this read and
 * replaced by the store that follows (a second fault; a sparse first touch pays it every other page). */
static void pte_prefault(const cram_region_desc* r, uint64_t page)
{
    if (!block_touched(r, page)) __atomic_fetch_or(&r->pte[page], 0, __ATOMIC_RELAXED);
}

static void resolve_first_touch(cram_engine* e, cram_region_desc* r, uint64_t page, int write)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    cram_shared* s = e->shared;
    uint64_t* ptes = r->pte;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    uint64_t first = page, last = page; /* inclusive run of EMPTY pages around the fault */
    uint32_t around = e->config.fault_around_pages;
    /* The most pages this fault may add: the room below the hard limit (one page at it: a throttled
     * fault that gave up waiting), one while the memory limit cannot be held. */
    uint64_t hard = __atomic_load_n(&e->config.hard_limit_pages, __ATOMIC_RELAXED);
    uint64_t resident = __atomic_load_n(&s->stats.resident_pages, __ATOMIC_RELAXED);
    uint64_t room = __atomic_load_n(&s->memory_wait_us, __ATOMIC_RELAXED) ? 1 : !hard ? UINT64_MAX : resident < hard ? hard - resident : 1;
    /* Fault around only where a first touch continues a sequential stream, or lands right after a
     * page already in use (a fill that another thread's chunk precedes), for a write or a read, and
     * then with writable zero pages even for a read: managed fills read their destination first
     * (the JIT's null check), and a shared zero page there costs every page a second fault, a
     * copy-on-write that flushes the TLB of every CPU the process runs on (measured: fill 2.4x
     * faster). A sparse first touch - a hash table's pattern - maps its one page; a lone read maps
     * the shared zero page, which costs no memory. */
    uint64_t* streams = e->next_first_touch[r->id];
    int stream = first_touch_stream(e, r, page);
    int sequential = stream >= 0 || (page != 0 && block_touched(r, page - 1) && CRAM_PTE_STATE(load_acquire(&ptes[page - 1])) != CRAM_PTE_EMPTY);
    if (sequential && around > 1) {
        uint64_t lo = page - page % around, hi = lo + around - 1;
        if (hi >= pages) hi = pages - 1;
        while (first > lo && CRAM_PTE_STATE(load_acquire(&ptes[first - 1])) == CRAM_PTE_EMPTY) first--;
        while (last < hi && CRAM_PTE_STATE(load_acquire(&ptes[last + 1])) == CRAM_PTE_EMPTY) last++;
    }
    if (last - first + 1 > room) { /* near the limit: the page and the ones after it that fit */
        first = page;
        if (last - page + 1 > room) last = page + room - 1;
    }
    uint64_t n = last - first + 1;
    uint64_t addr = r->base + (first << CRAM_PAGE_SHIFT);
    /* A read that continues a stream gets a writable zero page even alone (at the hard limit): the
     * write that follows it would otherwise take a copy-on-write fault that flushes every CPU's TLB. */
    int rc = write || n > 1 || sequential ? uffd_copy(e->uffd, addr, e->zero_pages, n << CRAM_PAGE_SHIFT, 0)
                                          : uffd_zeropage(e->uffd, addr, n << CRAM_PAGE_SHIFT);
    if (rc != 0 && n > 1) { /* something in the run was present after all: do just the page */
        first = last = page;
        n = 1;
        addr = r->base + (page << CRAM_PAGE_SHIFT);
        rc = uffd_copy(e->uffd, addr, e->zero_pages, CRAM_PAGE_SIZE, 0);
    }
    if (rc != 0) {
        if (errno != EEXIST) add_counter(&s->stats.service_errors, 1);
        engine_wake(e, r->base + (page << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE);
        return;
    }
    if (stream < 0) { /* a new stream replaces the oldest */
        stream = e->next_stream[r->id];
        e->next_stream[r->id] = (uint8_t)((stream + 1) % FIRST_TOUCH_STREAMS);
    }
    streams[stream] = last + 1;
    uint64_t made = 0;
    for (uint64_t i = first; i <= last; i++) {
        if (pte_cas(&ptes[i], CRAM_PTE_MAKE(CRAM_PTE_EMPTY, 0), CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0))) {
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
    engine_wake(e, addr, n << CRAM_PAGE_SHIFT); /* threads faulting anywhere in the run */
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
    if (e->faulting_thread) {
        /* On the faulting thread, in CramCore's SIGBUS handler: it passes this very fault on to the
         * runtime's handler, as the kernel's SIGBUS for a page that could not be read. */
        t_fault_failed = 1;
        return;
    }
    if (e->poison) {
        struct uffdio_poison p = { .range = { .start = addr, .len = CRAM_PAGE_SIZE }, .mode = 0 };
        if (ioctl(e->uffd, UFFDIO_POISON, &p) == 0 || errno == EEXIST) return; /* wakes the thread */
    }
    if (tid == 0 || syscall(SYS_tgkill, getpid(), (pid_t)tid, SIGBUS) != 0) add_counter(&e->shared->stats.service_errors, 1);
    engine_wake(e, addr, CRAM_PAGE_SIZE);
}

/* The alignment a read of the backing file needs: with O_DIRECT the file system's direct I/O offset
 * alignment (statx STATX_DIOALIGN: 512 bytes on ext4 over a 512-byte device), else a page; 512 for a
 * buffered file. Asked once, under the engine lock. */
static uint64_t file_read_align(cram_engine* e)
{
    ASSERT_ENGINE_LOCKED(e);
    if (e->file_read_align) return e->file_read_align;
    uint64_t align = e->shared->backing_direct ? CRAM_PAGE_SIZE : 512;
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (e->shared->backing_direct && statx(e->shared->backing_fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align >= 512 && sx.stx_dio_offset_align <= CRAM_PAGE_SIZE &&
        !(sx.stx_dio_offset_align & (sx.stx_dio_offset_align - 1)) && sx.stx_dio_mem_align <= CRAM_PAGE_SIZE)
        align = sx.stx_dio_offset_align;
#endif
    e->file_read_align = align;
    return align;
}

/* Reads the blocks that cover a file extent into file_buf (page-aligned, as O_DIRECT needs): only the
 * direct I/O blocks it spans, not whole pages (a 4 KiB-aligned read of an extent that straddles a
 * page boundary is 8 KiB; measured on this VM's disk, 8 KiB p50 72 us, 4 KiB 66, 3 KiB 62). A failed
 * or short read is retried once. Returns the extent's first byte, or NULL. */
static const unsigned char* file_read(cram_engine* e, uint64_t location, uint32_t length)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    if (file_window_holds(e, location, length))
        return e->file_window + (location - e->file_window_start); /* read with its readahead window (file_window_read) */
    int fd = e->shared->backing_fd;
    uint64_t align = file_read_align(e);
    uint64_t first = location & ~(align - 1);
    uint64_t span = ((location + length + align - 1) & ~(align - 1)) - first; /* at most a page + align - 1: file_buf holds two */
    for (int attempt = 0; attempt < 2 && fd >= 0; attempt++) {
        ssize_t n = pread(fd, e->file_buf, span, (off_t)first);
        count_file_read(e, first, n);
        if (n == (ssize_t)span) return e->file_buf + (location - first);
    }
    add_counter(&e->shared->stats.read_errors, 1);
    return NULL;
}

/* The native read half of the backend contract (cramnative.h, "Virtual swap"): the page's bytes for
 * `slot`, checked against its checksum, or NULL if they cannot be trusted (counted; *why says why).
 * The page is rebuilt into `dst`, except a raw copy in the pool, which is returned where it lies. */
const void* slot_read(cram_engine* e, cram_slot* slot, unsigned char* dst, uint64_t** counter, const char** why)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
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
    case CRAM_BACKEND_REMOTE: /* never read under the lock: the fetchers read it (remote.c) */
        *why = "remote entry read in place of a fetch";
        return NULL;
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
    uint32_t flags = slot_flags(slot);
    if (flags & CRAM_SLOT_RAW) {
        *counter = &s->stats.faults_swapin_raw;
        return stored;
    }
    if (flags & CRAM_SLOT_ZSTD) { /* recompressed ("Codecs" in cramnative.h) */
        *counter = &s->stats.faults_swapin_zstd;
        if (zstd_decode(e, 0, flags, stored, slot->length, dst) != 0) {
            add_counter(&s->stats.service_errors, 1); /* checksum matched: the copy was stored wrong, or its dictionary is gone */
            *why = "stored copy does not decompress (zstd)";
            return NULL;
        }
        return dst;
    }
    *counter = &s->stats.faults_swapin_lz4;
    if (LZ4_decompress_safe((const char*)stored, (char*)dst, (int)slot->length, CRAM_PAGE_SIZE) != (int)CRAM_PAGE_SIZE) {
        add_counter(&s->stats.service_errors, 1); /* checksum matched: the copy was stored wrong */
        *why = "stored copy does not decompress";
        return NULL;
    }
    return dst;
}

uint64_t eviction_stamp(cram_shared* s)
{
    uint64_t now = __atomic_load_n(&s->stats.evicted_pages_total, __ATOMIC_RELAXED) / CRAM_EVICTION_STAMP_UNIT;
    return ((now & 0xFFFFull) << CRAM_PTE_STAMP_SHIFT) | CRAM_PTE_STAMPED;
}

/* Whether a page evicted with word p, refaulting now, is in the working set: its refault distance
 * (evictions since its drop) is below cram_shared.activate_distance_pages. */
int refault_activates(cram_shared* s, uint64_t p)
{
    uint64_t threshold = __atomic_load_n(&s->activate_distance_pages, __ATOMIC_RELAXED);
    if (!threshold || !(p & CRAM_PTE_STAMPED)) return 0;
    uint64_t now = __atomic_load_n(&s->stats.evicted_pages_total, __ATOMIC_RELAXED) / CRAM_EVICTION_STAMP_UNIT;
    /* An upper bound: the stamp is the unit the drop fell in, so the distance is up to a unit more. */
    uint64_t distance = (((now - CRAM_PTE_STAMP(p)) & 0xFFFFull) + 1) * CRAM_EVICTION_STAMP_UNIT;
    return distance <= threshold;
}

void latency_count(uint64_t* buckets, uint64_t t0)
{
    uint64_t us = (now_ns() - t0) / 1000;
    uint32_t b = us ? 64 - (uint32_t)__builtin_clzll(us) : 0;
    if (b >= CRAM_SWAPIN_LATENCY_BUCKETS) b = CRAM_SWAPIN_LATENCY_BUCKETS - 1;
    add_counter(&buckets[b], 1);
}

static void resolve_swapin(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t pte, int write, uint32_t tid, uint64_t t0)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    cram_shared* s = e->shared;
    uint64_t* ptes = r->pte;
    uint64_t id = CRAM_PTE_SLOT(pte);
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    const void* src = e->zero_pages;
    uint64_t* counter = &s->stats.faults_swapin_same;
    if (id != CRAM_SLOT_ZERO) {
        cram_slot* slot = slot_get(s, id);
        if (slot->backend == CRAM_BACKEND_REMOTE && !(slot_flags(slot) & CRAM_SLOT_BAD)) {
            if (remote_claim(e, r, page, pte, write, t0)) return; /* fetched outside the lock ("Remote tier") */
            slot_flags_or(slot, CRAM_SLOT_BAD); /* no read half can fetch it: it fails as an unreadable copy does, below */
        }
        const char* why = "stored copy was found bad before";
        /* A read that continues a sequential stream from the file: read this page's extent with the
         * window readahead will bring in after it, in one read (random faults read their extent only). */
        uint64_t ahead_end;
        if (!write && slot->backend == CRAM_BACKEND_FILE && !(slot_flags(slot) & CRAM_SLOT_BAD) &&
            !__atomic_load_n(&s->memory_wait_us, __ATOMIC_RELAXED) && (ahead_end = swapin_readahead_end(e, r, page)) != 0)
            file_window_read(e, r, page, ahead_end);
        if ((slot_flags(slot) & CRAM_SLOT_BAD) || !(src = slot_read(e, slot, e->page_buf, &counter, &why))) {
            e->file_window_length = 0;
            slot_flags_or(slot, CRAM_SLOT_BAD); /* stays EVICTED and named; freed with its region */
            fail_access(e, addr, tid, id, why);
            return;
        }
        if (!write) slot_flags_or(slot, CRAM_SLOT_REFERENCED); /* writeback: recently used */
    }
    if (__atomic_load_n(&e->probe_wants_sample, __ATOMIC_ACQUIRE)) probe_take_sample(e, src); /* the latency probe's next page (probe.c) */
    if (uffd_copy(e->uffd, addr, src, CRAM_PAGE_SIZE, !write) != 0) {
        if (errno != EEXIST) add_counter(&s->stats.service_errors, 1);
        engine_wake(e, addr, CRAM_PAGE_SIZE);
        e->file_window_length = 0;
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
    /* Counted before the page is CLEAN: from then on a write-protect fault or reclaim may take it out. */
    if (!write) clean_copy_count(s, id, +1);
    if (!pte_cas(&ptes[page], pte, next)) {
        add_counter(&s->stats.service_errors, 1);
        if (!write) clean_copy_count(s, id, -1);
    }
    if (write) stale_push(s, id);
    add_counter(counter, 1);
    probe_note_swapins(e); /* after the count: wakes an idle latency probe */
    add_counter(&r->faults_swapin, 1);
    fault_log_append(s, r->id, page);
    resident_add(e, 1);
    latency_count(s->stats.swapin_latency_us_log2, t0); /* before the wake, so the thread that resumes finds its swap-in counted */
    engine_wake(e, addr, CRAM_PAGE_SIZE);
    if (!write && !__atomic_load_n(&e->shared->memory_wait_us, __ATOMIC_RELAXED)) swapin_readahead(e, r, page);
    e->file_window_length = 0; /* a window lives within this hold of the engine lock */
}

static void resolve_missing(cram_engine* e, cram_region_desc* r, uint64_t page, int write, uint32_t tid, uint64_t t0)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    uint64_t* pte = &r->pte[page];
    uint64_t p = wait_not_held(e, pte);
    switch (CRAM_PTE_STATE(p)) {
    case CRAM_PTE_EMPTY: resolve_first_touch(e, r, page, write); break;
    case CRAM_PTE_EVICTED: resolve_swapin(e, r, page, p, write, tid, t0); break;
    case CRAM_PTE_FETCHING: remote_note_wait(e); break; /* its fetcher's wake-up resumes this thread too */
    default: /* already resolved by an earlier message for the same page */
        add_counter(&e->shared->stats.faults_spurious, 1);
        engine_wake(e, r->base + (page << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE);
        break;
    }
}

/* A write to a placed page (cramnative.h, "CRAM node"): writable in place if the budget and the
 * ledger allow, otherwise promoted to host memory. Under the engine lock, like every ledger change. */
static void resolve_placed_write(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t p)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    cram_shared* s = e->shared;
    cram_stats* st = &s->stats;
    uint64_t* pte = &r->pte[page];
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    uint64_t id = CRAM_PTE_SLOT(p);
    uint64_t writable = st->cram_writable_pages;
    int control = __atomic_load_n(&s->cram_write_control, __ATOMIC_ACQUIRE) != 0;
    int allow = !control || (writable < __atomic_load_n(&s->cram_writable_limit, __ATOMIC_ACQUIRE) &&
                             cram_ledger_fits(s, st->cram_placed_bytes, writable + 1));
    if (!pte_cas(pte, p, CRAM_PTE_MAKE(CRAM_PTE_UNPROTECTING, 0))) return; /* the caller retries */
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
        pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_PLACED_WRITABLE, id) | CRAM_PTE_REFERENCED);
        uint64_t now = __atomic_add_fetch(&st->cram_writable_pages, 1, __ATOMIC_RELAXED);
        if (now > st->cram_max_writable) __atomic_store_n(&st->cram_max_writable, now, __ATOMIC_RELAXED);
        add_counter(&st->cram_made_writable, 1);
        add_counter(&r->faults_write_protect, 1);
    } else {
        pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED);
        __atomic_fetch_sub(&st->cram_placed_pages, 1, __ATOMIC_RELAXED);
        __atomic_fetch_sub(&st->cram_placed_bytes, slot_get(s, id)->length, __ATOMIC_RELAXED);
        stale_push(s, id); /* the frame is freed and TRIMmed by the reaper */
        add_counter(&st->cram_promotions, 1);
        add_counter(&r->faults_write_protect, 1);
        resident_add(e, 1);
    }
    fault_log_append(s, r->id, page); /* reclaim re-places a writable page, or sees the promoted one */
    engine_wake(e, addr, CRAM_PAGE_SIZE);
}

static void resolve_write_protect(cram_engine* e, cram_region_desc* r, uint64_t page)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    cram_shared* s = e->shared;
    uint64_t* pte = &r->pte[page];
    uint64_t addr = r->base + (page << CRAM_PAGE_SHIFT);
    for (;;) {
        uint64_t p = wait_not_held(e, pte);
        uint32_t state = CRAM_PTE_STATE(p);
        if (state == CRAM_PTE_EVICTED || state == CRAM_PTE_EMPTY || state == CRAM_PTE_FETCHING) {
            /* Dropped after the fault was queued: the retried access raises a MISSING fault. */
            add_counter(&s->stats.faults_spurious, 1);
            engine_wake(e, addr, CRAM_PAGE_SIZE);
            return;
        }
        if (state == CRAM_PTE_PLACED) {
            resolve_placed_write(e, r, page, p);
            if (CRAM_PTE_STATE(load_acquire(pte)) == CRAM_PTE_PLACED) continue; /* lost a race: again */
            return;
        }
        if (state == CRAM_PTE_PLACED_WRITABLE) { /* writable already (a queued duplicate) */
            add_counter(&s->stats.faults_spurious, 1);
            engine_wake(e, addr, CRAM_PAGE_SIZE);
            return;
        }
        /* CLEAN, EVICTING, INCOMPRESSIBLE or DIRTY: hold UNPROTECTING while the protection is
         * cleared, so reclaim cannot claim and re-protect the page in between. */
        if (!pte_cas(pte, p, CRAM_PTE_MAKE(CRAM_PTE_UNPROTECTING, 0))) continue;
        if (uffd_writeprotect(e->uffd, addr, CRAM_PAGE_SIZE, 0) != 0) add_counter(&s->stats.service_errors, 1);
        pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED | (p & CRAM_PTE_ACTIVE)); /* a write keeps it in the working set */
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
        engine_wake(e, addr, CRAM_PAGE_SIZE);
        return;
    }
}

/* Resolves one message; 0 if it was the latency probe's (probe.c: no activity, nothing counted). */
static int handle_message(cram_engine* e, const struct uffd_msg* m)
{
    if (m->event != UFFD_EVENT_PAGEFAULT) return 1;
    uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(CRAM_PAGE_SIZE - 1);
    if (probe_owns(e, addr)) { probe_serve(e, addr); return 0; }
    cram_region_desc* r = region_find(e, addr);
    if (!r) return 1; /* region went away after the fault was queued */
    uint64_t t0 = now_ns();
    uint64_t page = (addr - r->base) >> CRAM_PAGE_SHIFT;
    pte_prefault(r, page);
    if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
        throttle(e, throttle_want(e, r, page)); /* a MISSING fault adds resident pages; the lock may be let go meanwhile */
        if (!(r = region_find(e, addr))) return 1;
    }
    if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
        resolve_write_protect(e, r, page);
    else
        resolve_missing(e, r, page, (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0, m->arg.pagefault.feat.ptid, t0);
    return 1;
}

int resolve_on_faulting_thread(cram_engine* e, uint64_t addr, int write)
{
    uint64_t entered = now_ns(); /* the handler's entry, near enough: the application's view starts here */
    addr &= ~(uint64_t)(CRAM_PAGE_SIZE - 1);
    /* A first look without the lock (the table is fixed-size; a stale answer is checked below). */
    if (!region_find(e, addr)) return 0;
    engine_lock(e);
    cram_region_desc* r = region_find(e, addr);
    if (!r) { engine_unlock(e); return 0; } /* deactivated meanwhile: not ours any more */
    uint64_t t0 = now_ns();
    uint64_t page = (addr - r->base) >> CRAM_PAGE_SHIFT;
    pte_prefault(r, page);
    uint32_t state = CRAM_PTE_STATE(wait_not_held(e, &r->pte[page]));
    if (state == CRAM_PTE_FETCHING) { /* another thread fetches it: wait for that, without the lock */
        engine_unlock(e);
        remote_wait(e, &r->pte[page]);
        latency_count(e->shared->stats.fault_latency_us_log2, entered);
        return 1;
    }
    if (state == CRAM_PTE_EMPTY || state == CRAM_PTE_EVICTED) {
        throttle(e, throttle_want(e, r, page)); /* a MISSING fault adds resident pages; the lock may be let go meanwhile */
        if (!(r = region_find(e, addr))) { engine_unlock(e); return 0; }
        resolve_missing(e, r, page, write, (uint32_t)syscall(SYS_gettid), t0);
    } else if (write) {
        resolve_write_protect(e, r, page); /* present and write-protected (or a duplicate: counted spurious) */
    } else {
        add_counter(&e->shared->stats.faults_spurious, 1); /* a read another thread resolved first */
    }
    engine_unlock(e);
    remote_run_pending(e); /* the remote entry this fault claimed: fetched by this thread, outside the lock */
    readahead_help(e); /* the window a read swap-in claimed: mapped outside the lock, with the helpers */
    add_counter(&e->shared->stats.service_busy_ns, now_ns() - t0);
    if (state == CRAM_PTE_EVICTED) latency_count(e->shared->stats.fault_latency_us_log2, entered);
    note_activity(e);
    return 1;
}

void* service_main(void* arg)
{
    cram_engine* e = arg;
    struct uffd_msg msgs[UFFD_MSG_BATCH];
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
            /* While remote fetches are in flight their replies need a CPU for the node's reader (and, on
             * loopback, the store): the service then yields between polls instead of pausing, so it
             * stays awake for the next local fault without taking the CPU from them. */
            uint64_t spin = __atomic_load_n(&e->shared->reclaim_running, __ATOMIC_RELAXED) ? 0 : spin_ns;
            uint64_t until = now_ns() + spin;
            while (spin && (n = read(e->uffd, msgs, sizeof msgs)) < 0 && errno == EAGAIN && now_ns() < until) {
                if (remote_busy(e)) sched_yield();
                else __builtin_ia32_pause();
            }
            if (n <= 0) {
                if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
                if (fds[1].revents) break;
                continue;
            }
        }
        uint64_t t0 = now_ns();
        int active = 0; /* a message other than the latency probe's */
        engine_lock(e);
        for (ssize_t i = 0; i < n / (ssize_t)sizeof(struct uffd_msg); i++) {
            active |= handle_message(e, &msgs[i]);
            if (readahead_pending(e)) { /* a window was claimed: map it outside the lock */
                engine_unlock(e);
                readahead_help(e);
                engine_lock(e);
            }
        }
        engine_unlock(e);
        if (!active) continue;
        add_counter(&e->shared->stats.service_busy_ns, now_ns() - t0);
        note_activity(e);
    }
    return NULL;
}

