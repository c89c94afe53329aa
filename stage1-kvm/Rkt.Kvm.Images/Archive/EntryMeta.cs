using System.Formats.Tar;

namespace Rkt.Kvm.Images.Archive;

/// <summary>The metadata an entry carries onto disk: permission bits (setuid, setgid and sticky
/// included), numeric owner, modification time and extended attributes.</summary>
public sealed record EntryMeta(UnixFileMode Mode, int Uid, int Gid, DateTimeOffset ModificationTime,
    IReadOnlyList<KeyValuePair<string, string>> Xattrs)
{
    /// <summary>PAX records of the form "SCHILY.xattr.NAME" (GNU tar, umoci, buildkit).</summary>
    private const string XattrPrefix = "SCHILY.xattr.";

    public static EntryMeta From(TarEntry entry)
    {
        IReadOnlyList<KeyValuePair<string, string>> xattrs = [];
        if (entry is PaxTarEntry pax && pax.ExtendedAttributes.Count > 0)
            xattrs = pax.ExtendedAttributes.Where(kv => kv.Key.StartsWith(XattrPrefix, StringComparison.Ordinal))
                .Select(kv => KeyValuePair.Create(kv.Key[XattrPrefix.Length..], kv.Value)).ToList();
        return new EntryMeta(entry.Mode, entry.Uid, entry.Gid, entry.ModificationTime, xattrs);
    }
}
