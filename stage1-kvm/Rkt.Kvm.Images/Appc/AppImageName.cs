using Rkt.Kvm.Images.Formats.Appc;

namespace Rkt.Kvm.Images.Appc;

/// <summary>
/// An appc image as a user names it for discovery (appc/spec's <c>NewAppFromString</c>):
/// <c>example.com/app:v1</c> or <c>example.com/app,version=v1,channel=beta</c>; the colon is the
/// <c>version</c> label. The name and every label name are AC identifiers.
/// </summary>
public sealed record AppImageName(string Name, IReadOnlyDictionary<string, string> Labels)
{
    /// <summary>rkt's stage0.ValidOSArch for linux, the only os rkt-kvm runs.</summary>
    private static readonly string[] LinuxArches = ["amd64", "i386", "aarch64", "aarch64_be", "armv6l", "armv7l", "armv7b", "ppc64", "ppc64le", "s390x"];

    /// <summary>Parses an image argument; throws an <see cref="ImageException"/> naming what is wrong.</summary>
    public static AppImageName Parse(string text) => TryParse(text, out var app, out var why) ? app : throw new ImageException($"invalid appc image name \"{text}\": {why}");

    public static bool TryParse(string text, out AppImageName app, out string why)
    {
        app = null!;
        var labels = new SortedDictionary<string, string>(StringComparer.Ordinal);
        string? name = null;
        // As appc: every ':' starts a version label, then "k=v" pairs split on ',' (query-unescaped).
        foreach (var (part, i) in ("name=" + text.Replace(":", ",version=", StringComparison.Ordinal)).Split(',').Select((p, i) => (p, i)))
        {
            var eq = part.IndexOf('=');
            var key = Unescape(eq < 0 ? part : part[..eq]);
            var value = eq < 0 ? "" : Unescape(part[(eq + 1)..]);
            if (key is null || value is null) { why = $"\"{part}\" is not validly %-escaped"; return false; }
            if (i == 0) { name = value; continue; }
            if (key == "name" || labels.ContainsKey(key)) { why = $"label \"{key}\" is given twice"; return false; }
            if (!AcIdentifier.IsValid(key)) { why = $"label name \"{key}\" is not an AC identifier"; return false; }
            labels[key] = value;
        }
        if (name is null || !AcIdentifier.IsValid(name)) { why = $"\"{name}\" is not an AC identifier (such as example.com/app)"; return false; }
        app = new AppImageName(name, labels);
        why = "";
        return true;
    }

    private static string? Unescape(string s)
    {
        try { return Uri.UnescapeDataString(s.Replace('+', ' ')); }
        catch (UriFormatException) { return null; }
    }

    /// <summary>rkt's defaults before a name is looked up or fetched: this machine's os and arch
    /// (linux, amd64) unless given; other platforms rkt knows are refused, as rkt refuses unknown ones.</summary>
    public AppImageName WithPlatformDefaults()
    {
        var labels = new SortedDictionary<string, string>((IDictionary<string, string>)Labels, StringComparer.Ordinal);
        labels.TryAdd("os", "linux");
        labels.TryAdd("arch", "amd64");
        if (labels["os"] != "linux" || !LinuxArches.Contains(labels["arch"]))
            throw new ImageException($"image {Name}: os \"{labels["os"]}\" with arch \"{labels["arch"]}\" is not a platform rkt knows (linux with {string.Join(", ", LinuxArches)})");
        return this with { Labels = labels };
    }

    /// <summary>"example.com/app,arch=amd64,os=linux,version=v1": how the store remembers what a
    /// name fetch asked for.</summary>
    public string Canonical => string.Concat([Name, .. Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $",{l.Key}={l.Value}")]);

    /// <summary>Whether an image's labels carry every label asked for, with the same value.</summary>
    public bool MatchesLabels(IReadOnlyDictionary<string, string> labels) =>
        Labels.All(l => labels.TryGetValue(l.Key, out var v) && v == l.Value);

    /// <summary>As a user would type it: "example.com/app:v1,channel=beta" (os and arch left out
    /// when they are this machine's defaults).</summary>
    public override string ToString() => string.Concat([
        Name, Labels.TryGetValue("version", out var v) ? $":{v}" : "",
        .. Labels.Where(l => l.Key != "version" && (l.Key, l.Value) is not (("os", "linux") or ("arch", "amd64"))).Select(l => $",{l.Key}={l.Value}")]);
}
