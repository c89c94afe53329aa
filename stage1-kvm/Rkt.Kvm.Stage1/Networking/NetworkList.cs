namespace Rkt.Kvm.Stage1.Networking;

/// <summary>One entry of <c>--net</c>: a network name and the CNI_ARGS given with it (<c>name:K=V;K2=V2</c>).</summary>
public sealed record NetworkRequest(string Name, string Args);

/// <summary>
/// rkt's <c>--net</c> list as stage1 receives it: <c>default</c> (also when absent), <c>none</c>
/// (loopback only), <c>all</c> (every configured network), or a comma list of names, each with
/// optional CNI args after a colon. <c>host</c> is refused: a pod is a VM and cannot share the
/// host's network namespace.
/// </summary>
public sealed record NetworkList(IReadOnlyList<NetworkRequest> Requests)
{
    public static readonly NetworkList Default = new([new NetworkRequest("default", "")]);

    public bool None => Requests.Count == 1 && Requests[0].Name == "none";
    public bool All => Requests.Any(r => r.Name == "all");
    public bool Wants(string name) => All || Requests.Any(r => r.Name == name);
    public string ArgsOf(string name) => Requests.FirstOrDefault(r => r.Name == name)?.Args ?? "";
    /// <summary>The names asked for by name (not "all"), in order.</summary>
    public IEnumerable<string> Named => Requests.Select(r => r.Name).Where(n => n != "all");

    /// <summary>The text stage0 passes as <c>--net=</c>.</summary>
    public override string ToString() => string.Join(",", Requests.Select(r => r.Args.Length == 0 ? r.Name : $"{r.Name}:{r.Args}"));

    public static NetworkList Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return Default;
        var requests = new List<NetworkRequest>();
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = item.Split(':', 2);
            string name = parts[0], args = parts.Length > 1 ? parts[1] : "";
            if (name == "host")
                throw new Stage1Exception("--net=host is not supported by stage1-kvm: a pod is a virtual machine and cannot share the host's network namespace");
            if (!Manifests.AcName.IsValidName(name))
                throw new Stage1Exception($"--net={item}: \"{name}\" is not a valid network name");
            if (requests.Any(r => r.Name == name)) throw new Stage1Exception($"--net: network {name} is given twice");
            requests.Add(new NetworkRequest(name, args));
        }
        if (requests.Count == 0) return Default;
        if (requests.Any(r => r.Name == "none") && requests.Count > 1)
            throw new Stage1Exception("--net=none cannot be combined with other networks");
        return new NetworkList(requests);
    }
}
