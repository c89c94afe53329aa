using System.Net;
using System.Text.Json.Nodes;

namespace Rkt.Kvm.Stage1.Manifests;

/// <summary>A port an app's image declares (appc <c>app.ports[]</c>): name, protocol and the port it listens on.</summary>
public sealed record AppPort(string Name, string Protocol, int Port)
{
    public static IReadOnlyList<AppPort> Parse(JsonObject app, string where) =>
        JsonRead.Array(app, "ports", where).Select(e =>
        {
            var p = JsonRead.Object(e.Item, e.Where);
            var name = JsonRead.RequiredString(p, "name", e.Where);
            if (!AcName.IsValidName(name)) throw new Stage1Exception($"{e.Where}.name: \"{name}\" is not a valid ACName");
            var protocol = JsonRead.RequiredString(p, "protocol", e.Where);
            if (protocol is not ("tcp" or "udp")) throw new Stage1Exception($"{e.Where}.protocol: \"{protocol}\" is not tcp or udp");
            return new AppPort(name, protocol, PortNumber(JsonRead.OptionalInteger(p, "port", e.Where), $"{e.Where}.port"));
        }).ToList();

    internal static int PortNumber(long? value, string where) =>
        value is >= 1 and <= 65535 ? (int)value : throw new Stage1Exception($"{where}: a port must be between 1 and 65535");
}

/// <summary>A pod port forwarded from the host (appc <c>ports[]</c> of the pod manifest, rkt's <c>--port=NAME:[HOSTIP:]HOSTPORT</c>).</summary>
public sealed record ExposedPort(string Name, int HostPort, IPAddress? HostIp)
{
    public JsonObject ToJson()
    {
        var o = new JsonObject { ["name"] = Name, ["hostPort"] = HostPort };
        if (HostIp is not null) o["hostIP"] = HostIp.ToString();
        return o;
    }

    public static IReadOnlyList<ExposedPort> Parse(JsonObject pod, string where) =>
        JsonRead.Array(pod, "ports", where).Select(e =>
        {
            var p = JsonRead.Object(e.Item, e.Where);
            var name = JsonRead.RequiredString(p, "name", e.Where);
            var ip = JsonRead.OptionalString(p, "hostIP", e.Where);
            IPAddress? hostIp = null;
            if (!string.IsNullOrEmpty(ip) && !IPAddress.TryParse(ip, out hostIp)) throw new Stage1Exception($"{e.Where}.hostIP: \"{ip}\" is not an IP address");
            return new ExposedPort(name, AppPort.PortNumber(JsonRead.OptionalInteger(p, "hostPort", e.Where), $"{e.Where}.hostPort"), hostIp);
        }).ToList();

    /// <summary>rkt's <c>--port</c> value: <c>NAME:HOSTPORT</c> or <c>NAME:HOSTIP:HOSTPORT</c>.</summary>
    public static ExposedPort ParseFlag(string text)
    {
        var parts = text.Split(':');
        IPAddress? ip = null;
        if (parts.Length is < 2 or > 3 || !AcName.IsValidName(parts[0])
            || (parts.Length == 3 && !IPAddress.TryParse(parts[1], out ip))
            || !int.TryParse(parts[^1], out int port) || port is < 1 or > 65535)
            throw new Stage1Exception($"--port={text}: expected NAME:[HOSTIP:]HOSTPORT with a port between 1 and 65535");
        return new ExposedPort(parts[0], port, ip);
    }
}

/// <summary>An exposed port resolved against the app that declares it: what the host forwards where.</summary>
public sealed record ForwardedPort(string Protocol, IPAddress? HostIp, int HostPort, int PodPort);
