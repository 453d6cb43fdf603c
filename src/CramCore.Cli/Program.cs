using System.Reflection;
using System.CommandLine;
using CramCore;
using CramCore.Cli;
using CramCore.Cli.Commands;
using Spectre.Console;

// A pipe or a file gets plain text: no colour or cursor codes, and tables as wide as their
// content instead of wrapped at 80 columns (Spectre assumes 80 when it cannot ask a terminal).
if (Console.IsOutputRedirected)
{
    AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings
    {
        Ansi = AnsiSupport.No,
        ColorSystem = ColorSystemSupport.NoColors,
        Interactive = InteractionSupport.No,
        Out = new AnsiConsoleOutput(new CurrentConsoleOut()), // whatever Console.Out is when it writes
    });
    AnsiConsole.Profile.Width = 1000;
}

var root = new RootCommand("""
    cram: drive and measure CramCore, a compressed memory tier for .NET (Linux x64, userfaultfd).
    With --json a verb that runs prints exactly one JSON document on stdout (one that cannot run, nothing);
    progress and errors go to stderr.
    Exit codes: 0 success; 1 integrity failure (a page read back differs, or the engine counted a
    service error or checksum failure); 2 usage error (unknown verb or option, bad value);
    3 environment error (userfaultfd unavailable, no permission, a native library missing, a file that exists or cannot be written).
    """);

var jsonOption = new Option<bool>("--json") { Description = "Print one JSON object instead of tables and progress." };
var faultServiceOption = new Option<string>("--fault-service") { Description = "Who resolves faults: service-thread, faulting-thread (a SIGBUS handler on the thread that faults) or auto (CramOptions.FaultService).", DefaultValueFactory = _ => "auto" };
var corpusOption = new Option<string?>("--corpus") { Description = "A file of raw 4096-byte pages (e.g. ../shared/corpus/dotnet-heap.pages); default: generated pages." };

// cram demo
var sizeOption = new Option<string>("--size") { Description = "Region size (e.g. 4g, 512m).", DefaultValueFactory = _ => "4g" };
var limitOption = new Option<string>("--limit") { Description = "Resident limit (e.g. 1g; at least 16m).", DefaultValueFactory = _ => "1g" };
var threadsOption = new Option<int>("--threads") { Description = "Worker threads.", DefaultValueFactory = _ => 2 };
var secondsOption = new Option<int>("--seconds") { Description = "Length of the random read/write workload.", DefaultValueFactory = _ => 10 };
var backingFileOption = new Option<string?>("--backing-file") { Description = "Write the coldest compressed pages back to this file (must not exist; unlinked at once), with a pool limit small enough that it happens." };
var poolLimitOption = new Option<string>("--pool-limit") { Description = "Compressed pool limit (e.g. 256m); 0 means none, or size/16 (at least 16m) with --backing-file or --remote.", DefaultValueFactory = _ => "0" };
var remoteOption = new Option<string?>("--remote") { Arity = ArgumentArity.ZeroOrOne, Description = "Put the coldest compressed pages on a remote RESP store (sealed, in segments), with a pool limit small enough that it happens: --remote alone starts a redis-server on loopback for the demo; --remote HOST:PORT[,HOST:PORT…] uses a given store or cluster (StackExchange.Redis syntax, password=… allowed)." };
var cramOption = new Option<bool>("--cram") { Description = "Enable the CRAM node: an emulated compressed-RAM device of size/16 that takes very compressible pages read-only in place, 1024 pages writable." };
var demo = new Command("demo", "Fill a large region with a realistic mix under a resident limit, run a skewed read/write workload, verify every page.")
{
    sizeOption, limitOption, threadsOption, secondsOption, corpusOption, backingFileOption, remoteOption, poolLimitOption, cramOption, faultServiceOption, jsonOption,
};
demo.SetAction(r => Guard(r, () => DemoCommand.Run(new DemoCommand.Settings(
    Measure.ParseSize(r.GetValue(sizeOption)!, "--size"),
    Measure.ParseSize(r.GetValue(limitOption)!, "--limit"),
    r.GetValue(threadsOption),
    r.GetValue(secondsOption),
    r.GetValue(corpusOption),
    r.GetValue(jsonOption),
    r.GetValue(backingFileOption),
    Measure.ParseSize(r.GetValue(poolLimitOption)!, "--pool-limit"),
    r.GetValue(cramOption),
    BenchSupport.ParseFaultService(r.GetValue(faultServiceOption)),
    r.GetResult(remoteOption) is null ? null : r.GetValue(remoteOption) ?? ""))));
root.Subcommands.Add(demo);

// cram bench faults|reclaim
// Fault latency needs few pages; reclaim throughput wants a working set well beyond the caches
// (pages the fault service has just written are still hot in the other core's cache).
var faultPagesOption = new Option<int>("--pages") { Description = "Pages per measurement.", DefaultValueFactory = _ => 16384 };
var reclaimPagesOption = new Option<int>("--pages") { Description = "Pages per measurement (65536: 256 MiB).", DefaultValueFactory = _ => 65536 };
var roundsOption = new Option<int>("--rounds") { Description = "Repetitions (latencies pooled; throughputs best of).", DefaultValueFactory = _ => 3 };
var bench = new Command("bench", "Quick one-run measurements of the real paths.");
var faults = new Command("faults", "Swap-in, write-protect, bare userfaultfd and LZ4 decompression latency on the same pages.")
{
    faultPagesOption, roundsOption, corpusOption, faultServiceOption, jsonOption,
};
faults.SetAction(r => Guard(r, () => BenchFaultsCommand.Run(Settings(r, faultPagesOption) with { FaultService = BenchSupport.ParseFaultService(r.GetValue(faultServiceOption)) })));
var mixedOption = new Option<bool>("--mixed") { Description = "Measure a mix: the generated mix with zero and incompressible pages, or the corpus with 1 in 4 pages random (default: compressible pages only)." };
var reclaim = new Command("reclaim", "Reclaim throughput against LZ4 compression alone on the same pages, with and without the compressibility estimator, and for zero pages.")
{
    reclaimPagesOption, roundsOption, corpusOption, mixedOption, jsonOption,
};
reclaim.SetAction(r => Guard(r, () => BenchReclaimCommand.Run(Settings(r, reclaimPagesOption) with { Mixed = r.GetValue(mixedOption) })));
var opsOption = new Option<int>("--ops") { Description = "Operations per thread.", DefaultValueFactory = _ => 4_000_000 };
var alloc = new Command("alloc", "Lock-free buddy allocator against a spin-locked buddy allocator, 1 and 2 threads.")
{
    opsOption, jsonOption,
};
alloc.SetAction(r => Guard(r, () => BenchAllocCommand.Run(r.GetValue(opsOption), r.GetValue(jsonOption))));
var poolPagesOption = new Option<int>("--pages") { Description = "Pages to store; 0: every page of the corpus, or 8192 generated.", DefaultValueFactory = _ => 0 };
var pool = new Command("pool", "Compressed-pool density, bookkeeping per object, and what compaction gives back after a random half is freed.")
{
    poolPagesOption, corpusOption, jsonOption,
};
pool.SetAction(r => Guard(r, () =>
{
    PageSource source = r.GetValue(corpusOption) is string path ? PageSource.FromCorpus(path) : PageSource.Generated();
    int pages = r.GetValue(poolPagesOption) is > 0 and var n ? n : source.CorpusPages > 0 ? source.CorpusPages : 8192;
    return BenchPoolCommand.Run(source, pages, r.GetValue(jsonOption));
}));
var writebackPagesOption = new Option<int>("--pages") { Description = "Pages to write, reclaim and half write back (65536: 256 MiB).", DefaultValueFactory = _ => 65536 };
var dirOption = new Option<string?>("--dir") { Description = "Directory for the backing file (default: the temp directory); it is unlinked at once." };
var writeback = new Command("writeback", "The backing-file tier: compressed writeback throughput and bytes, swap-in from the file next to the pool, slot metadata, checksum cost.")
{
    writebackPagesOption, corpusOption, dirOption, jsonOption,
};
writeback.SetAction(r => Guard(r, () => BenchWritebackCommand.Run(r.GetValue(writebackPagesOption), r.GetValue(corpusOption), r.GetValue(dirOption), r.GetValue(jsonOption))));
var bearPagesOption = new Option<int>("--pages") { Description = "Pages placed on the device (16384: 64 MiB).", DefaultValueFactory = _ => 16384 };
var bearSecondsOption = new Option<double>("--seconds") { Description = "Seconds of writing per mode.", DefaultValueFactory = _ => 2 };
var bearThreadsOption = new Option<int>("--threads") { Description = "Writer threads.", DefaultValueFactory = _ => 2 };
var bearBudgetOption = new Option<long>("--budget") { Description = "Writable budget in pages (host dial and control plane).", DefaultValueFactory = _ => 64 };
var bear = new Command("bear", "Write control on an emulated CRAM device: threads write incompressible data into device pages without write control, with the host's budget, and with the device's budget from a control plane that dies.")
{
    bearPagesOption, bearSecondsOption, bearThreadsOption, bearBudgetOption, jsonOption,
};
bear.SetAction(r => Guard(r, () => BenchBearCommand.Run(r.GetValue(bearPagesOption), r.GetValue(bearSecondsOption), r.GetValue(bearThreadsOption), r.GetValue(bearBudgetOption), r.GetValue(jsonOption))));
var swapSizeOption = new Option<string>("--size") { Description = "Bytes of corpus pages to write (e.g. 2g).", DefaultValueFactory = _ => "2g" };
var swapLimitOption = new Option<string>("--limit") { Description = "Resident limit during the fill and phase A (e.g. 512m).", DefaultValueFactory = _ => "512m" };
var swapSamplesOption = new Option<int>("--samples") { Description = "Random swap-ins per phase.", DefaultValueFactory = _ => 20000 };
var swapFileOption = new Option<string?>("--backing-file") { Description = "The file tier: a backing file (must not exist; unlinked at once) takes what a pool of --pool-limit cannot; --limit then holds resident memory plus the pool (kernel-swapfile.sh's workload)." };
var swapPoolOption = new Option<string>("--pool-limit") { Description = "With --backing-file: the compressed pool's limit (e.g. 64m).", DefaultValueFactory = _ => "64m" };
var compressionThreadsOption = new Option<int>("--compression-threads") { Description = "Threads that compress evicted pages, the reclaim worker included (CramOptions.CompressionThreads; 0: one per CPU, at most 4).", DefaultValueFactory = _ => 0 };
var readaheadThreadsOption = new Option<int>("--readahead-threads") { Description = "Threads that map a sequential reader's readahead window, the faulting thread included (CramOptions.ReadaheadThreads; 0: 2 with more than one CPU).", DefaultValueFactory = _ => 0 };
var swapRecompressionOption = new Option<double>("--recompression-cpu-share") { Description = "The recompressor's CPU budget during the run (CramOptions.RecompressionCpuShare; 0: no recompression).", DefaultValueFactory = _ => new CramOptions().RecompressionCpuShare };
var swapPlotOption = new Option<string?>("--plot") { Description = "Also draw the latency distribution of phases A and B into this SVG file." };
var swapKernelOption = new Option<string?>("--kernel") { Description = "With --plot: the JSON a kernel anchor printed for the same workload (kernel-zram.sh, kernel-swapfile.sh); its p50 and p99 are drawn beside ours." };
var swap = new Command("swap", "The kernel's own swap workload (../shared/anchors/swaptest.c) through the public API, with kernel-zram.sh's JSON keys: fill under a limit, random swap-ins at the limit and without it, sequential swap-in, verify.")
{
    corpusOption, swapSizeOption, swapLimitOption, swapSamplesOption, faultServiceOption, swapFileOption, swapPoolOption, compressionThreadsOption, readaheadThreadsOption,
    swapRecompressionOption, swapPlotOption, swapKernelOption, jsonOption,
};
swap.SetAction(r => Guard(r, () => BenchSwapCommand.Run(r.GetValue(corpusOption), Measure.ParseSize(r.GetValue(swapSizeOption)!, "--size"),
    Measure.ParseSize(r.GetValue(swapLimitOption)!, "--limit"), r.GetValue(swapSamplesOption), r.GetValue(jsonOption),
    BenchSupport.ParseFaultService(r.GetValue(faultServiceOption)), r.GetValue(swapFileOption), Measure.ParseSize(r.GetValue(swapPoolOption)!, "--pool-limit"),
    r.GetValue(compressionThreadsOption), r.GetValue(readaheadThreadsOption), r.GetValue(swapPlotOption), r.GetValue(swapKernelOption),
    r.GetValue(swapRecompressionOption))));
bench.Subcommands.Add(bear);
var hotSizeOption = new Option<string>("--size") { Description = "Bytes of corpus pages in the region (e.g. 2g).", DefaultValueFactory = _ => "2g" };
var hotLimitOption = new Option<string>("--limit") { Description = "Resident limit (e.g. 512m).", DefaultValueFactory = _ => "512m" };
var hotBytesOption = new Option<string>("--hot") { Description = "Size of the hot set (e.g. 256m; 0: uniform reads).", DefaultValueFactory = _ => "256m" };
var hotShareOption = new Option<double>("--hot-share") { Description = "Share of reads that go to the hot set.", DefaultValueFactory = _ => 0.9 };
var hotPhasesOption = new Option<int>("--phases") { Description = "Phases of reads (the steady state is every phase after the first).", DefaultValueFactory = _ => 3 };
var hotReadsOption = new Option<long>("--reads") { Description = "Reads per phase.", DefaultValueFactory = _ => 400_000 };
var zipfOption = new Option<double>("--zipf") { Description = "Zipf exponent (e.g. 0.99) instead of a hot set and a share; 0: off.", DefaultValueFactory = _ => 0 };
var hotPlotOption = new Option<string?>("--plot") { Description = "Also draw each phase's swap-ins per read and hot-set miss rate, beside the LRU's, into this SVG file." };
var hotKernelOption = new Option<string?>("--kernel") { Description = "With --plot: the JSON kernel-hotcold.sh printed for the same reads; the kernel's figures are drawn beside." };
var hotcold = new Command("hotcold", "Does reclaim keep a hot set resident? Random reads, most of them to a hot set (or Zipf), under a resident limit: swap-ins per read and hot-set misses per phase, against an exact LRU of the same size on the same reads.")
{
    corpusOption, hotSizeOption, hotLimitOption, hotBytesOption, hotShareOption, hotPhasesOption, hotReadsOption, zipfOption, hotPlotOption, hotKernelOption, jsonOption,
};
hotcold.SetAction(r => Guard(r, () => BenchHotColdCommand.Run(r.GetValue(corpusOption), Measure.ParseSize(r.GetValue(hotSizeOption)!, "--size"),
    Measure.ParseSize(r.GetValue(hotLimitOption)!, "--limit"), Measure.ParseSize(r.GetValue(hotBytesOption)!, "--hot"), r.GetValue(hotShareOption),
    r.GetValue(hotPhasesOption), r.GetValue(hotReadsOption), r.GetValue(zipfOption), r.GetValue(jsonOption), r.GetValue(hotPlotOption), r.GetValue(hotKernelOption))));
bench.Subcommands.Add(hotcold);
var remoteSizeOption = new Option<string>("--size") { Description = "Bytes of pages to write (e.g. 512m).", DefaultValueFactory = _ => "512m" };
var remoteLimitOption = new Option<string>("--limit") { Description = "Resident memory plus the pool during the fill (e.g. 128m).", DefaultValueFactory = _ => "128m" };
var remotePoolOption = new Option<string>("--pool-limit") { Description = "The compressed pool's limit: what it cannot hold goes to the store (e.g. 32m).", DefaultValueFactory = _ => "32m" };
var remoteSamplesOption = new Option<int>("--samples") { Description = "Random swap-ins per phase (remote; local alone; local beside remote fetches).", DefaultValueFactory = _ => 3000 };
var remoteStoreOption = new Option<string?>("--store") { Description = "A RESP store or cluster to use (HOST:PORT[,HOST:PORT…], StackExchange.Redis syntax, e.g. 10.0.0.5:6379,password=…); default: start a local redis-server on loopback (durable), which the failover phase kills and restarts." };
var remoteClusterOption = new Option<bool>("--cluster") { Description = "Start a local cluster instead: 3 masters with a replica each (writes WAIT for the replica); the failover phase kills a master." };
var remotePlainOption = new Option<bool>("--no-encryption") { Description = "Send the compressed entries unsealed (CramOptions.RemoteEncryption = false)." };
var remoteTlsOption = new Option<bool>("--tls") { Description = "Start the local store serving TLS only (certificates of its own, client certificates required): both halves and the store's floor go over TLS. For a given store, add ssl=true to --store instead." };
var remote = new Command("remote", "The remote tier on a RESP store: fill with remote writeback, random swap-ins from the store beside the store's own GETRANGE floor, local swap-ins with and without remote fetches in flight, bytes sent, per-node bytes, and the store killed mid-run.")
{
    corpusOption, remoteSizeOption, remoteLimitOption, remotePoolOption, remoteSamplesOption, remoteStoreOption, remoteClusterOption, remotePlainOption, remoteTlsOption, faultServiceOption, jsonOption,
};
remote.SetAction(r => Guard(r, () => BenchRemoteCommand.Run(r.GetValue(corpusOption), Measure.ParseSize(r.GetValue(remoteSizeOption)!, "--size"),
    Measure.ParseSize(r.GetValue(remoteLimitOption)!, "--limit"), Measure.ParseSize(r.GetValue(remotePoolOption)!, "--pool-limit"),
    r.GetValue(remoteSamplesOption), r.GetValue(remoteStoreOption), r.GetValue(remoteClusterOption), r.GetValue(jsonOption),
    BenchSupport.ParseFaultService(r.GetValue(faultServiceOption)), !r.GetValue(remotePlainOption), r.GetValue(remoteTlsOption))));
bench.Subcommands.Add(remote);
var ratioSizeOption = new Option<string>("--size") { Description = "Bytes of corpus pages to write and evict (e.g. 1g).", DefaultValueFactory = _ => "1g" };
var ratioShareOption = new Option<double>("--cpu-share") { Description = "The recompressor's CPU budget, a share of one CPU (CramOptions.RecompressionCpuShare; a whole one here, more than an engine's own setting, so the bench ends sooner).", DefaultValueFactory = _ => 1.0 };
var ratioSamplesOption = new Option<int>("--samples") { Description = "Random swap-ins timed before and after recompression.", DefaultValueFactory = _ => 3000 };
var ratio = new Command("ratio", "How much cold data fits in memory: every page evicted, capacity (logical bytes per byte of memory used) with LZ4 copies, then after the recompressor rewrote the cold ones with zstd and a trained dictionary, beside the bench's own per-page zstd-3 bound; swap-ins before and after.")
{
    corpusOption, ratioSizeOption, ratioShareOption, ratioSamplesOption, faultServiceOption, jsonOption,
};
ratio.SetAction(r => Guard(r, () => BenchRatioCommand.Run(r.GetValue(corpusOption), Measure.ParseSize(r.GetValue(ratioSizeOption)!, "--size"),
    r.GetValue(ratioShareOption), r.GetValue(ratioSamplesOption), r.GetValue(jsonOption), BenchSupport.ParseFaultService(r.GetValue(faultServiceOption)))));
bench.Subcommands.Add(ratio);
var sparseSizeOption = new Option<string>("--size") { Description = "Region size (e.g. 64g).", DefaultValueFactory = _ => "64g" };
var strideOption = new Option<string>("--stride") { Description = "Distance between touches (e.g. 1m).", DefaultValueFactory = _ => "1m" };
var sparseLimitOption = new Option<string>("--limit") { Description = "Resident limit of the second run (0: skip it).", DefaultValueFactory = _ => "256m" };
var sparse = new Command("sparse", "Sparse first touch (one write per stride, a hash table's pattern) against the kernel's first-touch fault on a plain mapping, same run.")
{
    sparseSizeOption, strideOption, sparseLimitOption, faultServiceOption, jsonOption,
};
sparse.SetAction(r => Guard(r, () => BenchSparseCommand.Run(Measure.ParseSize(r.GetValue(sparseSizeOption)!, "--size"),
    Measure.ParseSize(r.GetValue(strideOption)!, "--stride"), Measure.ParseSize(r.GetValue(sparseLimitOption)!, "--limit"), r.GetValue(jsonOption),
    BenchSupport.ParseFaultService(r.GetValue(faultServiceOption)))));
var floorSamplesOption = new Option<int>("--samples") { Description = "Faults per figure.", DefaultValueFactory = _ => 20000 };
var floor = new Command("floor", "The fault floor of this machine, measured by the shipped native library: the kernel's first touch, a userfaultfd fault answered by a service thread and by the faulting thread itself, UFFDIO_COPY, LZ4.")
{
    floorSamplesOption, jsonOption,
};
floor.SetAction(r => Guard(r, () => BenchFloorCommand.Run(r.GetValue(floorSamplesOption), r.GetValue(jsonOption))));
bench.Subcommands.Add(floor);
bench.Subcommands.Add(swap);
bench.Subcommands.Add(sparse);
var lifecycleRoundsOption = new Option<int>("--rounds") { Description = "Times each region size is created, written and disposed (medians reported).", DefaultValueFactory = _ => 5 };
var lifecycleEnginesOption = new Option<int>("--engines") { Description = "Engines created at once (each with a memory limit and a region), left idle two seconds, then disposed.", DefaultValueFactory = _ => 1000 };
var lifecycle = new Command("lifecycle", "What a region costs to create, write one byte into and dispose, for 1 GiB, 1 TiB and 64 TiB regions; what 1,000 engines cost to create, keep idle and dispose.")
{
    lifecycleRoundsOption, lifecycleEnginesOption, jsonOption,
};
lifecycle.SetAction(r => Guard(r, () => BenchLifecycleCommand.Run(r.GetValue(lifecycleRoundsOption), r.GetValue(lifecycleEnginesOption), r.GetValue(jsonOption))));
bench.Subcommands.Add(lifecycle);
var memoryDataOption = new Option<string>("--data") { Description = "corpus (compressible pages: --corpus FILE, or the generated compressible mix) or random (incompressible).", DefaultValueFactory = _ => "corpus" };
var memorySizeOption = new Option<string>("--size") { Description = "Bytes to write (e.g. 1g).", DefaultValueFactory = _ => "1g" };
var memoryLimitOption = new Option<string>("--memory-limit") { Description = "CramOptions.MemoryLimitBytes (e.g. 256m; at least 16m).", DefaultValueFactory = _ => "256m" };
var memoryFileOption = new Option<string>("--backing-file") { Description = "The backing file: a path (must not exist; unlinked at once), temp (a new file in the temp directory), or none (ghost mode: what the pool cannot hold stays resident, so data that does not fit makes faults wait at the limit).", DefaultValueFactory = _ => "temp" };
var memoryWaitOption = new Option<double>("--wait-ms") { Description = "CramOptions.MemoryLimitWait in milliseconds: how long a fault waits while the limit cannot be held.", DefaultValueFactory = _ => 10 };
var memoryLimit = new Command("memory-limit", "Does MemoryLimitBytes hold? Writes compressible or random pages under it, with or without a backing file, samples memory use, reads every page back.")
{
    memoryDataOption, corpusOption, memorySizeOption, memoryLimitOption, memoryFileOption, memoryWaitOption, jsonOption,
};
memoryLimit.SetAction(r => Guard(r, () => BenchMemoryLimitCommand.Run(new BenchMemoryLimitCommand.Settings(
    r.GetValue(memoryDataOption)!, r.GetValue(corpusOption), Measure.ParseSize(r.GetValue(memorySizeOption)!, "--size"),
    Measure.ParseSize(r.GetValue(memoryLimitOption)!, "--memory-limit"), BenchMemoryLimitCommand.BackingFilePath(r.GetValue(memoryFileOption)!), r.GetValue(memoryWaitOption), r.GetValue(jsonOption)))));
bench.Subcommands.Add(memoryLimit);
bench.Subcommands.Add(faults);
bench.Subcommands.Add(writeback);
bench.Subcommands.Add(alloc);
bench.Subcommands.Add(pool);
bench.Subcommands.Add(reclaim);
root.Subcommands.Add(bench);

// cram analyze
var pidOption = new Option<int?>("--pid") { Description = "A live process to analyze (its private writable memory)." };
var fileOption = new Option<string?>("--file") { Description = "A file of raw 4096-byte pages to analyze." };
var dumpOption = new Option<string?>("--dump") { Description = "Also write the pages read to this file (a corpus to share)." };
var analyze = new Command("analyze", "What CramCore would do with a process's memory: zero/same-filled pages, the LZ4 size distribution, memory saved.")
{
    pidOption, fileOption, dumpOption, jsonOption,
};
analyze.SetAction(r => Guard(r, () => AnalyzeCommand.Run(new AnalyzeCommand.Settings(r.GetValue(pidOption), r.GetValue(fileOption), r.GetValue(dumpOption), r.GetValue(jsonOption)))));
root.Subcommands.Add(analyze);

// cram estimate
var estimateCorpusOption = new Option<string[]>("--corpus") { Description = "A file of raw 4096-byte pages; repeat for several files (default: 8192 generated pages).", AllowMultipleArgumentsPerToken = false };
var estimatePagesOption = new Option<int>("--pages") { Description = "Pages per input; 0: every page of each file.", DefaultValueFactory = _ => 0 };
var estimateRoundsOption = new Option<int>("--rounds") { Description = "Timed repetitions (best of).", DefaultValueFactory = _ => 5 };
var thresholdOption = new Option<int>("--threshold") { Description = "Compressed size in bytes a page must reach to count as compressible (CramOptions.CompressionThresholdBytes).", DefaultValueFactory = _ => 3072 };
var calibrateOption = new Option<bool>("--calibrate") { Description = "Fit the estimator's size model and margins on the --corpus files and print them." };
var estimate = new Command("estimate", "The compressibility estimator against real LZ4 on the same pages: speed per instruction-set path, agreement, false 'incompressible'.")
{
    estimateCorpusOption, estimatePagesOption, estimateRoundsOption, thresholdOption, calibrateOption, jsonOption,
};
estimate.SetAction(r => Guard(r, () => EstimateCommand.Run(new EstimateCommand.Settings(
    r.GetValue(estimateCorpusOption) ?? [],
    r.GetValue(estimatePagesOption),
    r.GetValue(estimateRoundsOption),
    r.GetValue(thresholdOption),
    r.GetValue(calibrateOption),
    r.GetValue(jsonOption)))));
root.Subcommands.Add(estimate);

if (args is ["--version"]) // the package's version, read from the library itself (not from whatever hosts this code)
{
    Console.WriteLine(typeof(CramEngine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion);
    return ExitCode.Success;
}
ParseResult parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (System.CommandLine.Parsing.ParseError error in parsed.Errors)
    {
        Console.Error.WriteLine($"{Verb(parsed)}: {error.Message}");
    }
    Console.Error.WriteLine("Run `cram --help`, or `cram VERB --help`, for the verbs and their options.");
    return ExitCode.Usage;
}
return parsed.Invoke();

BenchSettings Settings(ParseResult r, Option<int> pages) =>
    new(r.GetValue(pages), r.GetValue(corpusOption), r.GetValue(jsonOption), r.GetValue(roundsOption));

// Runs a verb; a user or environment error is printed once, prefixed with the verb ("cram demo: --limit: ..."), without a stack trace.
static int Guard(ParseResult r, Func<int> body)
{
    try
    {
        return body();
    }
    catch (Exception e) when (e is CliException or CorpusException)
    {
        Console.Error.WriteLine($"{Verb(r)}: {e.Message}");
        return e is CliException cli ? cli.ExitCode : ExitCode.Usage;
    }
    catch (Exception e) when (e is ArgumentException)
    {
        // A value the library refused (an option out of range, a region too large): its message names the option and the range.
        Console.Error.WriteLine($"{Verb(r)}: {e.Message}");
        return ExitCode.Usage;
    }
    catch (Exception e) when (e is CramUnavailableException or DllNotFoundException or PlatformNotSupportedException or UnauthorizedAccessException
        or IOException or OutOfMemoryException or StackExchange.Redis.RedisException or System.Net.Sockets.SocketException)
    {
        // The machine cannot do it: no userfaultfd, a file that exists or cannot be made, a full or read-only device, no address space, a store that does not answer.
        Console.Error.WriteLine($"{Verb(r)}: {e.Message}");
        return ExitCode.Environment;
    }
}

// "cram", "cram demo", "cram bench swap": the command a parse result names.
static string Verb(ParseResult r)
{
    var names = new List<string>();
    for (System.CommandLine.Parsing.SymbolResult? s = r.CommandResult; s is System.CommandLine.Parsing.CommandResult c; s = c.Parent)
    {
        names.Insert(0, c.Command is RootCommand ? "cram" : c.Command.Name);
    }
    return string.Join(' ', names);
}
