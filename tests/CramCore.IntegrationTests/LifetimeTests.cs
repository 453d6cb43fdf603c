using System.Reflection;
using System.Runtime.CompilerServices;

namespace CramCore.Tests;

/// <summary>
/// Lifetimes as .NET users expect them of a type that owns native resources: every member throws
/// <see cref="ObjectDisposedException"/> after <c>Dispose</c>, and an engine or region nobody
/// references is released by its finalizer (threads stopped, memory unmapped, pages freed).
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class LifetimeTests
{
    private const int P = 4096;

    /// <summary>Every public instance method and property accessor declared by <paramref name="type"/>, but Dispose and event accessors (removing a handler after Dispose must stay harmless).</summary>
    private static SortedSet<string> PublicMembers(Type type) =>
        [.. type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
            .Select(m => m.Name)
            .Where(n => n != nameof(IDisposable.Dispose) && !n.StartsWith("add_", StringComparison.Ordinal) && !n.StartsWith("remove_", StringComparison.Ordinal))];

    /// <summary>Calls each member with arguments that are valid before Dispose, so only disposal can make it throw; the table must name every public member (a new one fails here until it is added).</summary>
    private static void AssertEveryMemberThrowsDisposed(Type type, Dictionary<string, Action> calls)
    {
        Assert.Equal(PublicMembers(type), new SortedSet<string>(calls.Keys));
        foreach ((string name, Action call) in calls)
        {
            Exception? thrown = null;
            try
            {
                call();
            }
            catch (Exception e)
            {
                thrown = e;
            }
            Assert.True(thrown is ObjectDisposedException, $"{type.Name}.{name} after Dispose threw {thrown?.GetType().Name ?? "nothing"}, not ObjectDisposedException: {thrown?.Message}");
        }
    }

    private static Dictionary<string, Action> RegionCalls(CramRegion r) => new()
    {
        ["get_Engine"] = () => _ = r.Engine,
        ["get_Length"] = () => _ = r.Length,
        ["get_Pointer"] = () => _ = (nint)r.Pointer,
        ["AsSpan"] = () => _ = r.AsSpan<byte>(0, 1).Length,
        ["Reclaim"] = () => r.Reclaim(P),
        ["MakeResident"] = () => r.MakeResident(0, P, forWrite: true),
        ["Advise"] = () => r.Advise(0, P, CramAdvice.Cold),
        ["AsMemory"] = () => r.AsMemory<byte>(0, 1),
        ["GetStats"] = () => r.GetStats(),
        ["ReadFrom"] = () => r.ReadFrom(new MemoryStream(new byte[P]), 0, P),
        ["ReadFromAsync"] = () => r.ReadFromAsync(new MemoryStream(new byte[P]), 0, P).AsTask().GetAwaiter().GetResult(),
        ["WriteTo"] = () => r.WriteTo(Stream.Null, 0, P),
        ["WriteToAsync"] = () => r.WriteToAsync(Stream.Null, 0, P).AsTask().GetAwaiter().GetResult(),
    };

    private static Dictionary<string, Action> EngineCalls(CramEngine e) => new()
    {
        ["get_ResidentLimitBytes"] = () => _ = e.ResidentLimitBytes,
        ["set_ResidentLimitBytes"] = () => e.ResidentLimitBytes = 0,
        ["get_Options"] = () => _ = e.Options,
        ["get_UserfaultfdMode"] = () => _ = e.UserfaultfdMode,
        ["CompactPool"] = () => e.CompactPool(),
        ["CreateRegion"] = () => e.CreateRegion(P),
        ["GetStats"] = () => e.GetStats(),
    };

    [Fact]
    public void EveryPublicMember_AfterDispose_ThrowsObjectDisposed()
    {
        var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 1 << 20 });
        var kept = engine.CreateRegion(1 << 20);
        var disposed = engine.CreateRegion(1 << 20);
        kept.AsSpan<byte>(0, P).Fill(1);
        disposed.Dispose();
        AssertEveryMemberThrowsDisposed(typeof(CramRegion), RegionCalls(disposed));
        Assert.Equal(1 << 20, kept.Length); // its sibling's disposal left it alone

        engine.Dispose();
        AssertEveryMemberThrowsDisposed(typeof(CramEngine), EngineCalls(engine));
        AssertEveryMemberThrowsDisposed(typeof(CramRegion), RegionCalls(kept)); // the engine took its regions along
        engine.TierEvent -= (_, _) => { }; // harmless
        engine.Dispose(); // idempotent
        kept.Dispose();
        disposed.Dispose();
    }

    private static int Threads(string name) => ProcessThreads.Count(n => n == name);

    private static void CollectEverything()
    {
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    private static readonly List<CramRegion> s_held = [];

    /// <summary>Engines with a region each, written and partly evicted, never disposed; nothing of them is returned.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<WeakReference> Abandon(int engines)
    {
        var weak = new List<WeakReference>();
        for (int e = 0; e < engines; e++)
        {
            var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 1 << 20 });
            var region = engine.CreateRegion(1 << 20);
            for (int i = 0; i < 16; i++)
            {
                TestPages.WriteCompressible(region.Pointer + (long)i * P, i, e);
            }
            region.Reclaim(8 * P);
            weak.Add(new WeakReference(engine));
            weak.Add(new WeakReference(region));
            s_held.Add(region); // until the test has counted their threads
        }
        return weak;
    }

    [Fact]
    public void AbandonedEngines_AreReleasedByTheFinalizer_ThreadsAndAll()
    {
        CollectEverything(); // earlier tests' leftovers first
        int services = Threads("cram-fault"), reclaimers = Threads("cram-reclaim");
        List<WeakReference> weak = Abandon(20);
        Assert.Equal((services + 20, reclaimers + 20), (Threads("cram-fault"), Threads("cram-reclaim"))); // they were running
        s_held.Clear(); // now nothing references them
        CollectEverything();
        Assert.All(weak, w => Assert.False(w.IsAlive));
        Assert.Equal((services, reclaimers), (Threads("cram-fault"), Threads("cram-reclaim")));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference AbandonRegion(CramEngine engine)
    {
        var region = engine.CreateRegion(1 << 20);
        for (int i = 0; i < 32; i++)
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 3);
        }
        region.Reclaim(16 * P); // stored copies the finalizer must free too
        return new WeakReference(region);
    }

    [Fact]
    public void AbandonedRegion_OfALiveEngine_IsReleasedByTheFinalizer()
    {
        using var engine = CramEngine.Create();
        WeakReference region = AbandonRegion(engine);
        Assert.Equal(1, engine.GetStats().Regions);
        CollectEverything();
        Assert.False(region.IsAlive);
        CramStats s = engine.GetStats();
        Assert.Equal(0, s.Regions);
        Assert.Equal(0, s.LogicalBytes);
        Assert.Equal(0, s.ResidentBytes);
        Assert.Equal(0, s.StoredBytes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (CramRegion Region, WeakReference Engine) RegionOfAnAbandonedEngine()
    {
        var engine = CramEngine.Create(new CramOptions { ResidentLimitBytes = 1 << 20 });
        return (engine.CreateRegion(4 << 20), new WeakReference(engine));
    }

    [Fact]
    public void LiveRegion_KeepsItsEngineAlive_ThroughForcedCollections()
    {
        (CramRegion region, WeakReference engine) = RegionOfAnAbandonedEngine();
        for (int i = 0; i < 1024; i++) // 4 MiB under a 1 MiB limit: reclaim and swap-ins run between collections
        {
            TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 5);
            if (i % 256 == 0)
            {
                CollectEverything();
            }
        }
        CollectEverything();
        Assert.True(engine.IsAlive);
        for (int i = 0; i < 1024; i++)
        {
            Assert.True(TestPages.CheckCompressible(region.Pointer + (long)i * P, i, 5), $"page {i}");
        }
        Assert.True(region.Engine.GetStats().Evictions > 0);
        region.Engine.Dispose();
    }
}
