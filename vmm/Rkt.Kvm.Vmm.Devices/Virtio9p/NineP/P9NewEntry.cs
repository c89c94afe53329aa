using Rkt.Kvm.Posix;
using static Rkt.Kvm.Vmm.Devices.Virtio9p.NineP.P9Checks;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// What a new entry (Tlcreate, Tmkdir, Tsymlink, Tmknod) becomes once made: the guest user's, as with
/// QEMU's "passthrough" model. Its owner is the uid that attached the fid it was made through, its
/// group the request's gid (the guest kernel applied the parent's setgid rule already), and its mode
/// exactly the one asked for (the guest applied its own umask), less <see cref="P9Checks.SafeMode"/>'s set-id
/// bits. If the owner cannot be set, the entry is removed and the request fails: nothing is left
/// behind that the guest user could not use.
/// </summary>
/// <remarks>
/// The VMM's umask stays as it is (its Unix sockets rely on it). Instead, entries are made with
/// <see cref="InitialMode"/> (nobody but the server can use them before they have their owner) and
/// then chmod-ed to the exact mode, so no umask reaches them. This is done here rather than by a
/// umask of 0 on the 9p worker threads (unshare(CLONE_FS) there): it needs no per-thread state, and
/// the unit tests, which call the server on their own threads, take the very path production takes.
/// Symlinks are not chmod-ed: their mode means nothing on Linux.
/// Order: chown, then chmod. A chown clears setuid and setgid on a file (for root too), and never on
/// a directory; the chmod after it sets the final mode either way, so a directory keeps the setgid
/// the guest asked for and a file never has one.
/// </remarks>
internal static class P9NewEntry
{
    /// <summary>The mode entries are made with, before their owner and mode are set.</summary>
    public const uint InitialMode = 0;

    /// <summary>Gives <paramref name="dir"/>/<paramref name="name"/>, just made as a <paramref name="type"/>, the guest's owner and mode; returns its qid.</summary>
    public static P9.Qid Own(P9Session session, P9Fid dir, string name, uint type, uint gid, uint mode)
    {
        using var entry = HostFs.OpenAt(dir.Path, name, HostFs.O_PATH | HostFs.O_NOFOLLOW);
        var made = HostFs.Stat(entry);
        // Another request (the guest racing itself) or a host process put something else there: not ours to own.
        if (made.FileType != type) throw new P9Error(HostFs.EEXIST, "the new entry was replaced before it got its owner");
        Own(session, dir, name, entry, made, gid, mode);
        return P9.Qid.From(made); // chown and chmod change the ctime only; the qid's version is the mtime
    }

    /// <summary>Gives <paramref name="entry"/> (made as <paramref name="dir"/>/<paramref name="name"/>; <paramref name="made"/> its stat) the guest's owner and mode, or removes it and throws.</summary>
    public static void Own(P9Session session, P9Fid dir, string name, FileDescriptor entry, in HostStat made, uint gid, uint mode)
    {
        try
        {
            session.Chown(entry, dir.Uid, gid);
            if (!made.IsSymlink) HostFs.Chmod(entry, SafeMode(mode, made.IsDirectory));
        }
        catch
        {
            Remove(dir.Path, name, made);
            throw;
        }
    }

    /// <summary>Unlinks the entry if <paramref name="name"/> still names it (a directory the guest filled meanwhile stays).</summary>
    private static void Remove(FileDescriptor dir, string name, in HostStat made)
    {
        try
        {
            using var now = HostFs.OpenAt(dir, name, HostFs.O_PATH | HostFs.O_NOFOLLOW);
            var st = HostFs.Stat(now);
            if (st.Dev == made.Dev && st.Ino == made.Ino) HostFs.UnlinkAt(dir, name, made.IsDirectory ? HostFs.AT_REMOVEDIR : 0);
        }
        catch (P9Error) { } // gone, replaced or not empty: nothing more to do, the request fails with the first error
    }
}
