using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Rkt.Kvm.Stage1.Control;

/// <summary>A reply of the VMM control socket (docs/CONTROL.md); fields that do not apply are null.</summary>
public sealed class VmmControlReply
{
    public bool Ok { get; set; }
    public string? Error { get; set; }
    public string? State { get; set; }
    public int? ClosedFds { get; set; }
    public List<VmmExport>? Exports { get; set; }
}

public sealed class VmmExport
{
    public string Name { get; set; } = "";
    public string Path { get; set; } = "";
    public bool ReadOnly { get; set; }
    public int Fids { get; set; }
}

internal sealed class VmmControlRequest
{
    public required string Op { get; init; }
    public string? Name { get; init; }
    public string? Path { get; init; }
    public bool? ReadOnly { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VmmControlRequest))]
[JsonSerializable(typeof(VmmControlReply))]
internal sealed partial class ControlJson : JsonSerializerContext;

/// <summary>
/// Host side of the VMM's control socket: newline-delimited JSON, one request and one reply per
/// line. Used by stage1 to export app root filesystems and volumes to the pod's 9p device and to
/// withdraw them (the VMM closes every host fd under an export before it replies).
/// </summary>
public sealed class VmmControlClient(string socketPath)
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public VmmControlReply AddExport(string name, string path, bool readOnly) =>
        Call(new VmmControlRequest { Op = "add-export", Name = name, Path = path, ReadOnly = readOnly });

    public VmmControlReply RemoveExport(string name) => Call(new VmmControlRequest { Op = "remove-export", Name = name });

    public IReadOnlyList<VmmExport> ListExports() => Call(new VmmControlRequest { Op = "list-exports" }).Exports ?? [];

    public VmmControlReply Status() => Call(new VmmControlRequest { Op = "status" });

    public VmmControlReply Stop() => Call(new VmmControlRequest { Op = "stop" });

    private VmmControlReply Call(VmmControlRequest request)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        {
            ReceiveTimeout = (int)Timeout.TotalMilliseconds,
            SendTimeout = (int)Timeout.TotalMilliseconds,
        };
        try { socket.Connect(new UnixDomainSocketEndPoint(socketPath)); }
        catch (SocketException e) { throw new Stage1Exception($"cannot reach the VMM control socket {socketPath}: {e.Message}", e); }
        var line = JsonSerializer.Serialize(request, ControlJson.Default.VmmControlRequest) + "\n";
        socket.Send(Encoding.UTF8.GetBytes(line));
        var reply = new MemoryStream();
        var buffer = new byte[4096];
        while (true)
        {
            int n;
            try { n = socket.Receive(buffer); }
            catch (SocketException e) { throw new Stage1Exception($"the VMM control socket did not answer {request.Op}: {e.Message}", e); }
            if (n == 0) break;
            int newline = Array.IndexOf(buffer, (byte)'\n', 0, n);
            reply.Write(buffer, 0, newline >= 0 ? newline : n);
            if (newline >= 0) break;
            if (reply.Length > 1 << 20) throw new Stage1Exception("the VMM control socket sent an over-long reply");
        }
        var parsed = reply.Length == 0 ? null : JsonSerializer.Deserialize(reply.ToArray(), ControlJson.Default.VmmControlReply);
        if (parsed is null) throw new Stage1Exception($"the VMM closed the control socket without answering {request.Op}");
        if (!parsed.Ok) throw new Stage1Exception($"VMM {request.Op}{(request.Name is null ? "" : " " + request.Name)}: {parsed.Error}");
        return parsed;
    }
}
