using System.Runtime.InteropServices;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// A pseudo-terminal made in an app's own devpts instance (its <c>/dev/pts</c>, mounted with
/// <c>newinstance</c> by <see cref="AppRoot"/>), so the app sees its terminal as <c>/dev/pts/N</c> of
/// its own namespace and no other app's. The agent keeps the master; the peer (slave) goes to the
/// process as fds 0-2 and the stage2 helper makes it the controlling terminal (<c>--tty</c>).
/// </summary>
internal sealed unsafe class Pty : IDisposable
{
    private const nuint TIOCSWINSZ = 0x5414, TIOCSPTLCK = 0x40045431, TIOCGPTPEER = 0x5441;
    private const int O_NOCTTY = 0x100;
    public const ushort DefaultRows = 24, DefaultColumns = 80;

    private int _master;

    private Pty(int master) => _master = master;

    /// <summary>The master's fd; -1 once <see cref="ReleaseMaster"/> handed it on.</summary>
    public int Master => _master;

    /// <summary>Opens a new master in the devpts instance at <paramref name="devPts"/> (e.g. the app root's <c>dev/pts</c>).</summary>
    public static Pty Open(string devPts, TerminalSize? size)
    {
        int master = Libc.open(Path.Join(devPts, "ptmx"), Libc.O_RDWR | O_NOCTTY | Libc.O_CLOEXEC);
        if (master < 0) throw new IOException($"open {devPts}/ptmx: {Libc.LastError()}");
        var pty = new Pty(master);
        try
        {
            int unlock = 0;
            if (Libc.ioctl(master, TIOCSPTLCK, &unlock) != 0) throw new IOException("unlock the pseudo-terminal: " + Libc.LastError());
            pty.Resize(size);
            return pty;
        }
        catch { pty.Dispose(); throw; }
    }

    /// <summary>
    /// Opens the peer through the master (TIOCGPTPEER): no path lookup, so nothing in the app's
    /// tree can swap the node. Owned by <paramref name="uid"/>/<paramref name="gid"/>, as a login's terminal is.
    /// </summary>
    public int OpenPeer(uint uid, uint gid)
    {
        int peer = Libc.ioctl(_master, TIOCGPTPEER, (void*)(Libc.O_RDWR | O_NOCTTY | Libc.O_CLOEXEC));
        if (peer < 0) throw new IOException("open the pseudo-terminal's peer: " + Libc.LastError());
        if (Libc.fchown(peer, uid, gid) != 0)
        {
            string why = Libc.LastError();
            Libc.close(peer);
            throw new IOException("chown the pseudo-terminal: " + why);
        }
        return peer;
    }

    /// <summary>Sets the window size (the foreground process group gets SIGWINCH); 0 in either means the default 24x80.</summary>
    public void Resize(TerminalSize? size) => Resize(_master, size);

    public static void Resize(int master, TerminalSize? size)
    {
        var (rows, columns) = Clamp(size);
        ushort* winsize = stackalloc ushort[4];
        winsize[0] = rows;
        winsize[1] = columns;
        winsize[2] = winsize[3] = 0;
        if (Libc.ioctl(master, TIOCSWINSZ, winsize) != 0) throw new IOException("set the terminal size: " + Libc.LastError());
    }

    /// <summary>A size the kernel can hold (struct winsize has 16-bit fields); 0 means the default.</summary>
    public static (ushort Rows, ushort Columns) Clamp(TerminalSize? size)
    {
        uint rows = size?.Rows ?? 0, columns = size?.Columns ?? 0;
        if (rows == 0 || columns == 0) return (DefaultRows, DefaultColumns);
        return ((ushort)Math.Min(rows, ushort.MaxValue), (ushort)Math.Min(columns, ushort.MaxValue));
    }

    /// <summary>The master now belongs to someone else (a pump that closes it); Dispose leaves it open.</summary>
    public int ReleaseMaster()
    {
        int fd = _master;
        _master = -1;
        return fd;
    }

    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _master, -1);
        if (fd >= 0) Libc.close(fd);
    }
}

/// <summary>The end-of-file character a terminal in canonical mode turns into a zero-length read (Ctrl-D, VEOF's default).</summary>
internal static class TerminalInput
{
    public static readonly byte[] EndOfFile = [0x04];
}
