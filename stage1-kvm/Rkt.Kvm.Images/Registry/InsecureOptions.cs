namespace Rkt.Kvm.Images.Registry;

/// <summary>rkt's <c>--insecure-options</c>: the security checks the user turned off, by rkt's names.</summary>
[Flags]
public enum InsecureOptions
{
    None = 0,
    /// <summary>Image signatures are not verified (docker images cannot be: rkt insists on this option).</summary>
    Image = 1,
    /// <summary>Any TLS certificate and host name is accepted.</summary>
    Tls = 2,
    /// <summary>Plain-HTTP registries are allowed (credentials then travel in clear).</summary>
    Http = 4,
    /// <summary>Accepted for rkt compatibility; they concern running, not fetching.</summary>
    OnDisk = 8, Pubkey = 16, Capabilities = 32, Paths = 64, Seccomp = 128,
    AllFetch = Image | Tls | Http | Pubkey,
    AllRun = OnDisk | Capabilities | Paths | Seccomp,
    All = AllFetch | AllRun,
}

public static class InsecureOptionsParser
{
    private static readonly Dictionary<string, InsecureOptions> Names = new(StringComparer.OrdinalIgnoreCase)
    {
        ["none"] = InsecureOptions.None, ["image"] = InsecureOptions.Image, ["tls"] = InsecureOptions.Tls,
        ["http"] = InsecureOptions.Http, ["ondisk"] = InsecureOptions.OnDisk, ["pubkey"] = InsecureOptions.Pubkey,
        ["capabilities"] = InsecureOptions.Capabilities, ["paths"] = InsecureOptions.Paths, ["seccomp"] = InsecureOptions.Seccomp,
        ["all-fetch"] = InsecureOptions.AllFetch, ["all-run"] = InsecureOptions.AllRun, ["all"] = InsecureOptions.All,
    };

    /// <summary>A comma-separated list, as rkt takes it ("image,http").</summary>
    public static InsecureOptions Parse(string? text)
    {
        var result = InsecureOptions.None;
        if (string.IsNullOrEmpty(text)) return result;
        foreach (var name in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            result |= Names.TryGetValue(name, out var flag) ? flag
                : throw new ImageException($"--insecure-options: unknown option \"{name}\" (one of {string.Join(", ", Names.Keys)})");
        return result;
    }
}

/// <summary>rkt's <c>--pull-policy</c>: never (the store only), new (fetch what the store lacks),
/// update (always ask the registry; a layer already in the store is still not downloaded).</summary>
public enum PullPolicy { Never, New, Update }

public static class PullPolicyParser
{
    public static PullPolicy Parse(string? text, PullPolicy fallback) => text switch
    {
        null or "" => fallback,
        "never" => PullPolicy.Never,
        "new" => PullPolicy.New,
        "update" => PullPolicy.Update,
        _ => throw new ImageException($"--pull-policy={text}: the policy is one of never, new, update"),
    };
}
