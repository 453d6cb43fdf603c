using System.Reflection;
using System.Reflection.Emit;
using System.Xml.Linq;

namespace CramCore.Tests;

/// <summary>
/// Every exception a public member of CramCore throws itself is in its XML docs: the test reads each
/// public method's, constructor's and accessor's IL for <c>newobj</c> of an exception followed by
/// <c>throw</c>, and for the runtime's guard helpers (<c>ArgumentNullException.ThrowIfNull</c>,
/// <c>ArgumentOutOfRangeException.ThrowIf…</c>, <c>ObjectDisposedException.ThrowIf</c>), and
/// checks that the member documents that type or a base of it (an <c>ArgumentException</c> entry
/// covers <c>ArgumentNullException</c>), following CramCore's own non-public <c>Throw…</c> guard
/// helpers two calls deep. Where it cannot see: exceptions thrown by the other methods it calls,
/// and bodies the compiler moved elsewhere (lambdas, iterators, async state machines).
/// </summary>
[Trait("Category", TestCategory.Unit)]
public sealed class ExceptionDocsTests
{
    private static readonly Dictionary<short, OpCode> s_opCodes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    [Fact]
    public void EveryExceptionAPublicMemberThrows_IsDocumented()
    {
        Assembly assembly = typeof(CramEngine).Assembly;
        string xml = Path.ChangeExtension(assembly.Location, ".xml");
        Assert.True(File.Exists(xml), $"{xml}: the documentation file is missing");
        var documented = XDocument.Load(xml).Descendants("member").ToDictionary(
            m => (string)m.Attribute("name")!,
            m => m.Elements("exception").Select(e => ((string)e.Attribute("cref")!)[2..]).ToHashSet());

        var missing = new List<string>();
        int checkedMembers = 0;
        foreach (Type type in assembly.GetExportedTypes())
        {
            foreach (MethodBase member in type.GetMembers(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly)
                         .SelectMany(m => m switch
                         {
                             MethodBase method => [method],
                             PropertyInfo property => property.GetAccessors().Cast<MethodBase>(),
                             EventInfo e => new[] { e.AddMethod, e.RemoveMethod }.OfType<MethodBase>(),
                             _ => [],
                         }))
            {
                if (member.GetMethodBody() is not { } body)
                {
                    continue;
                }
                checkedMembers++;
                string id = DocId(member);
                HashSet<string> docs = documented.GetValueOrDefault(id) ?? [];
                foreach (Type thrown in ThrownBy(member, body, depth: 0).Distinct())
                {
                    bool covered = false;
                    for (Type? t = thrown; t is not null && !covered; t = t.BaseType)
                    {
                        covered = docs.Contains(t.FullName!) && (t == thrown || t != typeof(Exception)); // a base documents it, but not plain Exception
                    }
                    if (!covered)
                    {
                        missing.Add($"{id} throws {thrown.Name}");
                    }
                }
            }
        }
        Assert.True(checkedMembers > 100, $"only {checkedMembers} public members were read");
        Assert.True(missing.Count == 0, "exceptions thrown but not in the member's <exception> docs:\n" + string.Join("\n", missing));
    }

    /// <summary>The exception types <paramref name="member"/>'s own IL throws: <c>newobj</c> of an exception, and the runtime's ThrowIf guards.</summary>
    private static IEnumerable<Type> ThrownBy(MethodBase member, MethodBody body, int depth)
    {
        byte[] il = body.GetILAsByteArray()!;
        Type[] typeArgs = member.DeclaringType!.IsGenericType ? member.DeclaringType.GetGenericArguments() : [];
        Type[] methodArgs = member.IsGenericMethod ? member.GetGenericArguments() : [];
        for (int i = 0; i < il.Length;)
        {
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            OpCode op = s_opCodes[value];
            i += op.Size;
            int operandSize = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            if (op == OpCodes.Newobj || op == OpCodes.Call)
            {
                MethodBase? target = null;
                try
                {
                    target = member.Module.ResolveMethod(BitConverter.ToInt32(il, i), typeArgs, methodArgs);
                }
                catch (ArgumentException)
                {
                }
                Type? declaring = target?.DeclaringType;
                if (op == OpCodes.Call && depth < 2 && target is not null && !(target.IsPublic && target.DeclaringType!.IsVisible) && target.Module == member.Module &&
                    target.Name.StartsWith("Throw", StringComparison.Ordinal) && target.GetMethodBody() is { } helperBody)
                {
                    // CramCore's own guard helpers (ThrowIfDisposed, UserCallback.ThrowIfInside, …): what they throw, the caller throws.
                    foreach (Type t in ThrownBy(target, helperBody, depth + 1))
                    {
                        yield return t;
                    }
                }
                if (declaring is not null && typeof(Exception).IsAssignableFrom(declaring))
                {
                    int next = i + operandSize;
                    if (op == OpCodes.Newobj && next < il.Length && il[next] == OpCodes.Throw.Value)
                    {
                        yield return declaring;
                    }
                    else if (op == OpCodes.Call && target!.IsStatic && target.Name.StartsWith("ThrowIf", StringComparison.Ordinal))
                    {
                        yield return declaring;
                    }
                }
            }
            i += operandSize;
        }
    }

    /// <summary>The member's documentation id, as the compiler writes it in the XML file (M:Type.Method(Arg,Arg)).</summary>
    private static string DocId(MethodBase member)
    {
        string type = TypeName(member.DeclaringType!);
        string name = member is ConstructorInfo ? "#ctor" : member.Name;
        if (member.IsGenericMethod)
        {
            name += "``" + member.GetGenericArguments().Length;
        }
        ParameterInfo[] parameters = member.GetParameters();
        string args = parameters.Length == 0 ? "" : "(" + string.Join(",", parameters.Select(p => ParameterName(p.ParameterType, member))) + ")";
        if (member.IsSpecialName && member is MethodInfo accessor && (name.StartsWith("get_", StringComparison.Ordinal) || name.StartsWith("set_", StringComparison.Ordinal)))
        {
            // Properties are documented as P:Type.Name (indexers with their parameters).
            PropertyInfo? property = member.DeclaringType!.GetProperties(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static)
                .FirstOrDefault(p => p.GetMethod == accessor || p.SetMethod == accessor);
            if (property is not null)
            {
                ParameterInfo[] index = property.GetIndexParameters();
                return $"P:{type}.{property.Name}" + (index.Length == 0 ? "" : "(" + string.Join(",", index.Select(p => ParameterName(p.ParameterType, member))) + ")");
            }
        }
        if (member.IsSpecialName && (name.StartsWith("add_", StringComparison.Ordinal) || name.StartsWith("remove_", StringComparison.Ordinal)))
        {
            return $"E:{type}.{name[(name.IndexOf('_') + 1)..]}";
        }
        return $"M:{type}.{name}{args}";
    }

    private static string TypeName(Type type) => type.IsGenericType
        ? type.GetGenericTypeDefinition().FullName!.Replace('+', '.')
        : type.FullName!.Replace('+', '.');

    private static string ParameterName(Type type, MethodBase member)
    {
        if (type.IsByRef)
        {
            return ParameterName(type.GetElementType()!, member) + "@";
        }
        if (type.IsPointer)
        {
            return ParameterName(type.GetElementType()!, member) + "*";
        }
        if (type.IsArray)
        {
            return ParameterName(type.GetElementType()!, member) + "[]";
        }
        if (type.IsGenericMethodParameter)
        {
            return "``" + type.GenericParameterPosition;
        }
        if (type.IsGenericTypeParameter)
        {
            return "`" + type.GenericParameterPosition;
        }
        if (type.IsGenericType)
        {
            string definition = type.GetGenericTypeDefinition().FullName!;
            return definition[..definition.IndexOf('`')].Replace('+', '.') + "{" + string.Join(",", type.GetGenericArguments().Select(a => ParameterName(a, member))) + "}";
        }
        return type.FullName!.Replace('+', '.');
    }
}
