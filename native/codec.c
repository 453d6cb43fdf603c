/*
 * Codecs: zstd decoding of recompressed copies, their dictionaries, and recompression's two native
 * steps - finding cold entries and rewriting their slots ("Codecs" in cramnative.h).
 */
#define _GNU_SOURCE
#include "internal.h"

static ZSTD_DCtx* context_at(unsigned char* space, uint64_t bytes)
{
    ZSTD_DCtx* d = ZSTD_initStaticDCtx(space, (size_t)bytes);
    if (d && ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_D_FORMAT, ZSTD_F_ZSTD1_MAGICLESS))) return NULL;
    return d;
}

int codec_init(cram_engine* e)
{
    uint64_t bytes = (ZSTD_estimateDCtxSize() + 4095) & ~4095ull;
    unsigned char* space = map_anon(2 * bytes);
    if (!space) return -1;
    e->zstd_space = space;
    e->zstd_context_bytes = bytes;
    e->zstd_dctx = context_at(space, bytes);
    e->zstd_remote_dctx = context_at(space + bytes, bytes);
    if (!e->zstd_dctx || !e->zstd_remote_dctx) { errno = ENOMEM; return -1; }
    return 0;
}

void codec_free(cram_engine* e)
{
    for (int i = 0; i < CRAM_ZSTD_DICTIONARIES; i++)
        if (e->zstd_dicts[i]) ZSTD_freeDDict(e->zstd_dicts[i]);
    if (e->zstd_space) munmap(e->zstd_space, 2 * e->zstd_context_bytes);
}

int zstd_decode(cram_engine* e, int remote, uint32_t flags, const void* stored, uint32_t length, unsigned char* page)
{
    uint32_t dict = (flags & CRAM_SLOT_DICT_MASK) >> CRAM_SLOT_DICT_SHIFT;
    ZSTD_DCtx* d = remote ? e->zstd_remote_dctx : e->zstd_dctx;
    if (remote)
        while (__atomic_exchange_n(&e->zstd_remote_lock, 1, __ATOMIC_ACQUIRE)) sched_yield();
    /* A dictionary a slot names is set (C# sets it before recoding any slot with it, and removes it
     * only once none names it); a missing one fails the decode rather than decode wrong. */
    const ZSTD_DDict* ddict = dict ? __atomic_load_n(&e->zstd_dicts[dict], __ATOMIC_ACQUIRE) : NULL;
    size_t n = dict && !ddict ? 0
             : ddict ? ZSTD_decompress_usingDDict(d, page, CRAM_PAGE_SIZE, stored, length, ddict)
                     : ZSTD_decompressDCtx(d, page, CRAM_PAGE_SIZE, stored, length);
    if (remote) __atomic_store_n(&e->zstd_remote_lock, 0, __ATOMIC_RELEASE);
    return !ZSTD_isError(n) && n == CRAM_PAGE_SIZE ? 0 : -1;
}

EXPORT int CramNative_ZstdDictionarySet(cram_engine* e, uint32_t index, const void* bytes, uint64_t length, uint64_t* memory_bytes)
{
    if (!e || !memory_bytes || index == 0 || index >= CRAM_ZSTD_DICTIONARIES || (length && !bytes)) { errno = EINVAL; return -1; }
    ZSTD_DDict* made = NULL;
    if (length && !(made = ZSTD_createDDict(bytes, (size_t)length))) { errno = ENOMEM; return -1; }
    engine_lock(e); /* no slot_read between */
    while (__atomic_exchange_n(&e->zstd_remote_lock, 1, __ATOMIC_ACQUIRE)) sched_yield(); /* nor a fetcher's decode */
    ZSTD_DDict* old = e->zstd_dicts[index];
    __atomic_store_n(&e->zstd_dicts[index], made, __ATOMIC_RELEASE);
    __atomic_store_n(&e->zstd_remote_lock, 0, __ATOMIC_RELEASE);
    uint64_t total = 0;
    for (int i = 1; i < CRAM_ZSTD_DICTIONARIES; i++)
        if (e->zstd_dicts[i]) total += ZSTD_sizeof_DDict(e->zstd_dicts[i]);
    engine_unlock(e);
    if (old) ZSTD_freeDDict(old);
    *memory_bytes = total + 2 * e->zstd_context_bytes;
    return 0;
}

/* A backend whose slots name stored bytes with a codec (CRAM's are the page itself; same-filled's a word). */
static int holds_stored_bytes(uint32_t backend)
{
    return backend == CRAM_BACKEND_POOL || backend == CRAM_BACKEND_FILE || backend == CRAM_BACKEND_REMOTE;
}

EXPORT int CramNative_SlotsRecode(cram_engine* e, cram_slot_recode* recodes, int32_t count, int32_t* recoded)
{
    if (!e || !recoded || count < 0 || (count && !recodes)) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    int32_t n = 0;
    engine_lock(e);
    for (int32_t i = 0; i < count; i++) {
        cram_slot_recode* c = &recodes[i];
        c->recoded = 0;
        if ((c->flags & ~CRAM_SLOT_CODEC_MASK) || c->length == 0 || c->length > CRAM_PAGE_SIZE ||
            !holds_stored_bytes(c->from_backend) || !holds_stored_bytes(c->to_backend))
            continue;
        cram_slot* slot = slot_get(s, c->slot);
        if (slot->backend != c->from_backend || slot->location != c->from_location ||
            (slot_flags(slot) & (CRAM_SLOT_STALE | CRAM_SLOT_BAD | CRAM_SLOT_RAW)))
            continue;
        if (c->region != CRAM_RECODE_ANY_PAGE) {
            cram_region_desc* r = region_active(e, c->region);
            if (!r || c->page >= r->length >> CRAM_PAGE_SHIFT) continue;
            uint64_t p = load_acquire(&r->pte[c->page]);
            if (CRAM_PTE_STATE(p) != CRAM_PTE_EVICTED || CRAM_PTE_SLOT(p) != c->slot) continue; /* came back (or went): keeps its copy */
        }
        /* Length and codec bits in one atomic step: the service ORs flags (REFERENCED) into the same
         * word, and a clean copy's count (CLEAN_COPY, set by reclaim's publish without this lock) read
         * its length there: a slot a resident page keeps is never rewritten. */
        uint32_t* word = slot_word(slot);
        uint32_t old = __atomic_load_n(word, __ATOMIC_ACQUIRE), next;
        int refused = 0;
        do {
            if (old & (CRAM_SLOT_CLEAN_COPY << SLOT_FLAGS_SHIFT)) { refused = 1; break; }
            next = (old & ~(0xFFFFu | 0xFF0000u | (CRAM_SLOT_CODEC_MASK << SLOT_FLAGS_SHIFT))) | c->length |
                   ((uint32_t)c->to_backend << 16) | ((uint32_t)c->flags << SLOT_FLAGS_SHIFT);
        } while (!__atomic_compare_exchange_n(word, &old, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
        if (refused) continue;
        slot->location = c->to_location;
        slot->checksum = c->checksum;
        c->recoded = 1;
        n++;
    }
    engine_unlock(e);
    *recoded = n;
    return 0;
}

EXPORT int CramNative_FindColdEntries(cram_engine* e, uint32_t* region_id, uint64_t* page, uint64_t min_distance, uint32_t recode_dicts,
                                      uint64_t stride, uint64_t* tick, cram_cold_entry* entries, int32_t capacity, int32_t* found, int32_t* wrapped)
{
    if (!e || !region_id || !page || !found || !wrapped || !tick || capacity < 0 || (capacity && !entries)) { errno = EINVAL; return -1; }
    cram_shared* s = e->shared;
    int32_t n = 0;
    uint32_t walked = 0;
    *wrapped = 0;
    engine_lock(e);
    uint64_t now = __atomic_load_n(&s->stats.evicted_pages_total, __ATOMIC_RELAXED) / CRAM_EVICTION_STAMP_UNIT;
    uint32_t id = *region_id;
    uint64_t i = *page;
    while (n < capacity && walked < CRAM_COLD_WALK_PAGES) {
        if (id >= e->region_count) { id = 0; i = 0; *wrapped = 1; break; }
        cram_region_desc* r = &e->regions[id];
        uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
        if (!r->base || !__atomic_load_n(&r->active, __ATOMIC_ACQUIRE) || (i = touched_page_next(r, i)) >= pages) { id++; i = 0; continue; }
        for (; i < pages && n < capacity && walked < CRAM_COLD_WALK_PAGES; i = touched_page_next(r, i + 1), walked++) {
            uint64_t p = load_acquire(&r->pte[i]);
            if (CRAM_PTE_STATE(p) != CRAM_PTE_EVICTED || CRAM_PTE_SLOT(p) == CRAM_SLOT_ZERO) continue;
            if (min_distance && (p & CRAM_PTE_STAMPED) &&
                (((now - CRAM_PTE_STAMP(p)) & 0xFFFFull) * CRAM_EVICTION_STAMP_UNIT) < min_distance)
                continue; /* evicted too recently: may be in the working set still */
            cram_slot* slot = slot_get(s, CRAM_PTE_SLOT(p));
            uint32_t flags = slot_flags(slot);
            if (slot->backend != CRAM_BACKEND_POOL || (flags & (CRAM_SLOT_RAW | CRAM_SLOT_STALE | CRAM_SLOT_BAD)) ||
                (flags & (CRAM_SLOT_ZSTD | CRAM_SLOT_KEPT)) == CRAM_SLOT_KEPT)
                continue; /* raw, dying, or an LZ4 copy tried before */
            if ((flags & CRAM_SLOT_ZSTD) && !(recode_dicts & (1u << ((flags & CRAM_SLOT_DICT_MASK) >> CRAM_SLOT_DICT_SHIFT))))
                continue;
            if (stride > 1 && (*tick)++ % stride != 0) continue; /* one candidate in `stride` (samples spread over the pool) */
            entries[n++] = (cram_cold_entry){ .page = i, .slot = CRAM_PTE_SLOT(p), .location = slot->location, .region = id,
                                              .length = slot->length, .flags = (uint8_t)flags };
        }
        if (i >= pages) { id++; i = 0; }
    }
    engine_unlock(e);
    *region_id = id;
    *page = i;
    *found = n;
    return 0;
}
