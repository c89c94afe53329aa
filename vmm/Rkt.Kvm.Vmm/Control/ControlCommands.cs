using System.Diagnostics;
using System.Text.Json;
using Rkt.Kvm.Vmm.Client.Control;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Control;

/// <summary>
/// What each control request does, apart from the socket: parse one line, act, produce one reply.
/// Never throws for bad input; every failure is a reply with one clear sentence.
/// </summary>
public sealed class ControlCommands(P9Server? server, Stopwatch uptime, Action stop, Func<string, Snapshot.SnapshotHeader>? snapshot = null)
{
    /// <summary>Set by a stop request: the socket sends the reply, then calls <see cref="Stop"/>.</summary>
    public bool StopRequested { get; private set; }

    public void Stop() => stop();

    public ControlReply Handle(ReadOnlySpan<byte> line)
    {
        ControlRequest? request;
        try
        {
            request = JsonSerializer.Deserialize(line, ControlJsonContext.Wire.ControlRequest);
        }
        catch (JsonException e)
        {
            return ControlReply.Fail($"The request is not a valid JSON object: {e.Message}");
        }
        if (request?.Op is not { } op) return ControlReply.Fail("The request has no \"op\".");
        try
        {
            return op switch
            {
                "add-export" => AddExport(request),
                "remove-export" => new ControlReply { Ok = true, ClosedFds = Server.RemoveExport(Required(request.Name, "name")) },
                "list-exports" => new ControlReply { Ok = true, Exports = Exports() },
                "status" => new ControlReply
                {
                    Ok = true,
                    State = "running",
                    UptimeSeconds = Math.Round(uptime.Elapsed.TotalSeconds, 3),
                    Exports = Exports(),
                    Fids = server?.FidCount ?? 0,
                },
                "snapshot" => TakeSnapshot(Required(request.Path, "path")),
                "stop" => RequestStop(),
                _ => ControlReply.Fail($"Unknown op '{op}' (add-export, remove-export, list-exports, status, snapshot, stop)."),
            };
        }
        catch (Exception e) when (e is ArgumentException or Snapshot.SnapshotException or IOException or UnauthorizedAccessException)
        {
            return ControlReply.Fail(e.Message);
        }
    }

    private ControlReply TakeSnapshot(string path)
    {
        if (snapshot is null) throw new ArgumentException("This VM cannot be snapshotted.");
        if (!Path.IsPathFullyQualified(path) || !Directory.Exists(Path.GetDirectoryName(path))) throw new ArgumentException($"The snapshot path {path} is not an absolute path in an existing directory.");
        var clock = Stopwatch.StartNew();
        Snapshot.SnapshotHeader header;
        try { header = snapshot(path); }
        catch (Exception e) when (e is not (ArgumentException or Snapshot.SnapshotException or IOException or UnauthorizedAccessException))
        {
            // Whatever else went wrong is still one reply: a control request never goes unanswered.
            return ControlReply.Fail($"The snapshot failed: {e.Message}");
        }
        return new ControlReply { Ok = true, Snapshot = new ControlSnapshot { Path = path, MemoryBytes = header.MemoryBytesWritten, Milliseconds = Math.Round(clock.Elapsed.TotalMilliseconds, 1) } };
    }

    private P9Server Server => server ?? throw new ArgumentException("This VM has no 9p device.");

    private static string Required(string? value, string field) =>
        string.IsNullOrEmpty(value) ? throw new ArgumentException($"The request needs \"{field}\".") : value;

    private ControlReply AddExport(ControlRequest r)
    {
        string name = Required(r.Name, "name"), path = Required(r.Path, "path");
        Server.AddExport(name, path, r.ReadOnly ?? false);
        return new ControlReply { Ok = true, Export = new ControlExport { Name = name, Path = path, ReadOnly = r.ReadOnly ?? false } };
    }

    private List<ControlExport> Exports() => server is null ? [] :
        server.ListExports().Select(e => new ControlExport { Name = e.Name, Path = e.Path, ReadOnly = e.ReadOnly, Fids = e.Fids }).ToList();

    private ControlReply RequestStop()
    {
        StopRequested = true;
        return new ControlReply { Ok = true, State = "stopping" };
    }
}
