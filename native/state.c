/*
 * Shared-state helpers: clean-copy counts, the stale list, the walk of a region's touched blocks, and
 * the state machine as a function (pte_transition_allowed, from CRAM_PTE_TRANSITIONS) with the
 * CRAM_DEBUG failure report.
 */
#define _GNU_SOURCE
#include "internal.h"

/* A page moved into CLEAN (sign +1) or out of it (-1): cramnative.h, "Clean copies". */
void clean_copy_count(cram_shared* s, uint64_t id, int sign)
{
    uint64_t bytes = 0;
    if (id != CRAM_SLOT_ZERO) {
        uint32_t bit = CRAM_SLOT_CLEAN_COPY << SLOT_FLAGS_SHIFT;
        uint32_t* word = slot_word(slot_get(s, id));
        uint32_t old = sign > 0 ? __atomic_fetch_or(word, bit, __ATOMIC_ACQ_REL) : __atomic_fetch_and(word, ~bit, __ATOMIC_ACQ_REL);
        CRAM_CHECK(!(old & bit) == (sign > 0), "clean copy counted twice, or released uncounted (slot, word)", id, old);
        bytes = old & 0xFFFFu;
    }
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
void stale_push(cram_shared* s, uint64_t id)
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
uint64_t touched_page_next(const cram_region_desc* r, uint64_t page)
{
    uint64_t pages = r->length >> CRAM_PAGE_SHIFT;
    if (page >= pages) return pages;
    uint64_t blocks = (pages + TOUCHED_BLOCK_PAGES - 1) >> TOUCHED_BLOCK_SHIFT;
    uint64_t block = page >> TOUCHED_BLOCK_SHIFT;
    uint64_t next = touched_next(r, block, blocks);
    if (next == block) return page; /* still inside a marked block */
    return next == blocks ? pages : next << TOUCHED_BLOCK_SHIFT;
}

int pte_transition_allowed(uint32_t from, uint32_t to)
{
    if (from == to) return 1;
#define CRAM_ALLOWED(f, t) if (from == (f) && to == (t)) return 1;
    CRAM_PTE_TRANSITIONS(CRAM_ALLOWED)
#undef CRAM_ALLOWED
    return 0;
}

#ifdef CRAM_DEBUG
void cram_debug_fail(const char* file, int line, const char* what, uint64_t a, uint64_t b)
{
    fprintf(stderr, "CRAM_DEBUG: %s:%d: %s (%llu, %llu)\n", file, line, what, (unsigned long long)a, (unsigned long long)b);
    abort();
}
#endif
