using System.Diagnostics.Metrics;

namespace CramCore.Tests;

public sealed unsafe class OptionsTests
{
    public static TheoryData<string, Action<CramOptions>> BadOptions => new()
    {
        { nameof(CramOptions.ResidentLimitBytes), o => o.ResidentLimitBytes = -1 },
        { nameof(CramOptions.ResidentLimitBytes), o => o.ResidentLimitBytes = 4096 },
        { nameof(CramOptions.CompressionThresholdBytes), o => o.CompressionThresholdBytes = 10 },
        { nameof(CramOptions.CompressionThresholdBytes), o => o.CompressionThresholdBytes = 5000 },
        { nameof(CramOptions.CompressionThreads), o => o.CompressionThreads = -1 },
        { nameof(CramOptions.CompressionThreads), o => o.CompressionThreads = 17 },
        { nameof(CramOptions.Userfaultfd), o => o.Userfaultfd = (UserfaultfdMode)9 },
        { nameof(CramOptions.FaultServiceSpin), o => o.FaultServiceSpin = TimeSpan.FromMicroseconds(-5) },
        { nameof(CramOptions.ThrottleMax), o => o.ThrottleMax = TimeSpan.FromSeconds(2) },
        { nameof(CramOptions.FaultAroundPages), o => o.FaultAroundPages = 0 },
        { nameof(CramOptions.FaultAroundPages), o => o.FaultAroundPages = 65 },
        { nameof(CramOptions.NativeLibraryPath), o => o.NativeLibraryPath = "/nonexistent/libCramNative.so" },
        { nameof(CramOptions.BackingFile), o => o.BackingFile = " " },
        { nameof(CramOptions.CompressedPoolLimitBytes), o => o.BackingFile = "/tmp/x.swap" }, // writeback would never start
        { nameof(CramOptions.BackingFileLimitBytes), o => o.BackingFileLimitBytes = 4096 },
        { nameof(CramOptions.PoolArenaBytes), o => { o.MemoryLimitBytes = 64L << 20; o.LockPoolMemory = true; o.PoolArenaBytes = 1L << 30; } }, // locked at Create: over the limit alone
        { nameof(CramOptions.WritebackHighWatermark), o => o.WritebackHighWatermark = 1.5 },
        { nameof(CramOptions.WritebackHighWatermark), o => o.WritebackHighWatermark = double.NaN },
        { nameof(CramOptions.WritebackLowWatermark), o => o.WritebackLowWatermark = 0.95 },
        { nameof(CramOptions.WritebackBytesPerSecond), o => o.WritebackBytesPerSecond = -1 },
    };

    [Trait("Category", TestCategory.Unit)]
    [Theory]
    [MemberData(nameof(BadOptions))]
    public void BadOption_ThrowsArgumentExceptionNamingIt(string field, Action<CramOptions> spoil)
    {
        var options = new CramOptions();
        spoil(options);
        var e = Assert.Throws<ArgumentException>(() => CramEngine.Create(options));
        Assert.Equal(field, e.ParamName);
        Assert.Contains(field, e.Message);
    }

    [Trait("Category", TestCategory.Unit)]
    [Fact]
    public void UnavailableMessage_NamesCauseAndFix()
    {
        var e = CramUnavailableException.FromErrno(Errno.EPERM, UserfaultfdMode.Auto);
        Assert.Contains("vm.unprivileged_userfaultfd=1", e.Message);
        Assert.Contains("seccomp", e.Message);
        Assert.Contains("CONFIG_USERFAULTFD", CramUnavailableException.FromErrno(Errno.ENOSYS, UserfaultfdMode.Syscall).Message);
        Assert.Contains("5.19", CramUnavailableException.FromErrno(Errno.EPROTONOSUPPORT, UserfaultfdMode.Device).Message);
    }
}
