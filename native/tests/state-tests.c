/*
 * C unit tests of the page-state machine and the engine lock, built with CRAM_DEBUG against the
 * library's units (make test; ./build.sh test runs it). Each check prints one line; any failure
 * exits 1. The engine test skips, saying why, where userfaultfd is not available.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/wait.h>

static int failures;
#define CHECK(cond, ...) do { if (cond) { printf("ok   "); } else { printf("FAIL "); failures++; } printf(__VA_ARGS__); printf("\n"); } while (0)

static const uint32_t states[] = {
    CRAM_PTE_EMPTY, CRAM_PTE_DIRTY, CRAM_PTE_CLEAN, CRAM_PTE_EVICTING, CRAM_PTE_DROPPING,
    CRAM_PTE_EVICTED, CRAM_PTE_INCOMPRESSIBLE, CRAM_PTE_UNPROTECTING, CRAM_PTE_PLACED, CRAM_PTE_PLACED_WRITABLE, CRAM_PTE_INSTALLING,
    CRAM_PTE_FETCHING,
};
#define STATES (sizeof states / sizeof states[0])

/* Runs fn in a child; returns the signal that ended it (0 if it exited). */
static int child_signal(void (*fn)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr); /* the CRAM_DEBUG message is expected */
        fn();
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void table_tests(void)
{
    /* Reachability from EMPTY over the table: every state is reachable, and EMPTY is reachable
     * again from every state (nothing is a dead end). */
    int reach[16] = { 0 };
    reach[CRAM_PTE_EMPTY] = 1;
    for (int round = 0; round < 16; round++)
        for (unsigned f = 0; f < STATES; f++)
            for (unsigned t = 0; t < STATES; t++)
                if (reach[states[f]] && pte_transition_allowed(states[f], states[t])) reach[states[t]] = 1;
    int all = 1;
    for (unsigned i = 0; i < STATES; i++) all &= reach[states[i]];
    CHECK(all, "every state is reachable from EMPTY");
    for (unsigned s = 0; s < STATES; s++) {
        int back[16] = { 0 };
        back[states[s]] = 1;
        for (int round = 0; round < 16; round++)
            for (unsigned f = 0; f < STATES; f++)
                for (unsigned t = 0; t < STATES; t++)
                    if (back[states[f]] && pte_transition_allowed(states[f], states[t])) back[states[t]] = 1;
        CHECK(back[CRAM_PTE_EMPTY], "EMPTY is reachable from state %u", states[s]);
    }
    /* What the prose in cramnative.h says, checked against the table. */
    CHECK(pte_transition_allowed(CRAM_PTE_EMPTY, CRAM_PTE_DIRTY), "EMPTY -> DIRTY (first touch)");
    int only_dirty = 1;
    for (unsigned t = 0; t < STATES; t++)
        if (states[t] != CRAM_PTE_DIRTY && states[t] != CRAM_PTE_EMPTY && pte_transition_allowed(CRAM_PTE_EMPTY, states[t])) only_dirty = 0;
    CHECK(only_dirty, "EMPTY leaves only for DIRTY (only the service leaves EMPTY)");
    CHECK(!pte_transition_allowed(CRAM_PTE_DIRTY, CRAM_PTE_CLEAN), "DIRTY -> CLEAN only through EVICTING (no lost write)");
    CHECK(!pte_transition_allowed(CRAM_PTE_DIRTY, CRAM_PTE_EVICTED), "DIRTY -> EVICTED is not a transition");
    CHECK(!pte_transition_allowed(CRAM_PTE_CLEAN, CRAM_PTE_EVICTED), "CLEAN -> EVICTED only through DROPPING");
    CHECK(!pte_transition_allowed(CRAM_PTE_PLACED, CRAM_PTE_PLACED_WRITABLE), "PLACED -> PLACED_WRITABLE only through UNPROTECTING");
    uint32_t held[] = { CRAM_PTE_EVICTING, CRAM_PTE_DROPPING, CRAM_PTE_UNPROTECTING, CRAM_PTE_INSTALLING, CRAM_PTE_FETCHING };
    for (unsigned i = 0; i < sizeof held / sizeof held[0]; i++)
        CHECK(!pte_transition_allowed(held[i], CRAM_PTE_EMPTY), "discard never takes held state %u to EMPTY", held[i]);
    CHECK(pte_transition_allowed(CRAM_PTE_CLEAN, CRAM_PTE_CLEAN), "a flag-only change is not a transition");
    int installing_out = 1; /* readahead's installer: to CLEAN (mapped) or back to EVICTED (copy failed), nothing else */
    for (unsigned t = 0; t < STATES; t++)
        if (states[t] != CRAM_PTE_CLEAN && states[t] != CRAM_PTE_EVICTED && states[t] != CRAM_PTE_INSTALLING &&
            pte_transition_allowed(CRAM_PTE_INSTALLING, states[t])) installing_out = 0;
    CHECK(installing_out && pte_transition_allowed(CRAM_PTE_EVICTED, CRAM_PTE_INSTALLING),
          "INSTALLING is entered from EVICTED only and left for CLEAN or EVICTED only");
    int installing_in = 1;
    for (unsigned f = 0; f < STATES; f++)
        if (states[f] != CRAM_PTE_EVICTED && states[f] != CRAM_PTE_INSTALLING && pte_transition_allowed(states[f], CRAM_PTE_INSTALLING)) installing_in = 0;
    CHECK(installing_in, "only an EVICTED page is claimed for an install");
    /* A remote fetch: entered from EVICTED only; left for CLEAN (read), DIRTY (write) or EVICTED (failed). */
    int fetching_out = 1, fetching_in = 1;
    for (unsigned t = 0; t < STATES; t++) {
        if (states[t] != CRAM_PTE_CLEAN && states[t] != CRAM_PTE_DIRTY && states[t] != CRAM_PTE_EVICTED && states[t] != CRAM_PTE_FETCHING &&
            pte_transition_allowed(CRAM_PTE_FETCHING, states[t])) fetching_out = 0;
        if (states[t] != CRAM_PTE_EVICTED && states[t] != CRAM_PTE_FETCHING && pte_transition_allowed(states[t], CRAM_PTE_FETCHING)) fetching_in = 0;
    }
    CHECK(fetching_out && fetching_in && pte_transition_allowed(CRAM_PTE_EVICTED, CRAM_PTE_FETCHING) &&
          pte_transition_allowed(CRAM_PTE_FETCHING, CRAM_PTE_CLEAN) && pte_transition_allowed(CRAM_PTE_FETCHING, CRAM_PTE_DIRTY) &&
          pte_transition_allowed(CRAM_PTE_FETCHING, CRAM_PTE_EVICTED),
          "FETCHING is entered from EVICTED only and left for CLEAN, DIRTY or EVICTED only");
}

static uint64_t word;
static void forbidden_cas(void) { word = CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0); pte_cas(&word, word, CRAM_PTE_MAKE(CRAM_PTE_EVICTED, 5)); }
static void forbidden_store(void) { word = CRAM_PTE_MAKE(CRAM_PTE_CLEAN, 5); pte_store(&word, CRAM_PTE_MAKE(CRAM_PTE_EVICTED, 5)); }
static void allowed_moves(void)
{
    word = CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0);
    pte_cas(&word, word, CRAM_PTE_MAKE(CRAM_PTE_EVICTING, 0));
    pte_store(&word, CRAM_PTE_MAKE(CRAM_PTE_CLEAN, 5));
    pte_store(&word, CRAM_PTE_MAKE(CRAM_PTE_CLEAN, 5) | CRAM_PTE_REFERENCED);
}
static cram_engine lock_engine;
static void lock_twice(void) { pthread_mutex_init(&lock_engine.lock, NULL); engine_lock(&lock_engine); engine_lock(&lock_engine); }
static void unlock_unheld(void) { pthread_mutex_init(&lock_engine.lock, NULL); engine_unlock(&lock_engine); }
static void assert_unheld(void) { ASSERT_ENGINE_LOCKED(&lock_engine); }
static void lock_properly(void)
{
    pthread_mutex_init(&lock_engine.lock, NULL);
    engine_lock(&lock_engine);
    ASSERT_ENGINE_LOCKED(&lock_engine);
    engine_unlock(&lock_engine);
    engine_lock(&lock_engine);
    engine_unlock(&lock_engine);
}

/* A thread that faults on a region while it holds that engine's lock: the handler cannot serve it. */
static void fault_under_lock(void)
{
    cram_engine_config config = { .fault_around_pages = 1, .fault_service = CRAM_FAULT_SERVICE_FAULTING };
    cram_engine* e;
    cram_shared* shared;
    uint32_t id;
    uint64_t base, pte;
    if (CramNative_EngineCreate(&config, &e, &shared) != 0 || CramNative_RegionCreate(e, CRAM_PAGE_SIZE, &id, &base, &pte) != 0) abort();
    engine_lock(e);
    *(volatile unsigned char*)(uintptr_t)base = 1;
}

static void debug_check_tests(void)
{
    CHECK(child_signal(forbidden_cas) == SIGABRT, "CRAM_DEBUG: a CAS DIRTY -> EVICTED aborts");
    CHECK(child_signal(forbidden_store) == SIGABRT, "CRAM_DEBUG: a store CLEAN -> EVICTED aborts");
    CHECK(child_signal(allowed_moves) == 0, "CRAM_DEBUG: DIRTY -> EVICTING -> CLEAN, then a flag, pass");
    CHECK(child_signal(lock_twice) == SIGABRT, "CRAM_DEBUG: taking the engine lock twice on one thread aborts");
    CHECK(child_signal(unlock_unheld) == SIGABRT, "CRAM_DEBUG: releasing an engine lock the thread does not hold aborts");
    CHECK(child_signal(assert_unheld) == SIGABRT, "CRAM_DEBUG: ASSERT_ENGINE_LOCKED without the lock aborts");
    CHECK(child_signal(lock_properly) == 0, "CRAM_DEBUG: lock, assert, unlock, lock, unlock pass");
}

/* A real engine, built with CRAM_DEBUG: first touch, a write-protect fault on a stray protection,
 * discard and the census, each transition checked by the build; with the service thread, then with
 * the faulting thread (sigbus.c: this very thread resolves each fault in its SIGBUS handler). */
static void engine_tests(uint32_t fault_service)
{
    cram_engine_config config = { .fault_around_pages = 1, .fault_service = fault_service };
    cram_engine* e;
    cram_shared* shared;
    printf("-- %s\n", fault_service == CRAM_FAULT_SERVICE_FAULTING ? "faulting thread" : "service thread");
    if (CramNative_EngineCreate(&config, &e, &shared) != 0) {
        printf("skip engine tests: userfaultfd is not available here (%s)\n", strerror(errno));
        return;
    }
    uint32_t service;
    CHECK(CramNative_EngineFaultService(e, &service) == 0 && service == fault_service, "the engine runs the fault service asked for");
    uint32_t id;
    uint64_t base, pte;
    CHECK(CramNative_RegionCreate(e, 16 * CRAM_PAGE_SIZE, &id, &base, &pte) == 0, "a region of 16 pages");
    volatile unsigned char* mem = (unsigned char*)(uintptr_t)base;
    uint64_t* table = (uint64_t*)(uintptr_t)pte;
    mem[0] = 1;                        /* first touch, for write */
    unsigned char r = mem[5 * CRAM_PAGE_SIZE]; /* first touch, for read */
    CHECK(r == 0 && CRAM_PTE_STATE(table[0]) == CRAM_PTE_DIRTY && CRAM_PTE_STATE(table[5]) == CRAM_PTE_DIRTY,
          "first touch: EMPTY -> DIRTY for a write and for a read");
    uint64_t page = 0;
    CHECK(CramNative_WriteProtectPages(e, id, &page, 1) == 0, "a stray write protection on a DIRTY page");
    mem[1] = 2;                        /* WP fault: DIRTY -> UNPROTECTING -> DIRTY */
    CHECK(mem[0] == 1 && mem[1] == 2 && CRAM_PTE_STATE(table[0]) == CRAM_PTE_DIRTY && shared->stats.faults_spurious == 1,
          "the write-protect fault clears it: DIRTY -> UNPROTECTING -> DIRTY, nothing lost");
    /* A write during eviction, as reclaim makes it: claim (DIRTY -> EVICTING), protect, then write. */
    CHECK(pte_cas(&table[0], table[0], CRAM_PTE_MAKE(CRAM_PTE_EVICTING, 0)) && CramNative_WriteProtectPages(e, id, &page, 1) == 0,
          "reclaim's claim: DIRTY -> EVICTING, write-protected");
    mem[2] = 3;
    CHECK(mem[0] == 1 && mem[1] == 2 && mem[2] == 3 && CRAM_PTE_STATE(table[0]) == CRAM_PTE_DIRTY && shared->stats.faults_wp_cancel == 1,
          "a write during eviction cancels it: EVICTING -> UNPROTECTING -> DIRTY, nothing lost");
    cram_region_census c;
    CHECK(CramNative_RegionCensus(e, id, &c) == 0 && c.populated_pages == 2 && c.resident_pages == 2, "census: 2 populated, 2 resident");
    uint64_t discarded;
    CHECK(CramNative_DiscardPages(e, id, 0, 16, &discarded) == 0 && discarded == 2 && CRAM_PTE_STATE(table[0]) == CRAM_PTE_EMPTY,
          "discard: DIRTY -> EMPTY for both");
    CHECK(mem[0] == 0, "a discarded page reads zeros (first touch again)");
    CHECK(CramNative_RegionDeactivate(e, id) == 0 && CramNative_RegionDestroy(e, id) == 0, "region deactivated and destroyed");
    CHECK(CramNative_EngineDestroy(e) == 0, "engine destroyed");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    table_tests();
    debug_check_tests();
    engine_tests(CRAM_FAULT_SERVICE_THREAD);
    engine_tests(CRAM_FAULT_SERVICE_FAULTING);
    CHECK(child_signal(fault_under_lock) == SIGABRT, "CRAM_DEBUG: a fault on the faulting thread while it holds the engine lock aborts (it would deadlock)");
    printf(failures ? "state-tests: %d FAILED\n" : "state-tests: all passed\n", failures);
    return failures ? 1 : 0;
}
