using Rkt.Kvm.Posix;
using System.Buffers.Binary;
using Serilog;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// A 9P2000.L file server for one guest session over a set of exports (picked by Tattach's aname).
/// Requests may run concurrently on several threads. Nothing the guest sends is trusted: names are
/// single validated components, walks go one component at a time with O_PATH|O_NOFOLLOW from the
/// fid's pinned fd, ".." is resolved by the fid's path inside the export (never the host's ".."),
/// symlinks are never followed on the host, only regular files and directories are ever opened,
/// counts and offsets are checked, and any failure becomes Rlerror, never an exception out of here.
/// </summary>
/// <remarks>
/// This type frames requests and serves the control socket's export commands; the work is done by
/// <see cref="P9Dispatcher"/>'s handlers: <see cref="P9Session"/> (version, attach, flush, clunk and
/// the fid table), <see cref="P9Walker"/>, <see cref="P9FileOps"/>, <see cref="P9DirectoryOps"/>,
/// <see cref="P9Xattrs"/> and <see cref="P9Locks"/>, over <see cref="P9Exports"/> and host calls in
/// <see cref="HostFs"/>.
/// </remarks>
public sealed class P9Server : IDisposable
{
    private readonly P9Exports _exports = new();
    private readonly P9Session _session;
    private readonly P9Dispatcher _dispatcher;
    private readonly ILogger _log;

    /// <summary><paramref name="maxFids"/> bounds the host fds one guest can hold open through us.</summary>
    public P9Server(ILogger log, int maxFids = P9FidTable.DefaultMaxFids)
    {
        _log = log;
        _session = new P9Session(_exports, maxFids);
        _dispatcher = new P9Dispatcher(_session, new P9Walker(_session, _exports), new P9FileOps(_session),
            new P9DirectoryOps(_session, _exports), new P9Xattrs(_session), new P9Locks(_session));
    }

    public uint Msize => _session.Msize;
    public int FidCount => _session.Fids.Count;
    internal P9FidTable FidTable => _session.Fids;
    /// <summary>For tests: replaces how new entries get their owner (root's chown does not fail on its own).</summary>
    internal Action<FileDescriptor, uint, uint> ChownNewEntries { set => _session.Chown = value; }

    // ------------------------------------------------------------------ exports (control socket, CLI)

    /// <summary>
    /// Serves <paramref name="hostPath"/> as <paramref name="name"/>; with <paramref name="root"/> (an open
    /// directory the control socket's client passed, owned from here on) the path only names it.
    /// </summary>
    public void AddExport(string name, string hostPath, bool readOnly, FileDescriptor? root = null)
    {
        _exports.Add(name, hostPath, readOnly, root);
        _log.Information("9p: export {Name} -> {Path} ({Mode})", name, hostPath, readOnly ? "read-only" : "read-write");
    }

    /// <summary>
    /// Removes an export: new attaches and requests on its fids fail at once, requests inside finish,
    /// then every host fd under it is closed before this returns. Returns how many fds were closed.
    /// </summary>
    public int RemoveExport(string name)
    {
        var export = _exports.Remove(name);
        export.CloseGate();
        int closed = _session.Fids.CloseExport(export) + 1;
        export.Root.Dispose();
        _log.Information("9p: removed export {Name}, closed {Fds} host fds", name, closed);
        return closed;
    }

    public IReadOnlyList<P9ExportInfo> ListExports() =>
        _exports.Sorted().Select(e => new P9ExportInfo(e.Name, e.HostPath, e.ReadOnly, _session.Fids.CountExport(e))).ToList();

    /// <summary>The guest reset the device: its fids are gone.</summary>
    public void ResetSession() => _session.Reset();

    public void Dispose()
    {
        _session.Fids.Clear();
        _exports.Dispose();
    }

    // ------------------------------------------------------------------ framing

    /// <summary>
    /// Serves one request. <paramref name="request"/> holds the start of the request stream (the whole
    /// message, except Twrite's data, which the transfer reads in place); <paramref name="requestTotal"/>
    /// is the stream's full length. The reply goes into <paramref name="reply"/> (at most the guest's buffer).
    /// </summary>
    public P9Reply Process(ReadOnlySpan<byte> request, long requestTotal, Span<byte> reply, IP9Transfer transfer)
    {
        ushort tag = P9.NoTag;
        try
        {
            if (request.Length < P9.HeaderSize) throw new P9Error(HostFs.EPROTO, "a request shorter than its header");
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(request);
            byte type = request[4];
            tag = BinaryPrimitives.ReadUInt16LittleEndian(request[5..]);
            uint msize = _session.Msize;
            if (size < P9.HeaderSize || size > requestTotal) throw new P9Error(HostFs.EPROTO, $"size {size} disagrees with the {requestTotal} bytes sent");
            if (size > (type == P9.Tversion ? P9.MaxMsize : msize)) throw new P9Error(HostFs.EMSGSIZE, $"a {size}-byte request exceeds msize {msize}");
            int bodyEnd = type == P9.Twrite ? (int)Math.Min(size, P9.WriteRequestHeader) : (int)size;
            if (request.Length < bodyEnd) throw new P9Error(HostFs.EMSGSIZE, "the request does not fit the server's buffer");
            var body = request[P9.HeaderSize..bodyEnd];
            return _dispatcher.Dispatch(type, tag, body, size, reply, transfer);
        }
        catch (P9Error e)
        {
            return Error(reply, tag, e.Errno);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A server bug, never the guest's doing: the guest gets EIO and the device goes on.
            _log.Error(e, "9p: request failed unexpectedly");
            return Error(reply, tag, HostFs.EIO);
        }
    }

    private static P9Reply Error(Span<byte> reply, ushort tag, int errno)
    {
        if (reply.Length < P9.ErrorReplySize) return new P9Reply(0, 0);
        return new P9Reply(P9Messages.Encode(reply, tag, new Rlerror((uint)errno)), 0);
    }
}
