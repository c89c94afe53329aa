using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// Streams a response body into a file, hashing and counting as it goes, for every download
/// that can be large (a registry blob, an ACI): a body longer than announced is cut off at the
/// first byte too many, a shorter one fails, and memory stays one buffer. A body that sends
/// nothing for <see cref="RegistryOptions.IdleTimeout"/> is dropped (and retried); one that
/// trickles below <see cref="RegistryOptions.MinBytesPerSecond"/> is given up on.
/// </summary>
internal static class BodyCopier
{
    private const int BufferSize = 1 << 16;

    /// <param name="size">the exact length the file must have (a blob's descriptor), or null when
    /// only <paramref name="limit"/> bounds it.</param>
    /// <param name="offset">the bytes the file holds already (a download continued with a range):
    /// the body is the rest, and the size, limit and rate count them.</param>
    /// <returns>the length of the file.</returns>
    public static async Task<long> Copy(Stream body, Stream file, IncrementalHash? hash, long? size, long limit, string what,
        RegistryOptions options, Action<int>? progress, CancellationToken ct, long offset = 0)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        var clock = Stopwatch.StartNew();
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var most = size ?? limit;
        long total = offset;
        try
        {
            while (true)
            {
                idle.CancelAfter(options.IdleTimeout);
                int n;
                // One byte more than allowed, to notice an over-long body without reading on.
                var room = (int)Math.Min(BufferSize, most - total + 1);
                try { n = await body.ReadAsync(buffer.AsMemory(0, room), idle.Token); }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new TransientRegistryException($"{what}: nothing received for {options.IdleTimeout.TotalSeconds:0.#} s after {Received(total, size)}");
                }
                if (n == 0) break;
                total += n;
                if (total > most)
                    throw new ImageException(size is { } s ? $"{what} is longer than the {s} bytes announced for it" : $"{what} is larger than {limit} bytes (--max-size)");
                hash?.AppendData(buffer, 0, n);
                await file.WriteAsync(buffer.AsMemory(0, n), ct);
                progress?.Invoke(n);
                // The slowest acceptable transfer: a grace period, then the minimum rate over the whole
                // body (over what arrived so far when its length is not known).
                if (clock.Elapsed > options.SlowGrace + TimeSpan.FromSeconds((double)((size ?? total) - offset) / options.MinBytesPerSecond))
                    throw new ImageException($"{what} arrives too slowly: {Received(total, size)} in {clock.Elapsed.TotalSeconds:0} s");
            }
        }
        catch (HttpIOException e)
        {
            throw new TransientRegistryException($"{what}: the connection ended after {Received(total, size)} ({e.Message})");
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
        if (total < size) throw new TransientRegistryException($"{what}: the connection ended after {Received(total, size)}");
        return total;
    }

    private static string Received(long total, long? size) => size is { } s ? $"{total} of {s} bytes" : $"{total} bytes";
}
