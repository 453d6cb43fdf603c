/*
 * The contract as data: every struct size, field offset and size, enum value and shared constant C# mirrors (cramnative.h).
 */
#define _GNU_SOURCE
#include "internal.h"

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
_Static_assert(CRAM_PTE_FETCHING < CONTRACT_ENUM_LIMIT && CRAM_BACKEND_REMOTE < CONTRACT_ENUM_LIMIT &&
               CRAM_UFFD_MODE_USER_MODE_ONLY < CONTRACT_ENUM_LIMIT && CRAM_CONTRACT_CONSTANT < CONTRACT_ENUM_LIMIT,
               "an enumerator of the contract is not listed by contract_enums");

static void contract_enums(contract_builder* b)
{
    for (uint32_t v = 0; v < CONTRACT_ENUM_LIMIT; v++) {
        switch ((enum cram_pte_state)v) {
        ENUMERATOR(CRAM_PTE_EMPTY); ENUMERATOR(CRAM_PTE_DIRTY); ENUMERATOR(CRAM_PTE_CLEAN);
        ENUMERATOR(CRAM_PTE_EVICTING); ENUMERATOR(CRAM_PTE_DROPPING); ENUMERATOR(CRAM_PTE_EVICTED);
        ENUMERATOR(CRAM_PTE_INCOMPRESSIBLE); ENUMERATOR(CRAM_PTE_UNPROTECTING);
        ENUMERATOR(CRAM_PTE_PLACED); ENUMERATOR(CRAM_PTE_PLACED_WRITABLE); ENUMERATOR(CRAM_PTE_INSTALLING);
        ENUMERATOR(CRAM_PTE_FETCHING);
        }
        switch ((enum cram_backend)v) {
        ENUMERATOR(CRAM_BACKEND_FREE); ENUMERATOR(CRAM_BACKEND_SAME_FILLED);
        ENUMERATOR(CRAM_BACKEND_POOL); ENUMERATOR(CRAM_BACKEND_FILE); ENUMERATOR(CRAM_BACKEND_CRAM);
        ENUMERATOR(CRAM_BACKEND_REMOTE);
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

    STRUCT(cram_slot_recode);
    FIELD(cram_slot_recode, slot); FIELD(cram_slot_recode, from_location); FIELD(cram_slot_recode, to_location);
    FIELD(cram_slot_recode, page); FIELD(cram_slot_recode, region); FIELD(cram_slot_recode, checksum);
    FIELD(cram_slot_recode, length); FIELD(cram_slot_recode, flags); FIELD(cram_slot_recode, recoded);
    FIELD(cram_slot_recode, from_backend); FIELD(cram_slot_recode, to_backend); FIELD(cram_slot_recode, reserved);

    STRUCT(cram_cold_entry);
    FIELD(cram_cold_entry, page); FIELD(cram_cold_entry, slot); FIELD(cram_cold_entry, location); FIELD(cram_cold_entry, region);
    FIELD(cram_cold_entry, length); FIELD(cram_cold_entry, flags); FIELD(cram_cold_entry, reserved);

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

    STRUCT(cram_floor);
    FIELD(cram_floor, kernel_first_touch_us); FIELD(cram_floor, uffd_service_thread_us); FIELD(cram_floor, uffd_faulting_thread_us);
    FIELD(cram_floor, uffdio_copy_us); FIELD(cram_floor, lz4_decompress_us);
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
    FIELD(cram_stats, file_reads); FIELD(cram_stats, file_read_bytes); FIELD(cram_stats, file_reads_sequential);
    FIELD(cram_stats, swapin_latency_us_log2); FIELD(cram_stats, fault_latency_us_log2); FIELD(cram_stats, faults_swapin_zstd);

    STRUCT(cram_engine_config);
    FIELD(cram_engine_config, forced_mode); FIELD(cram_engine_config, spin_us); FIELD(cram_engine_config, latency_probe_us);
    FIELD(cram_engine_config, soft_limit_pages); FIELD(cram_engine_config, hard_limit_pages);
    FIELD(cram_engine_config, throttle_max_us); FIELD(cram_engine_config, fault_around_pages);
    FIELD(cram_engine_config, fault_service); FIELD(cram_engine_config, readahead_helpers);

    STRUCT(cram_shared);
    FIELD(cram_shared, stats); FIELD(cram_shared, slot_directory); FIELD(cram_shared, handle_directory);
    FIELD(cram_shared, stale_head); FIELD(cram_shared, fault_log); FIELD(cram_shared, fault_log_head);
    FIELD(cram_shared, fault_log_tail); FIELD(cram_shared, uffd_mode); FIELD(cram_shared, reclaim_stalled);
    FIELD(cram_shared, backing_fd); FIELD(cram_shared, backing_direct);
    FIELD(cram_shared, cram_capacity_bytes); FIELD(cram_shared, cram_writable_limit);
    FIELD(cram_shared, cram_write_control); FIELD(cram_shared, reclaim_running); FIELD(cram_shared, activate_distance_pages);
    FIELD(cram_shared, memory_wait_us);

    STRUCT(cram_remote_config);
    FIELD(cram_remote_config, key); FIELD(cram_remote_config, prefix); FIELD(cram_remote_config, password);
    FIELD(cram_remote_config, timeout_ms); FIELD(cram_remote_config, lanes); FIELD(cram_remote_config, sealed);
    FIELD(cram_remote_config, tls); FIELD(cram_remote_config, tls_server_name); FIELD(cram_remote_config, tls_ca_file);
    FIELD(cram_remote_config, tls_cert_file); FIELD(cram_remote_config, tls_key_file);

    STRUCT(cram_remote_stats);
    FIELD(cram_remote_stats, fetches); FIELD(cram_remote_stats, requests); FIELD(cram_remote_stats, fetch_bytes); FIELD(cram_remote_stats, fetch_retries);
    FIELD(cram_remote_stats, fetch_failures); FIELD(cram_remote_stats, auth_failures); FIELD(cram_remote_stats, fetch_ns);
    FIELD(cram_remote_stats, open_ns); FIELD(cram_remote_stats, decode_ns); FIELD(cram_remote_stats, waits);
    FIELD(cram_remote_stats, queued_peak); FIELD(cram_remote_stats, connects); FIELD(cram_remote_stats, redirects); FIELD(cram_remote_stats, inflight);
    FIELD(cram_remote_stats, tls_failures);

    STRUCT(cram_contract_entry);
    FIELD(cram_contract_entry, name); FIELD(cram_contract_entry, value); FIELD(cram_contract_entry, kind);
    FIELD(cram_contract_entry, size);
}

/* The state machine (CRAM_PTE_TRANSITIONS) as one constant per state: CRAM_PTE_TRANSITIONS_FROM_<state>
 * has bit t set when <state> -> t is a transition. C# mirrors them (PageTransitions) and checks its own
 * page-table CASes against them in Debug builds. */
static void contract_transitions(contract_builder* b)
{
    for (uint32_t from = CRAM_PTE_EMPTY; from <= CRAM_PTE_FETCHING; from++) {
        uint64_t mask = 0;
        for (uint32_t to = CRAM_PTE_EMPTY; to <= CRAM_PTE_FETCHING; to++)
            if (to != from && pte_transition_allowed(from, to)) mask |= 1ull << to;
        const char* name = NULL;
        switch ((enum cram_pte_state)from) {
        case CRAM_PTE_EMPTY: name = "CRAM_PTE_TRANSITIONS_FROM_EMPTY"; break;
        case CRAM_PTE_DIRTY: name = "CRAM_PTE_TRANSITIONS_FROM_DIRTY"; break;
        case CRAM_PTE_CLEAN: name = "CRAM_PTE_TRANSITIONS_FROM_CLEAN"; break;
        case CRAM_PTE_EVICTING: name = "CRAM_PTE_TRANSITIONS_FROM_EVICTING"; break;
        case CRAM_PTE_DROPPING: name = "CRAM_PTE_TRANSITIONS_FROM_DROPPING"; break;
        case CRAM_PTE_EVICTED: name = "CRAM_PTE_TRANSITIONS_FROM_EVICTED"; break;
        case CRAM_PTE_INCOMPRESSIBLE: name = "CRAM_PTE_TRANSITIONS_FROM_INCOMPRESSIBLE"; break;
        case CRAM_PTE_UNPROTECTING: name = "CRAM_PTE_TRANSITIONS_FROM_UNPROTECTING"; break;
        case CRAM_PTE_PLACED: name = "CRAM_PTE_TRANSITIONS_FROM_PLACED"; break;
        case CRAM_PTE_PLACED_WRITABLE: name = "CRAM_PTE_TRANSITIONS_FROM_PLACED_WRITABLE"; break;
        case CRAM_PTE_INSTALLING: name = "CRAM_PTE_TRANSITIONS_FROM_INSTALLING"; break;
        case CRAM_PTE_FETCHING: name = "CRAM_PTE_TRANSITIONS_FROM_FETCHING"; break;
        }
        contract_add(b, name, mask, CRAM_CONTRACT_CONSTANT, 0);
    }
}

static void contract_constants(contract_builder* b)
{
    CONSTANT(CRAM_PAGE_SIZE); CONSTANT(CRAM_PAGE_SHIFT); CONSTANT(CRAM_MAX_REGIONS); CONSTANT(CRAM_MAX_REGION_BYTES); CONSTANT(CRAM_FAULT_AROUND_MAX); CONSTANT(CRAM_READAHEAD_HELPERS_MAX); CONSTANT(CRAM_SWAPIN_LATENCY_BUCKETS);
    CONSTANT(CRAM_PTE_STATE_MASK); CONSTANT(CRAM_PTE_REFERENCED); CONSTANT(CRAM_PTE_SLOT_SHIFT);
    CONSTANT(CRAM_PTE_ACTIVE); CONSTANT(CRAM_PTE_STAMPED); CONSTANT(CRAM_PTE_TRIAL); CONSTANT(CRAM_PTE_SLOT_MASK); CONSTANT(CRAM_PTE_STAMP_SHIFT);
    CONSTANT(CRAM_EVICTION_STAMP_UNIT);
    CONSTANT(CRAM_SLOT_ZERO);
    CONSTANT(CRAM_SLOT_RAW); CONSTANT(CRAM_SLOT_STALE); CONSTANT(CRAM_SLOT_BAD); CONSTANT(CRAM_SLOT_REFERENCED);
    CONSTANT(CRAM_SLOT_ZSTD); CONSTANT(CRAM_SLOT_DICT_SHIFT); CONSTANT(CRAM_SLOT_DICT_MASK); CONSTANT(CRAM_SLOT_KEPT); CONSTANT(CRAM_SLOT_CODEC_MASK);
    CONSTANT(CRAM_SLOT_CLEAN_COPY); CONSTANT(CRAM_RECODE_ANY_PAGE);
    CONSTANT(CRAM_ZSTD_DICTIONARIES);
    CONSTANT(CRAM_DIRECTORY_CLUSTER_SHIFT); CONSTANT(CRAM_DIRECTORY_CLUSTER_SIZE); CONSTANT(CRAM_DIRECTORY_SIZE);
    CONSTANT(CRAM_FAULT_LOG_SIZE); CONSTANT(CRAM_FAULT_LOG_REGION_SHIFT);
    CONSTANT(CRAM_REMOTE_MAX_ENDPOINTS); CONSTANT(CRAM_REMOTE_TAG_BYTES); CONSTANT(CRAM_REMOTE_OFFSET_BITS);
    CONSTANT(CRAM_REMOTE_NODE_SHIFT); CONSTANT(CRAM_REMOTE_SEGMENT_SHIFT);
    contract_transitions(b);
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

