/*
 * Swap-in readahead (a sequential reader's next window) and prefetch (Advise WillNeed).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <linux/futex.h>

static void window_begin(cram_engine* e, cram_region_desc* r, uint64_t* counter);
static uint32_t window_claim(cram_engine* e, cram_region_desc* r, uint64_t q, uint32_t used, uint32_t n);

/* Which file-backed pages decode_ahead takes. */
enum { AHEAD_NO_FILE = 0, AHEAD_ANY_FILE = 1, AHEAD_FILE_IN_WINDOW = 2 };

/* Decodes the EVICTED pages from q on (before end, READAHEAD_CHUNK at most) into buf and their
 * page-table words into olds[]; stops at the first page it cannot bring in ahead: not EVICTED, found
 * bad, unreadable, or backed by the file where `file` does not take it. Returns how many it decoded. */
static uint32_t decode_ahead(cram_engine* e, cram_region_desc* r, uint64_t q, uint64_t end, int file, uint64_t* olds, unsigned char* buf)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    cram_shared* s = e->shared;
    uint32_t n = 0;
    while (q < end && n < READAHEAD_CHUNK) {
        uint64_t p = load_acquire(&r->pte[q]);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_EVICTED) break;
        uint64_t id = CRAM_PTE_SLOT(p);
        unsigned char* dst = buf + ((uint64_t)n << CRAM_PAGE_SHIFT);
        if (id == CRAM_SLOT_ZERO) {
            memset(dst, 0, CRAM_PAGE_SIZE);
        } else {
            cram_slot* slot = slot_get(s, id);
            uint64_t* counter;
            const char* why;
            const void* src;
            if ((slot_flags(slot) & CRAM_SLOT_BAD) || slot->backend == CRAM_BACKEND_REMOTE ||
                (slot->backend == CRAM_BACKEND_FILE && (file == AHEAD_NO_FILE || (file == AHEAD_FILE_IN_WINDOW && !file_window_holds(e, slot->location, slot->length)))) ||
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

/* The file span [*lo, *hi) of the extents of the evicted pages [q, end) that fit one read with the
 * first one: an extent that would take the span past FILE_WINDOW_BYTES is left out (its page is left
 * to its own fault) and the pages after it still join. Returns how many pages' extents it holds. */
static uint64_t file_window_span(cram_engine* e, cram_region_desc* r, uint64_t q, uint64_t end, uint64_t* lo_out, uint64_t* hi_out)
{
    cram_shared* s = e->shared;
    uint64_t lo = UINT64_MAX, hi = 0, held = 0;
    for (uint64_t i = q; i < end; i++) {
        uint64_t p = load_acquire(&r->pte[i]);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_EVICTED || CRAM_PTE_SLOT(p) == CRAM_SLOT_ZERO) continue;
        cram_slot* slot = slot_get(s, CRAM_PTE_SLOT(p));
        if (slot->backend != CRAM_BACKEND_FILE) continue;
        uint64_t from = slot->location, to = slot->location + slot->length;
        uint64_t new_lo = from < lo ? from : lo, new_hi = to > hi ? to : hi;
        if (new_hi - new_lo > FILE_WINDOW_BYTES - CRAM_PAGE_SIZE) continue; /* far from the others: its own read */
        lo = new_lo;
        hi = new_hi;
        held++;
    }
    *lo_out = lo;
    *hi_out = hi;
    return held;
}

/* The file extents of the evicted pages [q, end) in one read, when they span FILE_WINDOW_BYTES at
 * most: writeback packs pages evicted together into consecutive segments in the order it took
 * them, so a sequential reader's next pages are mostly next to each other in the file, and one read
 * of the span (pages of it dead or another page's, which cost only bandwidth) replaces a read per
 * page. A page whose extent lies far from the others (written back later, or moved by compaction) is
 * left out and read by its own fault; if that is page q itself, the window is taken from q + 1 (so
 * one far page does not cost its neighbours their window). The window holds until the caller clears
 * it, within its hold of the engine lock: the extents of EVICTED pages do not change meanwhile (only
 * code holding the lock leaves EVICTED, and writeback writes only extents no slot names yet).
 * Returns 1 if a window was read. */
int file_window_read(cram_engine* e, cram_region_desc* r, uint64_t q, uint64_t end)
{
    ASSERT_ENGINE_LOCKED(e);
    int fd = e->shared->backing_fd;
    if (fd < 0) return 0;
    uint64_t lo, hi;
    uint64_t held = file_window_span(e, r, q, end, &lo, &hi);
    if (held == 1 && q + 1 < end) {
        uint64_t lo1, hi1; /* q's extent may be the only one far from the rest */
        if (file_window_span(e, r, q + 1, end, &lo1, &hi1) > 1) { lo = lo1; hi = hi1; }
    }
    if (hi == 0) return 0;
    uint64_t first = lo & ~(uint64_t)(CRAM_PAGE_SIZE - 1);
    uint64_t span = ((hi + CRAM_PAGE_SIZE - 1) & ~(uint64_t)(CRAM_PAGE_SIZE - 1)) - first;
    ssize_t n = pread(fd, e->file_window, span, (off_t)first);
    count_file_read(e, first, n);
    if (n <= 0) return 0; /* each page's own read then tries, and reports what fails */
    e->file_window_start = first;
    e->file_window_length = (uint64_t)n;
    return 1;
}

/* Swap readahead (cramnative.h, "Readahead"): a read swap-in that continues a sequential stream of
 * read swap-ins brings in the evicted pages after it, as the kernel's swap readahead does, so a
 * sequential reader faults once per window instead of once per page. The window starts at
 * READAHEAD_MIN pages and doubles up to READAHEAD_MAX; it never takes resident memory past the soft
 * limit. Pages come in READAHEAD_CHUNK at a time: one UFFDIO_COPY per chunk, the chunk's states
 * published, then a wake for whoever waits in it; the faulting page itself was woken before any of
 * this, so the reader runs on while the service decompresses the next chunk (measured: this
 * overlap gives 278-290 MiB/s against 245-254 with the whole window done before the wake). A readahead page is installed as a read swap-in installs one: write-protected, CLEAN,
 * keeping its slot. Pages backed by the file come in too when their extents lie within one
 * FILE_WINDOW_BYTES read (file_window_read); pages not EVICTED, found bad, or in the file beyond the
 * window are left to their own faults. Under the engine lock, like every fault. */
/* The stream a read swap-in at page continues (index in the region's streams), or -1. */
static int swapin_stream(const cram_engine* e, const cram_region_desc* r, uint64_t page)
{
    const uint64_t* next = e->next_swapin[r->id];
    int k = -1;
    const uint32_t* window = e->swapin_window[r->id];
    /* From the start of its last window (a page of it readahead left to its own fault: far in the
     * file, or bad) to READAHEAD_MAX pages past its end. */
    for (int i = 0; i < SWAPIN_STREAMS; i++)
        if (next[i] && page + window[i] >= next[i] && (page < next[i] || page - next[i] < READAHEAD_MAX)) k = i;
    return k;
}

/* A stream's next window: READAHEAD_MIN pages at first, doubling up to READAHEAD_MAX. */
static uint64_t next_window(uint32_t window)
{
    uint64_t w = window ? (uint64_t)window * 2 : READAHEAD_MIN;
    return w > READAHEAD_MAX ? READAHEAD_MAX : w;
}

uint64_t swapin_readahead_end(const cram_engine* e, const cram_region_desc* r, uint64_t page)
{
    int k = swapin_stream(e, r, page);
    if (k < 0) return 0;
    uint64_t w = next_window(e->swapin_window[r->id][k]);
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    return page + 1 + w < pages ? page + 1 + w : pages;
}

uint64_t swapin_stream_step(cram_engine* e, cram_region_desc* r, uint64_t page)
{
    ASSERT_ENGINE_LOCKED(e);
    uint64_t* next = e->next_swapin[r->id];
    uint32_t* window = e->swapin_window[r->id];
    int k = swapin_stream(e, r, page);
    if (k < 0) { /* a new stream replaces the oldest; its first fault brings in only itself */
        k = e->next_swapin_stream[r->id];
        e->next_swapin_stream[r->id] = (uint8_t)((k + 1) % SWAPIN_STREAMS);
        next[k] = page + 1;
        window[k] = 0;
        return page + 1;
    }
    uint64_t w = next_window(window[k]);
    window[k] = (uint32_t)w;
    uint64_t soft = __atomic_load_n(&e->config.soft_limit_pages, __ATOMIC_RELAXED);
    uint64_t resident = __atomic_load_n(&e->shared->stats.resident_pages, __ATOMIC_RELAXED);
    if (soft && resident + w > soft) w = soft > resident ? soft - resident : 0;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    uint64_t end = page + 1 + w < pages ? page + 1 + w : pages;
    next[k] = end;
    return end;
}

void swapin_readahead(cram_engine* e, cram_region_desc* r, uint64_t page)
{
    ASSERT_ENGINE_LOCKED(e); /* called by the service (or prefetch) inside one hold of the engine lock */
    cram_shared* s = e->shared;
    uint64_t end = swapin_stream_step(e, r, page);
    uint64_t q = page + 1;
    if (q >= end) return; /* a new stream, or at the soft limit: no window */
    /* The faulting page's read may have read the window already (resolve_swapin). */
    int file = e->file_window_length || file_window_read(e, r, q, end) ? AHEAD_FILE_IN_WINDOW : AHEAD_NO_FILE;
    readahead_quiesce(e); /* the last window's buffer is free once its chunks are mapped */
    window_begin(e, r, &s->stats.readahead_pages);
    uint32_t used = 0; /* pages of window_buf decoded so far; end - page - 1 <= READAHEAD_MAX */
    while (q < end) {
        uint32_t n = decode_ahead(e, r, q, end, file, e->window_olds + used, e->window_buf + ((uint64_t)used << CRAM_PAGE_SHIFT));
        if (n == 0) { q++; continue; } /* resident already, or left to its own fault */
        uint32_t claimed = window_claim(e, r, q, used, n);
        used += claimed;
        q += claimed ? claimed : 1;
    }
    __atomic_store_n(&e->window_sealed, 1, __ATOMIC_RELEASE);
    e->file_window_length = 0;
}

/* ------------------------------------------------------------------ the window's installers
 * A readahead window is decoded and claimed under the engine lock (swapin_readahead) and mapped
 * outside it, chunk by chunk, by whoever takes a chunk: the thread that claimed it once it lets the
 * lock go (readahead_help), the engine's helpers, and any thread that waits for one of its pages.
 * A chunk is taken with one CAS of window_state (generation | taken | ready), so a chunk is mapped
 * exactly once and only after it was published; the window is over when every chunk is done. */

#define WINDOW_READY(w) ((uint32_t)((w) & 0xFFFFu))
#define WINDOW_TAKEN(w) ((uint32_t)(((w) >> 16) & 0xFFFFu))

static void futex_wake_all(uint32_t* word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Under the engine lock, the last window quiesced: a new window in r, its pages counted in *counter. */
static void window_begin(cram_engine* e, cram_region_desc* r, uint64_t* counter)
{
    ASSERT_ENGINE_LOCKED(e);
    uint64_t generation = (__atomic_load_n(&e->window_state, __ATOMIC_RELAXED) >> 32) + 1;
    e->window_region = r;
    e->window_counter = counter;
    __atomic_store_n(&e->window_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->window_sealed, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&e->window_state, generation << 32, __ATOMIC_RELEASE);
}

/* Under the engine lock: claims the n decoded pages [q, q + n) (window_olds[used..]) for the window,
 * EVICTED -> INSTALLING, each logged and counted as a clean copy, resident and read ahead (or
 * prefetched) — the counts a read swap-in makes, made before the page is mapped, so a reader that
 * finds it mapped finds it counted — and publishes them as the next chunk. Returns
 * how many it claimed: all of them (only code holding the lock leaves EVICTED); fewer, and the
 * rest are left to their own faults, only if that ever failed to hold. */
static uint32_t window_claim(cram_engine* e, cram_region_desc* r, uint64_t q, uint32_t used, uint32_t n)
{
    ASSERT_ENGINE_LOCKED(e);
    cram_shared* s = e->shared;
    uint32_t claimed = 0;
    while (claimed < n) {
        uint64_t old = e->window_olds[used + claimed];
        if (!pte_cas(&r->pte[q + claimed], old, CRAM_PTE_MAKE(CRAM_PTE_INSTALLING, CRAM_PTE_SLOT(old)))) {
            add_counter(&s->stats.service_errors, 1);
            break;
        }
        clean_copy_count(s, CRAM_PTE_SLOT(old), +1);
        fault_log_append(s, r->id, q + claimed);
        claimed++;
    }
    if (!claimed) return 0;
    resident_add(e, claimed);
    add_counter(e->window_counter, claimed); /* counted before it can be read, as the counts above */
    uint32_t c = WINDOW_READY(__atomic_load_n(&e->window_state, __ATOMIC_RELAXED));
    e->window_first[c] = q;
    e->window_pages[c] = (uint16_t)claimed;
    e->window_offset[c] = (uint16_t)used;
    __atomic_add_fetch(&e->window_state, 1, __ATOMIC_RELEASE); /* ready + 1: the chunk is published */
    if (c == 0 && __atomic_load_n(&e->readahead_helper_count, __ATOMIC_ACQUIRE)) { /* the helpers map it while this thread decodes the next */
        __atomic_add_fetch(&e->window_wake, 1, __ATOMIC_RELEASE);
        futex_wake_all(&e->window_wake);
    }
    return claimed;
}

/* Takes the window's next published chunk: 1 and its index, or 0 when every chunk is taken and
 * no more will come. Spins (yielding) while the window is still being decoded. */
static int window_take(cram_engine* e, uint32_t* chunk)
{
    for (;;) {
        uint64_t w = __atomic_load_n(&e->window_state, __ATOMIC_ACQUIRE);
        if (WINDOW_TAKEN(w) < WINDOW_READY(w)) {
            if (__atomic_compare_exchange_n(&e->window_state, &w, w + (1ull << 16), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                *chunk = WINDOW_TAKEN(w);
                return 1;
            }
            continue;
        }
        if (__atomic_load_n(&e->window_sealed, __ATOMIC_ACQUIRE)) return 0;
        sched_yield();
    }
}

/* Maps chunk c: one UFFDIO_COPY (write-protected) of its pages, each INSTALLING -> CLEAN, then a
 * wake for whoever waits in them. No lock: the pages are held INSTALLING, so nothing else maps or
 * changes them, and their region stays active until the window is done (readahead_quiesce). A
 * copy that fails is retried page by page; a page that still fails goes back to EVICTED with its
 * counts undone, for its own fault to bring in (or fail). */
static void window_install(cram_engine* e, uint32_t c)
{
    cram_shared* s = e->shared;
    cram_region_desc* r = e->window_region;
    uint64_t first = e->window_first[c];
    uint32_t n = e->window_pages[c], offset = e->window_offset[c];
    uint64_t addr = r->base + (first << CRAM_PAGE_SHIFT);
    const unsigned char* src = e->window_buf + ((uint64_t)offset << CRAM_PAGE_SHIFT);
    int whole = uffd_copy(e->uffd, addr, src, (uint64_t)n << CRAM_PAGE_SHIFT, 1) == 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t old = e->window_olds[offset + i], id = CRAM_PTE_SLOT(old);
        uint64_t* pte = &r->pte[first + i];
        uint64_t page_addr = addr + ((uint64_t)i << CRAM_PAGE_SHIFT);
        /* EEXIST: the chunk's own copy mapped it before it failed (nothing else maps a held page). */
        if (whole || uffd_copy(e->uffd, page_addr, src + ((uint64_t)i << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE, 1) == 0 || errno == EEXIST) {
            pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_CLEAN, id));
        } else {
            add_counter(&s->stats.service_errors, 1);
            clean_copy_count(s, id, -1);
            __atomic_fetch_sub(&s->stats.resident_pages, 1, __ATOMIC_RELAXED);
            __atomic_fetch_sub(e->window_counter, 1, __ATOMIC_RELAXED);
            pte_store(pte, old);
        }
    }
    engine_wake(e, addr, (uint64_t)n << CRAM_PAGE_SHIFT);
    __atomic_add_fetch(&e->window_done, 1, __ATOMIC_RELEASE);
}

void readahead_help(cram_engine* e)
{
    uint32_t c;
    while (window_take(e, &c)) window_install(e, c);
}

int readahead_pending(const cram_engine* e)
{
    uint64_t w = __atomic_load_n(&e->window_state, __ATOMIC_ACQUIRE);
    return WINDOW_TAKEN(w) < WINDOW_READY(w);
}

void readahead_quiesce(cram_engine* e)
{
    ASSERT_ENGINE_LOCKED(e);
    readahead_help(e); /* chunks nobody took yet: mapped here (installing needs no lock) */
    for (;;) {
        uint64_t w = __atomic_load_n(&e->window_state, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&e->window_sealed, __ATOMIC_ACQUIRE) && __atomic_load_n(&e->window_done, __ATOMIC_ACQUIRE) == WINDOW_READY(w))
            return;
        sched_yield(); /* a chunk another installer took: one UFFDIO_COPY */
    }
}

static void* readahead_helper_main(void* arg)
{
    cram_engine* e = arg;
    for (;;) {
        uint32_t seen = __atomic_load_n(&e->window_wake, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&e->window_stop, __ATOMIC_ACQUIRE)) break;
        readahead_help(e);
        syscall(SYS_futex, &e->window_wake, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0); /* until the next window */
    }
    return NULL;
}

void readahead_helpers_ensure(cram_engine* e)
{
    uint32_t expected = 0;
    if (!e->readahead_helpers_wanted || __atomic_load_n(&e->readahead_helpers_started, __ATOMIC_ACQUIRE) ||
        !__atomic_compare_exchange_n(&e->readahead_helpers_started, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    for (uint32_t i = 0; i < e->readahead_helpers_wanted; i++) {
        if (pthread_create(&e->readahead_helpers[i], NULL, readahead_helper_main, e) != 0) break;
        pthread_setname_np(e->readahead_helpers[i], "cram-readahead");
        __atomic_store_n(&e->readahead_helper_count, i + 1, __ATOMIC_RELEASE);
    }
}

void readahead_helpers_stop(cram_engine* e)
{
    __atomic_store_n(&e->window_stop, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&e->window_wake, 1, __ATOMIC_RELEASE);
    futex_wake_all(&e->window_wake);
    for (uint32_t i = 0; i < e->readahead_helper_count; i++) pthread_join(e->readahead_helpers[i], NULL);
    e->readahead_helper_count = 0;
}

/* What a drop writes into an evicted page's word ("Working set" in cramnative.h): the eviction
 * count now, in stamp units, modulo 2^16, and the bit that says it is there. */

#define PREFETCH_MAX_PAGES 128  /* pages one CramNative_PrefetchPages call brings in, at most */
#define PREFETCH_SCAN_MAX 4096  /* pages it looks at, at most */
#define PREFETCH_HOLD_PAGES 32  /* pages it claims per hold of the engine lock (four chunks) */

EXPORT int CramNative_PrefetchPages(cram_engine* e, uint32_t region_id, uint64_t first, uint64_t end,
                                    uint64_t* next, uint64_t* brought, int32_t* at_limit)
{
    if (!e || !next || !brought || !at_limit || first > end || region_id >= CRAM_MAX_REGIONS) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    uint64_t q = first, n_brought = 0, scanned = 0;
    int err = 0, limit = 0, started = 0;
    /* Up to PREFETCH_HOLD_PAGES per hold of the engine lock (as the service holds it: it orders this
     * with every fault), claimed as a readahead window (decoded, EVICTED->INSTALLING) and mapped
     * after the lock is let go by this thread and the readahead helpers, so a fault waits for one
     * hold's decoding at most. */
    while (q < end && n_brought < PREFETCH_MAX_PAGES && scanned < PREFETCH_SCAN_MAX && !limit) {
        engine_lock(e);
        cram_region_desc* r = region_active(e, region_id);
        if (!r) { engine_unlock(e); err = EINVAL; break; }
        uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
        if (end > pages) end = pages;
        if (!started) { q = touched_page_next(r, q); started = 1; } /* past end when nothing is left: clamped below */
        uint64_t want = PREFETCH_HOLD_PAGES < PREFETCH_MAX_PAGES - n_brought ? PREFETCH_HOLD_PAGES : PREFETCH_MAX_PAGES - n_brought;
        uint64_t soft = __atomic_load_n(&e->config.soft_limit_pages, __ATOMIC_RELAXED);
        uint64_t resident = __atomic_load_n(&s->stats.resident_pages, __ATOMIC_RELAXED);
        if (soft && resident + want >= soft) { /* this hold is the last one the limit allows */
            limit = 1;
            want = soft > resident ? soft - resident : 0;
        }
        if (__atomic_load_n(&s->memory_wait_us, __ATOMIC_RELAXED)) { /* over the memory limit: nothing ahead of need */
            limit = 1;
            want = 0;
        }
        uint32_t used = 0, fetching = 0, remote = 0; /* pages of the local window; of remote requests */
        struct remote_lane* run = NULL;
        if (want && q < end) {
            readahead_quiesce(e); /* the last window's buffer is free once its chunks are mapped */
            window_begin(e, r, &s->stats.prefetched_pages);
            /* The hold's file extents in one read where they lie together (as readahead's window);
             * an extent outside it is read on its own by slot_read. */
            file_window_read(e, r, q, end - q < want ? end : q + want);
            while (used + remote < want && q < end && scanned < PREFETCH_SCAN_MAX) {
                uint64_t stop = end - q < want - used - remote ? end : q + (want - used - remote);
                uint32_t n = decode_ahead(e, r, q, stop, AHEAD_ANY_FILE, e->window_olds + used, e->window_buf + ((uint64_t)used << CRAM_PAGE_SHIFT));
                uint32_t claimed = n ? window_claim(e, r, q, used, n) : 0;
                if (!claimed && !run && (fetching = remote_prefetch(e, r, q, stop, &run)) != 0) {
                    /* its copy is on the remote store: fetched as a fault's readahead would be (a window a
                     * request), without waiting; a faulting-thread engine's prefetch runs it after the lock */
                    n_brought += fetching;
                    remote += fetching;
                    scanned += fetching;
                    q += fetching;
                    if (run) break;
                    continue;
                }
                if (!claimed) { /* resident, empty, or left to its own fault (a bad copy fails there) */
                    q = touched_page_next(r, q + 1);
                    scanned++;
                    continue;
                }
                used += claimed;
                scanned += claimed;
                q += claimed;
            }
            __atomic_store_n(&e->window_sealed, 1, __ATOMIC_RELEASE);
            e->file_window_length = 0; /* a window lives within this hold of the engine lock */
        }
        engine_unlock(e);
        readahead_help(e); /* mapped with the helpers; a page whose copy fails stays EVICTED (service_errors) */
        if (run) remote_run(e, run); /* the remote window it claimed (faulting-thread engines) */
        n_brought += used;
    }
    if (q > end) q = end;
    *next = q;
    *brought = n_brought;
    *at_limit = limit && q < end;
    if (err) { errno = err; return -1; }
    return 0;
}

