using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace CramCore.Tests;

/// <summary>
/// The C/C# contract (native/cramnative.h ↔ src/CramCore/Native/SharedLayout.cs), compared both
/// ways with what the C compiler reports through CramNative_GetContract: every mirrored struct's
/// size and every field's offset and size, every enum member's value, every shared constant. A
/// field, enumerator or constant added, renamed, retyped or moved on one side only fails here (or,
/// on the C side, already fails the build: see the header).
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed unsafe class ContractTests
{
    private sealed record Entry(string Name, ulong Value, ContractKind Kind, uint Size);

    private static readonly Assembly s_library = typeof(CramEngine).Assembly;

    private static List<Entry> NativeContract()
    {
        int count;
        Assert.Equal(0, Interop.CramNative.GetContract(null, 0, &count));
        var entries = new NativeContractEntry[count];
        fixed (NativeContractEntry* e = entries)
        {
            int again;
            Assert.Equal(0, Interop.CramNative.GetContract(e, count, &again));
            Assert.Equal(count, again);
        }
        return [.. entries.Select(e => new Entry(Marshal.PtrToStringUTF8((nint)e.Name)!, e.Value, (ContractKind)e.Kind, e.Size))];
    }

    /// <summary>FromLocation → from_location, FaultsSwapinLz4 → faults_swapin_lz4.</summary>
    internal static string Snake(string pascal)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < pascal.Length; i++)
        {
            if (i > 0 && char.IsUpper(pascal[i]))
            {
                sb.Append('_');
            }
            sb.Append(char.ToLowerInvariant(pascal[i]));
        }
        return sb.ToString();
    }

    private static IEnumerable<Type> LibraryTypes() => s_library.GetTypes();

    [Fact]
    public void EveryStructAndField_MatchesBothWays()
    {
        List<Entry> contract = NativeContract();
        var mirrors = LibraryTypes().Where(t => t.GetCustomAttribute<NativeStructAttribute>() is not null)
            .ToDictionary(t => t.GetCustomAttribute<NativeStructAttribute>()!.Name);
        var failures = new List<string>();
        foreach (Entry s in contract.Where(e => e.Kind == ContractKind.Struct))
        {
            if (!mirrors.TryGetValue(s.Name, out Type? type))
            {
                failures.Add($"struct {s.Name} has no C# mirror ([NativeStruct(\"{s.Name}\")])");
                continue;
            }
            if ((ulong)Marshal.SizeOf(type) != s.Value)
            {
                failures.Add($"sizeof({s.Name}) is {s.Value} in C, {Marshal.SizeOf(type)} in C# ({type.Name})");
            }
            var cFields = contract.Where(e => e.Kind == ContractKind.Field && e.Name.StartsWith(s.Name + ".", StringComparison.Ordinal))
                .ToDictionary(e => e.Name[(s.Name.Length + 1)..]);
            // No padding and no field the table leaves out: the fields' sizes add up to the struct.
            ulong sum = (ulong)cFields.Values.Sum(f => (long)f.Size);
            if (sum != s.Value)
            {
                failures.Add($"{s.Name}: its listed fields cover {sum} of {s.Value} bytes (padding, or a field missing from CramNative_GetContract)");
            }
            var csFields = type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
            foreach (FieldInfo f in csFields)
            {
                string name = Snake(f.Name);
                if (!cFields.TryGetValue(name, out Entry? c))
                {
                    failures.Add($"{type.Name}.{f.Name}: C has no field {s.Name}.{name}");
                    continue;
                }
                ulong offset = (ulong)Marshal.OffsetOf(type, f.Name);
                int size = Marshal.SizeOf(f.FieldType.IsEnum ? Enum.GetUnderlyingType(f.FieldType) : f.FieldType);
                if (offset != c.Value || (uint)size != c.Size)
                {
                    failures.Add($"{s.Name}.{name}: C offset {c.Value} size {c.Size}, C# offset {offset} size {size}");
                }
            }
            foreach (string name in cFields.Keys.Except(csFields.Select(f => Snake(f.Name))))
            {
                failures.Add($"{s.Name}.{name} has no C# field in {type.Name}");
            }
        }
        foreach (string name in mirrors.Keys.Except(contract.Where(e => e.Kind == ContractKind.Struct).Select(e => e.Name)))
        {
            failures.Add($"C# mirrors struct {name}, which the native contract does not list");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Contains(contract, e => e.Name == "cram_slot.checksum"); // the test sees real data
    }

    [Fact]
    public void EveryEnumMember_MatchesBothWays()
    {
        List<Entry> contract = NativeContract();
        var enums = LibraryTypes().Where(t => t.IsEnum && t.GetCustomAttribute<NativeEnumAttribute>() is not null).ToList();
        var failures = new List<string>();
        var claimed = new HashSet<string>();
        foreach (Type type in enums)
        {
            string prefix = type.GetCustomAttribute<NativeEnumAttribute>()!.Prefix;
            var cValues = contract.Where(e => e.Kind == ContractKind.Enum && e.Name.StartsWith(prefix, StringComparison.Ordinal))
                .ToDictionary(e => e.Name);
            if (cValues.Count == 0)
            {
                failures.Add($"{type.Name}: C has no enumerators named {prefix}*");
            }
            foreach (string member in Enum.GetNames(type))
            {
                string name = prefix + Snake(member).ToUpperInvariant();
                ulong value = Convert.ToUInt64(Enum.Parse(type, member), System.Globalization.CultureInfo.InvariantCulture);
                if (!cValues.TryGetValue(name, out Entry? c))
                {
                    failures.Add($"{type.Name}.{member}: C has no enumerator {name}");
                }
                else if (c.Value != value)
                {
                    failures.Add($"{name} is {c.Value} in C, {type.Name}.{member} is {value} in C#");
                }
            }
            foreach (string name in cValues.Keys)
            {
                claimed.Add(name);
                if (!Enum.GetNames(type).Any(m => prefix + Snake(m).ToUpperInvariant() == name))
                {
                    failures.Add($"C enumerator {name} has no member in {type.Name}");
                }
            }
        }
        foreach (Entry e in contract.Where(e => e.Kind == ContractKind.Enum && !claimed.Contains(e.Name)))
        {
            failures.Add($"C enumerator {e.Name} belongs to no C# enum with [NativeEnum]");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Contains(enums, t => t == typeof(PageState));
    }

    [Fact]
    public void EveryConstant_MatchesBothWays()
    {
        List<Entry> contract = NativeContract();
        var constants = LibraryTypes()
            .SelectMany(t => t.GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic))
            .Where(f => f.GetCustomAttribute<NativeConstantAttribute>() is not null)
            .ToDictionary(f => f.GetCustomAttribute<NativeConstantAttribute>()!.Name);
        var failures = new List<string>();
        foreach (Entry c in contract.Where(e => e.Kind == ContractKind.Constant))
        {
            if (!constants.TryGetValue(c.Name, out FieldInfo? f))
            {
                failures.Add($"constant {c.Name} = {c.Value} has no C# mirror ([NativeConstant(\"{c.Name}\")])");
                continue;
            }
            ulong value = Convert.ToUInt64(f.GetRawConstantValue(), System.Globalization.CultureInfo.InvariantCulture);
            if (value != c.Value)
            {
                failures.Add($"{c.Name} is {c.Value} in C, {f.DeclaringType!.Name}.{f.Name} is {value} in C#");
            }
        }
        foreach (string name in constants.Keys.Except(contract.Where(e => e.Kind == ContractKind.Constant).Select(e => e.Name)))
        {
            failures.Add($"C# mirrors constant {name}, which the native contract does not list");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(constants.Count >= 10);
    }

    /// <summary>
    /// Macros C# once repeated as literals are exported (CRAM_MAX_REGION_BYTES, CRAM_FAULT_AROUND_MAX)
    /// and mirrored once, in SharedLayout.cs; the library and the CLI use the mirror, never the number.
    /// </summary>
    [Theory]
    [InlineData("CRAM_MAX_REGION_BYTES", @"\b1U?L\s*<<\s*46\b|\b70368744177664\b")]
    [InlineData("CRAM_FAULT_AROUND_MAX", @"FaultAround\w*[^;\n]*\b64\b")]
    public void AnExportedMacro_IsNeverWrittenAsALiteral(string macro, string literal)
    {
        Assert.Contains(NativeContract(), e => e.Kind == ContractKind.Constant && e.Name == macro);
        string src = Path.Combine(RepositoryRoot(), "src");
        var offenders = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains("/obj/") && !f.Contains("/bin/") && !f.EndsWith("SharedLayout.cs", StringComparison.Ordinal))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(x => !x.line.TrimStart().StartsWith("///", StringComparison.Ordinal) && System.Text.RegularExpressions.Regex.IsMatch(x.line, literal))
            .Select(x => $"{Path.GetRelativePath(src, x.f)}:{x.i + 1}: {x.line.Trim()}")
            .ToList();
        Assert.True(offenders.Count == 0, $"{macro} written as a literal (use SharedLayout's mirror):\n" + string.Join("\n", offenders));
    }

    internal static string RepositoryRoot()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "native", "cramnative.h")))
            {
                return d.FullName;
            }
        }
        throw new DirectoryNotFoundException("the repository (native/cramnative.h) not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void FaultLogEntry_RoundTripsTheLargestRegionAndPage()
    {
        ulong lastPage = ((ulong)SharedLayout.MaxRegionBytes >> SharedLayout.PageShift) - 1; // the last page of a 64 TiB region
        ulong entry = FaultLogEntry.Encode(SharedLayout.MaxRegions - 1, lastPage);
        Assert.Equal((uint)SharedLayout.MaxRegions - 1, FaultLogEntry.RegionOf(entry));
        Assert.Equal(lastPage, FaultLogEntry.PageOf(entry));
        ulong pte = PageTableEntry.Make(PageState.Evicted, (ulong)SharedLayout.DirectorySize * SharedLayout.DirectoryClusterSize - 1);
        Assert.Equal(PageState.Evicted, PageTableEntry.State(pte));
        Assert.Equal(0UL, pte & PageTableEntry.Referenced);
    }

    [Fact]
    public void Snake_NamesFieldsAsC()
    {
        Assert.Equal("faults_swapin_lz4", Snake("FaultsSwapinLz4"));
        Assert.Equal("from_location", Snake("FromLocation"));
        Assert.Equal("USER_MODE_ONLY", Snake("UserModeOnly").ToUpperInvariant());
    }

    [Fact]
    public void SystemLz4RoundTrips()
    {
        Assert.True(Interop.Lz4.VersionNumber() >= 10900);
        byte[] src = new byte[4096], dst = new byte[4096], back = new byte[4096];
        for (int i = 0; i < src.Length; i++)
        {
            src[i] = (byte)(i % 13);
        }
        fixed (byte* s = src, d = dst, b = back)
        {
            int n = Interop.Lz4.CompressDefault(s, d, 4096, 4096);
            Assert.InRange(n, 1, 200);
            Assert.Equal(4096, Interop.Lz4.DecompressSafe(d, b, n, 4096));
        }
        Assert.Equal(src, back);
    }
}

/// <summary>
/// The bindings: every CramNative_* prototype in native/cramnative.h has a [LibraryImport] with the
/// same arity and argument types (pointees included: Expected), and every import names a
/// prototype of the header and an export of the loaded library.
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed class BindingContractTests
{
    private static string Header() => File.ReadAllText(Path.Combine(ContractTests.RepositoryRoot(), "native", "cramnative.h"));

    /// <summary>
    /// The C# type a C parameter type must be bound as, pointee included: an integer by its width
    /// and sign, a shared struct by its [NativeStruct] mirror, bytes (char, void) as byte, and the
    /// opaque cram_engine* as nint; each * in C is one * in C#. So an int32_t* changed to a
    /// uint64_t* on one side, or a struct pointer to another struct's, fails.
    /// </summary>
    internal static string Expected(string cType)
    {
        string type = cType.Replace("const", "").Replace(" ", "");
        int stars = type.Count(c => c == '*');
        string pointee = type.TrimEnd('*');
        if (pointee == "cram_engine")
        {
            (pointee, stars) = (nameof(IntPtr), stars - 1); // an opaque handle: the pointer itself is the value
        }
        else
        {
            pointee = pointee switch
            {
                "uint64_t" => nameof(UInt64),
                "int32_t" => nameof(Int32),
                "uint32_t" => nameof(UInt32),
                "char" or "void" when stars > 0 => nameof(Byte),
                var s when s.StartsWith("cram_", StringComparison.Ordinal) && Mirrors.TryGetValue(s, out Type? mirror) => mirror.Name,
                var other => throw new InvalidOperationException($"no binding rule for C type '{cType}' ('{other}')"),
            };
        }
        return pointee + new string('*', stars);
    }

    /// <summary>The C# mirror of each shared C struct, by its C name.</summary>
    private static readonly Dictionary<string, Type> Mirrors = typeof(CramEngine).Assembly.GetTypes()
        .Where(t => t.GetCustomAttribute<NativeStructAttribute>() is not null)
        .ToDictionary(t => t.GetCustomAttribute<NativeStructAttribute>()!.Name);

    internal static string Actual(Type t) => t.IsPointer ? Actual(t.GetElementType()!) + "*" : t.Name;

    [Theory]
    [InlineData("const uint64_t* pages", "UInt64*")]
    [InlineData("int32_t* dropped", "Int32*")]
    [InlineData("cram_engine* engine", "IntPtr")]
    [InlineData("cram_engine** engine", "IntPtr*")]
    [InlineData("cram_shared** shared", "NativeShared**")]
    [InlineData("const char* path", "Byte*")]
    [InlineData("uint32_t region_id", "UInt32")]
    public void Expected_TypesThePointee(string parameter, string expected) =>
        Assert.Equal(expected, Expected(ParameterType(parameter)));

    /// <summary>A C parameter's type: the declaration without its name ("const uint64_t* pages" → "const uint64_t*").</summary>
    private static string ParameterType(string parameter) => System.Text.RegularExpressions.Regex.Match(parameter, @"^(.*?)\s*\w+$").Groups[1].Value;

    [Fact]
    public void APointeeChangedOnOneSide_IsCaught()
    {
        Assert.NotEqual(Expected("uint64_t*"), Actual(typeof(int*)));
        Assert.NotEqual(Expected("cram_slot_move*"), Actual(typeof(NativePoolMove*)));
        Assert.Equal(Expected("cram_slot_move*"), Actual(typeof(NativeSlotMove*)));
    }

    [Fact]
    public void EveryPrototype_HasAMatchingLibraryImport_AndBack()
    {
        var prototypes = System.Text.RegularExpressions.Regex.Matches(Header(), @"^int (CramNative_\w+)\(([^)]*)\);", System.Text.RegularExpressions.RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value.Split(',', StringSplitOptions.TrimEntries)
                .Select(p => Expected(ParameterType(p))).ToArray());
        var imports = typeof(Interop.CramNative).GetMethods(BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)
            .Select(m => (Method: m, Import: m.GetCustomAttribute<LibraryImportAttribute>()))
            .Where(x => x.Import is not null)
            .ToDictionary(x => x.Import!.EntryPoint!, x => x.Method);
        var failures = new List<string>();
        foreach (var (name, parameters) in prototypes)
        {
            if (!imports.TryGetValue(name, out MethodInfo? m))
            {
                failures.Add($"{name} has no [LibraryImport] in Interop.CramNative");
                continue;
            }
            string[] actual = [.. m.GetParameters().Select(p => Actual(p.ParameterType))];
            if (!actual.SequenceEqual(parameters) || m.ReturnType != typeof(int) || !m.GetCustomAttribute<LibraryImportAttribute>()!.SetLastError)
            {
                failures.Add($"{name}: C ({string.Join(", ", parameters)}) → int; C# {m.Name}({string.Join(", ", actual)}) → {m.ReturnType.Name} (an import returns int and sets SetLastError = true)");
            }
        }
        foreach (string name in imports.Keys.Except(prototypes.Keys))
        {
            failures.Add($"[LibraryImport] {name} has no prototype in cramnative.h");
        }
        nint library = NativeLibrary.Load(Interop.CramNative.Library, typeof(CramEngine).Assembly, null);
        foreach (string name in imports.Keys.Where(n => !NativeLibrary.TryGetExport(library, n, out _)))
        {
            failures.Add($"{name} is not exported by libCramNative.so");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(prototypes.Count >= 14, $"only {prototypes.Count} prototypes parsed");
    }
}
