using System.Runtime.CompilerServices;
using System.Text.Json;

namespace CramCore.Tests;

/// <summary>
/// The JSON each verb prints is an interface (scripts, the kernel anchor's comparison): the typed
/// result records must keep these keys, in this order.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed class CliResultTests
{
    private static string[] Keys<T>()
    {
        var empty = (T)RuntimeHelpers.GetUninitializedObject(typeof(T));
        return [.. JsonDocument.Parse(ResultPrinter.ToJson(empty)).RootElement.EnumerateObject().Select(p => p.Name)];
    }

    [Fact]
    public void BenchResults_KeepTheirKeys()
    {
        Assert.Equal(["source", "pages", "rounds", "swapin_p50_us", "swapin_p99_us", "wp_p50_us", "wp_p99_us", "raw_uffd_p50_us",
            "raw_uffd_p99_us", "lz4_decompress_p50_us", "resident_hit_ns", "stored_ratio", "swapin_over_raw_plus_lz4", "fault_service"], Keys<FaultsBenchResult>());
        Assert.Equal(["kernel_first_touch_us", "uffd_service_thread_us", "uffd_faulting_thread_us", "uffdio_copy_us", "lz4_decompress_us",
            "service_thread_over_faulting_thread", "samples"], Keys<FloorBenchResult>());
        Assert.Equal(["source", "pages", "rounds", "reclaim_mib_s", "reclaim_cold_mib_s", "lz4_compress_mib_s", "reclaim_over_lz4",
            "stored_ratio", "compressed_pages", "incompressible_pages", "estimator_skipped_pages", "reclaim_without_estimator_mib_s",
            "routing_speedup", "zero_reclaim_mib_s", "zero_reclaim_over_lz4"], Keys<ReclaimBenchResult>());
        Assert.Equal(["buddy_ops_per_s_1t", "locked_ops_per_s_1t", "lockfree_over_locked_1t", "nbbs_tree_ops_per_s_1t",
            "buddy_ops_per_s_2t", "locked_ops_per_s_2t", "lockfree_over_locked_2t", "nbbs_tree_ops_per_s_2t", "ops_per_thread",
            "arena_bytes", "workload"], Keys<AllocBenchResult>());
        Assert.Equal(["source", "pages", "objects", "same_filled_pages", "incompressible_pages", "object_bytes", "pool_bytes", "density",
            "metadata_bytes_per_object", "store_ns", "freed_objects", "free_bytes_before_compaction", "compaction_returned_bytes",
            "compaction_recovered", "density_after_compaction", "compaction_ms", "objects_moved", "classes_in_use", "verified"], Keys<PoolBenchResult>());
        Assert.Equal(["source", "pages", "backing_file", "direct_io", "writeback_pages", "writeback_mib_s", "compressed_bytes_moved",
            "file_bytes_written", "file_bytes_per_compressed_byte", "decompressed_writeback_bytes", "written_over_decompressed",
            "swapin_from_file_p50_us", "swapin_from_file_p99_us", "file_samples", "swapin_p50_us", "swapin_p99_us", "pool_samples",
            "metadata_bytes_per_slot", "checksum_ns_per_page", "checksum_share_of_swapin", "checksum_failures", "mismatches",
            "file_bytes_per_page", "background_writeback_pages", "background_writeback_mib_s", "background_recompressed_pages",
            "background_file_bytes_per_page", "swapin_from_file_zstd_p50_us", "file_zstd_samples"], Keys<WritebackBenchResult>());
        Assert.Equal(["pages", "device_capacity_bytes", "placed_pages", "ledger_bytes", "threads", "seconds_per_mode", "budget_pages", "modes",
            "placed_read_gb_s", "resident_read_gb_s", "placed_over_resident_read"], Keys<BearBenchResult>());
        Assert.Equal(["fill_mib_s", "swapin_at_limit_p50_us", "swapin_at_limit_p99_us", "swapin_p50_us", "swapin_p99_us", "seq_swapin_mib_s",
            "mismatches", "source", "size_bytes", "limit_bytes", "samples_at_limit", "samples_no_limit", "zero_page_samples", "resident_skipped",
            "evicted_test", "effective_ratio", "evictions", "zero_fill_faults", "refaults", "write_protect_faults", "throttled_faults", "seq_pages",
            "peak_resident_over_limit", "prefetch_mib_s", "prefetch_over_seq_swapin", "prefetched_pages", "prefetch_evicted_pages",
            "refaults_after_prefetch", "fault_service", "compression_threads", "readahead_threads", "fill_helper_compressed_share", "fill_elapsed_s", "fill_cpu_writer_s", "fill_cpu_fault_service_s", "fill_cpu_reclaim_s", "fill_cpu_compress_s", "fill_cpu_writeback_s", "fill_cpu_other_s", "backing_file", "pool_limit_bytes", "file_bytes_written", "file_segments",
            "file_pages_after_fill", "refaults_from_file", "file_bytes_written_per_page", "file_reads", "file_read_bytes_per_page_read_back",
            "pages_per_file_read", "seq_pages_per_file_read", "seq_file_reads_sequential_share",
            "engine_fault_latency_p50_us", "engine_fault_latency_samples", "engine_fault_service_time_p50_us", "recompressed_pages", "refaults_zstd",
            "file_recompressed_pages", "file_bytes_saved_by_recompression"], Keys<SwapBenchResult>());
        Assert.Equal(["refaults_per_read", "hot_miss_rate", "reads_per_s", "lru_refaults_per_read", "lru_hot_miss_rate", "refaults_over_lru",
            "phases", "source", "distribution", "size_bytes", "limit_bytes", "hot_bytes", "hot_share", "zipf_exponent", "reads_per_phase",
            "fill_s", "evictions", "refaults", "working_set_activations", "working_set_demotions", "mismatches"], Keys<HotColdBenchResult>());
        Assert.Equal(["dispose_ms_1g", "dispose_ms_1t", "dispose_ms_64t", "create_ms_1g", "create_ms_1t", "create_ms_64t", "write_ms_1g",
            "write_ms_1t", "write_ms_64t", "worst_dispose_ms", "rounds", "engines", "engines_create_s", "engines_dispose_s", "idle_cpu_percent", "rss_per_engine_bytes", "memory_used_per_engine_bytes"], Keys<LifecycleBenchResult>());
        Assert.Equal(["region_bytes", "stride_bytes", "touches", "kernel_touch_us_per_page", "touch_us_per_page", "touch_over_kernel",
            "resident_bytes_per_touched_page", "limit_bytes", "limited_touch_us_per_page", "limited_touch_over_kernel", "fault_service"], Keys<SparseBenchResult>());
        Assert.Equal(["overflow_bytes", "peak_physical_usage_bytes", "promotions", "made_writable", "max_writable", "budget_pages",
            "writes_per_s", "writes", "mismatches"], Keys<BearModeResult>());
    }

    [Fact]
    public void EstimateDemoAnalyzeResults_KeepTheirKeys()
    {
        Assert.Equal(["input", "pages", "threshold", "lz4_compressible", "estimate_gb_s", "estimate_path", "lz4_trial_gb_s",
            "estimate_to_lz4_trial", "agreement", "false_incompressible", "confident", "agreement_when_confident", "false_compressible",
            "btrfs_heuristic_agreement", "class_zero", "class_same_filled", "class_very_compressible", "class_compressible",
            "class_uncertain", "class_incompressible", "paths"], Keys<EstimateResult>());
        Assert.Equal(["accelerated", "estimate_gb_s", "ratio_to_lz4_trial"], Keys<EstimatePathResult>());
        Assert.Equal(["region_bytes", "resident_limit_bytes", "logical_bytes", "resident_bytes", "peak_resident_bytes",
            "peak_resident_over_limit", "stored_bytes", "pool_bytes", "pool_compacted_pages", "effective_ratio", "same_filled_pages",
            "zero_fill_faults", "refaults", "write_protect_faults", "evictions", "cancelled_evictions", "incompressible_pages",
            "estimator_skipped_pages", "estimator_mispredicted_compressible", "estimator_false_incompressible", "estimator_audits",
            "throttled_faults", "service_errors", "reads", "writes", "swapin_samples", "swapin_p50_us", "swapin_p99_us", "fill_s",
            "workload_s", "verify_s", "mismatches", "backing_file", "pool_limit_bytes", "writeback_pages", "writeback_bytes", "file_pages",
            "backing_file_bytes", "refaults_from_file", "checksum_failures", "cram_capacity_bytes", "cram_placed_pages",
            "cram_physical_usage_bytes", "cram_compression_ratio", "cram_overflow_bytes", "cram_made_writable", "cram_max_writable_pages",
            "cram_promotions", "cram_trimmed_frames", "cram_moved_out", "fault_service", "remote_store", "remote_pages",
            "remote_bytes_written", "remote_fetches", "remote_requests"], Keys<DemoResult>());
        // The remote bench: the keys first, in its order.
        Assert.Equal(["fill_mib_s", "remote_swapin_p50_us", "remote_swapin_p99_us", "store_get_p50_us", "lz4_decompress_us", "decrypt_us",
            "local_swapin_p50_us", "local_swapin_p50_with_remote_us", "bytes_sent_per_evicted_byte", "node_bytes", "failover_pages_lost",
            "mismatches"], Keys<RemoteBenchResult>().Take(12));
        Assert.Equal(["source", "pages", "bytes", "unreadable_bytes", "zero_fraction", "same_filled_fraction", "compressible_fraction",
            "incompressible_fraction", "lz4_ratio_p10", "lz4_ratio_p50", "lz4_ratio_p90", "threshold_bytes", "estimator_agreement",
            "estimator_confident_fraction", "estimator_false_incompressible", "saved_bytes", "saved_fraction", "seconds"], Keys<AnalyzeResult>());
    }
}
