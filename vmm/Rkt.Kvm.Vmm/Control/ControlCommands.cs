using System.Diagnostics;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Client.Control;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Control;

/// <summary>
/// What each control request does, apart from the socket: parse one line, act, produce one reply.
/// Never throws for bad input; every failure is a reply with one clear sentence.
/// </summary>
public sealed class ControlCommands(P9Server? server, Stopwatch uptime, Action stop, Func<string, SafeFileHandle?, Snapshot.SnapshotHeader>? snapshot = null)
{
    /// <summary>Set by a stop request: the socket sends the reply, then calls <see cref="Stop"/>.</summary>
    public bool StopRequested { get; private set; }

    public void Stop() => stop();

    /// <summary>
    /// <paramref name="takeFd"/> hands over the oldest descriptor that came with the connection's
    /// bytes (null when none did); the request owns it from then on.
    /// </summary>
    public ControlReply Handle(ReadOnlySpan<byte> line, Func<FileDescriptor?>? takeFd = null)
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
                "add-export" => AddExport(request, PassedFd(request, takeFd)),
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
                "snapshot" => TakeSnapshot(Required(request.Path, "path"), PassedFd(request, takeFd)),
                "stop" => RequestStop(),
                _ => ControlReply.Fail($"Unknown op '{op}' (add-export, remove-export, list-exports, status, snapshot, stop)."),
            };
        }
        catch (Exception e) when (e is ArgumentException or Snapshot.SnapshotException or IOException or UnauthorizedAccessException)
        {
            return ControlReply.Fail(e.Message);
        }
    }

    /// <summary>The descriptor a request with "fd":true brought; a request without one gets none, and one that says it has one must.</summary>
    private static FileDescriptor? PassedFd(ControlRequest request, Func<FileDescriptor?>? takeFd)
    {
        if (request.Fd != true) return null;
        return takeFd?.Invoke() ?? throw new ArgumentException("The request says a file descriptor comes with it (\"fd\":true), but none did.");
    }

    private ControlReply TakeSnapshot(string path, FileDescriptor? passed)
    {
        using var _ = passed;
        if (snapshot is null) throw new ArgumentException("This VM cannot be snapshotted.");
        // With a passed file the path only names it (a jailed VMM could not look it up).
        if (!Path.IsPathFullyQualified(path) || passed is null && !Directory.Exists(Path.GetDirectoryName(path)))
            throw new ArgumentException($"The snapshot path {path} is not an absolute path in an existing directory.");
        using var into = passed is null ? null : new SafeFileHandle(passed.DangerousGetHandle(), ownsHandle: false);
        if (into is not null && RandomAccess.GetLength(into) != 0) throw new ArgumentException("The file passed for the snapshot is not empty.");
        var clock = Stopwatch.StartNew();
        Snapshot.SnapshotHeader header;
        try { header = snapshot(path, into); }
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

    private ControlReply AddExport(ControlRequest r, FileDescriptor? directory)
    {
        string name, path;
        try
        {
            name = Required(r.Name, "name");
            path = Required(r.Path, "path");
        }
        catch
        {
            directory?.Dispose();
            throw;
        }
        Server.AddExport(name, path, r.ReadOnly ?? false, directory);
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
