namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Maps each 9P2000.L request type to the handler that serves it: decodes the body (which must end
/// where the message does), calls the handler and encodes its reply. Tauth and any type that is not
/// a request we serve (an R-message, 9P2000/9P2000.u types, noise) fail with a <see cref="P9Error"/>,
/// which <see cref="P9Server.Process"/> answers as Rlerror. One switch, no delegates: nothing is
/// allocated here on the way to Tread and Twrite.
/// </summary>
internal sealed class P9Dispatcher(P9Session session, P9Walker walker, P9FileOps files, P9DirectoryOps directories, P9Xattrs xattrs, P9Locks locks)
{
    /// <summary>
    /// Serves one request whose header was checked: <paramref name="body"/> follows the header (for Twrite,
    /// only up to its data), <paramref name="size"/> is the whole message's.
    /// </summary>
    public P9Reply Dispatch(byte type, ushort tag, ReadOnlySpan<byte> body, uint size, Span<byte> reply, IP9Transfer transfer) => type switch
    {
        P9.Tversion => R(reply, tag, session.Version(Read<Tversion>(body))),
        P9.Tauth => throw new P9Error(HostFs.EOPNOTSUPP, "no authentication"),
        P9.Tattach => R(reply, tag, session.Attach(Read<Tattach>(body))),
        P9.Tflush => R(reply, tag, P9Session.Flush(Read<Tflush>(body))),
        P9.Twalk => R(reply, tag, walker.Walk(Read<Twalk>(body))),
        P9.Tgetattr => R(reply, tag, files.Getattr(Read<Tgetattr>(body))),
        P9.Tsetattr => R(reply, tag, files.Setattr(Read<Tsetattr>(body))),
        P9.Tlopen => R(reply, tag, files.Lopen(Read<Tlopen>(body))),
        P9.Tlcreate => R(reply, tag, files.Lcreate(Read<Tlcreate>(body))),
        P9.Tread => files.Read(Read<Tread>(body), tag, reply, transfer),
        P9.Twrite => R(reply, tag, files.Write(Read<Twrite>(body), size, transfer)),
        P9.Treaddir => directories.Readdir(Read<Treaddir>(body), tag, reply, transfer),
        P9.Tmkdir => R(reply, tag, directories.Mkdir(Read<Tmkdir>(body))),
        P9.Tsymlink => R(reply, tag, directories.Symlink(Read<Tsymlink>(body))),
        P9.Tlink => R(reply, tag, directories.Link(Read<Tlink>(body))),
        P9.Trenameat => R(reply, tag, directories.Renameat(Read<Trenameat>(body))),
        P9.Trename => R(reply, tag, directories.Rename(Read<Trename>(body))),
        P9.Tunlinkat => R(reply, tag, directories.Unlinkat(Read<Tunlinkat>(body))),
        P9.Treadlink => R(reply, tag, files.Readlink(Read<Treadlink>(body))),
        P9.Tstatfs => R(reply, tag, files.Statfs(Read<Tstatfs>(body))),
        P9.Tfsync => R(reply, tag, files.Fsync(Read<Tfsync>(body))),
        P9.Txattrwalk => R(reply, tag, xattrs.Xattrwalk(Read<Txattrwalk>(body))),
        P9.Txattrcreate => R(reply, tag, xattrs.Xattrcreate(Read<Txattrcreate>(body))),
        P9.Tlock => R(reply, tag, locks.Lock(Read<Tlock>(body))),
        P9.Tgetlock => R(reply, tag, locks.Getlock(Read<Tgetlock>(body))),
        P9.Tmknod => R(reply, tag, directories.Mknod(Read<Tmknod>(body))),
        P9.Tclunk => R(reply, tag, session.Clunk(Read<Tclunk>(body))),
        P9.Tremove => R(reply, tag, directories.Remove(Read<Tremove>(body))),
        _ => throw new P9Error(HostFs.EINVAL, $"unknown message type {type}"),
    };

    private static T Read<T>(ReadOnlySpan<byte> body) where T : IP9Message<T>
    {
        var r = new P9Reader(body);
        var m = T.Read(ref r);
        r.End();
        return m;
    }

    private static P9Reply R<T>(Span<byte> reply, ushort tag, in T message) where T : IP9Message<T> =>
        new(P9Messages.Encode(reply, tag, message), 0);
}
