using CramCore.Native;

namespace CramCore;

/// <summary>
/// A compressed-RAM device the engine's CRAM node places pages on (<see cref="CramOptions.CramDevice"/>):
/// a frame address space larger than its physical capacity, which holds only while the data
/// compresses. The engine decides what goes there (allocation control) and maps placed pages
/// read-only (write control); the device is told which frames are free again.
/// </summary>
public interface ICramDevice
{
    /// <summary>Physical bytes the device has; read once, when the engine is created.</summary>
    long CapacityBytes { get; }

    /// <summary>Frames (4 KiB each) the device exposes; a power of two of at least 64; read once, when the engine is created.</summary>
    long FrameCount { get; }

    /// <summary>
    /// The frames [<paramref name="firstFrame"/>, +<paramref name="count"/>) hold nothing any more;
    /// the device may release what backs them. Called on the engine's maintenance path, holding its
    /// maintenance lock: keep it short, and do not call the engine or its regions from it (such a
    /// call throws <see cref="InvalidOperationException"/>). An exception it throws is caught,
    /// counted (<see cref="CramStats.CallbackFailures"/>) and reported once
    /// (<see cref="CramTierEventKind.CallbackFailed"/>); after 8 failing calls in a row the device
    /// is taken out of service (<see cref="CramTierEventKind.CramDeviceOutOfService"/>).
    /// </summary>
    void Trim(long firstFrame, long count);
}

/// <summary>
/// The device's control plane for write control: how many pages the host may have writable on the
/// device now (<see cref="CramOptions.WriteBudgetSource"/>). It may be slow or stop answering: the
/// engine asks it on its own thread and, when no answer arrives within
/// <see cref="CramOptions.ControlPlaneLease"/>, spends only the budget it has.
/// </summary>
public interface IWriteBudgetSource
{
    /// <summary>The writable budget in pages; false (or an exception, which is counted in <see cref="CramStats.CallbackFailures"/>) when the control plane cannot answer. Called on the engine's own thread for it, holding no lock.</summary>
    bool TryReadBudget(out long pages);
}

/// <summary>
/// An emulated compressed-RAM device: it has no memory of its own (placed pages stay where they
/// are in the region); the engine's node computes the physical usage it would see by compressing
/// the frames it holds. It counts the TRIMs it receives.
/// </summary>
public sealed class EmulatedCramDevice : ICramDevice
{
    private long _trimmed, _trims;

    /// <summary>An emulated device of <paramref name="capacityBytes"/> exposing <paramref name="frameCount"/> frames.</summary>
    /// <param name="capacityBytes">Physical capacity (at least 256 KiB).</param>
    /// <param name="frameCount">Frames exposed (a power of two ≥ 64); default: four times the capacity in pages, rounded up.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacityBytes"/> is below 256 KiB, or <paramref name="frameCount"/> is not a power of two from 64 to 2^30.</exception>
    public EmulatedCramDevice(long capacityBytes, long frameCount = 0)
    {
        if (capacityBytes < 256 << 10)
        {
            throw new ArgumentOutOfRangeException(nameof(capacityBytes), capacityBytes, "A device needs at least 256 KiB of capacity.");
        }
        frameCount = frameCount == 0 ? (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)(capacityBytes / SharedLayout.PageSize * 4)) : frameCount;
        if (frameCount < 64 || (frameCount & (frameCount - 1)) != 0 || frameCount > 1L << 30)
        {
            throw new ArgumentOutOfRangeException(nameof(frameCount), frameCount, "Frames must be a power of two from 64 to 2^30.");
        }
        CapacityBytes = capacityBytes;
        FrameCount = frameCount;
    }

    /// <inheritdoc/>
    public long CapacityBytes { get; }

    /// <inheritdoc/>
    public long FrameCount { get; }

    /// <summary>Frames trimmed so far.</summary>
    public long TrimmedFrames => Interlocked.Read(ref _trimmed);

    /// <summary>Trim calls so far (frames are trimmed in batches).</summary>
    public long Trims => Interlocked.Read(ref _trims);

    /// <inheritdoc/>
    public void Trim(long firstFrame, long count)
    {
        Interlocked.Add(ref _trimmed, count);
        Interlocked.Increment(ref _trims);
    }
}
