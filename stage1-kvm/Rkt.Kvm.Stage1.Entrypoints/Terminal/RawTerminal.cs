using System.Runtime.InteropServices;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Stage1.Entrypoints.Terminal;

/// <summary>
/// The user's terminal in raw mode for as long as a session in the pod lasts: every key goes to
/// the process in the pod as a byte (^C included, so it interrupts the app and not us), and output
/// goes to the screen as the pod's terminal made it. The settings before are restored on Dispose
/// and when SIGTERM, SIGHUP or SIGQUIT end us, so no exit path leaves the terminal raw.
/// </summary>
internal sealed unsafe class RawTerminal : IDisposable
{
    private readonly int _fd;
    private readonly termios _saved;
    private readonly List<PosixSignalRegistration> _signals = [];
    private int _restored;

    /// <summary>Whether a session has the terminal raw now (our own messages then need "\r\n").</summary>
    public static bool Active { get; private set; }

    private RawTerminal(int fd, termios saved)
    {
        _fd = fd;
        _saved = saved;
    }

    public static bool IsTerminal(int fd) => isatty(fd) == 1;

    /// <summary>Puts the terminal on <paramref name="fd"/> into raw mode; null when it is not a terminal.</summary>
    public static RawTerminal? Enter(int fd)
    {
        termios saved;
        if (!IsTerminal(fd) || tcgetattr(fd, &saved) != 0) return null;
        termios raw = MakeRaw(saved);
        if (tcsetattr(fd, (int)TCSANOW, &raw) != 0) return null;
        var terminal = new RawTerminal(fd, saved);
        foreach (var signal in new[] { PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT })
            terminal._signals.Add(PosixSignalRegistration.Create(signal, _ => terminal.Restore())); // then the default action
        Active = true;
        return terminal;
    }

    /// <summary>
    /// The settings of the terminal on <paramref name="fd"/> now, put back on Dispose whatever
    /// happened in between; null when it is not a terminal. For a process whose child may make the
    /// terminal raw and be killed before it can restore it (run, around its pod supervisor: SIGKILL
    /// runs no handler).
    /// </summary>
    public static IDisposable? KeepSettings(int fd)
    {
        termios saved;
        if (!IsTerminal(fd) || tcgetattr(fd, &saved) != 0) return null;
        return new RawTerminal(fd, saved);
    }

    /// <summary>cfmakeraw(3): no line editing, echo, signals, flow control or output processing; 8-bit bytes, one at a time.</summary>
    public static termios MakeRaw(termios t)
    {
        t.c_iflag &= ~(uint)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
        t.c_oflag &= ~(uint)OPOST;
        t.c_lflag &= ~(uint)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
        t.c_cflag &= ~(uint)(CSIZE | PARENB);
        t.c_cflag |= (uint)CS8;
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        return t;
    }

    /// <summary>Our terminal's size (stdout's, else stdin's), or null when neither is a terminal.</summary>
    public static Rkt.Kvm.Agent.V1.TerminalSize? CurrentSize()
    {
        foreach (int fd in new[] { 1, 0 })
        {
            winsize size;
            if (ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_row != 0 && size.ws_col != 0)
                return new Rkt.Kvm.Agent.V1.TerminalSize { Rows = size.ws_row, Columns = size.ws_col };
        }
        return null;
    }

    private void Restore()
    {
        if (Interlocked.Exchange(ref _restored, 1) != 0) return;
        termios saved = _saved;
        tcsetattr(_fd, (int)TCSANOW, &saved);
        Active = false; // (KeepSettings: it was false in this process all along)
    }

    public void Dispose()
    {
        Restore();
        foreach (var s in _signals) s.Dispose();
    }
}
