/*
 * CramCore native helper: the userfaultfd fault service and the contract it shares with C#.
 *
 * The contract is everything in this header that C# also reads or writes: the page-table entry
 * encoding, the virtual swap slot and pool handle records and their clustered directories, the
 * fault-in log, the counters, the engine configuration and the enums. It is mirrored once, in
 * src/CramCore/Native/SharedLayout.cs, and checked three ways:
 *   - _Static_assert below pins every size, offset and constant C# relies on, and that no struct
 *     has padding (a field added here without updating the asserts fails the build);
 *   - CramNative_GetContract reports every struct's size, every field's offset and size, every
 *     enum value and every shared constant; its enum tables are switches over each enum without a
 *     default, so an enumerator added here without a table entry fails the build (-Wswitch);
 *   - ContractTests (C#) reflects over every mirrored struct, field, enum member and constant and
 *     compares both ways, so a field or value added, renamed or moved on one side only fails.
 *
 * Exports follow the dotnet/runtime convention: CramNative_* functions return 0 on success and
 * -1 with errno set on failure.
 */
#ifndef CRAMNATIVE_H
#define CRAMNATIVE_H

#include <stddef.h>
#include <stdint.h>

#define CRAM_PAGE_SIZE 4096u
#define CRAM_SWAPIN_LATENCY_BUCKETS 16
#define CRAM_PAGE_SHIFT 12
#define CRAM_MAX_REGIONS 256
#define CRAM_MAX_REGION_BYTES (1ull << 46) /* 64 TiB: a region's last page still fits a fault-log entry */
#define CRAM_FAULT_AROUND_MAX 64u           /* the most pages one first touch fills (cram_engine_config.fault_around_pages) */

/* ---------------------------------------------------------------------------------------------
 * Page-table entry: one 64-bit word per 4 KiB page.
 *
 *   bits  0..3   state (enum cram_pte_state)
 *   bit   4      referenced: set by the fault service when it makes a page resident for a write
 *                or un-protects it; cleared by the reclaim clock, which then gives the page a
 *                second chance (re-queues it) instead of evicting it
 *   bit   5      active (resident pages): the page refaulted soon after it was evicted, so it is in
 *                the working set; reclaim keeps it on its active list ("Working set" below)
 *   bit   6      stamped (EVICTED pages): bits 48..63 hold the eviction stamp
 *   bit   7      on trial (resident pages): swapped in from far (refault distance over the
 *                threshold): reclaim evicts it early, so a page that is in fact hot refaults
 *                again soon and comes back active ("Working set" below)
 *   bits  8..15  reserved, zero
 *   bits 16..47  virtual slot id (valid in CLEAN, DROPPING, EVICTED; slot 0 = zero-filled page)
 *   bits 48..63  eviction stamp (EVICTED with bit 6): the engine's eviction count when the page was
 *                dropped, in units of CRAM_EVICTION_STAMP_UNIT pages, modulo 2^16
 *
 * The page-state machine (the one authoritative description; SharedLayout.cs mirrors only the
 * encoding). "C#" is managed reclaim; "service" is the native fault service; "native drop" is
 * CramNative_DropPages, called by reclaim.
 *
 *   EMPTY ──MISSING fault (service)──▶ DIRTY          zero page installed, never compressed
 *   DIRTY ──reclaim claims (C#, CAS)──▶ EVICTING      then UFFDIO_WRITEPROTECT, then read+compress
 *   EVICTING ──write-protect failed (C#, CAS)──▶ DIRTY    nothing was read yet; the error is thrown
 *   EVICTING ──compressed+stored (C#, CAS)──▶ CLEAN(slot)
 *   EVICTING ──does not compress (C#, CAS)──▶ INCOMPRESSIBLE   stays resident and write-protected;
 *                                                      "does not compress": LZ4 failed, or the
 *                                                      estimator (Estimation/PageEstimator.cs) was
 *                                                      confident it would not and LZ4 was not tried
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
 *   DROPPING ──MADV_DONTNEED failed (native)──▶ CLEAN(slot)   still mapped and write-protected;
 *                                                      the error is returned to reclaim
 *   DROPPING: only native code holds this state, for the length of one madvise batch; the
 *             service waits for it to end (it never waits for managed code).
 *   EVICTED ──read MISSING fault──▶ CLEAN(slot)       page rebuilt, mapped write-protected;
 *                                                      evicting it again costs only MADV_DONTNEED
 *   EVICTED ──swap readahead (fault path, under the lock)──▶ INSTALLING(slot) ──UFFDIO_COPY──▶ CLEAN(slot)
 *                                                      as a read fault, for the evicted pages after a
 *                                                      read fault that continues a sequential stream
 *                                                      ("Readahead" below): decoded, claimed, logged and
 *                                                      counted (resident, clean copy) under the engine
 *                                                      lock; mapped (write-protected) and published by an
 *                                                      installer outside it, before the wake
 *   INSTALLING ──UFFDIO_COPY failed (installer)──▶ EVICTED   the word it had; counts undone
 *   INSTALLING: held by an installer (the thread that claimed the window, or a readahead helper)
 *             for one UFFDIO_COPY; a fault on the page waits for it to end, as for DROPPING (an
 *             installer needs no lock, so it always ends); reclaim passes over it (requeued);
 *             region deactivation and discard wait for the window's installs first
 *             (readahead_quiesce), so nothing else ever sees it
 *   EVICTED ──MISSING fault, slot REMOTE (under the lock)──▶ FETCHING(slot)   claimed, logged and counted as a
 *                                                      swap-in (resident, clean copy for a read); the
 *                                                      extent is fetched outside the lock ("Remote tier")
 *   FETCHING ──fetched, opened, UFFDIO_COPY (fetcher)──▶ CLEAN(slot), or DIRTY for a write (slot stale)
 *   FETCHING ──fetch failed until the timeout (fetcher)──▶ EVICTED   slot marked CRAM_SLOT_BAD, counts
 *                                                      undone; the waiting access faults again and gets
 *                                                      SIGBUS as for any unreadable copy below
 *   FETCHING: held by a fetcher (a cram-remote thread, or the faulting thread itself in the SIGBUS
 *             service) for one network round trip, never under the engine lock: the service thread
 *             does not wait for it (a second fault on the page is left to the fetcher's wake-up, so
 *             local faults go on being served), a faulting thread waits on the entry's futex without
 *             the lock, reclaim passes over it, and region deactivation and discard wait for the
 *             region's fetches (remote_quiesce), bounded by the fetch timeout
 *   EVICTED ──write MISSING fault──▶ DIRTY            rebuilt writable at once (one fault);
 *                                                      slot pushed on the stale list
 *   EVICTED ──fault, stored bytes unreadable──▶ EVICTED   checksum mismatch, or a file read that
 *                                                      failed twice: nothing is mapped; the slot is
 *                                                      marked CRAM_SLOT_BAD and the page poisoned
 *                                                      (UFFDIO_POISON), so this and every later
 *                                                      access gets SIGBUS, as the kernel does on a
 *                                                      swap read error (without POISON, the faulting
 *                                                      thread is sent SIGBUS by tid)
 *   INCOMPRESSIBLE ──WP fault──▶ UNPROTECTING ──▶ DIRTY   re-enters the reclaim queue once written
 *   DIRTY ──WP fault──▶ UNPROTECTING ──▶ DIRTY         a stray protection (a failed eviction) is cleared
 *   CLEAN ──copy released, pool under pressure (C#, CAS)──▶ DIRTY   still write-protected (its next
 *                                                      write clears a stray protection, as below); the
 *                                                      copy is freed and the page requeued, so reclaim
 *                                                      compresses it again ("Clean copies" below)
 *   EVICTED ──prefetch (CramNative_PrefetchPages)──▶ INSTALLING(slot) ──▶ CLEAN(slot)   Advise(WillNeed),
 *                                                      from a background thread: claimed as a readahead
 *                                                      window (32 pages a hold of the engine lock, their
 *                                                      file extents in one read) and mapped by the same
 *                                                      installers; exactly a read swap-in without a fault,
 *                                                      file-backed copies included; never past the soft limit.
 *                                                      A page whose copy is on the remote store goes
 *                                                      EVICTED -> FETCHING instead, in a request with the pages
 *                                                      whose extents follow it (as a fault's readahead),
 *                                                      counted as prefetched when it lands
 *   any populated ──discard (CramNative_DiscardPages)──▶ EMPTY   Advise(DontNeed): under the engine lock,
 *                                                      with reclaim paused (so nothing is EVICTING or
 *                                                      DROPPING, and the service holds no UNPROTECTING):
 *                                                      the mapped pages are zapped (MADV_DONTNEED), every
 *                                                      slot still named is pushed on the stale list and the
 *                                                      counters (resident, populated, clean copies, the
 *                                                      node's ledger) are fixed, as region destroy does;
 *                                                      the next access is a first touch and reads zeros.
 *                                                      A fault queued for a discarded page finds it EMPTY
 *                                                      (a MISSING fault: zero page) or resolves as spurious
 *                                                      (a WP fault: the retried access faults MISSING)
 *   DIRTY/CLEAN with referenced ──reclaim clock (C#, CAS)──▶ same state, referenced cleared
 *   any ──region destroyed (native)──▶ (gone)         after the service has been fenced out and
 *                                                      with reclaim paused: every slot still named
 *                                                      is pushed on the stale list, counters fixed
 * The CRAM node (a compressed-RAM device; write control of seeds 000-002). A placed page stays
 * mapped where it is, uncompressed (the device compresses); the node's ledger (cram_stats.cram_*)
 * is kept under cram_engine.lock and holds, with write control on:
 *     placed_bytes + writable_pages * CRAM_PAGE_SIZE <= capacity      (nothing can overflow)
 *   EVICTING ──placed (native CramNative_PlacePages, CAS)──▶ PLACED(slot)   the device admits it;
 *                                                      leaves the host's resident account
 *   PLACED ──WP fault, budget and capacity allow (service)──▶ UNPROTECTING ──▶ PLACED_WRITABLE
 *                                                      writable_pages + 1; page re-logged
 *   PLACED ──WP fault, no budget (service)──▶ UNPROTECTING ──▶ DIRTY   promoted to host memory
 *                                                      (its copy out of the device charged);
 *                                                      slot pushed stale: the frame is freed and
 *                                                      TRIMmed by the reaper
 *   PLACED_WRITABLE ──re-placed (native CramNative_ReplacePages)──▶ PLACED   write-protected, size
 *                                                      measured again, writable_pages - 1
 *   PLACED ──moved out (native CramNative_MoveOutPages)──▶ DROPPING ──MADV_DONTNEED──▶ EVICTED(slot)
 *                                                      the node is over pressure or its balloon
 *                                                      inflates: the copy managed code stored in
 *                                                      the pool becomes the slot's (one slot rewrite,
 *                                                      under the engine lock); the frame is freed
 *   DROPPING ──move out's MADV_DONTNEED failed (native)──▶ PLACED(slot)   still mapped on the node;
 *                                                      the error is returned to the node
 *   PLACED, PLACED_WRITABLE ──region destroyed──▶ (gone)   slot pushed stale, ledger fixed
 * Reads of placed pages never fault. Without write control (a baseline for the bear experiment)
 * every write makes its page writable and the ledger does not bound the device.
 * The transitions above as data (CRAM_PTE_TRANSITIONS below): a CRAM_DEBUG build checks every
 * page-table write the native side makes against it, and native/tests/state-tests.c checks it.
 * Clean copies. A CLEAN page is resident and keeps its stored copy, so evicting it again costs only
 * MADV_DONTNEED (the kernel's swap cache does the same). cram_stats.clean_copy_pages/_bytes count
 * them: + on every move into CLEAN (reclaim's publish, a read swap-in; readahead and prefetch count a page at its claim, into INSTALLING), - on every
 * move out (a write-protect fault, a drop that completes, a released copy, region destroy); a
 * failed drop (DROPPING -> CLEAN) changes nothing. Each count sets (+) or clears (-) the slot's
 * CRAM_SLOT_CLEAN_COPY with one atomic OR/AND of its flags word and counts the length that word
 * held, so a rewrite of the slot (which refuses a slot with the bit set) can never make the two
 * counts of one copy differ. The + comes before the page is CLEAN (undone if the transition fails)
 * and a drop's - while the page is still DROPPING: the bit is set exactly while a page keeps the
 * slot (CRAM_DEBUG checks each count against it). When the pool is full, reclaim releases clean
 * copies (CLEAN -> DIRTY) before it gives up or writes back, coldest first (among the oldest 4,096
 * entries of its queues: VictimClock.ReleaseScanLimit).
 * Readahead (swapin_readahead in readahead.c). A read MISSING fault at page p continues a
 * stream when p lies in one of the region's last four read swap-in streams' last window (a page
 * readahead left to its own fault) or within READAHEAD_MAX pages after where it ended; the first
 * fault of a stream brings in only p. A continuing fault also
 * brings in the EVICTED pages of the next window after p (8 pages, doubling to 128), READAHEAD_CHUNK
 * at a time. Under the engine lock the fault decompresses each chunk into the window's buffer and
 * claims its pages (EVICTED->INSTALLING, logged, counted); outside it, installers map each chunk
 * with one UFFDIO_COPY (write-protected), CAS its pages INSTALLING->CLEAN and wake whoever waits
 * in it. The installers are the thread that resolved the fault, once it lets the lock go, and the
 * engine's readahead helpers (cram_engine_config.readahead_helpers, threads cram-readahead, started
 * by the engine's first drop), which start on the first chunk while the fault still decodes the next: on a machine with a spare CPU the
 * window's copies - a sequential read-back's largest cost - run two at a time. It stops at the soft limit (resident + window <= limit) and skips pages that
 * are not EVICTED. Pages in the backing file come in when the window's file extents span at most
 * FILE_WINDOW_BYTES: they are read in one pread first (file_window_read); extents far from the
 * others, and bad slots, are left to their own faults. Nothing else changes: a readahead page is exactly a
 * read swap-in that had no fault.
 * Working set (refault distance, as the kernel's mm/workingset.c). Accesses to resident pages
 * are invisible to a user-space tier, so a hot page would age out with everything else and be
 * evicted in waves. What it can see is a refault: a drop stamps the page with the engine's
 * eviction count (evicted_pages_total); a swap-in fault computes the refault distance, the
 * evictions since, and when it is below cram_shared.activate_distance_pages the page would have
 * stayed resident had the inactive pages had that much more room: it comes back ACTIVE
 * (workingset_activations + 1). Reclaim (Reclaim/VictimClock.cs) passes over active pages, keeping
 * them on an active list of at most a set share of resident memory; past it, the oldest active
 * pages are demoted (ACTIVE cleared) to the inactive FIFO, where they go in turn and, if still hot,
 * refault and come back active. A swap-in from far comes back on TRIAL instead: the clock keeps
 * such pages in a short FIFO of their own that it evicts first once it holds more than a set
 * share of resident memory (2Q's probation queue), so a hot page that was evicted long ago (say,
 * by the initial fill) needs one more, early, refault to join the working set rather than waiting
 * for the whole FIFO to turn. A write keeps ACTIVE and ends a trial; readahead, prefetch and every
 * other move set neither. The cost per page is three bits and the stamp, all in the page-table word.
 * Memory limit (MemoryLimitBytes; Reclaim/MemoryBudget.cs). Memory counted is resident pages + the
 * pool's pages + metadata (cram_stats.page_table_pages included). Managed code turns the limit into
 * the resident limits above (soft_limit_pages, hard_limit_pages): the lower of the user's and what
 * the pool and metadata leave, recomputed before every reclaim pass of at most 4 MiB, so the limits
 * fall as the pool grows. With a backing file a page that does not compress is stored as it is
 * (EVICTING -> CLEAN with a raw pool slot, then written back like any entry), so nothing stays
 * resident for lack of compression. Where the limit still cannot be held (memory over it and
 * reclaim stalled, or the pool and metadata alone fill it), managed code sets
 * cram_shared.memory_wait_us; while it is set, every MISSING fault waits that long (or until it is
 * cleared) before it is resolved (memory_limit_waits + 1), a first touch maps only its own page,
 * and neither readahead nor prefetch brings pages in ahead of need. No page state changes: it is
 * back-pressure on the service, bounded per fault. Managed code clears it once memory is under the
 * limit again. A first touch maps no more pages than fit below the hard limit, and only its own
 * page at or over it, so a fault that gave up waiting for reclaim (throttle_max_us) adds one page,
 * not a block; a read that continues a stream maps that page writable (its write would otherwise
 * take a copy-on-write fault and a TLB flush on every CPU).
 * First touch has its own fault-around (FaultAroundPages): zero pages for the rest of an aligned
 * block when a first touch continues a sequential stream of first touches.
 * Moving an entry's data between backends changes its slot, never its page-table entry (see
 * "Virtual swap" below). Only the service leaves EMPTY (discard returns pages to it, inside blocks
 * already marked), so the page table is walked only over the
 * 512-entry blocks first touch has marked (region destroy, the reaper's mark, advice, and reclaim's
 * rebuild of its FIFO after a fault-log overflow): O(touched), not
 * O(virtual size).
 *
 * Fault services (cram_engine_config.fault_service). CRAM_FAULT_SERVICE_THREAD: the engine's
 * service thread reads userfaultfd messages and resolves them while the faulting thread sleeps in
 * the kernel; its wake-up is a cross-CPU hand-off (on some hosts a hypervisor round trip).
 * CRAM_FAULT_SERVICE_FAULTING: the userfaultfd is opened with UFFD_FEATURE_SIGBUS, so a fault in a
 * region raises SIGBUS on the faulting thread, and one process-wide handler (sigbus.c), installed in
 * front of the .NET runtime's, resolves it there — the same resolution functions, under the same
 * engine lock, with the same counters — and returns, so the access is retried. Which is a write
 * the handler learns from the x86 page-fault error code; whether a fault is MISSING or
 * write-protect, from the page's state. A SIGBUS that is not a userfault in a region of a
 * faulting-thread engine (a poisoned page, another library's SIGBUS, a region being torn down) is
 * passed to the handler that was installed before (the runtime's, so a poisoned page ends the
 * process as it does with the service thread). The rules of the handler (async-signal safety):
 *   - it never runs managed code, never allocates, and calls only system calls, the engine's
 *     resolution functions and their lock (a pthread mutex; SIGBUS is synchronous: the handler runs
 *     where the faulting thread's access was, never inside the mutex's own code);
 *   - it never takes an engine lock its thread already holds: native code never touches region
 *     memory with the lock held; a thread that faults holding it is reported and the fault passed
 *     on, not deadlocked (t_engine_locked; CRAM_DEBUG aborts);
 *   - it finds the engine through a registry of faulting-thread engines read without a lock; an
 *     engine leaves the registry, then waits until no handler is between its lookup and its engine
 *     lock (sigbus_inflight) before its regions are unmapped or it is freed;
 *   - errno is saved and restored.
 * The kernel cannot run a SIGBUS handler for its own accesses: a system call that reads or writes a
 * page that is not present fails with EFAULT, as in CRAM_UFFD_MODE_USER_MODE_ONLY.
 *
 * Fault latency (cram_stats.fault_latency_us_log2): what a swap-in costs the thread that waits for
 * it. With the faulting-thread service that thread times each of its own, SIGBUS handler entry to
 * return. Under the service thread it waits inside the kernel, where no user-space code can time it,
 * so the engine samples: its probe thread (probe.c, started with the first drop; one per engine,
 * unless config.latency_probe_us is 0) takes faults on pages of its own, registered MISSING on
 * the engine's userfaultfd, two back to back (the first puts it on a CPU and in the fault path, as
 * an application's faulting thread is), and times the second from before the access to after it - the kernel's
 * fault entry, the message to the service, the service's wake-up (or its spin), its queue and lock,
 * a checksum, an LZ4 decompression of a real page (a copy of one a swap-in decoded), UFFDIO_COPY and
 * the wake-up back. At most one probe per latency_probe_us, and only after swap-ins happened since
 * the last one (an engine that swaps nothing in has its probe asleep). A probe's fault is not a
 * fault, a swap-in or activity in any other counter. What a probe does not pay: a backing-file read
 * or a remote fetch (those show in the service time), and the page-table bookkeeping (well under a
 * microsecond).
 *
 * Locks, in the order they are taken (a thread holding one takes only later ones), each named as
 * it is in the code:
 *   0. TierEventPump._lock (C#, Engine/)   held while TierEvent handlers run; taken with no other lock
 *      held. Callers of CramEngine.RaisePendingEvents wait for it; the reclaim worker only tries it
 *      (TryEnter, on a thread-pool thread: the worker itself never runs a handler) and leaves the events
 *      to the holder, so a handler may do anything, Dispose included, and may block
 *   1. EngineRegions.Lock (C#, Engine/)    region create and tear-down, the resident limit, and the
 *      two halves of engine Dispose; never held while Dispose stops the reclaim worker (a handler on
 *      the worker may be waiting for it), nor while anything waits for a handler
 *   1a. MemoryBudget._lock (C#)            the resident limit the memory limit leaves; taken alone (the
 *      reclaim worker) or under 1, and holds only leaves (5) and native calls that take no lock
 *   2. CramMetrics._lock (C#, an instance per meter)  held while the meter reads every engine's stats
 *      (which only tries 3: Reclaimer.TryDrain)
 *   2a. Writeback._io (C#, Storage/)      the backing file's I/O: one writeback run, segment compaction
 *      or punch of dead segments at a time, held across its system calls; it takes 3 only for a
 *      batch's short steps (choose and copy; move and free), never while it writes or reads, so a
 *      blocked file system stalls writeback alone. Never taken under 3: reclaim lets 3 go before it
 *      asks writeback for room (Writeback.MakeRoom), and the reclaim worker's upkeep asks after 3
 *   3. Reclaimer._lock (C#; EngineParts makes it, reclaim and writeback share it)  the maintenance
 *      lock: one reclaim pass, writeback batch step, pool compaction, reaper sweep (the only path
 *      that frees slots and what they name), prefetch step, discard or region tear-down (Pause) at a
 *      time. Prefetcher.Stop waits, under 1, for a prefetch step that takes 3: a step never takes 1.
 *      ICramDevice.Trim (a user's code) runs under 3: on its thread every call back into the engine
 *      or a region throws InvalidOperationException (Internals/UserCallback.cs) instead of re-entering
 *   4. SizeClass.Lock (C#, one per class) a class's zspages; compaction takes them one at a time
 *   5. leaves (C#): Writeback._progress (the wait for room), TierEventPump._collectLock, CompressedPool._zspageLock, PoolArenas._arenaLock and _retainLock,
 *      ClusteredDirectory._lock (the slot table's and the handle table's id allocation),
 *      NativeLibraryResolver.s_lock, CramNode._planeLock, Prefetcher._lock (its queue) and the
 *      swap-in metric's per-engine array (CramEngine.SwapInsRecorded); none is held while another
 *      lock is taken
 *   6. cram_engine.lock (C, pthread; engine_lock/engine_unlock in internal.h) held by the service
 *      while it resolves a batch of faults, by region create/deactivate/destroy, by
 *      CramNative_PoolMove (so compaction never moves an object the service is reading),
 *      CramNative_SlotsMove, CramNative_SlotsRecode, CramNative_FindColdEntries (one bounded walk),
 *      CramNative_ZstdDictionarySet, placement, moving out, re-placement,
 *      discard and each prefetch chunk; taken only inside a native call. A CRAM_DEBUG build checks
 *      that no thread takes it twice, that only its holder releases it, and that the fault
 *      resolution functions run under it (ASSERT_ENGINE_LOCKED).
 *   7. remote_node.lock (C, remote.c)      a remote node connection's FIFO of requests: taken under 6 by the
 *      service when it sends a fetch, alone by the node's reader thread, which never takes 6; held for a
 *      send at most, never for a receive
 *   8. cram_engine.zstd_remote_lock (C, codec.c, a spin lock)  the remote fetchers' zstd context: held
 *      for one page's decode by a fetcher (a node reader, or a faulting thread in its SIGBUS handler,
 *      which touches no region memory meanwhile), and under 6 by CramNative_ZstdDictionarySet
 * The service takes only lock 6 and never calls managed code: a managed fault handler would
 * deadlock with the GC, which waits for a thread blocked in a fault while the handler is suspended
 * for that GC. It does wait for managed reclaim, bounded and with lock 6 released: at the hard limit
 * (throttle in fault.c, at most throttle_max_us a fault, not at all while reclaim reports it is
 * stalled) and while the memory limit cannot be held (memory_wait_us a fault). C# may hold 1–4 when
 * a native call takes 6, never the reverse. DROPPING, UNPROTECTING and INSTALLING are page-granular
 * "locks" held by native code only, for the length of one system call; INSTALLING is held outside
 * lock 6 (a holder never waits for anything), and lock 6's holders wait for it.
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
    CRAM_PTE_PLACED = 8,          /* on the CRAM node: mapped read-only in place, slot names its frame */
    CRAM_PTE_PLACED_WRITABLE = 9, /* on the CRAM node, made writable in place within the budget */
    CRAM_PTE_INSTALLING = 10,     /* readahead: decoded and claimed under the engine lock, being mapped outside it */
    CRAM_PTE_FETCHING = 11,       /* remote tier: claimed under the engine lock, its extent being fetched outside it */
};

/* Every state change the machine above allows, as X(from, to); a write that keeps the state and
 * changes only flag bits (referenced, active, trial, the stamp) is not a transition. A move into
 * EMPTY is discard's, from any populated state but the three held states, which its caller's pause
 * rules out. DROPPING -> PLACED is a move out whose MADV_DONTNEED failed (the page is still mapped
 * on the node). */
#define CRAM_PTE_TRANSITIONS(X) \
    X(CRAM_PTE_EMPTY, CRAM_PTE_DIRTY)                    /* first touch (service) */ \
    X(CRAM_PTE_DIRTY, CRAM_PTE_EVICTING)                 /* reclaim claims (C#) */ \
    X(CRAM_PTE_DIRTY, CRAM_PTE_UNPROTECTING)             /* WP fault on a stray protection (service) */ \
    X(CRAM_PTE_DIRTY, CRAM_PTE_EMPTY)                    /* discard */ \
    X(CRAM_PTE_EVICTING, CRAM_PTE_DIRTY)                 /* write-protect failed, or pool full (C#) */ \
    X(CRAM_PTE_EVICTING, CRAM_PTE_CLEAN)                 /* compressed and stored (C#) */ \
    X(CRAM_PTE_EVICTING, CRAM_PTE_INCOMPRESSIBLE)        /* does not compress (C#) */ \
    X(CRAM_PTE_EVICTING, CRAM_PTE_UNPROTECTING)          /* WP fault cancels the eviction (service) */ \
    X(CRAM_PTE_EVICTING, CRAM_PTE_PLACED)                /* placed on the CRAM node (native) */ \
    X(CRAM_PTE_CLEAN, CRAM_PTE_UNPROTECTING)             /* WP fault: the copy is stale (service) */ \
    X(CRAM_PTE_CLEAN, CRAM_PTE_DROPPING)                 /* drop (native) */ \
    X(CRAM_PTE_CLEAN, CRAM_PTE_DIRTY)                    /* copy released under pool pressure (C#) */ \
    X(CRAM_PTE_CLEAN, CRAM_PTE_EMPTY)                    /* discard */ \
    X(CRAM_PTE_DROPPING, CRAM_PTE_EVICTED)               /* MADV_DONTNEED done (native) */ \
    X(CRAM_PTE_DROPPING, CRAM_PTE_CLEAN)                 /* MADV_DONTNEED failed (native) */ \
    X(CRAM_PTE_DROPPING, CRAM_PTE_PLACED)                /* move out's MADV_DONTNEED failed (native) */ \
    X(CRAM_PTE_EVICTED, CRAM_PTE_CLEAN)                  /* read swap-in, readahead, prefetch */ \
    X(CRAM_PTE_EVICTED, CRAM_PTE_DIRTY)                  /* write swap-in (service) */ \
    X(CRAM_PTE_EVICTED, CRAM_PTE_EMPTY)                  /* discard */ \
    X(CRAM_PTE_EVICTED, CRAM_PTE_INSTALLING)             /* readahead claims, decoded (under the engine lock) */ \
    X(CRAM_PTE_INSTALLING, CRAM_PTE_CLEAN)               /* readahead's UFFDIO_COPY done (an installer) */ \
    X(CRAM_PTE_INSTALLING, CRAM_PTE_EVICTED)             /* readahead's UFFDIO_COPY failed (an installer) */ \
    X(CRAM_PTE_EVICTED, CRAM_PTE_FETCHING)               /* a fault on a remote entry claims it (under the engine lock) */ \
    X(CRAM_PTE_FETCHING, CRAM_PTE_CLEAN)                 /* fetched, opened, mapped for a read (the fetcher) */ \
    X(CRAM_PTE_FETCHING, CRAM_PTE_DIRTY)                 /* fetched, opened, mapped writable for a write (the fetcher) */ \
    X(CRAM_PTE_FETCHING, CRAM_PTE_EVICTED)               /* the fetch failed until its timeout: slot marked bad (the fetcher) */ \
    X(CRAM_PTE_INCOMPRESSIBLE, CRAM_PTE_UNPROTECTING)    /* WP fault (service) */ \
    X(CRAM_PTE_INCOMPRESSIBLE, CRAM_PTE_EMPTY)           /* discard */ \
    X(CRAM_PTE_UNPROTECTING, CRAM_PTE_DIRTY)             /* protection cleared (service) */ \
    X(CRAM_PTE_UNPROTECTING, CRAM_PTE_PLACED_WRITABLE)   /* made writable within the budget (service) */ \
    X(CRAM_PTE_PLACED, CRAM_PTE_UNPROTECTING)            /* WP fault on the node (service) */ \
    X(CRAM_PTE_PLACED, CRAM_PTE_DROPPING)                /* moved out (native) */ \
    X(CRAM_PTE_PLACED, CRAM_PTE_EMPTY)                   /* discard */ \
    X(CRAM_PTE_PLACED_WRITABLE, CRAM_PTE_PLACED)         /* re-placed (native) */ \
    X(CRAM_PTE_PLACED_WRITABLE, CRAM_PTE_EMPTY)          /* discard */

#define CRAM_PTE_STATE_MASK 0xFull
#define CRAM_PTE_REFERENCED 0x10ull
#define CRAM_PTE_ACTIVE 0x20ull
#define CRAM_PTE_STAMPED 0x40ull
#define CRAM_PTE_TRIAL 0x80ull
#define CRAM_PTE_SLOT_SHIFT 16
#define CRAM_PTE_SLOT_MASK 0xFFFFFFFFull
#define CRAM_PTE_STAMP_SHIFT 48
#define CRAM_EVICTION_STAMP_UNIT 16 /* evictions per stamp step: 2^16 steps cover 2^20 evictions (4 GiB) */
#define CRAM_PTE_STATE(p) ((uint32_t)((p) & CRAM_PTE_STATE_MASK))
#define CRAM_PTE_SLOT(p) (((p) >> CRAM_PTE_SLOT_SHIFT) & CRAM_PTE_SLOT_MASK)
#define CRAM_PTE_STAMP(p) ((uint32_t)((p) >> CRAM_PTE_STAMP_SHIFT))
#define CRAM_PTE_MAKE(state, slot) (((uint64_t)(slot) << CRAM_PTE_SLOT_SHIFT) | (uint64_t)(state))

/* Slot id 0 never names a slot: it means "the page is all zero bytes". */
#define CRAM_SLOT_ZERO 0ull

/* ---------------------------------------------------------------------------------------------
 * Clustered directories. The slot table and the pool's handle table are both two-level radix
 * tables of fixed-size records: directory[id >> CRAM_DIRECTORY_CLUSTER_SHIFT] is the address of
 * a cluster of CRAM_DIRECTORY_CLUSTER_SIZE records (0 until first used). Managed code allocates
 * the directory and the clusters on demand (ClusteredDirectory.cs) and publishes a cluster before
 * any id in it is handed out; native code only looks records up (directory_get in internal.h).
 * ------------------------------------------------------------------------------------------- */
#define CRAM_DIRECTORY_CLUSTER_SHIFT 14
#define CRAM_DIRECTORY_CLUSTER_SIZE (1u << CRAM_DIRECTORY_CLUSTER_SHIFT)
#define CRAM_DIRECTORY_SIZE (1u << 18)

/* ---------------------------------------------------------------------------------------------
 * Virtual swap: backends behind the slot.
 *
 * A page-table entry names a slot, never a storage location; the slot's backend tag says where the
 * data is. The backend contract, written down once (a new backend is one tag plus these halves;
 * neither the page table nor the page-state machine changes):
 *   - native read half (slot_read in fault.c, run by the fault service under cram_engine.lock):
 *     given the slot, produce the page's 4096 bytes, after checking the stored bytes against
 *     slot.checksum; on a mismatch or a read error it reports failure and the page is never mapped
 *     (the slot is marked CRAM_SLOT_BAD, the faulting thread gets SIGBUS, counters say why);
 *   - managed write half (C#, one class per backend under src/CramCore/Storage): store bytes and
 *     return a location; free a location once no slot names it; and, to move data in, copy the
 *     stored bytes (still compressed: a move never decompresses) to a new location.
 *
 *   backend        location                       stored bytes
 *   SAME_FILLED    the 8-byte value               none (length 0, checksum 0)
 *   POOL           compressed-pool handle id      LZ4 block, or the page itself with CRAM_SLOT_RAW
 *   FILE           byte offset in the backing     as POOL; read with pread of the covering pages
 *                  file
 *   CRAM           device frame number            none: the page stays mapped in place (PLACED)
 *   REMOTE         segment | node | offset        as POOL, sealed (AES-GCM); read by the fetchers, outside
 *                  (CRAM_REMOTE_LOCATION)         the lock ("Remote tier"), not by slot_read
 *
 * Moving an entry between backends (writeback pool -> file, segment compaction file -> file, pool
 * compaction keeps the slot and moves behind the handle) follows one protocol, so a fault in flight
 * never sees it half done:
 *   1. managed code copies the stored bytes to the new location (the old one stays valid);
 *   2. CramNative_SlotsMove rewrites the slot, under cram_engine.lock, only if it still names the old
 *      location and is neither stale nor bad (the checksum and length travel unchanged);
 *   3. managed code frees the old location at once, or the new one if the move was refused.
 * The service reads a slot and its stored bytes inside one hold of cram_engine.lock, so the lock is
 * the grace period: a fault that read the old location finished before step 2 took the lock, and
 * every later fault reads the new one. No epochs or reference counts are needed on the read path.
 * Freeing is done by one managed path (the reaper, under the reclaimer's pass lock), so a location is
 * never freed while managed code still copies from it.
 *
 * Codecs. A stored copy is LZ4 (reclaim's, at eviction), the page itself (CRAM_SLOT_RAW), or a zstd
 * frame (CRAM_SLOT_ZSTD: the recompressor's, C# Storage/Recompressor.cs) with the dictionary its flags
 * name (CRAM_SLOT_DICT_MASK: 0 none, 1..3 one of CramNative_ZstdDictionarySet's). The frame is
 * magicless, without a checksum, a content size or a dictionary id (the slot says all three: its
 * checksum, a page, its flags). Every reader decodes all of them natively (slot_read under the
 * engine lock, with the engine's static zstd context; the remote fetchers, outside it, with a second
 * context under zstd_remote_lock; neither allocates, so the SIGBUS handler may decode). A copy moves
 * between backends with its codec (segment compaction, the spill to the remote tier). Recompression
 * is a rewrite, in the pool for a cold copy, or on the way out of it for one writeback takes:
 *   1. CramNative_FindColdEntries lists EVICTED pages whose slots are in the pool, LZ4, not kept,
 *      evicted at least a distance ago (the working set's: cram_shared.activate_distance_pages);
 *   2. managed code copies each copy out under the maintenance lock, decodes and re-encodes it
 *      outside every lock, stores the smaller ones in the pool (a new handle), and
 *   3. CramNative_SlotsRecode rewrites location, checksum, length and codec bits under the engine
 *      lock, only if the slot still names the old handle, is neither stale nor bad, and its page is
 *      still EVICTED and names it (a page that came back keeps its LZ4 copy; its next eviction
 *      stores LZ4 again); then managed code frees the old handle, or the new one if refused.
 * As for a move, the engine lock is the grace period: a fault read the old copy before step 3, or the
 * new one after. Writeback re-encodes the LZ4 copies of a batch (C# Storage/Writeback.cs) the same
 * way, copied out under the maintenance lock, encoded outside it, appended to the segment, written,
 * then rewritten by CramNative_SlotsRecode from the pool to the file or the store with region
 * CRAM_RECODE_ANY_PAGE: writeback knows slots, not pages, so instead of the page's state the slot's
 * CRAM_SLOT_CLEAN_COPY bit must be clear (a resident page's copy keeps its codec and length, which
 * clean_copy_bytes counted), checked in the same compare-and-swap that rewrites length and codec.
 * A dictionary is set before any slot names it and removed only once none does (C# counts the
 * slots of each, in whatever backend; a slot freed, or recoded away from it, stops counting).
 * ------------------------------------------------------------------------------------------- */
enum cram_backend {
    CRAM_BACKEND_FREE = 0,
    CRAM_BACKEND_SAME_FILLED = 1,
    CRAM_BACKEND_POOL = 2,
    CRAM_BACKEND_FILE = 3,
    CRAM_BACKEND_CRAM = 4,  /* location = device frame; length = the compressed size the device measured;
                               the bytes are the region's page itself (no checksum: device ECC) */
    CRAM_BACKEND_REMOTE = 5, /* location = CRAM_REMOTE_LOCATION(segment, node, offset): an extent of a segment
                                value in a RESP store; read by the fetchers ("Remote tier"), never under the lock */
};

/* ---------------------------------------------------------------------------------------------
 * Remote tier (remote.c). Managed code (CramCore.Remote, through the public ICramRemoteStore)
 * packs the coldest pool entries, still compressed, into segments and writes each as one value of
 * a RESP store (Redis, Valkey, Garnet), under the key "<prefix>:<segment in hex>", on node `node`
 * of the endpoints it published (CramNative_RemoteSetEndpoint); then the slots move there with
 * CramNative_SlotsMove, as for the file. Each entry is sealed on its own with AES-256-GCM under the
 * engine's key (cram_remote_config.key, never sent anywhere), nonce = segment (8 bytes LE) |
 * offset (4 bytes LE), unique because segment ids are never reused under one key; its extent in
 * the value is the ciphertext (slot.length bytes) then the 16-byte tag. Unsealed (config.sealed 0):
 * the stored bytes alone. slot.checksum stays the CRC-32C of the stored (plain) bytes.
 * The read half is native, because a fault may never wait for managed code (a GC would deadlock
 * with it): a fault on a REMOTE slot claims its page (EVICTED -> FETCHING) under the engine lock
 * and lets the lock go. With the service thread the service sends the request itself, without
 * waiting, on the node's one pipelined connection and goes on with other faults; the node's reader
 * thread (cram-remote), blocked in recv, is woken by the reply and finishes the fetch (replies come
 * in the order of a FIFO of requests); it runs at nice +10, so where the CPUs are saturated a remote
 * completion waits for a CPU rather than the local faults the service and the application run. With the faulting-thread service the faulting thread fetches
 * for itself on a lane (pooled blocking connections) after letting the lock go. A fetch is one
 * GETRANGE (AUTH on connect when a password is set); a read that continues a sequential stream
 * takes, in the same request, the evicted pages after it whose extents follow its own in the
 * segment (up to 16; pages with no extent there are passed over, a resident page's extent is read
 * and dropped). Each extent is opened (AES-GCM, libcrypto loaded at configure), checked (CRC-32C),
 * decoded (LZ4), mapped with one UFFDIO_COPY and published (FETCHING -> CLEAN/DIRTY), waking the
 * faulting thread. A failure (refused, reset, no reply for a second, nil, an error reply, a short
 * value) is retried, reconnecting, with backoff up to config.timeout_ms. A cluster redirection
 * (-MOVED) is followed natively, and when the node's master cannot be reached another node is
 * asked where its slots went, so a failover is followed without managed code (which a GC waiting
 * for this very fault would hold up). Past the timeout the slot is marked bad and the page goes back
 * to EVICTED, so the access gets SIGBUS (counted in bad_page_faults, and fetch_failures here) -
 * never zeros. A tag that does not verify (a tampered or foreign value) is refused like a checksum
 * mismatch, at once. While a fetch waits for the store, a GC waits for the fetch: a store down for
 * the whole timeout stalls the process's GCs that long (as a hung disk does for the file tier).
 * TLS (config.tls): every connection is TLS (libssl.so.3, loaded at configure), the server's
 * certificate verified against the given CAs (or the system's) and the given name (or the node's
 * address). An SSL connection may be used by one thread at a time and OpenSSL allocates, so it can
 * neither be shared by a sender and a receiver nor used in a SIGBUS handler: with TLS the node's
 * reader is its connection's only user (it sends what the fault path queued, woken by an eventfd,
 * and receives), and a faulting-thread engine's fault queues its request there too and waits for
 * the page (FETCHING) as a service-thread engine's faulting thread does: one wake-up more each way.
 * ------------------------------------------------------------------------------------------- */
#define CRAM_REMOTE_MAX_ENDPOINTS 64
#define CRAM_REMOTE_TAG_BYTES 16
#define CRAM_REMOTE_OFFSET_BITS 24
#define CRAM_REMOTE_NODE_SHIFT 24
#define CRAM_REMOTE_SEGMENT_SHIFT 32
#define CRAM_REMOTE_LOCATION(segment, node, offset) \
    (((uint64_t)(segment) << CRAM_REMOTE_SEGMENT_SHIFT) | ((uint64_t)(node) << CRAM_REMOTE_NODE_SHIFT) | (uint64_t)(offset))
#define CRAM_REMOTE_SEGMENT(location) ((uint32_t)((location) >> CRAM_REMOTE_SEGMENT_SHIFT))
#define CRAM_REMOTE_NODE(location) ((uint32_t)(((location) >> CRAM_REMOTE_NODE_SHIFT) & 0xFFu))
#define CRAM_REMOTE_OFFSET(location) ((uint32_t)((location) & ((1u << CRAM_REMOTE_OFFSET_BITS) - 1)))

typedef struct cram_remote_config {
    uint8_t key[32];      /* AES-256-GCM key (sealed 1) */
    uint8_t prefix[56];   /* key prefix, NUL-terminated */
    uint8_t password[64]; /* AUTH password, NUL-terminated ("": none) */
    uint32_t timeout_ms;  /* how long a fetch retries before the page fails (SIGBUS) */
    uint32_t lanes;       /* faulting-thread engines: fetches that may run at once, each on connections of its own (1..16) */
    uint32_t sealed;      /* 1: extents are AES-256-GCM sealed (ciphertext + tag) */
    uint32_t tls;         /* 1: every connection is TLS (libssl.so.3), the server's certificate verified */
    uint8_t tls_server_name[256]; /* the name the server's certificate must carry (and SNI); "": the node's IPv4 address */
    uint8_t tls_ca_file[256];     /* PEM file of the CAs to trust; "": the system's trust store */
    uint8_t tls_cert_file[256];   /* PEM client certificate (chain) for servers that ask for one; "": none */
    uint8_t tls_key_file[256];    /* its PEM private key ("": with tls_cert_file, the key is in that file) */
} cram_remote_config;

typedef struct cram_remote_stats {
    uint64_t fetches;        /* pages fetched and mapped (faults' own and read ahead) */
    uint64_t requests;       /* GETRANGE requests that returned their extents (a request reads a page and its readahead) */
    uint64_t fetch_bytes;    /* bytes the store returned for them */
    uint64_t fetch_retries;  /* attempts that failed and were retried (reconnecting) */
    uint64_t fetch_failures; /* fetches that failed until the timeout, or a tag/checksum that did not verify */
    uint64_t auth_failures;  /* of those, AES-GCM tags that did not verify */
    uint64_t fetch_ns;       /* Σ request sent to reply read, over fetches */
    uint64_t open_ns;        /* Σ AES-GCM open, over fetches */
    uint64_t decode_ns;      /* Σ CRC-32C + LZ4, over fetches */
    uint64_t waits;          /* faults that found their page FETCHING (left to the fetch's wake-up) */
    uint64_t queued_peak;    /* most requests in flight on one node's connection at once (service thread) */
    uint64_t connects;       /* connections opened */
    uint64_t redirects;      /* cluster redirections followed natively (-MOVED: a failover, a migration) */
    uint64_t inflight;       /* fetches claimed and not yet published */
    uint64_t tls_failures;   /* TLS sessions that failed: a handshake (a certificate not trusted, a wrong name), an alert from the server (no client certificate it accepts) */
} cram_remote_stats;

/* Slot flags (cram_slot.flags), set with atomic OR by whoever owns the transition. */
#define CRAM_SLOT_RAW 0x1u        /* C#, at store: the stored bytes are the page, not LZ4 */
#define CRAM_SLOT_STALE 0x2u      /* native: pushed on the stale list; no page names it any more */
#define CRAM_SLOT_BAD 0x4u        /* native: checksum mismatch or read error; never mapped again */
#define CRAM_SLOT_REFERENCED 0x8u /* native: faulted in for read since writeback last looked (C# clears) */
#define CRAM_SLOT_ZSTD 0x10u      /* C#, at recompression: the stored bytes are a zstd frame ("Codecs") */
#define CRAM_SLOT_DICT_SHIFT 5    /* with CRAM_SLOT_ZSTD, bits 5-6: its dictionary (0: none; 1..3: CramNative_ZstdDictionarySet's) */
#define CRAM_SLOT_DICT_MASK 0x60u
#define CRAM_SLOT_KEPT 0x20u      /* C#, without CRAM_SLOT_ZSTD (an LZ4 copy; the dictionary bits are free then): the
                                     recompressor tried this entry and kept it (no smaller size class) */
#define CRAM_SLOT_CODEC_MASK (CRAM_SLOT_ZSTD | CRAM_SLOT_DICT_MASK) /* what CramNative_SlotsRecode rewrites (KEPT included) */
#define CRAM_SLOT_CLEAN_COPY 0x80u /* both sides: a resident page keeps this slot as its copy ("Clean copies"); set and
                                      cleared with clean_copy_pages/_bytes, in the atomic step that reads the length they count */
#define CRAM_ZSTD_DICTIONARIES 4  /* dictionary indexes, 0 (none) included */

/* A virtual swap slot, 16 bytes. Allocated and written by C# before any page names it; afterwards
 * only CramNative_SlotsMove rewrites location and backend, and flags change by atomic OR/AND of the
 * 32-bit word at offset 12 (length, backend, flags). While a slot is on the stale list its checksum
 * field is the list's link (a slot id; ids are below 2^32): a stale slot's bytes are never read. */
typedef struct cram_slot {
    uint64_t location; /* by backend (see the table above) */
    uint32_t checksum; /* CRC32C of the stored bytes; the stale-list link once CRAM_SLOT_STALE */
    uint16_t length;   /* stored bytes, 1..4096 (0 for SAME_FILLED) */
    uint8_t backend;   /* enum cram_backend */
    uint8_t flags;     /* CRAM_SLOT_* */
} cram_slot;

/* One move of CramNative_SlotsMove: slot `slot` goes from (from_backend, from_location) to
 * (to_backend, to_location) if it still names the former and is not stale or bad. */
typedef struct cram_slot_move {
    uint64_t slot;
    uint64_t from_location;
    uint64_t to_location;
    uint8_t from_backend;
    uint8_t to_backend;
    uint16_t reserved;
    uint32_t moved;       /* out: 1 if the slot was rewritten */
} cram_slot_move;

/* One rewrite of CramNative_SlotsRecode ("Codecs"): slot `slot`, at (from_backend, from_location) and
 * named by the EVICTED page `page` of region `region` (CRAM_RECODE_ANY_PAGE: whichever page names it,
 * as long as no resident page keeps it as its clean copy), takes the new copy at (to_backend,
 * to_location), its checksum and length, and the codec bits `flags` (CRAM_SLOT_CODEC_MASK). */
#define CRAM_RECODE_ANY_PAGE 0xFFFFFFFFu
typedef struct cram_slot_recode {
    uint64_t slot;
    uint64_t from_location;
    uint64_t to_location;
    uint64_t page;
    uint32_t region;
    uint32_t checksum;
    uint16_t length;
    uint8_t flags;
    uint8_t recoded;  /* out: 1 if the slot was rewritten */
    uint8_t from_backend;
    uint8_t to_backend;
    uint16_t reserved;
} cram_slot_recode;

/* One entry CramNative_FindColdEntries found: an EVICTED page whose slot is in the pool. */
typedef struct cram_cold_entry {
    uint64_t page;
    uint64_t slot;
    uint64_t location; /* the slot's pool handle when found */
    uint32_t region;
    uint16_t length;   /* its stored bytes then */
    uint8_t flags;     /* its flags then */
    uint8_t reserved;
} cram_cold_entry;

/* One placement of CramNative_PlacePages. */
typedef struct cram_place {
    uint64_t page;   /* in the region, EVICTING */
    uint64_t slot;   /* a CRAM slot naming its frame */
    uint32_t size;   /* the compressed size the device measured */
    uint32_t placed; /* out: 1 if the page is now PLACED */
} cram_place;

/* One region's pages by state, from CramNative_RegionCensus (a walk of the touched blocks). */
typedef struct cram_region_census {
    uint64_t populated_pages;  /* not EMPTY */
    uint64_t resident_pages;   /* mapped: not EMPTY, EVICTED, PLACED or PLACED_WRITABLE */
    uint64_t evicted_pages;    /* EVICTED */
    uint64_t clean_copy_pages; /* CLEAN or DROPPING: resident, copy kept */
    uint64_t placed_pages;     /* PLACED or PLACED_WRITABLE (on the CRAM node) */
    uint64_t same_filled_pages;/* EVICTED or CLEAN whose copy is a value (slot 0 or SAME_FILLED) */
    uint64_t stored_bytes;     /* Σ stored lengths of the EVICTED and CLEAN pages' copies */
    uint64_t faults_first_touch;   /* the region's faults since it was created: first touches (zero pages), */
    uint64_t faults_swapin;        /* swap-ins of evicted pages (readahead and prefetch not counted), */
    uint64_t faults_write_protect; /* and write-protect faults that made a page writable or promoted it */
} cram_region_census;

/* One move of CramNative_MoveOutPages: a PLACED page leaves the node for a pool copy. */
typedef struct cram_move_out {
    uint64_t page;     /* PLACED, naming `slot` */
    uint64_t slot;
    uint64_t handle;   /* the pool copy's handle */
    uint32_t length;   /* its length */
    uint32_t checksum; /* its CRC-32C */
    uint32_t moved;    /* out: 1 if the page is now EVICTED with the pool copy */
    uint32_t raw;      /* 1: the copy is the page itself (it no longer compresses), not LZ4 */
} cram_move_out;

/* A compressed-pool handle: a slot of backend LZ4 or RAW holds a handle id; the handle says where
 * the object's bytes are now. Compaction moves objects and rewrites only the handle, under the
 * engine lock (CramNative_PoolMove), so the service never reads an object mid-move. */
typedef struct cram_pool_handle {
    uint64_t address; /* the object's bytes */
    uint32_t length;  /* object length in bytes */
    uint32_t zspage;  /* the class page holding it (managed bookkeeping) */
} cram_pool_handle;

/* One object move of a compaction (CramNative_PoolMove). */
typedef struct cram_pool_move {
    uint64_t handle;      /* which object */
    uint64_t destination; /* where its bytes go */
    uint32_t zspage;      /* its new class page */
    uint32_t reserved;
} cram_pool_move;

/* ---------------------------------------------------------------------------------------------
 * Counters. Each has exactly one writer: the native side (the fault service, native drop and
 * region destroy). C# reads them without locks. Counters managed code keeps (pages compressed,
 * zero copies published, ...) live in managed memory.
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
    uint64_t zero_copies_released;  /* slot-0 copies let go (written over, or region destroyed);
                                       reclaim counts the ones it publishes */
    uint64_t throttle_waits;        /* faults delayed because resident exceeded the hard limit */
    uint64_t fault_log_overflows;   /* fault-in log entries dropped because the log was full */
    uint64_t service_errors;        /* ioctl failures other than EEXIST/ENOENT */
    uint64_t service_busy_ns;       /* time the service spent resolving faults */
    uint64_t faults_swapin_file;    /* of the LZ4 and raw swap-ins, those read from the backing file */
    uint64_t checksum_failures;     /* stored bytes that did not match their checksum (never mapped) */
    uint64_t read_errors;           /* backing-file reads that failed twice (never mapped) */
    uint64_t bad_page_faults;       /* faults answered with SIGBUS: on a slot found bad now or before */
    uint64_t cram_placed_pages;     /* pages on the CRAM node (PLACED or PLACED_WRITABLE) */
    uint64_t cram_placed_bytes;     /* the ledger: Σ device-measured sizes of placed pages */
    uint64_t cram_writable_pages;   /* PLACED_WRITABLE pages now (never above the budget with write control) */
    uint64_t cram_max_writable;     /* high-water mark of cram_writable_pages */
    uint64_t cram_made_writable;    /* WP faults that made a placed page writable in place */
    uint64_t cram_promotions;       /* WP faults that promoted a placed page to host memory */
    uint64_t cram_promotion_copy_ns;/* time spent copying promoted pages out of the device */
    uint64_t cram_placement_refusals; /* pages the node's ledger refused */
    uint64_t readahead_pages;       /* evicted pages swapped in ahead of a sequential reader (not faults) */
    uint64_t clean_copy_pages;      /* CLEAN (and DROPPING) pages: resident, and their stored copy kept */
    uint64_t clean_copy_bytes;      /* Σ stored lengths of those copies (0 for same-filled); see "Clean copies" */
    uint64_t prefetched_pages;      /* evicted pages swapped in by CramNative_PrefetchPages (Advise WillNeed; not faults) */
    uint64_t discarded_pages;       /* populated pages made EMPTY by CramNative_DiscardPages (Advise DontNeed) */
    uint64_t workingset_activations;/* swap-ins that came back ACTIVE: refault distance below the threshold ("Working set") */
    uint64_t page_table_pages;      /* pages of page table in use: one per 512-page block first touch marked (the
                                       table's memory; C# counts it in the memory limit's metadata) */
    uint64_t memory_limit_waits;    /* faults delayed because the memory limit could not be held ("Memory limit") */
    uint64_t file_reads;            /* reads of the backing file by the fault path: one extent, or a readahead window's extents */
    uint64_t file_read_bytes;       /* bytes those reads brought in */
    uint64_t file_reads_sequential; /* of those reads, the ones that began where the previous one ended (or in its last page) */
    /* Swap-in service time: bucket b counts read and write swap-ins (MISSING faults on EVICTED
     * pages) whose resolution took [2^(b-1), 2^b) microseconds (b = 0: under 1 us; the last bucket
     * has no upper bound), timed by the service from the moment it takes the message, a wait at
     * the hard limit included, to just before the wake-up: what a swap-in costs beyond the kernel's own fault
     * entry and scheduling, which no user-space tier can see. */
    uint64_t swapin_latency_us_log2[CRAM_SWAPIN_LATENCY_BUCKETS];
    /* Swap-in latency as the faulting thread sees it, in the same buckets: with the faulting-thread
     * service, from the SIGBUS handler's entry to its return for a fault on an EVICTED page (its own
     * swap-in, or a wait for another thread's fetch of it): the engine lock's wait, the decode, the
     * mapping, a remote fetch - all but the kernel's signal delivery. With the service thread, the
     * latency probe's samples ("Fault latency" above): the access timed whole, kernel included. */
    uint64_t fault_latency_us_log2[CRAM_SWAPIN_LATENCY_BUCKETS];
    uint64_t faults_swapin_zstd;    /* MISSING on an evicted page whose copy the recompressor rewrote with zstd ("Codecs") */
} cram_stats;

/* Fault-in log: the service appends one entry per page it makes resident; reclaim drains it in
 * order, which gives second chance over fault-in order. Entry = region << REGION_SHIFT | page. */
#define CRAM_FAULT_LOG_SIZE (1u << 16)
#define CRAM_FAULT_LOG_REGION_SHIFT 48
#define CRAM_FAULT_LOG_ENTRY(region, page) (((uint64_t)(region) << CRAM_FAULT_LOG_REGION_SHIFT) | (uint64_t)(page))

/* How the userfaultfd was obtained. As a request (config.forced_mode), AUTO tries SYSCALL,
 * DEVICE and USER_MODE_ONLY in order; as a result (shared.uffd_mode), it means "none yet". */
enum cram_uffd_mode {
    CRAM_UFFD_MODE_AUTO = 0,
    CRAM_UFFD_MODE_SYSCALL = 1,        /* userfaultfd(2), kernel faults included */
    CRAM_UFFD_MODE_DEVICE = 2,         /* /dev/userfaultfd, kernel faults included */
    CRAM_UFFD_MODE_USER_MODE_ONLY = 3, /* UFFD_USER_MODE_ONLY: syscalls on evicted pages EFAULT */
};

typedef struct cram_engine_config {
    uint32_t forced_mode;        /* enum cram_uffd_mode */
    uint32_t spin_us;            /* service busy-polls this long before it blocks */
    uint64_t soft_limit_pages;   /* resident pages above which reclaim is signalled (0 = none); CramNative_SetResidentLimit changes it */
    uint64_t hard_limit_pages;   /* resident pages above which faults are throttled (0 = none); likewise */
    uint32_t throttle_max_us;    /* longest a fault waits for reclaim at the hard limit */
    uint32_t fault_around_pages; /* a first touch continuing a sequential stream fills this many EMPTY pages (1..64) */
    uint32_t fault_service;      /* enum cram_fault_service: who resolves faults */
    uint32_t readahead_helpers;  /* threads that install readahead windows beside the faulting one (0..CRAM_READAHEAD_HELPERS_MAX) */
    uint64_t latency_probe_us;   /* service thread: at most one fault-latency probe this often, 0 = none ("Fault latency") */
} cram_engine_config;
#define CRAM_READAHEAD_HELPERS_MAX 3

/* What `cram bench floor` reports (CramNative_MeasureFloor): p50s except uffdio_copy_us (a mean). */
typedef struct cram_floor {
    double kernel_first_touch_us;   /* a random first read of plain anonymous memory */
    double uffd_service_thread_us;  /* the same on a userfaultfd region, answered by a spinning service thread (one UFFDIO_COPY) */
    double uffd_faulting_thread_us; /* the same answered by the faulting thread itself (SIGBUS mode, CramCore's handler) */
    double uffdio_copy_us;          /* UFFDIO_COPY of a random page whose page table exists */
    double lz4_decompress_us;       /* LZ4 decompression of a compressible page */
} cram_floor;

/* Who resolves a fault ("Fault services" below). */
enum cram_fault_service {
    CRAM_FAULT_SERVICE_THREAD = 0,   /* the engine's service thread reads userfaultfd messages (cram-fault) */
    CRAM_FAULT_SERVICE_FAULTING = 1, /* the faulting thread itself, in a SIGBUS handler (UFFD_FEATURE_SIGBUS) */
    CRAM_FAULT_SERVICE_AUTO = 2,     /* the faulting thread where system calls get EFAULT anyway (user-mode-only), else the service thread */
};

/* The part of the engine that C# reads and writes directly. Each field has one writer. */
typedef struct cram_shared {
    cram_stats stats;          /* native */
    uint64_t slot_directory;   /* C#, before the first region: the slot table's directory */
    uint64_t handle_directory; /* C#, before the first region: the pool's handle directory */
    uint64_t stale_head;       /* Treiber list of stale slots: native pushes, C# takes all */
    uint64_t fault_log;        /* native, at creation: CRAM_FAULT_LOG_SIZE entries */
    uint64_t fault_log_head;   /* native: next entry the service writes (monotonic) */
    uint64_t fault_log_tail;   /* C#: next entry reclaim reads (monotonic) */
    uint32_t uffd_mode;        /* native, at creation: enum cram_uffd_mode */
    uint32_t reclaim_stalled;  /* C#: reclaim found nothing to evict, faults stop waiting */
    int32_t backing_fd;        /* C#, before the first region: the backing file, -1 for none (ghost) */
    uint32_t backing_direct;   /* C#, with backing_fd: 1 if opened O_DIRECT (reads aligned as statx STATX_DIOALIGN says: fault.c) */
    uint64_t cram_capacity_bytes; /* C#, before the first region: the node's physical capacity (0: no node) */
    uint64_t cram_writable_limit; /* C#: the writable budget in pages, from the risk dial or the control plane */
    uint32_t cram_write_control;  /* C#, before the first region: 1 = budget and ledger enforced */
    uint32_t reclaim_running;     /* C#: 1 while a background reclaim pass runs (the service does not spin then) */
    uint64_t activate_distance_pages; /* C#: a swap-in whose refault distance is below this comes back ACTIVE (0: never) */
    uint64_t memory_wait_us;      /* C#: nonzero while the memory limit cannot be held ("Memory limit"): each MISSING
                                     fault waits up to this long, then maps its one page (no fault-around) */
} cram_shared;

/* ---------------------------------------------------------------------------------------------
 * Compile-time checks of the contract (what C# relies on). Sizes are those of padding-free
 * structs: every byte belongs to a named field.
 * ------------------------------------------------------------------------------------------- */
_Static_assert(CRAM_PAGE_SIZE == 1u << CRAM_PAGE_SHIFT, "page size and shift disagree");
_Static_assert(CRAM_PTE_FETCHING <= CRAM_PTE_STATE_MASK, "a state does not fit the state bits");
_Static_assert((CRAM_PTE_STATE_MASK | CRAM_PTE_REFERENCED | CRAM_PTE_ACTIVE | CRAM_PTE_STAMPED | CRAM_PTE_TRIAL) < (1ull << CRAM_PTE_SLOT_SHIFT),
               "flags overlap the slot id");
_Static_assert((uint64_t)CRAM_DIRECTORY_SIZE * CRAM_DIRECTORY_CLUSTER_SIZE <= CRAM_PTE_SLOT_MASK + 1 &&
               CRAM_PTE_SLOT_SHIFT + 32 == CRAM_PTE_STAMP_SHIFT, "a slot id does not fit its bits of a page-table entry");
_Static_assert((uint64_t)CRAM_DIRECTORY_SIZE * CRAM_DIRECTORY_CLUSTER_SIZE <= (1ull << 32),
               "a pool handle id does not fit 32 bits");
_Static_assert((CRAM_FAULT_LOG_SIZE & (CRAM_FAULT_LOG_SIZE - 1)) == 0, "the fault log is a power-of-two ring");
_Static_assert(CRAM_MAX_REGIONS <= (1u << (64 - CRAM_FAULT_LOG_REGION_SHIFT)), "a region id does not fit a log entry");
_Static_assert(CRAM_MAX_REGION_BYTES >> CRAM_PAGE_SHIFT <= (1ull << CRAM_FAULT_LOG_REGION_SHIFT), "the largest region's page does not fit a log entry");

_Static_assert(sizeof(cram_slot) == 16 && offsetof(cram_slot, location) == 0 && offsetof(cram_slot, checksum) == 8 &&
               offsetof(cram_slot, length) == 12 && offsetof(cram_slot, backend) == 14 && offsetof(cram_slot, flags) == 15,
               "cram_slot layout");
_Static_assert(sizeof(cram_slot_recode) == 48 && offsetof(cram_slot_recode, page) == 24 && offsetof(cram_slot_recode, region) == 32 &&
               offsetof(cram_slot_recode, checksum) == 36 && offsetof(cram_slot_recode, length) == 40 &&
               offsetof(cram_slot_recode, flags) == 42 && offsetof(cram_slot_recode, recoded) == 43, "cram_slot_recode layout");
_Static_assert(sizeof(cram_cold_entry) == 32 && offsetof(cram_cold_entry, region) == 24 && offsetof(cram_cold_entry, length) == 28 &&
               offsetof(cram_cold_entry, flags) == 30, "cram_cold_entry layout");
_Static_assert(sizeof(cram_slot_move) == 32 && offsetof(cram_slot_move, slot) == 0 && offsetof(cram_slot_move, from_location) == 8 &&
               offsetof(cram_slot_move, to_location) == 16 && offsetof(cram_slot_move, from_backend) == 24 &&
               offsetof(cram_slot_move, to_backend) == 25 && offsetof(cram_slot_move, reserved) == 26 &&
               offsetof(cram_slot_move, moved) == 28, "cram_slot_move layout");
_Static_assert(CRAM_PAGE_SIZE <= UINT16_MAX, "a stored length does not fit cram_slot.length");
_Static_assert(sizeof(cram_move_out) == 40 && offsetof(cram_move_out, handle) == 16 && offsetof(cram_move_out, length) == 24 &&
               offsetof(cram_move_out, checksum) == 28 && offsetof(cram_move_out, moved) == 32 && offsetof(cram_move_out, raw) == 36,
               "cram_move_out layout");
_Static_assert(sizeof(cram_region_census) == 80 && offsetof(cram_region_census, stored_bytes) == 48 &&
               offsetof(cram_region_census, faults_write_protect) == 72, "cram_region_census layout");
_Static_assert(sizeof(cram_place) == 24 && offsetof(cram_place, page) == 0 && offsetof(cram_place, slot) == 8 &&
               offsetof(cram_place, size) == 16 && offsetof(cram_place, placed) == 20, "cram_place layout");
_Static_assert(sizeof(cram_pool_handle) == 16 && offsetof(cram_pool_handle, address) == 0 &&
               offsetof(cram_pool_handle, length) == 8 && offsetof(cram_pool_handle, zspage) == 12, "cram_pool_handle layout");
_Static_assert(sizeof(cram_remote_config) == 1192 && offsetof(cram_remote_config, timeout_ms) == 152 &&
               offsetof(cram_remote_config, tls_server_name) == 168 && offsetof(cram_remote_config, tls_key_file) == 936 &&
               sizeof(cram_remote_stats) == 15 * sizeof(uint64_t), "cram_remote_config / cram_remote_stats layout");
_Static_assert(CRAM_REMOTE_MAX_ENDPOINTS <= 256, "a node index does not fit its 8 bits of a location");
_Static_assert(sizeof(cram_pool_move) == 24 && offsetof(cram_pool_move, handle) == 0 && offsetof(cram_pool_move, destination) == 8 &&
               offsetof(cram_pool_move, zspage) == 16 && offsetof(cram_pool_move, reserved) == 20, "cram_pool_move layout");
_Static_assert(sizeof(cram_stats) == (40 + 2 * CRAM_SWAPIN_LATENCY_BUCKETS) * sizeof(uint64_t) &&
               offsetof(cram_stats, faults_swapin_zstd) == (39 + 2 * CRAM_SWAPIN_LATENCY_BUCKETS) * sizeof(uint64_t) &&
               offsetof(cram_stats, fault_latency_us_log2) == (39 + CRAM_SWAPIN_LATENCY_BUCKETS) * sizeof(uint64_t) &&
               offsetof(cram_stats, clean_copy_bytes) == 30 * sizeof(uint64_t) &&
               offsetof(cram_stats, swapin_latency_us_log2) == 39 * sizeof(uint64_t),
               "cram_stats is 39 counters and the swap-in latency buckets");
_Static_assert(sizeof(cram_engine_config) == 48 && offsetof(cram_engine_config, latency_probe_us) == 40 && offsetof(cram_engine_config, fault_service) == 32 && offsetof(cram_engine_config, forced_mode) == 0 &&
               offsetof(cram_engine_config, spin_us) == 4 && offsetof(cram_engine_config, soft_limit_pages) == 8 &&
               offsetof(cram_engine_config, hard_limit_pages) == 16 && offsetof(cram_engine_config, throttle_max_us) == 24 &&
               offsetof(cram_engine_config, fault_around_pages) == 28, "cram_engine_config layout");
_Static_assert(sizeof(cram_shared) == sizeof(cram_stats) + 10 * sizeof(uint64_t) + 6 * sizeof(uint32_t) &&
               offsetof(cram_shared, memory_wait_us) == sizeof(cram_stats) + 9 * sizeof(uint64_t) + 6 * sizeof(uint32_t) &&
               offsetof(cram_shared, activate_distance_pages) == sizeof(cram_stats) + 8 * sizeof(uint64_t) + 6 * sizeof(uint32_t) &&
               offsetof(cram_shared, reclaim_running) == sizeof(cram_stats) + 8 * sizeof(uint64_t) + 5 * sizeof(uint32_t) &&
               offsetof(cram_shared, backing_direct) == sizeof(cram_stats) + 6 * sizeof(uint64_t) + 3 * sizeof(uint32_t) &&
               offsetof(cram_shared, slot_directory) == sizeof(cram_stats) &&
               offsetof(cram_shared, fault_log_tail) == sizeof(cram_stats) + 5 * sizeof(uint64_t) &&
               offsetof(cram_shared, reclaim_stalled) == sizeof(cram_stats) + 6 * sizeof(uint64_t) + sizeof(uint32_t),
               "cram_shared layout");

/* ---------------------------------------------------------------------------------------------
 * The contract as data, for the C# test: every struct size, field offset and size, enum value
 * and shared constant, by name ("cram_slot", "cram_slot.data", "CRAM_PTE_DIRTY", ...).
 * ------------------------------------------------------------------------------------------- */
enum cram_contract_kind {
    CRAM_CONTRACT_STRUCT = 1,   /* value = sizeof */
    CRAM_CONTRACT_FIELD = 2,    /* value = offsetof, size = sizeof the field */
    CRAM_CONTRACT_ENUM = 3,     /* value = the enumerator's value */
    CRAM_CONTRACT_CONSTANT = 4, /* value = the macro's value */
};

typedef struct cram_contract_entry {
    uint64_t name;  /* const char*, a string in the library */
    uint64_t value;
    uint32_t kind;  /* enum cram_contract_kind */
    uint32_t size;
} cram_contract_entry;

typedef struct cram_engine cram_engine;

#ifdef __cplusplus
extern "C" {
#endif

/* The remote tier's read half ("Remote tier"): loads libcrypto (sealed), starts the fetchers
 * (service-thread engines). Once per engine, before the first slot names a REMOTE extent. */
int CramNative_RemoteConfigure(cram_engine* engine, const cram_remote_config* config);
/* Node `index` is reached at IPv4 `address` (network order) and `port`; fetchers reconnect to a
 * changed address (a failover) at their next request. */
int CramNative_RemoteSetEndpoint(cram_engine* engine, uint32_t index, uint32_t address, uint32_t port);
int CramNative_RemoteStats(cram_engine* engine, cram_remote_stats* stats);
/* Fills up to `capacity` entries; *count is the total (call with capacity 0 to size the array). */
int CramNative_GetContract(cram_contract_entry* entries, int32_t capacity, int32_t* count);
int CramNative_EngineCreate(const cram_engine_config* config, cram_engine** engine, cram_shared** shared);
int CramNative_EngineDestroy(cram_engine* engine);
/* The fault service the engine runs (enum cram_fault_service, never AUTO). */
int CramNative_EngineFaultService(cram_engine* engine, uint32_t* service);
/* Measures the fault floor of this host (cram_floor): `samples` faults per figure (100..1000000).
 * Needs a full userfaultfd (EPERM otherwise). Maps and unmaps 1 GiB NORESERVE regions; takes about a second. */
int CramNative_MeasureFloor(int32_t samples, cram_floor* out);
/* Maps a region and its page table; returns its id, base address and page-table address. */
int CramNative_RegionCreate(cram_engine* engine, uint64_t length, uint32_t* region_id, uint64_t* base, uint64_t* pte);
int CramNative_RegionDeactivate(cram_engine* engine, uint32_t region_id);
int CramNative_RegionDestroy(cram_engine* engine, uint32_t region_id);
/* `pages` must be sorted ascending (EINVAL otherwise); one ioctl per run of contiguous pages. */
int CramNative_WriteProtectPages(cram_engine* engine, uint32_t region_id, const uint64_t* pages, int32_t count);
/* `pages` sorted ascending; the CLEAN ones are dropped (MADV_DONTNEED), all runs of a batch in one
 * process_madvise call where the kernel allows it for the calling process (6.13+): one TLB
 * shootdown per batch. Measured here with another thread of the process running: 0.9-1.1 us per
 * scattered page against 46-49 us with one madvise each. */
int CramNative_DropPages(cram_engine* engine, uint32_t region_id, uint64_t* pages, int32_t count, int32_t* dropped);
int CramNative_WaitReclaimSignal(cram_engine* engine, int32_t timeout_ms, int32_t* signalled);
int CramNative_SignalReclaim(cram_engine* engine);
/* Batches of faults the engine has resolved (a count that only grows): the reclaim worker compares
 * it between ticks to tell an idle engine from a busy one. */
int CramNative_ReclaimActivity(cram_engine* engine, uint64_t* activity);
/* The idle reclaim worker's sleep: returns at once if the activity count differs from
 * `seen_activity`, else waits up to `timeout_ms` (-1: for ever) for a signal — the next batch of
 * faults resolved signals it, as do CramNative_SignalReclaim and the limits. No fault is missed:
 * the flag is set before the count is read, and the service counts before it reads the flag. */
int CramNative_WaitReclaimIdle(cram_engine* engine, uint64_t seen_activity, int32_t timeout_ms, int32_t* signalled);
int CramNative_PoolMove(cram_engine* engine, uint64_t handle_directory, const cram_pool_move* moves, int32_t count);
/* Changes the resident limits at run time (0 = none); faults see the new values at once. */
int CramNative_SetResidentLimit(cram_engine* engine, uint64_t soft_limit_pages, uint64_t hard_limit_pages);
/* Step 2 of a backend move (see "Virtual swap"): rewrites each slot still naming its old location. */
int CramNative_SlotsMove(cram_engine* engine, cram_slot_move* moves, int32_t count, int32_t* moved);
/* Recompression's rewrite ("Codecs"): each recode whose slot still names from_location in the pool,
 * is neither stale nor bad, and whose page is EVICTED naming it, takes to_location, the checksum,
 * the length and the codec bits; its `recoded` says so. *recoded: how many. Under the engine lock. */
int CramNative_SlotsRecode(cram_engine* engine, cram_slot_recode* recodes, int32_t count, int32_t* recoded);
/* Recompression's candidates ("Codecs"): from the cursor (*region_id, *page), the EVICTED pages of
 * active regions whose slot is in the pool, not raw, stale, bad or kept, either LZ4 or zstd with a
 * dictionary in recode_dicts (bit d: dictionary d; so entries of a dictionary being retired are found
 * again), evicted at least min_distance evictions ago (0: any); with stride > 1 only one such page in
 * `stride`, counted by *tick across calls (a dictionary's samples, spread over the whole pool). At
 * most `capacity` entries, and a bounded walk (one hold of the engine lock per CRAM_COLD_WALK_PAGES
 * touched pages); the cursor moves on, and *wrapped is 1 when it went past the last region (it
 * starts again at the first). */
int CramNative_FindColdEntries(cram_engine* engine, uint32_t* region_id, uint64_t* page, uint64_t min_distance, uint32_t recode_dicts,
                               uint64_t stride, uint64_t* tick, cram_cold_entry* entries, int32_t capacity, int32_t* found, int32_t* wrapped);
/* Sets zstd dictionary `index` (1..3) from `bytes` (a copy is made), or removes it (length 0): only
 * while no slot names it. *memory_bytes: the decoder's memory for the dictionaries now. */
int CramNative_ZstdDictionarySet(cram_engine* engine, uint32_t index, const void* bytes, uint64_t length, uint64_t* memory_bytes);
/* EVICTING -> PLACED for each page the node's ledger admits (cramnative.h, "CRAM node"). */
int CramNative_PlacePages(cram_engine* engine, uint32_t region_id, cram_place* places, int32_t count, int32_t* placed);
/* PLACED_WRITABLE -> PLACED: write-protect, measure the size again, release the budget. `pages`
 * sorted; the first *replaced entries become the pages re-placed. */
int CramNative_ReplacePages(cram_engine* engine, uint32_t region_id, uint64_t* pages, int32_t count, int32_t* replaced);
/* Counts a region's pages by state, walking only the blocks first touch marked: O(touched), and
 * without the engine lock (a snapshot of words that may change as it reads; the caller keeps the
 * region from being destroyed meanwhile). */
int CramNative_RegionCensus(cram_engine* engine, uint32_t region_id, cram_region_census* census);
/* Lists, in order, up to `capacity` pages of [first, end) whose state s has bit (1 << s) set in
 * `state_mask`, walking only the blocks first touch marked; *next is where to continue (end once
 * done). Without the engine lock (a snapshot; the caller keeps the region from being destroyed). */
int CramNative_FindPages(cram_engine* engine, uint32_t region_id, uint64_t first, uint64_t end, uint32_t state_mask,
                         uint64_t* pages, int32_t capacity, int32_t* found, uint64_t* next);
/* Advise(WillNeed): swaps in the EVICTED pages of pages [first, end) ahead of any access (the
 * state machine above), at most PREFETCH_MAX_PAGES brought in and PREFETCH_SCAN_MAX pages looked at
 * per call, one READAHEAD_CHUNK per hold of the engine lock, so a fault waits for one chunk at most;
 * never past the soft limit. Pages whose copy is on the remote store are sent for (FETCHING) and
 * counted in *brought: with the service thread they land after the call returns. The caller keeps the region from being destroyed. *next is where to
 * continue (end once done), *brought the pages swapped in, *at_limit 1 if it stopped at the soft
 * limit. EINVAL if the region is not active or first > end. */
int CramNative_PrefetchPages(cram_engine* engine, uint32_t region_id, uint64_t first, uint64_t end,
                             uint64_t* next, uint64_t* brought, int32_t* at_limit);
/* Advise(DontNeed): every populated page of pages [first, end) becomes EMPTY (the state machine
 * above); the caller holds reclaim paused. *discarded is how many were populated. EBUSY (nothing
 * changed) if a page is EVICTING, DROPPING or UNPROTECTING, which the caller's pause rules out. */
int CramNative_DiscardPages(cram_engine* engine, uint32_t region_id, uint64_t first, uint64_t end, uint64_t* discarded);
/* PLACED -> EVICTED with the slot rewritten to the given pool copy (cramnative.h, "CRAM node"). */
int CramNative_MoveOutPages(cram_engine* engine, uint32_t region_id, cram_move_out* moves, int32_t count, int32_t* moved);
/* The reaper's mark: sets bit id of `named` (bits ids) for every slot a page table names, under the
 * engine lock, so together with the stale list it is an exact picture of the slots in use. */
int CramNative_MarkNamedSlots(cram_engine* engine, uint64_t* named, uint64_t bits);
/* Creates the backing file (O_EXCL, mode 0600, O_DIRECT where the file system allows it) and,
 * unless `keep`, unlinks it at once, so it disappears with the process. */
int CramNative_BackingFileOpen(const char* path, int32_t keep, int32_t* fd, int32_t* direct);
/* pwrite/pread of exactly `length` bytes (retried on short transfers and EINTR); -1 with errno. */
int CramNative_BackingFileWrite(int32_t fd, const void* data, uint64_t length, uint64_t offset);
int CramNative_BackingFileRead(int32_t fd, void* data, uint64_t length, uint64_t offset);
/* Gives a dead segment's blocks back to the file system (a hole; the file keeps its size). */
int CramNative_BackingFileDiscard(int32_t fd, uint64_t offset, uint64_t length);
/* CRC32C (Castagnoli) of `length` bytes, as the service checks stored bytes (SSE4.2). */
int CramNative_Checksum(const void* data, uint32_t length, uint32_t* checksum);
int CramNative_ArenaMap(uint64_t bytes, int32_t lock, uint64_t* address);
int CramNative_ArenaUnmap(uint64_t address, uint64_t bytes);
int CramNative_Discard(uint64_t address, uint64_t bytes);
/* Backs pool pages that are about to be written, in one call (MADV_POPULATE_WRITE): a batch of
 * page faults costs less than one fault per page. Best effort (0 also where the kernel lacks it). */
int CramNative_Populate(uint64_t address, uint64_t bytes);

#ifdef __cplusplus
}
#endif

#endif
