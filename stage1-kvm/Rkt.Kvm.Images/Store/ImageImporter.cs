using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text.Json;
using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Compression;
using Rkt.Kvm.Images.Confinement;
using Rkt.Kvm.Images.Formats;
using Rkt.Kvm.Images.Formats.Appc;
using Rkt.Kvm.Images.Formats.Docker;
using Rkt.Kvm.Images.Formats.Oci;
using Rkt.Kvm.Images.IO;
using Serilog;

namespace Rkt.Kvm.Images.Store;

/// <summary>
/// Imports an ACI, an OCI image layout (directory or tar) or a docker-archive into the store.
/// The format is told from content. Every archive is read once, streaming: its bytes are
/// hashed (image ID, layer digests and diff_ids), copied into the store's scratch area and
/// checked entry by entry by the same <see cref="TarApplier"/> that renders, writing nothing.
/// Anything refused leaves the store as it was.
/// </summary>
public sealed class ImageImporter(ImageStore store, IImportProgress? progress = null)
{
    // Resolved per use, not cached: the CLI configures Serilog after these types may be loaded.
    private static ILogger Log => Serilog.Log.ForContext<ImageImporter>();
    private readonly IImportProgress _progress = progress ?? NoProgress.Instance;

    public ImageRecord Import(string source, ImportOptions options)
    {
        if (source.Contains("://", StringComparison.Ordinal) || source.StartsWith("docker:", StringComparison.Ordinal))
            throw new ImageException($"{source}: only local files and directories can be imported (no network fetches)");
        if (!Directory.Exists(source) && !File.Exists(source)) throw new ImageException($"{source}: no such file or directory");
        if (File.Exists(source) && IsAci(source))
        {
            using var prepared = PrepareAci(source, options);
            return prepared.Commit();
        }
        using var tmp = TempArea.Create(store.TmpDir, "import-");
        if (Directory.Exists(source)) return ImportLayered(source, source, tmp, options);
        if (options.CheckAciManifest is not null) throw new ImageException($"{source} is not an ACI (its first entry is neither manifest nor rootfs/)");
        var unpacked = Path.Join(tmp.Path, "source");
        UnpackPlain(source, unpacked, options.Policy);
        return ImportLayered(SingleTopDirectory(unpacked), source, tmp, options);
    }

    /// <summary>An ACI is a tar whose first entry is its manifest or its rootfs.</summary>
    public static bool IsAci(string file)
    {
        var first = Entries(file).FirstOrDefault() ?? throw new ImageException($"{file} is an empty archive");
        var name = first.Name.StartsWith("./", StringComparison.Ordinal) ? first.Name[2..] : first.Name;
        return name is "manifest" or "rootfs" || name.StartsWith("rootfs/", StringComparison.Ordinal);
    }

    /// <summary>
    /// An ACI's manifest, read before anything else is checked, as rkt's validator reads it: the
    /// name it gives picks the keys its signature is checked with (the import checks the rest,
    /// and that the manifest is the same).
    /// </summary>
    public static ManifestSummary ReadAciManifest(string file)
    {
        const int MaxManifestBytes = 1 << 20;
        var what = $"ACI {Path.GetFileName(file)}";
        foreach (var entry in Entries(file))
        {
            if (entry.Name.TrimStart('.', '/') != "manifest") continue;
            if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || entry.Length > MaxManifestBytes)
                throw new ImageException($"{what}: its manifest is not a regular file of at most {MaxManifestBytes} bytes");
            var bytes = new byte[entry.Length];
            entry.DataStream?.ReadExactly(bytes);
            return ManifestSummary.Parse(bytes, what);
        }
        throw new ImageException($"{what} has no manifest");
    }

    /// <summary>The entries of a (compressed) tar, skipping a leading "./" (tar -C dir .) and PAX global headers.</summary>
    private static IEnumerable<TarEntry> Entries(string file)
    {
        using var raw = File.OpenRead(file);
        using var plain = Decompression.Open(raw, file, out _);
        using var reader = new TarReader(plain);
        while (true)
        {
            TarEntry? entry;
            try { entry = reader.GetNextEntry(copyData: false); }
            catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException or ArgumentException or InvalidOperationException)
            {
                throw new ImageException($"{file} is not an image: not a (compressed) tar archive nor a directory", e);
            }
            if (entry is null) yield break;
            if (entry.EntryType == TarEntryType.GlobalExtendedAttributes || entry.Name.Trim('.', '/').Length == 0) continue;
            yield return entry;
        }
    }

    /// <summary>
    /// Checks an ACI and copies it into a scratch area of the store, ready to commit: what a fetch
    /// with dependencies does with every image before it commits any, so that a dependency that
    /// fails leaves the store as it was. The caller commits or disposes it.
    /// </summary>
    internal PreparedImport PrepareAci(string file, ImportOptions options)
    {
        if (options.Name is not null) throw new ImageException("--name applies to OCI and docker images; an ACI's manifest names it");
        var tmp = TempArea.Create(store.TmpDir, "import-");
        try { return PrepareAci(file, tmp, options); }
        catch
        {
            tmp.Dispose();
            throw;
        }
    }

    private PreparedImport PrepareAci(string file, TempArea tmp, ImportOptions options)
    {
        var what = $"ACI {Path.GetFileName(file)}";
        var blobTmp = Path.Join(tmp.Path, "aci.tar");
        var applier = new TarApplier(NullTreeWriter.Instance, options.Policy);
        string hex;
        using (var raw = File.OpenRead(file))
        using (var blob = new FileStream(blobTmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
        {
            _progress.Step($"importing {Path.GetFileName(file)}", SizeOf(raw));
            using var counted = new InspectingStream(raw, what, progress: n => _progress.Advance(n));
            using var plain = new InspectingStream(new ReadAheadStream(Decompression.Open(counted, what, out _)), what, HashAlgorithmName.SHA512,
                tee: blob, limit: options.Policy.MaxBytes);
            applier.Apply(plain, ArchiveLayout.Aci, 0, what);
            plain.Drain(); // the ID covers the whole tar, padding included
            applier.Complete();
            hex = plain.HexDigest();
            blob.Flush(flushToDisk: true);
        }
        var manifest = applier.AciManifest ?? throw new ImageException($"{what} has no manifest");
        if (!applier.SawAciRootfs) throw new ImageException($"{what} has no rootfs directory");
        var summary = ManifestSummary.Parse(manifest, what);
        options.CheckAciManifest?.Invoke(summary);
        var now = DateTimeOffset.UtcNow;
        var record = new ImageRecord
        {
            Id = "sha512-" + hex, Name = summary.Name, Labels = new(summary.Labels), Format = "aci",
            ImportTime = now, LastUsed = now, Blobs = ["sha512:" + hex], AllowDevices = options.Policy.AllowDevices,
            Remote = options.Remote, Size = new FileInfo(blobTmp).Length,
        };
        return new PreparedImport(store, tmp, record, summary, [("sha512:" + hex, blobTmp)], manifest);
    }

    private ImageRecord ImportLayered(string dir, string source, TempArea tmp, ImportOptions options)
    {
        LayeredImage image = OciLayoutReader.IsLayout(dir) ? OciLayoutReader.Read(dir, options.Reference)
            : DockerArchiveReader.IsArchive(dir) ? DockerArchiveReader.Read(dir, options.Reference)
            : throw new ImageException($"{source} is not an image: neither an ACI, an OCI image layout nor a docker archive");
        var fallbackName = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(source));
        return ImportImage(image, source, fallbackName, tmp, options);
    }

    /// <summary>
    /// Imports an image a registry fetch resolved: its layers were downloaded (digest and size
    /// checked) into <paramref name="tmp"/> or linked there from the store, and go through the same
    /// checks as a local OCI layout's, so a registry cannot put into the store what a file could not.
    /// </summary>
    internal ImageRecord ImportFetched(LayeredImage image, string remote, string remoteDigest, TempArea tmp, ImportOptions options) =>
        ImportImage(image, remote, remote, tmp, options with { Remote = remote, RemoteDigest = remoteDigest, TakeLayerFiles = true });

    private ImageRecord ImportImage(LayeredImage image, string source, string fallbackName, TempArea tmp, ImportOptions options)
    {

        var applier = new TarApplier(NullTreeWriter.Instance, options.Policy);
        var blobs = new List<(string Key, string TmpPath)>();
        long budget = options.Policy.MaxBytes;
        for (int i = 0; i < image.Layers.Count; i++)
        {
            var layer = image.Layers[i];
            var what = $"layer {i + 1}/{image.Layers.Count} ({layer.BlobDigest ?? layer.DiffId})";
            options.LayerReady?.Invoke(i).GetAwaiter().GetResult();
            if (!File.Exists(layer.Path)) throw new ImageException($"{what} is missing from {source}");
            // A fetched layer already sits in this scratch area: it is checked, then moved in as it is.
            // A layer of a user's layout or archive is copied while it is checked: that file is not ours.
            var blobTmp = options.TakeLayerFiles ? layer.Path : Path.Join(tmp.Path, $"layer-{i}");
            using var raw = File.OpenRead(layer.Path);
            using var blob = options.TakeLayerFiles ? null : new FileStream(blobTmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
            var shortDigest = (layer.BlobDigest ?? layer.DiffId)?.Hex[..12];
            _progress.Step($"importing layer {i + 1}/{image.Layers.Count} {shortDigest}", SizeOf(raw));
            using var stored = new InspectingStream(raw, what, layer.BlobDigest?.HashName ?? HashAlgorithmName.SHA256, tee: blob,
                progress: n => _progress.Advance(n));
            var compression = CompressionKind.None;
            using var plain = new InspectingStream(new ReadAheadStream(Decompression.Open(stored, what, out compression)), what,
                layer.DiffId?.HashName ?? HashAlgorithmName.SHA256, limit: budget, leaveOpen: false);
            applier.Apply(plain, ArchiveLayout.Layer, i, what);
            plain.Drain();
            stored.Drain();
            budget -= plain.BytesRead;
            Verify(what, "digest", layer.BlobDigest, stored.HexDigest());
            Verify(what, "diff_id", layer.DiffId, plain.HexDigest());
            if (layer.Size is { } size && size != stored.BytesRead)
                throw new ImageException($"{what} has {stored.BytesRead} bytes, its descriptor says {size}");
            blob?.Flush(flushToDisk: true);
            var algorithm = layer.BlobDigest?.Algorithm ?? "sha256";
            blobs.Add(($"{algorithm}:{stored.HexDigest()}", blobTmp));
            Log.Debug("Checked {Layer}: {Compression}, {Stored} bytes stored, {Plain} bytes of tar", what, compression, stored.BytesRead, plain.BytesRead);
        }
        applier.Complete();

        var manifest = AppcConverter.Convert(image, options.Name, fallbackName).ToJsonBytes();
        var now = DateTimeOffset.UtcNow;
        var summary = ManifestSummary.Parse(manifest, "the converted manifest");
        var record = new ImageRecord
        {
            Id = LayeredImageId(manifest, blobs.Select(b => b.Key)), Name = summary.Name, Labels = new(summary.Labels),
            Format = image.Format, ImportTime = now, LastUsed = now, Blobs = blobs.Select(b => b.Key).ToList(),
            AllowDevices = options.Policy.AllowDevices, Remote = options.Remote, RemoteDigest = options.RemoteDigest,
        };
        return store.Commit(record, blobs, manifest);
    }

    /// <summary>For progress only: a pipe or FIFO has no length.</summary>
    private static long SizeOf(Stream raw) => raw.CanSeek ? raw.Length : 0;

    /// <summary>An OCI/docker image has no tar of its own to hash; its ID is the SHA-512 of
    /// what defines it here: our manifest and its layers in order.</summary>
    private static string LayeredImageId(byte[] manifest, IEnumerable<string> layerKeys)
    {
        var doc = JsonSerializer.SerializeToUtf8Bytes(new { manifest = Convert.ToBase64String(manifest), layers = layerKeys.ToArray() });
        return "sha512-" + Convert.ToHexStringLower(SHA512.HashData(doc));
    }

    private static void Verify(string what, string kind, Digest? expected, string actualHex)
    {
        if (expected is not null && expected.Hex != actualHex)
            throw new ImageException($"{what} does not match its {kind} {expected} (got {expected.Algorithm}:{actualHex})");
    }

    /// <summary>Unpacks a tarred OCI layout or docker archive into scratch space, with the same
    /// entry checks as a layer (symlinks inside it, as docker save writes, stay inside).</summary>
    private void UnpackPlain(string file, string dest, ExtractionPolicy policy)
    {
        Directory.CreateDirectory(dest);
        _progress.Step($"unpacking {Path.GetFileName(file)}", new FileInfo(file).Length);
        var plan = new ExtractionPlan
        {
            Archives = [new PlannedArchive(ArchiveLayout.Plain, 0, $"archive {Path.GetFileName(file)}")],
            MaxBytes = policy.MaxBytes, MaxEntries = policy.MaxEntries, LimitBytes = true,
        };
        PlannedExtraction.Run(store.Sandbox, plan, dest, [file], n => _progress.Advance(n));
    }

    /// <summary>"tar -cf x.tar layout/" puts everything under one directory: look inside it.</summary>
    private static string SingleTopDirectory(string dir)
    {
        if (OciLayoutReader.IsLayout(dir) || DockerArchiveReader.IsArchive(dir)) return dir;
        var entries = Directory.GetFileSystemEntries(dir);
        return entries.Length == 1 && Directory.Exists(entries[0]) && !new FileInfo(entries[0]).Attributes.HasFlag(FileAttributes.ReparsePoint)
            ? entries[0] : dir;
    }
}
