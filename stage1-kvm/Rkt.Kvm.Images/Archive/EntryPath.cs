using System.Text;

namespace Rkt.Kvm.Images.Archive;

/// <summary>
/// Turns a tar entry name into a clean path relative to the extraction root ("" is the root),
/// or refuses it. Names are never "fixed up" beyond dropping "." and empty components: an
/// absolute name or a ".." is an attack or a broken tool, and either way the archive is refused.
/// </summary>
public static class EntryPath
{
    /// <summary>Linux's PATH_MAX (including the NUL) and NAME_MAX.</summary>
    public const int MaxPathBytes = 4095, MaxComponentBytes = 255;

    public static string Normalize(string name, string entryForErrors)
    {
        CheckText(name, entryForErrors, "name");
        // umoci writes the root itself as "/": that one names the root, harmlessly. Any other
        // absolute name is refused, not re-rooted: a tool that meant well does not write one.
        if (name.StartsWith('/') && !name.Split('/').All(p => p is "" or "."))
            throw new UnsafeEntryException(entryForErrors, "absolute path");
        var parts = new List<string>();
        foreach (var part in name.Split('/'))
        {
            if (part.Length == 0 || part == ".") continue;
            if (part == "..") throw new UnsafeEntryException(entryForErrors, "path contains a \"..\" component");
            if (Encoding.UTF8.GetByteCount(part) > MaxComponentBytes)
                throw new UnsafeEntryException(entryForErrors, $"a path component is longer than {MaxComponentBytes} bytes");
            parts.Add(part);
        }
        return string.Join('/', parts);
    }

    /// <summary>Refuses NULs (a C API would cut the name there) and over-long names.</summary>
    public static void CheckText(string text, string entryForErrors, string what)
    {
        if (text.Contains('\0')) throw new UnsafeEntryException(entryForErrors, $"{what} contains a NUL byte");
        if (Encoding.UTF8.GetByteCount(text) > MaxPathBytes)
            throw new UnsafeEntryException(entryForErrors, $"{what} is longer than {MaxPathBytes} bytes");
    }

    public static string Parent(string rel)
    {
        int slash = rel.LastIndexOf('/');
        return slash < 0 ? "" : rel[..slash];
    }

    public static string BaseName(string rel) => rel[(rel.LastIndexOf('/') + 1)..];

    public static string Combine(string dir, string name) => dir.Length == 0 ? name : $"{dir}/{name}";

    /// <summary>Proper ancestors of a path, outermost first, the root excluded.</summary>
    public static IEnumerable<string> Ancestors(string rel)
    {
        for (int i = rel.IndexOf('/'); i >= 0; i = rel.IndexOf('/', i + 1))
            yield return rel[..i];
    }
}
