using System.Security.Cryptography;
using Rkt.Kvm.Images.Formats;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// Streams one blob from the registry into a file of the store's scratch area (through
/// <see cref="BodyCopier"/>: exactly as long as its descriptor, hashed as it streams); a wrong
/// digest fails.
/// </summary>
internal sealed class BlobDownloader(RegistryHttp http)
{
    public Task Download(Digest digest, long size, string dest, string what, Action<int>? progress, CancellationToken ct) =>
        http.Retry(what, async ct =>
        {
            var url = await http.Url($"blobs/{digest}", ct);
            using var response = await http.Get(url, null, what, ct);
            if (response.Content.Headers.ContentLength is { } length && length != size)
                throw new ImageException($"{what}: the registry sends {length} bytes, its manifest says {size}");
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await using var file = new FileStream(dest, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
            using var hash = IncrementalHash.CreateHash(digest.HashName);
            await BodyCopier.Copy(body, file, hash, size, size, what, http.Options, progress, ct);
            var hex = Convert.ToHexStringLower(hash.GetCurrentHash());
            if (hex != digest.Hex) throw new ImageException($"{what} does not match its digest (got {digest.Algorithm}:{hex})");
            file.Flush(flushToDisk: true); // the store takes this file as it is (no copy to fsync later)
            return true;
        }, ct);
}
