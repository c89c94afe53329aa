using Microsoft.Win32.SafeHandles;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// Where a process started through the stage2 helper (an app or an exec) gets its fds 0-2, and the
/// agent's ends of them: pipes (stdin a pipe or /dev/null), or one pseudo-terminal of the app's
/// /dev/pts for all three. Dispose closes the process's ends (the helper and the process hold their
/// own copies by then) and whatever was not handed on.
/// </summary>
internal sealed class ProcessStdio : IDisposable
{
    private readonly int[] _child;          // fds 0, 1, 2 for the helper (the same fd thrice for a terminal)
    private readonly List<int> _outputs;    // read ends: stdout, then stderr (a terminal: its master only)
    private AppInput? _input;
    private bool _outputStarted;

    private ProcessStdio(int[] child, List<int> outputs, AppInput? input)
    {
        _child = child;
        _outputs = outputs;
        _input = input;
    }

    public int ChildStdin => _child[0];
    public int ChildStdout => _child[1];
    public int ChildStderr => _child[2];

    /// <summary>How many output streams end separately (each calls <c>onEnd</c> once).</summary>
    public int OutputCount => _outputs.Count;

    public static ProcessStdio Pipes(bool withStdin)
    {
        var opened = new List<int>();
        AppInput? input = null;
        try
        {
            int stdin;
            if (withStdin)
            {
                var (read, write) = Stage2.Pipe();
                opened.AddRange([read, write]);
                stdin = read;
                input = new AppInput(write, terminal: false);
                opened.Remove(write);
            }
            else
            {
                stdin = Libc.open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC);
                if (stdin < 0) throw new IOException("open /dev/null: " + Libc.LastError());
                opened.Add(stdin);
            }
            var (outRead, outWrite) = Stage2.Pipe();
            opened.AddRange([outRead, outWrite]);
            var (errRead, errWrite) = Stage2.Pipe();
            return new ProcessStdio([stdin, outWrite, errWrite], [outRead, errRead], input);
        }
        catch
        {
            foreach (int fd in opened) Libc.close(fd);
            input?.Dispose();
            throw;
        }
    }

    /// <summary>A new pseudo-terminal in the app's own devpts (<paramref name="appRoot"/>/dev/pts), owned by the process's user.</summary>
    public static ProcessStdio Terminal(string appRoot, TerminalSize? size, Credentials owner)
    {
        using var pty = Pty.Open(Path.Join(appRoot, "dev", "pts"), size);
        int peer = pty.OpenPeer(owner.Uid, owner.Gid);
        int inputCopy;
        try { inputCopy = Libc.DupCloexec(pty.Master); }
        catch { Libc.close(peer); throw; }
        return new ProcessStdio([peer, peer, peer], [pty.ReleaseMaster()], new AppInput(inputCopy, terminal: true));
    }

    /// <summary>The input end, now the caller's to dispose (null without stdin).</summary>
    public AppInput? TakeInput() => Interlocked.Exchange(ref _input, null);

    /// <summary>Pumps each output on its own thread (<see cref="PipePump"/>, which closes it at EOF, or at
    /// EIO once a terminal has no process left on it); a terminal's output counts as stdout.</summary>
    public void StartOutput(Action<ReadOnlySpan<byte>> stdout, Action<ReadOnlySpan<byte>> stderr, Action onEnd)
    {
        _outputStarted = true;
        PipePump.Start(_outputs[0], stdout, onEnd);
        if (_outputs.Count > 1) PipePump.Start(_outputs[1], stderr, onEnd);
    }

    public void Dispose()
    {
        foreach (int fd in _child.Distinct()) Libc.close(fd);
        if (!_outputStarted) foreach (int fd in _outputs) Libc.close(fd);
        TakeInput()?.Dispose();
    }
}

/// <summary>
/// The agent's end of a process's input: a pipe's write end or a duplicate of its terminal's master.
/// A SafeHandle, so that closing it (the process exited) while a writer is in write(2) closes the
/// fd only after that write returns: the number is never reused under a writer.
/// </summary>
internal sealed class AppInput(int fd, bool terminal) : IDisposable
{
    private readonly SafeFileHandle _handle = new(fd, ownsHandle: true);

    public bool IsTerminal => terminal;

    /// <summary>Writes all of <paramref name="data"/>; false once the input is closed or nobody reads it.</summary>
    public bool Write(ReadOnlySpan<byte> data)
    {
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            return Libc.WriteAll((int)_handle.DangerousGetHandle(), data);
        }
        catch (ObjectDisposedException) { return false; }
        finally { if (added) _handle.DangerousRelease(); }
    }

    /// <summary>End of input: a pipe is closed (the reader sees EOF); a terminal gets its end-of-file character.</summary>
    public void CloseInput()
    {
        if (terminal) Write(TerminalInput.EndOfFile);
        else Dispose();
    }

    /// <summary>Sets the terminal's size; false for a pipe.</summary>
    public bool Resize(TerminalSize size)
    {
        if (!terminal) return false;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            Pty.Resize((int)_handle.DangerousGetHandle(), size);
            return true;
        }
        catch (ObjectDisposedException) { return true; } // gone with its process
        finally { if (added) _handle.DangerousRelease(); }
    }

    public void Dispose() => _handle.Dispose();
}
