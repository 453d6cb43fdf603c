using System.Buffers;

namespace CramCore.Internals;

/// <summary>
/// The asynchronous halves of <see cref="CramRegion.ReadFromAsync"/> and
/// <see cref="CramRegion.WriteToAsync"/> (an async method cannot live in the region's unsafe
/// context). Arguments are checked by the caller, which has entered the region's in-flight gate:
/// each exits it when the copy is done (or failed), so a racing Dispose waits for the copy and
/// never unmaps memory under it. With <c>bounce</c>, data passes through a pooled buffer and
/// reaches the region by ordinary loads and stores, so the kernel never touches a region page;
/// without, the region's memory goes to the stream as it is.
/// </summary>
internal static class RegionIo
{
    public static async ValueTask<int> ReadFromAsync(CramRegion region, RegionMapping entered, Stream stream, long byteOffset, int count, bool bounce, CancellationToken cancellationToken)
    {
        try
        {
            return await ReadFromAsync(region, stream, byteOffset, count, bounce, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            entered.Exit();
        }
    }

    public static async ValueTask WriteToAsync(CramRegion region, RegionMapping entered, Stream stream, long byteOffset, int count, bool bounce, CancellationToken cancellationToken)
    {
        try
        {
            await WriteToAsync(region, stream, byteOffset, count, bounce, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            entered.Exit();
        }
    }

    private static async ValueTask<int> ReadFromAsync(CramRegion region, Stream stream, long byteOffset, int count, bool bounce, CancellationToken cancellationToken)
    {
        int read = 0, n;
        if (!bounce)
        {
            Memory<byte> target = region.AsMemory<byte>(byteOffset, count);
            while (read < count && (n = await stream.ReadAsync(target[read..], cancellationToken).ConfigureAwait(false)) > 0)
            {
                read += n;
            }
            return read;
        }
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Min(count, CramRegion.BounceBytes));
        try
        {
            while (read < count && (n = await stream.ReadAsync(buffer.AsMemory(0, Math.Min(buffer.Length, count - read)), cancellationToken).ConfigureAwait(false)) > 0)
            {
                buffer.AsSpan(0, n).CopyTo(region.AsSpan<byte>(byteOffset + read, n));
                read += n;
            }
            return read;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static async ValueTask WriteToAsync(CramRegion region, Stream stream, long byteOffset, int count, bool bounce, CancellationToken cancellationToken)
    {
        if (!bounce)
        {
            await stream.WriteAsync(region.AsMemory<byte>(byteOffset, count), cancellationToken).ConfigureAwait(false);
            return;
        }
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Min(count, CramRegion.BounceBytes));
        try
        {
            for (int done = 0; done < count;)
            {
                int n = Math.Min(buffer.Length, count - done);
                region.AsSpan<byte>(byteOffset + done, n).CopyTo(buffer);
                await stream.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
