using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// A pseudo-terminal the test owns, as a user's terminal emulator does: a program runs with the
/// terminal as its stdin, stdout, stderr and controlling terminal (util-linux <c>setsid --ctty</c>),
/// the test types into the master side, resizes it, and reads everything the program showed.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed unsafe class HostTerminal : IDisposable
{
    private const int TIOCSPTLCK = 0x40045431, TIOCGPTN = unchecked((int)0x80045430), TIOCSWINSZ = 0x5414;
    private readonly int _master;
    private readonly Process _process;
    private readonly StringBuilder _screen = new();
    private readonly Thread _reader;
    private int _disposed;

    private HostTerminal(int master, Process process)
    {
        _master = master;
        _process = process;
        _reader = new Thread(ReadScreen) { IsBackground = true, Name = "host-terminal" };
        _reader.Start();
    }

    /// <summary>Starts <paramref name="psi"/>'s program (stdio not redirected) on a new terminal of <paramref name="rows"/> x <paramref name="columns"/>.</summary>
    public static HostTerminal Start(ProcessStartInfo psi, ushort rows = 24, ushort columns = 80)
    {
        int master = Open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        int unlock = 0, number = 0;
        if (ioctl(master, TIOCSPTLCK, &unlock) != 0 || ioctl(master, TIOCGPTN, &number) != 0) throw new IOException($"cannot set up a pseudo-terminal: errno {errno}");
        SetSize(master, rows, columns);
        // The shell opens the terminal as fds 0-2 (it is no session leader, so it does not become its
        // controlling terminal); setsid gives the program a session of its own with that terminal.
        var wrapped = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        wrapped.ArgumentList.Add("-c");
        wrapped.ArgumentList.Add($"exec setsid --ctty --wait \"$0\" \"$@\" </dev/pts/{number} >/dev/pts/{number} 2>&1");
        wrapped.ArgumentList.Add(psi.FileName);
        foreach (var a in psi.ArgumentList) wrapped.ArgumentList.Add(a);
        foreach (var (key, value) in psi.Environment) wrapped.Environment[key] = value;
        var process = Process.Start(wrapped) ?? throw new IOException("cannot start the program on the terminal");
        return new HostTerminal(master, process);
    }

    private static int Open(string path, int flags)
    {
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            int fd = open(p, flags);
            return fd >= 0 ? fd : throw new IOException($"open {path}: errno {errno}");
        }
    }

    private static void SetSize(int fd, ushort rows, ushort columns)
    {
        winsize size = default;
        size.ws_row = rows;
        size.ws_col = columns;
        if (ioctl(fd, TIOCSWINSZ, &size) != 0) throw new IOException($"TIOCSWINSZ: errno {errno}");
    }

    /// <summary>What the program has shown so far (bytes as Latin-1, so every byte is one char).</summary>
    public string Screen { get { lock (_screen) return _screen.ToString(); } }

    public int ProcessId => _process.Id;

    /// <summary>Keys, as the terminal would send them ("\r" is Enter, "\u0003" is ^C).</summary>
    public void Type(string keys)
    {
        var bytes = Encoding.Latin1.GetBytes(keys);
        fixed (byte* p = bytes)
            for (int done = 0; done < bytes.Length;)
            {
                long n = write(_master, p + done, bytes.Length - done);
                if (n <= 0) throw new IOException($"typing into the terminal: errno {errno}");
                done += (int)n;
            }
    }

    /// <summary>Resizes the terminal: the kernel sends SIGWINCH to its foreground process group.</summary>
    public void Resize(ushort rows, ushort columns) => SetSize(_master, rows, columns);

    /// <summary>Whether the terminal is in cooked mode now (canonical input with echo), as a shell leaves it.</summary>
    public bool IsCooked
    {
        get
        {
            termios t;
            if (tcgetattr(_master, &t) != 0) throw new IOException($"tcgetattr: errno {errno}");
            return (t.c_lflag & (uint)ICANON) != 0 && (t.c_lflag & (uint)ECHO) != 0 && (t.c_lflag & (uint)ISIG) != 0;
        }
    }

    /// <summary>Waits until the screen, from <paramref name="from"/> on, shows <paramref name="text"/>; returns the index after it.</summary>
    public int WaitFor(string text, TimeSpan timeout, int from = 0)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            string screen = Screen;
            int at = screen.IndexOf(text, Math.Min(from, screen.Length), StringComparison.Ordinal);
            if (at >= 0) return at + text.Length;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the terminal did not show \"{text}\" in {timeout}; it shows:\n{screen[Math.Max(0, screen.Length - 3000)..]}");
            Thread.Sleep(20);
        }
    }

    /// <summary>The program's exit code once it has exited (within <paramref name="timeout"/>).</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) throw new TimeoutException($"the program on the terminal did not exit in {timeout}; it shows:\n{Screen}");
        return _process.ExitCode;
    }

    private void ReadScreen()
    {
        byte[] buffer = new byte[64 << 10];
        while (true)
        {
            long n;
            fixed (byte* p = buffer) n = read(_master, p, buffer.Length);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return; // EIO: nothing has the terminal open any more
            lock (_screen) _screen.Append(Encoding.Latin1.GetString(buffer, 0, (int)n));
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (!_process.HasExited) try { _process.Kill(entireProcessTree: true); _process.WaitForExit(10_000); } catch (InvalidOperationException) { }
        _process.Dispose();
        // The reader ends at EIO once nothing holds the terminal; close the master only then, so its
        // number cannot be reused under a read still in progress.
        if (_reader.Join(TimeSpan.FromSeconds(10))) close(_master);
    }
}
