/*
 * The batched page operations reclaim, writeback, discard and the CRAM node call.
 */
#define _GNU_SOURCE
#include "internal.h"

/* ------------------------------------------------------------------ batched page operations */

/* The region if it is active (the service may resolve faults in it), else NULL. */
cram_region_desc* region_active(cram_engine* e, uint32_t region_id)
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
            /* Uncounted while still DROPPING: once EVICTED, a fault may bring it back and count it again. */
            if (ok) clean_copy_count(e->shared, CRAM_PTE_SLOT(*pte), -1);
            pte_store(pte, ok ? CRAM_PTE_MAKE(CRAM_PTE_EVICTED, CRAM_PTE_SLOT(*pte)) | stamp
                                  : CRAM_PTE_MAKE(CRAM_PTE_CLEAN, CRAM_PTE_SLOT(*pte)));
            if (ok) pages[(*evicted)++] = pages[m];
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
    readahead_helpers_ensure(e); /* the first eviction: readahead windows may come from now on */
    probe_ensure(e);             /* and swap-ins, whose latency the probe samples */
    uint64_t* ptes = r->pte;
    int32_t n = 0;
    for (int32_t i = 0; i < count; i++) {
        uint64_t p = load_acquire(&ptes[pages[i]]);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_CLEAN) continue;
        if (!pte_cas(&ptes[pages[i]], p, CRAM_PTE_MAKE(CRAM_PTE_DROPPING, CRAM_PTE_SLOT(p)))) continue;
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

EXPORT int CramNative_ReclaimActivity(cram_engine* e, uint64_t* activity)
{
    if (!e || !activity) { errno = EINVAL; return -1; }
    *activity = __atomic_load_n(&e->activity, __ATOMIC_SEQ_CST);
    return 0;
}

EXPORT int CramNative_WaitReclaimIdle(cram_engine* e, uint64_t seen_activity, int32_t timeout_ms, int32_t* signalled)
{
    if (!e || !signalled) { errno = EINVAL; return -1; }
    __atomic_store_n(&e->reclaim_idle, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&e->activity, __ATOMIC_SEQ_CST) != seen_activity) {
        __atomic_store_n(&e->reclaim_idle, 0, __ATOMIC_RELEASE);
        *signalled = 1; /* faults came in since the caller looked: no sleep */
        return 0;
    }
    int rc = CramNative_WaitReclaimSignal(e, timeout_ms, signalled);
    __atomic_store_n(&e->reclaim_idle, 0, __ATOMIC_RELEASE);
    return rc;
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
    if (e) engine_lock(e);
    for (int32_t i = 0; i < count; i++) {
        cram_pool_handle* h = handle_get(handle_directory, moves[i].handle);
        memmove((void*)(uintptr_t)moves[i].destination, (const void*)(uintptr_t)h->address, h->length);
        __atomic_store_n(&h->address, moves[i].destination, __ATOMIC_RELEASE);
        h->zspage = moves[i].zspage;
    }
    if (e) engine_unlock(e);
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
    engine_lock(e);
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
    engine_unlock(e);
    *moved = n;
    return 0;
}

/* The reaper's mark (cramnative.h). Under the lock, no page is UNPROTECTING (the service holds that
 * state only inside a batch) and every stale push has happened or will happen after the mark. */
EXPORT int CramNative_MarkNamedSlots(cram_engine* e, uint64_t* named, uint64_t bits)
{
    if (!e || (bits && !named)) { errno = EINVAL; return -1; }
    engine_lock(e);
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
    engine_unlock(e);
    return 0;
}

EXPORT int CramNative_PlacePages(cram_engine* e, uint32_t region_id, cram_place* places, int32_t count, int32_t* placed)
{
    cram_region_desc* r = region_active(e, region_id);
    if (!r || !placed || (count && !places) || count < 0) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    cram_stats* st = &s->stats;
    int32_t n = 0;
    engine_lock(e);
    int control = s->cram_write_control != 0;
    for (int32_t i = 0; i < count; i++) {
        cram_place* pl = &places[i];
        pl->placed = 0;
        if (pl->page >= r->length >> CRAM_PAGE_SHIFT) { engine_unlock(e); errno = ERANGE; return -1; }
        if (!cram_ledger_fits(s, st->cram_placed_bytes + pl->size, control ? st->cram_writable_pages : 0)) {
            add_counter(&st->cram_placement_refusals, 1);
            continue;
        }
        if (!pte_cas(&r->pte[pl->page], CRAM_PTE_MAKE(CRAM_PTE_EVICTING, 0), CRAM_PTE_MAKE(CRAM_PTE_PLACED, pl->slot)))
            continue; /* a write cancelled the eviction */
        pl->placed = 1;
        st->cram_placed_bytes += pl->size;
        st->cram_placed_pages++;
        n++;
    }
    __atomic_fetch_sub(&st->resident_pages, (uint64_t)n, __ATOMIC_RELAXED); /* now on the device's account */
    engine_unlock(e);
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


EXPORT int CramNative_DiscardPages(cram_engine* e, uint32_t region_id, uint64_t first, uint64_t end, uint64_t* discarded)
{
    if (!e || !discarded || first > end) { errno = EINVAL; return -1; }
    engine_lock(e); /* the service holds no UNPROTECTING while we hold it */
    cram_region_desc* r = region_active(e, region_id);
    if (!r) { engine_unlock(e); errno = EINVAL; return -1; }
    readahead_quiesce(e); /* no page INSTALLING, no installer about to map one */
    remote_quiesce(e, r);  /* no page FETCHING */
    cram_shared* s = e->shared;
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    if (end > pages) end = pages;
    /* Nothing may be mid-eviction (the caller pauses reclaim): check before changing anything. */
    for (uint64_t i = touched_page_next(r, first); i < end; i = touched_page_next(r, i + 1)) {
        uint32_t state = CRAM_PTE_STATE(load_acquire(&r->pte[i]));
        if (state == CRAM_PTE_EVICTING || state == CRAM_PTE_DROPPING || state == CRAM_PTE_UNPROTECTING) {
            engine_unlock(e);
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
            engine_unlock(e);
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
        pte_store(&r->pte[i], CRAM_PTE_MAKE(CRAM_PTE_EMPTY, 0));
    }
    __atomic_fetch_sub(&s->stats.resident_pages, resident, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&s->stats.populated_pages, populated, __ATOMIC_RELAXED);
    add_counter(&s->stats.discarded_pages, populated);
    engine_unlock(e);
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
    engine_lock(e); /* the service sees the page PLACED with its frame, or EVICTED with the copy */
    for (int32_t i = 0; i < count; i++) {
        cram_move_out* m = &moves[i];
        m->moved = 0;
        if (m->page >= r->length >> CRAM_PAGE_SHIFT) { err = ERANGE; break; }
        uint64_t* pte = &r->pte[m->page];
        if (load_acquire(pte) != CRAM_PTE_MAKE(CRAM_PTE_PLACED, m->slot)) continue; /* written or re-placed meanwhile */
        pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_DROPPING, m->slot));
        cram_slot* slot = slot_get(s, m->slot);
        uint32_t old = slot->length;
        if (madvise((void*)(uintptr_t)(r->base + (m->page << CRAM_PAGE_SHIFT)), CRAM_PAGE_SIZE, MADV_DONTNEED) != 0) {
            err = errno;
            pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_PLACED, m->slot)); /* still mapped, still on the node */
            break;
        }
        slot->location = m->handle;
        slot->checksum = m->checksum;
        slot->length = (uint16_t)m->length;
        slot->backend = CRAM_BACKEND_POOL;
        if (m->raw) slot_flags_or(slot, CRAM_SLOT_RAW);
        pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_EVICTED, m->slot));
        st->cram_placed_pages--;
        st->cram_placed_bytes -= old;
        m->moved = 1;
        n++;
    }
    add_counter(&st->evicted_pages_total, (uint64_t)n);
    engine_unlock(e);
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
    engine_lock(e); /* the service sees PLACED_WRITABLE or PLACED, never in between */
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
        pte_store(pte, CRAM_PTE_MAKE(CRAM_PTE_PLACED, CRAM_PTE_SLOT(p)));
        st->cram_writable_pages--;
        pages[n++] = pages[i];
    }
    engine_unlock(e);
    *replaced = n;
    return 0;
}

