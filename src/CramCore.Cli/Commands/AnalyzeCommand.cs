using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace CramCore.Cli.Commands;

/// <summary>What `cram analyze --json` prints.</summary>
internal sealed record AnalyzeResult(
    string Source, long Pages, long Bytes, long UnreadableBytes,
    double ZeroFraction, double SameFilledFraction, double CompressibleFraction, double IncompressibleFraction,
    double? Lz4RatioP10, double? Lz4RatioP50, double? Lz4RatioP90,
    int ThresholdBytes, double EstimatorAgreement, double EstimatorConfidentFraction, [property: Figure(FigureUnit.Percent)] double EstimatorFalseIncompressible,
    long SavedBytes, double SavedFraction, [property: Figure(FigureUnit.Seconds)] double Seconds);

/// <summary>
/// `cram analyze`: what CramCore would do with a process's memory (or a page file): zero and
/// same-filled pages, the real LZ4 size distribution, and the memory it would save.
/// Reads a live process through /proc/PID/maps and /proc/PID/mem (private writable mappings).
/// </summary>
internal static unsafe class AnalyzeCommand
{
    internal sealed record Settings(int? Pid, string? File, string? Dump, bool Json);

    private const int P = PageSource.PageSize;

    private sealed class Counts
    {
        public long Pages, Zero, SameFilled, Compressible, Incompressible, StoredBytes, UnreadableBytes;
        public long EstimatorAgrees, EstimatorConfident, FalseIncompressible, FalseIncompressibleSavings;
        public readonly List<int> Sizes = []; // LZ4 sizes of pages that are not same-filled
    }

    public static int Run(Settings s)
    {
        if ((s.Pid is null) == (s.File is null))
        {
            throw new CliException("give exactly one of --pid PID (a live process) or --file FILE (a file of raw 4096-byte pages).");
        }
        int threshold = new CramOptions().CompressionThresholdBytes;
        var tally = new Counts();
        FileStream? dump = null;
        try
        {
            if (s.Dump is not null && s.File is not null && SameFile(s.Dump, s.File))
            {
                throw new CliException($"--dump: '{s.Dump}' is the --file being read; writing it would truncate the input. Give another path.");
            }
            if (s.Dump is not null)
            {
                try
                {
                    dump = new FileStream(s.Dump, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new CliException($"--dump: cannot write '{s.Dump}': {e.Message}");
                }
            }
            string what;
            var sw = Stopwatch.StartNew();
            if (s.File is not null)
            {
                what = s.File;
                AnalyzeFile(s.File, tally, threshold, dump, s.Json);
            }
            else
            {
                what = $"pid {s.Pid}";
                AnalyzeProcess(s.Pid!.Value, tally, threshold, dump, s.Json);
            }
            if (dump is not null)
            {
                DumpDone(dump); // the last buffered bytes reach the device before the report says all is well
            }
            Report(what, tally, threshold, sw.Elapsed, s.Json);
            return 0;
        }
        finally
        {
            try
            {
                dump?.Dispose();
            }
            catch (IOException)
            {
                // Already reported by DumpDone, or a failure is on its way out.
            }
        }
    }

    /// <summary>Appends pages to the --dump file; a device that is full or refuses writes is the machine's (exit 3), named by the option.</summary>
    private static void Dump(FileStream? dump, byte[] buffer, int count)
    {
        try
        {
            dump?.Write(buffer, 0, count);
        }
        catch (IOException e)
        {
            throw new IOException($"--dump: writing '{dump!.Name}' failed: {e.Message}", e);
        }
    }

    private static void DumpDone(FileStream dump)
    {
        try
        {
            dump.Flush(flushToDisk: false);
        }
        catch (IOException e)
        {
            throw new IOException($"--dump: writing '{dump.Name}' failed: {e.Message}", e);
        }
    }

    /// <summary>Whether two paths name the same file (after symbolic links), so a verb never writes to a file it reads.</summary>
    private static bool SameFile(string a, string b)
    {
        static string Real(string path)
        {
            var info = new FileInfo(Path.GetFullPath(path));
            return info.Exists && info.LinkTarget is not null ? (info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? info.FullName) : info.FullName;
        }
        return string.Equals(Real(a), Real(b), StringComparison.Ordinal);
    }

    private static void AnalyzeFile(string path, Counts tally, int threshold, FileStream? dump, bool quiet)
    {
        if (!File.Exists(path))
        {
            throw new CliException($"--file: '{path}' does not exist.");
        }
        long length = new FileInfo(path).Length;
        if (length == 0 || length % P != 0)
        {
            throw new CliException($"--file: '{path}' is {length} bytes, which is not a positive multiple of 4096: it is not a page file, or it was truncated.");
        }
        FileStream input;
        try
        {
            input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"--file: cannot read '{path}': {e.Message}");
        }
        using (input)
        {
            var progress = new Progress(length, quiet);
            var buffer = new byte[P * 256];
            int n;
            while ((n = input.ReadAtLeast(buffer, P, throwOnEndOfStream: false)) > 0)
            {
                n -= n % P;
                Count(buffer.AsSpan(0, n), tally, threshold);
                Dump(dump, buffer, n);
                progress.Add(n);
            }
        }
    }

    private static void AnalyzeProcess(int pid, Counts tally, int threshold, FileStream? dump, bool quiet)
    {
        string maps = $"/proc/{pid}/maps";
        if (pid <= 0 || !Directory.Exists($"/proc/{pid}"))
        {
            throw new CliException($"--pid: there is no process {pid} (it may have exited).");
        }
        var ranges = new List<(long Start, long End)>();
        try
        {
            foreach (string line in File.ReadLines(maps))
            {
                // start-end perms offset dev inode [path]; keep private writable memory, skip kernel-provided areas.
                string[] parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length < 5 || parts[1].Length < 4 || parts[1][0] != 'r' || parts[1][1] != 'w' || parts[1][3] != 'p')
                {
                    continue;
                }
                string name = parts.Length > 5 ? parts[5].Trim() : "";
                if (name is "[vvar]" or "[vsyscall]" or "[vdso]" or "[vvar_vclock]")
                {
                    continue;
                }
                string[] se = parts[0].Split('-');
                ranges.Add((long.Parse(se[0], NumberStyles.HexNumber), long.Parse(se[1], NumberStyles.HexNumber)));
            }
        }
        catch (UnauthorizedAccessException)
        {
            throw new CliException(NoPermission(pid, maps));
        }
        catch (IOException e)
        {
            throw new CliException($"--pid: cannot read {maps} ({e.Message}); the process may have exited.");
        }
        FileStream mem;
        try
        {
            mem = new FileStream($"/proc/{pid}/mem", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
        }
        catch (UnauthorizedAccessException)
        {
            throw new CliException(NoPermission(pid, $"/proc/{pid}/mem"));
        }
        catch (IOException e)
        {
            throw new CliException($"--pid: cannot open /proc/{pid}/mem: {e.Message}");
        }
        using (mem)
        {
            long total = ranges.Sum(r => r.End - r.Start);
            var progress = new Progress(total, quiet);
            var buffer = new byte[P * 256];
            foreach (var (start, end) in ranges)
            {
                for (long at = start; at < end; at += buffer.Length)
                {
                    int want = (int)Math.Min(buffer.Length, end - at);
                    int got;
                    try
                    {
                        got = RandomAccess.Read(mem.SafeFileHandle, buffer.AsSpan(0, want), at);
                    }
                    catch (IOException)
                    {
                        got = 0; // an unreadable range (guard pages, device memory): skip it
                    }
                    if (got < want)
                    {
                        tally.UnreadableBytes += want - got;
                        if (!Directory.Exists($"/proc/{pid}"))
                        {
                            throw new CliException($"--pid: process {pid} exited while it was being read.");
                        }
                    }
                    got -= got % P;
                    Count(buffer.AsSpan(0, got), tally, threshold);
                    Dump(dump, buffer, got);
                    progress.Add(want);
                }
            }
        }
        if (tally.Pages == 0)
        {
            throw new CliException($"--pid: no private writable memory of process {pid} could be read.");
        }
    }

    private static string NoPermission(int pid, string file) =>
        $"--pid: no permission to read {file}. Reading another process's memory needs ptrace access to it: " +
        "run as the process's user with kernel.yama.ptrace_scope=0 (or 1 if cram is its parent), or as root / with CAP_SYS_PTRACE.";

    private static void Count(ReadOnlySpan<byte> pages, Counts tally, int threshold)
    {
        byte* scratch = stackalloc byte[P + 64];
        fixed (byte* data = pages)
        {
            for (int o = 0; o < pages.Length; o += P)
            {
                byte* page = data + o;
                tally.Pages++;
                // Zero and same-filled pages are exact classes (the same-filled check), so the
                // estimator agrees on them by definition.
                PageEstimate estimate = PageEstimator.Estimate(page, threshold);
                if (estimate.Class <= PageClass.SameFilled)
                {
                    tally.EstimatorAgrees++;
                    tally.EstimatorConfident++;
                    if (estimate.Class == PageClass.Zero)
                    {
                        tally.Zero++;
                    }
                    else
                    {
                        tally.SameFilled++;
                    }
                    continue;
                }
                int size = Interop.Lz4.CompressDefault(page, scratch, P, P + 64);
                tally.Sizes.Add(size);
                tally.EstimatorAgrees += estimate.PredictsBelow(threshold) == (size <= threshold) ? 1 : 0;
                tally.EstimatorConfident += estimate.Class == PageClass.Uncertain ? 0 : 1;
                if (estimate.Class == PageClass.Incompressible && size <= threshold)
                {
                    // Reclaim would keep this page resident without trying LZ4.
                    tally.FalseIncompressible++;
                    tally.FalseIncompressibleSavings += P - size;
                }
                if (size <= threshold)
                {
                    tally.Compressible++;
                    tally.StoredBytes += size;
                }
                else
                {
                    tally.Incompressible++;
                }
            }
        }
    }

    private static void Report(string what, Counts t, int threshold, TimeSpan elapsed, bool json)
    {
        var sizes = t.Sizes.Select(x => (long)x).ToList();
        double? Ratio(double q) => sizes.Count == 0 ? null : Math.Round(Measure.Quantile(sizes, q) / P, 3); // null: no page reached LZ4 (all zero or same-filled)
        long bytes = t.Pages * P;
        long resident = t.Incompressible * P;          // stays as it is
        long stored = t.StoredBytes;                    // compressed copies (before pool packing)
        long saved = bytes - resident - stored - t.FalseIncompressibleSavings; // what the estimator's mistakes keep resident
        double Fraction(long n) => Math.Round((double)n / Math.Max(1, t.Pages), 4);
        var result = new AnalyzeResult(
            Source: what,
            Pages: t.Pages,
            Bytes: bytes,
            UnreadableBytes: t.UnreadableBytes,
            ZeroFraction: Math.Round((double)t.Zero / Math.Max(1, t.Pages), 4),
            SameFilledFraction: Math.Round((double)t.SameFilled / Math.Max(1, t.Pages), 4),
            CompressibleFraction: Math.Round((double)t.Compressible / Math.Max(1, t.Pages), 4),
            IncompressibleFraction: Math.Round((double)t.Incompressible / Math.Max(1, t.Pages), 4),
            Lz4RatioP10: Ratio(0.1),
            Lz4RatioP50: Ratio(0.5),
            Lz4RatioP90: Ratio(0.9),
            ThresholdBytes: threshold,
            EstimatorAgreement: Fraction(t.EstimatorAgrees),
            EstimatorConfidentFraction: Fraction(t.EstimatorConfident),
            EstimatorFalseIncompressible: Fraction(t.FalseIncompressible),
            SavedBytes: saved,
            SavedFraction: Math.Round((double)saved / Math.Max(1, bytes), 4),
            Seconds: Math.Round(elapsed.TotalSeconds, 2));
        if (json)
        {
            Console.WriteLine(ResultPrinter.ToJson(result));
            return;
        }
        var table = new Table().Title($"cram analyze: {Markup.Escape(what)}").Border(TableBorder.Rounded).AddColumn("what").AddColumn(new TableColumn("value").RightAligned());
        table.AddRow("pages read", $"{t.Pages:N0} ({Measure.Bytes(bytes)})" + (t.UnreadableBytes > 0 ? $", {Measure.Bytes(t.UnreadableBytes)} unreadable" : ""));
        table.AddRow("zero / same-filled", $"{t.Zero:N0} / {t.SameFilled:N0} pages");
        table.AddRow($"LZ4 below {threshold} B / not", $"{t.Compressible:N0} / {t.Incompressible:N0} pages");
        table.AddRow("LZ4 size / page, p10 / p50 / p90", sizes.Count == 0 ? "none: no page reached LZ4 (all zero or same-filled)" : $"{Ratio(0.1):0.000} / {Ratio(0.5):0.000} / {Ratio(0.9):0.000}");
        table.AddRow("estimator agrees with LZ4", $"{Fraction(t.EstimatorAgrees):P1} of pages (confident on {Fraction(t.EstimatorConfident):P1}; false 'incompressible' {Fraction(t.FalseIncompressible):P2})");
        table.AddRow("memory CramCore would save", $"{Measure.Bytes(saved)} ({(double)saved / Math.Max(1, bytes):P1})");
        AnsiConsole.Write(table);
    }

    /// <summary>A line every second on stderr for large inputs (quiet with --json).</summary>
    private sealed class Progress(long total, bool quiet)
    {
        private long _done;
        private readonly Stopwatch _last = Stopwatch.StartNew();

        public void Add(long bytes)
        {
            _done += bytes;
            if (!quiet && total > 256L << 20 && _last.ElapsedMilliseconds >= 1000)
            {
                _last.Restart();
                Console.Error.WriteLine($"  read {Measure.Bytes(_done)} of {Measure.Bytes(total)} ({100.0 * _done / total:0}%)");
            }
        }
    }
}
