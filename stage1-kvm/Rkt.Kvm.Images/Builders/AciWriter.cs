using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Images.Builders;

/// <summary>
/// Writes an App Container Image: a gzip'd tar holding <c>manifest</c> and <c>rootfs/</c>, the
/// layout <c>actool build</c> produces. Entries are written in sorted order with the on-disk modes,
/// owners, symlink targets and hardlinks, so the same tree gives the same bytes (apart from mtimes).
/// </summary>
public static class AciWriter
{
    /// <summary>The minimal ImageManifest for an image named <paramref name="name"/> running
    /// <paramref name="exec"/> as root, labelled linux/amd64.</summary>
    public static JsonObject Manifest(string name, IReadOnlyList<string> exec, IReadOnlyDictionary<string, string>? labels = null)
    {
        var labelArray = new JsonArray
        {
            new JsonObject { ["name"] = "os", ["value"] = "linux" },
            new JsonObject { ["name"] = "arch", ["value"] = "amd64" },
        };
        foreach (var (key, value) in labels ?? new Dictionary<string, string>())
            labelArray.Add(new JsonObject { ["name"] = key, ["value"] = value });
        return new JsonObject
        {
            ["acKind"] = "ImageManifest",
            ["acVersion"] = "0.8.11",
            ["name"] = name,
            ["labels"] = labelArray,
            ["app"] = new JsonObject
            {
                ["exec"] = new JsonArray(exec.Select(arg => (JsonNode)JsonValue.Create(arg)).ToArray()),
                ["user"] = "0",
                ["group"] = "0",
            },
        };
    }

    /// <summary>Writes <paramref name="rootfs"/> with <paramref name="manifest"/> as an ACI at
    /// <paramref name="aciPath"/> (replaced atomically).</summary>
    public static void Write(string aciPath, JsonObject manifest, string rootfs)
    {
        if (!Directory.Exists(rootfs)) throw new ImageException($"rootfs directory {rootfs} does not exist");
        var tmp = $"{aciPath}.tmp-{Environment.ProcessId}";
        try
        {
            using (var file = new FileStream(tmp, FileMode.Create, FileAccess.Write))
            using (var gzip = new GZipStream(file, CompressionLevel.Optimal))
            using (var tar = new TarWriter(gzip, TarEntryFormat.Pax))
            {
                var manifestBytes = JsonSerializer.SerializeToUtf8Bytes(manifest, new JsonSerializerOptions { WriteIndented = true });
                tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "manifest")
                {
                    Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
                    ModificationTime = DateTimeOffset.UtcNow,
                    DataStream = new MemoryStream(manifestBytes),
                });
                tar.WriteEntry(rootfs, "rootfs");
                foreach (var path in Directory.EnumerateFileSystemEntries(rootfs, "*", new EnumerationOptions
                         { RecurseSubdirectories = true, AttributesToSkip = 0 }).Order(StringComparer.Ordinal))
                {
                    // TarWriter records hardlinks only within one WriteEntry call, so a hardlinked
                    // file is stored twice; our builders make none.
                    tar.WriteEntry(path, "rootfs/" + Path.GetRelativePath(rootfs, path));
                }
            }
            File.Move(tmp, aciPath, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }
}
