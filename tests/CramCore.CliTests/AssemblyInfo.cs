// Tests measure counters of one engine at a time and run stress loads; keep them sequential so
// they are deterministic on a 2-core machine.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
