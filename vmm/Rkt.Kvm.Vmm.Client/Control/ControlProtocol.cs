using System.Text.Json.Serialization;

namespace Rkt.Kvm.Vmm.Client.Control;

// The VMM control socket protocol (docs/CONTROL.md), one copy for both ends: the VMM serves it
// (vmm/Rkt.Kvm.Vmm/Control), VmmControlClient speaks it: newline-delimited JSON on a Unix socket,
// one request object per line, one reply object per line, in order.
//   {"op":"add-export","name":"data","path":"/srv/data","readOnly":true}
//   {"op":"remove-export","name":"data"}        -> {"ok":true,"closedFds":3}
//   {"op":"list-exports"}                        -> {"ok":true,"exports":[{"name":..,"path":..,"readOnly":..,"fids":..}]}
//   {"op":"status"}                              -> {"ok":true,"state":"running","uptimeSeconds":12.5,"exports":[..],"fids":4}
//   {"op":"snapshot","path":"/dir/vm.snapshot"}  -> {"ok":true,"snapshot":{"path":..,"memoryBytes":..,"milliseconds":..}}; the VM goes on
//   {"op":"stop"}                                -> {"ok":true,"state":"stopping"}, then the VM ends and the VMM exits 0
// Failures: {"ok":false,"error":"one sentence"}.
// "fd":true on add-export or snapshot: the request's line carries an open descriptor (SCM_RIGHTS,
// ScmRights): the export's directory, or the file the snapshot is written into. The path then only
// names it. A VMM in its own empty root can only work this way (docs/THREAT-MODEL.md).

/// <summary>One request line. Unknown properties are refused, so a typo is an error, not a silent default.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed class ControlRequest
{
    public string? Op { get; set; }
    public string? Name { get; set; }
    public string? Path { get; set; }
    public bool? ReadOnly { get; set; }
    /// <summary>An open descriptor came with this line (SCM_RIGHTS): the export's directory or the snapshot's file.</summary>
    public bool? Fd { get; set; }
}

public sealed class ControlSnapshot
{
    public required string Path { get; init; }
    /// <summary>Guest RAM written (the non-zero pages).</summary>
    public long MemoryBytes { get; init; }
    /// <summary>From the pause request to the file on disk.</summary>
    public double Milliseconds { get; init; }
}

public sealed class ControlExport
{
    public required string Name { get; init; }
    public required string Path { get; init; }
    public bool ReadOnly { get; init; }
    public int Fids { get; init; }
}

/// <summary>One reply line; fields that do not apply are left out.</summary>
public sealed class ControlReply
{
    public bool Ok { get; init; }
    public string? Error { get; init; }
    public string? State { get; init; }
    public double? UptimeSeconds { get; init; }
    public ControlExport? Export { get; init; }
    public List<ControlExport>? Exports { get; init; }
    public int? Fids { get; init; }
    public int? ClosedFds { get; init; }
    public ControlSnapshot? Snapshot { get; init; }

    public static ControlReply Fail(string error) => new() { Ok = false, Error = error };
}

/// <summary>Source-generated serializers: the VMM is NativeAOT, reflection-based JSON is not available there.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlReply))]
public sealed partial class ControlJsonContext : JsonSerializerContext
{
    /// <summary>Replies keep quotes and apostrophes readable ('x', not \u0027x\u0027): they go to programs and logs, never into HTML.</summary>
    public static ControlJsonContext Wire { get; } = new(new System.Text.Json.JsonSerializerOptions
    {
        PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
