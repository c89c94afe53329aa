using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using System.Text;
using System.Text.Json;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Client.Control;

/// <summary>
/// Host side of the VMM's control socket: newline-delimited JSON, one request and one reply per
/// line, in the message types the VMM itself serves (<see cref="ControlRequest"/>,
/// <see cref="ControlReply"/>). Used by stage1 to export app root filesystems and volumes to the
/// pod's 9p device and to withdraw them (the VMM closes every host fd under an export before it
/// replies). A refused request or an unreachable VMM is a <see cref="VmmControlException"/>.
/// </summary>
public sealed class VmmControlClient(string socketPath) : IDisposable
{
    /// <summary>The one connection every call goes over (<see cref="ConnectNow"/>); null: a connection per call.</summary>
    private Socket? _held;

    /// <summary>
    /// A client whose calls all go over one connection, made now: for a process that may reach the
    /// socket now (root) and asks later, once it has given that up (app/rm, which removes the export
    /// after the agent's reply, read as the pod's user). Dispose closes it.
    /// </summary>
    public static VmmControlClient ConnectNow(string socketPath)
    {
        var client = new VmmControlClient(socketPath);
        client._held = client.Connect();
        return client;
    }

    public void Dispose() => _held?.Dispose();

    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    /// <summary>A reply line longer than this is a broken VMM, not a big answer.</summary>
    private const int MaxReplyBytes = 1 << 20;

    /// <summary>
    /// The reply carries the new export in <see cref="ControlReply.Export"/>. The directory is opened
    /// here and passed open: the VMM may live in an empty root where <paramref name="path"/> is not.
    /// </summary>
    public ControlReply AddExport(string name, string path, bool readOnly)
    {
        using var directory = OpenDirectory(path);
        return Call(new ControlRequest { Op = "add-export", Name = name, Path = path, ReadOnly = readOnly, Fd = true }, directory);
    }

    /// <summary>The reply carries how many host fds the VMM closed in <see cref="ControlReply.ClosedFds"/>.</summary>
    public ControlReply RemoveExport(string name) => Call(new ControlRequest { Op = "remove-export", Name = name });

    public IReadOnlyList<ControlExport> ListExports() => Call(new ControlRequest { Op = "list-exports" }).Exports ?? [];

    /// <summary>State, uptime, exports and open fids of the running VM.</summary>
    public ControlReply Status() => Call(new ControlRequest { Op = "status" });

    /// <summary>
    /// Writes a snapshot of the running VM to <paramref name="path"/> (the VM goes on); the reply
    /// carries <see cref="ControlReply.Snapshot"/>. The VMM writes into a temporary file this side
    /// creates and passes open; it becomes <paramref name="path"/> only once complete, so a reader
    /// sees the old file, the whole new one, or none.
    /// </summary>
    public ControlReply Snapshot(string path)
    {
        string temp = $"{path}.tmp-{Environment.ProcessId}";
        try
        {
            ControlReply reply;
            using (var file = File.OpenHandle(temp, FileMode.Create, FileAccess.ReadWrite, FileShare.None)) // a stale one of a killed call goes
                reply = Call(new ControlRequest { Op = "snapshot", Path = path, Fd = true }, file);
            File.Move(temp, path, overwrite: true);
            return reply;
        }
        finally
        {
            try { File.Delete(temp); } catch (IOException) { }
        }
    }

    /// <summary>The VMM replies "stopping", then ends the VM and exits 0.</summary>
    public ControlReply Stop() => Call(new ControlRequest { Op = "stop" });

    /// <summary>O_PATH: the VMM gets a handle to walk from, not the right to read the directory itself.</summary>
    private static FileDescriptor OpenDirectory(string path)
    {
        try { return FileDescriptor.OpenDirectoryPath(path); }
        catch (ErrnoException e) { throw new VmmControlException($"cannot open the directory {path}: {Marshal.GetPInvokeErrorMessage(e.Errno)}"); }
    }

    private Socket Connect()
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        {
            ReceiveTimeout = (int)Timeout.TotalMilliseconds,
            SendTimeout = (int)Timeout.TotalMilliseconds,
        };
        try { socket.Connect(new UnixDomainSocketEndPoint(socketPath)); }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new VmmControlException($"cannot reach the VMM control socket {socketPath}: {e.Message}", e);
        }
        return socket;
    }

    private ControlReply Call(ControlRequest request, SafeHandle? fd = null)
    {
        var socket = _held ?? Connect();
        try { return Exchange(socket, request, fd); }
        finally
        {
            if (socket != _held) socket.Dispose();
        }
    }

    /// <summary>One request, one reply line (the VMM answers in order, one line each, so a held connection has nothing after it).</summary>
    private static ControlReply Exchange(Socket socket, ControlRequest request, SafeHandle? fd)
    {
        var line = JsonSerializer.Serialize(request, ControlJsonContext.Wire.ControlRequest) + "\n";
        var bytes = Encoding.UTF8.GetBytes(line);
        if (fd is null) socket.Send(bytes);
        else
        {
            try { ScmRights.Send((int)socket.Handle, bytes, (int)fd.DangerousGetHandle()); }
            catch (IOException e) { throw new VmmControlException($"the VMM control socket did not take {request.Op}: {e.Message}", e); }
        }
        var reply = new MemoryStream();
        var buffer = new byte[4096];
        while (true)
        {
            int n;
            try { n = socket.Receive(buffer); }
            catch (SocketException e) { throw new VmmControlException($"the VMM control socket did not answer {request.Op}: {e.Message}", e); }
            if (n == 0) break;
            int newline = Array.IndexOf(buffer, (byte)'\n', 0, n);
            reply.Write(buffer, 0, newline >= 0 ? newline : n);
            if (newline >= 0) break;
            if (reply.Length > MaxReplyBytes) throw new VmmControlException("the VMM control socket sent an over-long reply");
        }
        var parsed = reply.Length == 0 ? null : JsonSerializer.Deserialize(reply.ToArray(), ControlJsonContext.Wire.ControlReply);
        if (parsed is null) throw new VmmControlException($"the VMM closed the control socket without answering {request.Op}");
        if (!parsed.Ok) throw new VmmControlException($"VMM {request.Op}{(request.Name is null ? "" : " " + request.Name)}: {parsed.Error}");
        return parsed;
    }
}

/// <summary>The one exception <see cref="VmmControlClient"/> throws; its message is one line naming the request or the socket.</summary>
public sealed class VmmControlException(string message, Exception? inner = null) : Exception(message, inner);
