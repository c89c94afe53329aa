using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using Rkt.Kvm.Images.Formats;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// Streams one blob from the registry into a file of the store's scratch area, hashing and
/// counting while it streams: a blob longer than its descriptor is cut off at the first byte too
/// many, a shorter one or a wrong digest fails, and memory stays one buffer. A body that sends
/// nothing for <see cref="RegistryOptions.IdleTimeout"/> is dropped (and retried); one that
/// trickles below <see cref="RegistryOptions.MinBytesPerSecond"/> is given up on.
/// </summary>
internal sealed class BlobDownloader(RegistryHttp http)
{
    private const int BufferSize = 1 << 16;

    public Task Download(Digest digest, long size, string dest, string what, Action<int>? progress, CancellationToken ct) =>
        http.Retry(what, async ct =>
        {
            var url = await http.Url($"blobs/{digest}", ct);
            using var response = await http.Get(url, null, what, ct);
            if (response.Content.Headers.ContentLength is { } length && length != size)
                throw new ImageException($"{what}: the registry sends {length} bytes, its manifest says {size}");
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await using var file = new FileStream(dest, FileMode.Create, FileAccess.Write, FileShare.None, BufferSize);
            using var hash = IncrementalHash.CreateHash(digest.HashName);
            await Copy(body, file, hash, size, what, progress, ct);
            var hex = Convert.ToHexStringLower(hash.GetCurrentHash());
            if (hex != digest.Hex) throw new ImageException($"{what} does not match its digest (got {digest.Algorithm}:{hex})");
            file.Flush(flushToDisk: true); // the store takes this file as it is (no copy to fsync later)
            return true;
        }, ct);

    private async Task Copy(Stream body, Stream file, IncrementalHash hash, long size, string what, Action<int>? progress, CancellationToken ct)
    {
        var options = http.Options;
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        var clock = Stopwatch.StartNew();
        // The slowest acceptable transfer: a grace period, then the minimum rate over the whole blob.
        var deadline = options.SlowGrace + TimeSpan.FromSeconds((double)size / options.MinBytesPerSecond);
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        long total = 0;
        try
        {
            while (true)
            {
                idle.CancelAfter(options.IdleTimeout);
                int n;
                // One byte more than the descriptor allows, to notice an over-long blob without reading on.
                var room = (int)Math.Min(BufferSize, size - total + 1);
                try { n = await body.ReadAsync(buffer.AsMemory(0, room), idle.Token); }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new TransientRegistryException($"{what}: nothing received for {options.IdleTimeout.TotalSeconds:0.#} s after {total} of {size} bytes");
                }
                if (n == 0) break;
                total += n;
                if (total > size) throw new ImageException($"{what} is longer than the {size} bytes its manifest says");
                hash.AppendData(buffer, 0, n);
                await file.WriteAsync(buffer.AsMemory(0, n), ct);
                progress?.Invoke(n);
                if (clock.Elapsed > deadline)
                    throw new ImageException($"{what} arrives too slowly: {total} of {size} bytes in {clock.Elapsed.TotalSeconds:0} s");
            }
        }
        catch (HttpIOException e)
        {
            throw new TransientRegistryException($"{what}: the connection ended after {total} of {size} bytes ({e.Message})");
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
        if (total < size) throw new TransientRegistryException($"{what}: the connection ended after {total} of {size} bytes");
    }
}
