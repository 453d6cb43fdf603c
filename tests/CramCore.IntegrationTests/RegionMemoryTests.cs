using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace CramCore.Tests;

/// <summary>
/// Regions as Memory&lt;T&gt; and as I/O targets: the manager behind AsMemory, and ReadFrom/WriteTo
/// in every userfaultfd mode, including user-mode-only, where a system call on an evicted page
/// fails with EFAULT.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class RegionMemoryTests
{
    private const int P = 4096;

    [Fact]
    public void AsMemory_SeesTheRegion_PinsInPlace_AndSurvivesEviction()
    {
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion(64 * P);
        Memory<long> memory = region.AsMemory<long>(8 * P, 16 * P / 8);
        for (int i = 0; i < memory.Length; i++)
        {
            memory.Span[i] = i * 3;
        }
        region.Reclaim(region.Length);
        Assert.True(engine.GetStats().Evictions >= 16);
        for (int i = 0; i < memory.Length; i++)
        {
            Assert.Equal(i * 3, memory.Span[i]);
        }
        Assert.True(MemoryMarshal.TryGetMemoryManager<long, MemoryManager<long>>(memory, out _));
        using (MemoryHandle pin = memory[5..].Pin())
        {
            Assert.Equal((nint)(region.Pointer + 8 * P + 5 * sizeof(long)), (nint)pin.Pointer);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => region.AsMemory<long>(63 * P, P / 8 + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => region.AsMemory<byte>(-1, 1));
        region.Dispose();
        Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (Memory<byte> Memory, WeakReference Region) MemoryOfAnUnreferencedRegion(CramEngine engine)
    {
        CramRegion region = engine.CreateRegion(16 * P);
        return (region.AsMemory<byte>(0, 16 * P), new WeakReference(region));
    }

    [Fact]
    public void AsMemory_KeepsItsRegionAlive()
    {
        using var engine = CramEngine.Create();
        (Memory<byte> memory, WeakReference region) = MemoryOfAnUnreferencedRegion(engine);
        for (int round = 0; round < 3; round++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.True(region.IsAlive);
        memory.Span.Fill(7);
        Assert.Equal(16 * P, memory.Span.Count((byte)7));
        Assert.Equal(1, engine.GetStats().Regions);
    }

    internal const int IoPages = 96; // more than one bounce buffer

    /// <summary>Two regions for the I/O test: the source with versioned pages, the target filled with 1s (so a missed page shows); both evicted.</summary>
    internal static void PrepareIo(CramRegion source, CramRegion target)
    {
        for (int i = 0; i < IoPages; i++)
        {
            TestPages.WriteCompressible(source.Pointer + (long)i * P, i, 4);
        }
        target.AsSpan<byte>(0, (int)target.Length).Fill(1);
        source.Reclaim(source.Length);
        target.Reclaim(target.Length); // both sides evicted: the kernel would meet missing pages either way
    }

    internal static void CheckIo(CramRegion target)
    {
        for (int i = 0; i < IoPages - 1; i++)
        {
            Assert.True(TestPages.CheckCompressible(target.Pointer + (long)i * P, i, 4), $"page {i}");
        }
        Assert.True(TestPages.CheckCompressible(target.Pointer + (long)(IoPages - 1) * P, 0, 4), "the last page: the file's last page");
    }

    [Fact]
    public void UserModeOnly_ASystemCallOnAnEvictedPage_FailsWithoutTheHelpers()
    {
        // Why the helpers exist: the same read, straight into the region, fails with EFAULT.
        using var engine = CramEngine.Create(new CramOptions { Userfaultfd = UserfaultfdMode.UserModeOnly });
        using var region = engine.CreateRegion(4 * P);
        region.AsSpan<byte>(0, 4 * P).Fill(3);
        region.Reclaim(region.Length);
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, new byte[4 * P]);
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
            Assert.ThrowsAny<IOException>(() => file.Read(region.AsSpan<byte>(0, 4 * P)));
            file.Position = 0;
            Assert.Equal(4 * P, region.ReadFrom(file, 0, 4 * P));
            Assert.Equal(4 * P, region.AsSpan<byte>(0, 4 * P).Count((byte)0));
        }
        finally
        {
            File.Delete(path);
        }
    }
}

/// <summary>ReadFrom/WriteTo and their async forms through real files, in the default mode and in user-mode-only mode (async code cannot sit in an unsafe class).</summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed class RegionIoTests
{
    private const int P = 4096;

    [Theory]
    [InlineData(UserfaultfdMode.Auto)]
    [InlineData(UserfaultfdMode.UserModeOnly)]
    public async Task ReadFromAndWriteTo_MoveEvictedPagesThroughFiles_InEveryMode(UserfaultfdMode mode)
    {
        const int Pages = RegionMemoryTests.IoPages;
        using var engine = CramEngine.Create(new CramOptions { Userfaultfd = mode });
        using var source = engine.CreateRegion(Pages * P);
        using var target = engine.CreateRegion(Pages * P);
        RegionMemoryTests.PrepareIo(source, target);
        string path = Path.GetTempFileName();
        try
        {
            using (var file = new FileStream(path, FileMode.Create))
            {
                source.WriteTo(file, P, (Pages - 2) * P);
                await source.WriteToAsync(file, 0, P);
            }
            target.Reclaim(target.Length);
            using (var file = new FileStream(path, FileMode.Open))
            {
                // Asks for the rest of the region, gets the rest of the file: pages 1..Pages-2, then page 0 again.
                Assert.Equal((Pages - 1) * P, target.ReadFrom(file, P, Pages * P - P));
            }
            target.Reclaim(target.Length);
            using (var file = new FileStream(path, FileMode.Open))
            {
                file.Position = (Pages - 2) * P;
                Assert.Equal(P, await target.ReadFromAsync(file, 0, P));
            }
        }
        finally
        {
            File.Delete(path);
        }
        RegionMemoryTests.CheckIo(target);
    }
}
