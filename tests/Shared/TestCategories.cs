namespace CramCore.Tests;

/// <summary>
/// Test categories, as xunit traits ("Category"). A developer runs the fast ones alone with
/// <c>./build.sh test --filter Category=Unit</c>; CI runs everything.
/// </summary>
internal static class TestCategory
{
    /// <summary>Pure managed or native code: no engine, no userfaultfd. Seconds.</summary>
    public const string Unit = "Unit";

    /// <summary>Needs a running engine (userfaultfd, the fault service, reclaim).</summary>
    public const string Userfaultfd = "Userfaultfd";

    /// <summary>Concurrent soaks (bounded in CI; CRAMCORE_STRESS_SECONDS lengthens them).</summary>
    public const string Stress = "Stress";

    /// <summary>Runs `cram` verbs in-process.</summary>
    public const string Cli = "Cli";

    /// <summary>Runs `cram` in a child process inside a memory cgroup the test creates (root; cgroup v1 or v2). A minute or two.</summary>
    public const string Cgroup = "Cgroup";
}

[Trait("Category", TestCategory.Unit)]
public sealed class TestCategoryTests
{
    /// <summary>Every test has exactly one category, so the filters split the suite without gaps.</summary>
    [Fact]
    public void EveryTest_HasExactlyOneCategory()
    {
        var missing = new List<string>();
        foreach (Type type in typeof(TestCategoryTests).Assembly.GetTypes())
        {
            int onClass = type.GetCustomAttributes(typeof(TraitAttribute), false).Length;
            foreach (var method in type.GetMethods())
            {
                if (!method.GetCustomAttributes(typeof(FactAttribute), true).Any())
                {
                    continue;
                }
                int onMethod = method.GetCustomAttributes(typeof(TraitAttribute), false).Length;
                if (onClass + onMethod != 1)
                {
                    missing.Add($"{type.Name}.{method.Name}: {onClass + onMethod} categories");
                }
            }
        }
        Assert.True(missing.Count == 0, string.Join("\n", missing));
    }
}
