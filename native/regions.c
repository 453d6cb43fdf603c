/*
 * Engine and region lifecycle: create, deactivate, destroy, census.
 */
#define _GNU_SOURCE
#include "internal.h"

/* ------------------------------------------------------------------ engine and regions */

static void engine_free(cram_engine* e)
{
    if (e->uffd >= 0) close(e->uffd);
    if (e->stop_fd >= 0) close(e->stop_fd);
    if (e->reclaim_fd >= 0) close(e->reclaim_fd);
    if (e->pidfd >= 0) close(e->pidfd);
    probe_free(e);
    codec_free(e);
    if (e->zero_pages) munmap(e->zero_pages, CRAM_FAULT_AROUND_MAX * CRAM_PAGE_SIZE);
    if (e->page_buf) munmap(e->page_buf, CRAM_PAGE_SIZE);
    if (e->file_buf) munmap(e->file_buf, 2 * CRAM_PAGE_SIZE);
    if (e->file_window) munmap(e->file_window, FILE_WINDOW_BYTES + CRAM_PAGE_SIZE);
    if (e->window_buf) munmap(e->window_buf, READAHEAD_MAX * CRAM_PAGE_SIZE);
    if (e->shared) {
        if (e->shared->fault_log) munmap((void*)(uintptr_t)e->shared->fault_log, CRAM_FAULT_LOG_SIZE * sizeof(uint64_t));
        munmap(e->shared, sizeof(cram_shared));
    }
    pthread_mutex_destroy(&e->lock);
    free(e);
}

EXPORT int CramNative_EngineCreate(const cram_engine_config* config, cram_engine** out, cram_shared** shared_out)
{
    if (!config || !out || !shared_out || config->fault_around_pages > CRAM_FAULT_AROUND_MAX ||
        config->forced_mode > CRAM_UFFD_MODE_USER_MODE_ONLY || config->fault_service > CRAM_FAULT_SERVICE_AUTO ||
        config->readahead_helpers > CRAM_READAHEAD_HELPERS_MAX) {
        errno = EINVAL;
        return -1;
    }
    cram_engine* e = calloc(1, sizeof *e);
    if (!e) return -1;
    e->uffd = e->stop_fd = e->reclaim_fd = e->pidfd = e->probe_fd = -1;
    pthread_mutex_init(&e->lock, NULL);
    e->config = *config;
    if (e->config.fault_around_pages == 0) e->config.fault_around_pages = 1;
    int err = ENOMEM;
    e->shared = map_anon(sizeof(cram_shared));
    e->zero_pages = map_anon(CRAM_FAULT_AROUND_MAX * CRAM_PAGE_SIZE);
    e->page_buf = map_anon(CRAM_PAGE_SIZE);
    e->file_buf = map_anon(2 * CRAM_PAGE_SIZE);
    e->file_window = map_anon(FILE_WINDOW_BYTES + CRAM_PAGE_SIZE);
    e->window_buf = map_anon(READAHEAD_MAX * CRAM_PAGE_SIZE);
    if (!e->shared || !e->zero_pages || !e->page_buf || !e->file_buf || !e->file_window || !e->window_buf || codec_init(e) != 0) goto fail;
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
    int faulting = config->fault_service == CRAM_FAULT_SERVICE_FAULTING ||
                   (config->fault_service == CRAM_FAULT_SERVICE_AUTO && mode == CRAM_UFFD_MODE_USER_MODE_ONLY && (api.features & UFFD_FEATURE_SIGBUS));
    if (faulting && !(api.features & UFFD_FEATURE_SIGBUS)) { err = EPROTONOSUPPORT; goto fail; }
    uint64_t wanted = UFFD_FEATURE_PAGEFAULT_FLAG_WP | (api.features & (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON)) |
                      (faulting ? UFFD_FEATURE_SIGBUS : 0);
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
    e->readahead_helpers_wanted = config->readahead_helpers; /* started by the first drop */
    e->window_sealed = 1; /* no readahead window yet */
    if (faulting) {
        /* No service thread: faults raise SIGBUS on their own threads, and sigbus.c serves them. */
        if (sigbus_engine_add(e) != 0) { err = errno; goto fail; }
        e->faulting_thread = 1;
    } else {
        if ((err = pthread_create(&e->service, NULL, service_main, e)) != 0) goto fail;
        pthread_setname_np(e->service, "cram-fault");
    }
    *out = e;
    *shared_out = e->shared;
    return 0;
fail:
    readahead_helpers_stop(e);
    engine_free(e);
    errno = err;
    return -1;
}

EXPORT int CramNative_EngineFaultService(cram_engine* e, uint32_t* service)
{
    if (!e || !service) { errno = EINVAL; return -1; }
    *service = e->faulting_thread ? CRAM_FAULT_SERVICE_FAULTING : CRAM_FAULT_SERVICE_THREAD;
    return 0;
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
    if (e->faulting_thread) {
        sigbus_engine_remove(e); /* no handler reaches e after this */
    } else {
        probe_stop(e); /* while the service still answers its fault */
        uint64_t one = 1;
        if (write(e->stop_fd, &one, sizeof one) != sizeof one) return -1;
        pthread_join(e->service, NULL);
    }
    engine_lock(e);
    readahead_quiesce(e); /* no fault runs now: the last window, if any, is mapped by now or here */
    engine_unlock(e);
    readahead_helpers_stop(e);
    remote_destroy(e);
    for (uint32_t i = 0; i < e->region_count; i++)
        if (e->regions[i].base) region_release(e, &e->regions[i]);
    engine_free(e);
    return 0;
}

EXPORT int CramNative_RegionCreate(cram_engine* e, uint64_t length, uint32_t* region_id, uint64_t* base_out, uint64_t* pte_out)
{
    if (!e || !region_id || !base_out || !pte_out || length == 0 || length > CRAM_MAX_REGION_BYTES || (length & (CRAM_PAGE_SIZE - 1))) { errno = EINVAL; return -1; }
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
    engine_lock(e);
    uint32_t id = 0;
    while (id < CRAM_MAX_REGIONS && e->regions[id].base) id++;
    if (id == CRAM_MAX_REGIONS) {
        engine_unlock(e);
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
    engine_unlock(e);
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
    engine_lock(e);
    __atomic_store_n(&e->regions[region_id].active, 0, __ATOMIC_RELEASE);
    readahead_quiesce(e); /* and no installer maps a page of it any more */
    remote_quiesce(e, &e->regions[region_id]); /* nor a fetcher */
    engine_unlock(e);
    return 0;
}

/* A page leaves the page table (region destroy, discard) in state p: its slot, if it names one, is
 * pushed on the stale list, and the counters it was in are fixed (clean copies, the node's ledger;
 * *resident and *populated count up for the caller to take off). */
void page_forget(cram_shared* s, uint64_t p, uint64_t* resident, uint64_t* populated)
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
    if (state != CRAM_PTE_EVICTED && state != CRAM_PTE_FETCHING) (*resident)++; /* FETCHING counts once published */
    if (state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING || state == CRAM_PTE_INSTALLING) clean_copy_count(s, CRAM_PTE_SLOT(p), -1);
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
    engine_lock(e);
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
    engine_unlock(e);
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
        case CRAM_PTE_EVICTED: case CRAM_PTE_FETCHING: census->evicted_pages++; break; /* FETCHING: not mapped yet */
        case CRAM_PTE_PLACED: case CRAM_PTE_PLACED_WRITABLE: census->placed_pages++; break;
        case CRAM_PTE_CLEAN: case CRAM_PTE_DROPPING: case CRAM_PTE_INSTALLING: census->clean_copy_pages++; census->resident_pages++; break;
        default: census->resident_pages++; break;
        }
        if (state == CRAM_PTE_EVICTED || state == CRAM_PTE_CLEAN || state == CRAM_PTE_DROPPING || state == CRAM_PTE_INSTALLING ||
            state == CRAM_PTE_FETCHING) {
            uint64_t id = CRAM_PTE_SLOT(p);
            cram_slot* slot = id == CRAM_SLOT_ZERO ? NULL : slot_get(s, id);
            if (!slot || slot->backend == CRAM_BACKEND_SAME_FILLED) census->same_filled_pages++;
            else census->stored_bytes += slot->length;
        }
    }
    return 0;
}

