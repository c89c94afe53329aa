using System.Text.Json;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>One appc isolator: a name and its JSON value, kept as given (unknown ones too).</summary>
public sealed record Isolator(string Name, JsonNode? Value);

/// <summary>
/// An isolator list with appc's rule that the last one of a name wins, and typed reads of the
/// ones a VM pod honours: memory and CPU limits, capability sets, no-new-privileges.
/// </summary>
public sealed class Isolators(IReadOnlyList<Isolator> all)
{
    public const string Memory = "resource/memory", Cpu = "resource/cpu",
        CapabilitiesRetain = "os/linux/capabilities-retain-set", CapabilitiesRemove = "os/linux/capabilities-remove-set",
        NoNewPrivilegesName = "os/linux/no-new-privileges";

    public static readonly Isolators None = new([]);

    public IReadOnlyList<Isolator> All { get; } = all;

    public Isolator? Last(string name) => All.LastOrDefault(i => i.Name == name);

    public static Isolators Parse(JsonObject owner, string where)
    {
        var list = new List<Isolator>();
        foreach (var (item, at) in JsonRead.Array(owner, "isolators", where))
        {
            var obj = JsonRead.Object(item, at);
            list.Add(new Isolator(JsonRead.RequiredString(obj, "name", at), obj["value"]?.DeepClone()));
        }
        var isolators = new Isolators(list);
        // Read the typed ones now, so a malformed value is an error at load time, not mid-run.
        _ = isolators.MemoryLimitBytes;
        _ = isolators.CpuLimit;
        _ = isolators.RetainCapabilities;
        _ = isolators.RemoveCapabilities;
        _ = isolators.NoNewPrivileges;
        return isolators;
    }

    /// <summary><c>resource/memory</c> limit in bytes (request ignored: a VM's RAM is a limit).</summary>
    public long? MemoryLimitBytes => ResourceLimit(Memory) is { } v
        ? v <= long.MaxValue ? (long)Math.Ceiling(v) : throw new Stage1Exception($"isolator {Memory}: a limit of {v} bytes is too large")
        : null;

    /// <summary><c>resource/cpu</c> limit in CPUs (500m = 0.5).</summary>
    public decimal? CpuLimit => ResourceLimit(Cpu);

    public IReadOnlyList<string>? RetainCapabilities => CapabilitySet(CapabilitiesRetain);

    public IReadOnlyList<string>? RemoveCapabilities => CapabilitySet(CapabilitiesRemove);

    public bool NoNewPrivileges => Last(NoNewPrivilegesName)?.Value is { } v &&
        (v.GetValueKind() == JsonValueKind.True ? true : v.GetValueKind() == JsonValueKind.False ? false
            : throw new Stage1Exception($"isolator {NoNewPrivilegesName}: the value must be true or false"));

    private decimal? ResourceLimit(string name)
    {
        if (Last(name) is not { } isolator) return null;
        if (isolator.Value is not JsonObject value) throw new Stage1Exception($"isolator {name}: the value must be an object like {{\"limit\": \"1Gi\"}}");
        var limit = value["limit"];
        if (limit is null) return null;
        string text = limit.GetValueKind() switch
        {
            JsonValueKind.String => limit.GetValue<string>(),
            JsonValueKind.Number => limit.ToJsonString(),
            _ => throw new Stage1Exception($"isolator {name}: limit must be a quantity string"),
        };
        var quantity = Quantity.Parse(text, $"isolator {name} limit");
        return quantity > 0 ? quantity : throw new Stage1Exception($"isolator {name}: limit must be positive, not \"{text}\"");
    }

    private IReadOnlyList<string>? CapabilitySet(string name)
    {
        if (Last(name) is not { } isolator) return null;
        if (isolator.Value is not JsonObject value) throw new Stage1Exception($"isolator {name}: the value must be an object like {{\"set\": [\"CAP_NET_BIND_SERVICE\"]}}");
        var set = JsonRead.Strings(value, "set", $"isolator {name}");
        foreach (var cap in set)
            if (!cap.StartsWith("CAP_", StringComparison.Ordinal) || cap.Length > 32 || cap.Skip(4).Any(c => c is not (>= 'A' and <= 'Z' or '_')))
                throw new Stage1Exception($"isolator {name}: \"{cap}\" is not a capability name like CAP_NET_ADMIN");
        return set;
    }
}
