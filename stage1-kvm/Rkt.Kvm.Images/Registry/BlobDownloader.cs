using System.Security.Cryptography;
using Rkt.Kvm.Images.Formats;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// Streams one blob from the registry into a file of the store's scratch area (through
/// <see cref="BodyCopier"/>: exactly as long as its descriptor, hashed as it streams); a wrong
/// digest fails. A retry after a dropped connection asks for the rest only (<c>Range</c>; a blob is
/// named by its digest, so no validator is needed), hashing the part held first; a registry that
/// answers 200 sends it whole again. The digest is always of the whole file.
/// </summary>
internal sealed class BlobDownloader(RegistryHttp http)
{
    private static ILogger Log => Serilog.Log.ForContext<BlobDownloader>();

    public Task Download(Digest digest, long size, string dest, string what, Action<int>? progress, CancellationToken ct) =>
        http.Retry(what, async ct =>
        {
            var url = await http.Url($"blobs/{digest}", ct);
            var held = File.Exists(dest) ? new FileInfo(dest).Length : 0;
            var resume = held > 0 && held < size ? new ResumeFrom(held, null) : null;
            var response = await http.Get(url, null, what, ct, resume);
            var start = RangeResume.Start(response, resume);
            if (start is null)
            {
                response.Dispose();
                Log.Debug("{What}: the registry cannot send the rest after byte {Held}; starting again", what, held);
                response = await http.Get(url, null, what, ct);
                start = 0;
            }
            using var _ = response;
            var remaining = size - start.Value;
            if (response.Content.Headers.ContentLength is { } length && length != remaining)
                throw new ImageException($"{what}: the registry sends {length} bytes, its manifest says {remaining}");
            if (start > 0) Log.Debug("{What}: continuing after {Held} of {Size} bytes", what, held, size);
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await using var file = new FileStream(dest, start > 0 ? FileMode.Open : FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 16);
            using var hash = IncrementalHash.CreateHash(digest.HashName);
            if (start > 0)
            {
                file.SetLength(start.Value);
                await HashPrefix(file, hash, ct);
            }
            await BodyCopier.Copy(body, file, hash, size, size, what, http.Options, progress, ct, start.Value);
            var hex = Convert.ToHexStringLower(hash.GetCurrentHash());
            if (hex != digest.Hex) throw new ImageException($"{what} does not match its digest (got {digest.Algorithm}:{hex})");
            file.Flush(flushToDisk: true); // the store takes this file as it is (no copy to fsync later)
            return true;
        }, ct);

    /// <summary>Hashes what <paramref name="file"/> holds, leaving it positioned at its end.</summary>
    private static async Task HashPrefix(FileStream file, IncrementalHash hash, CancellationToken ct)
    {
        file.Position = 0;
        var buffer = new byte[1 << 16];
        int n;
        while ((n = await file.ReadAsync(buffer, ct)) > 0) hash.AppendData(buffer, 0, n);
    }
}
