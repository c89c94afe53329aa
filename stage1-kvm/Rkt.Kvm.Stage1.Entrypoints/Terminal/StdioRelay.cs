using System.Runtime.InteropServices;
using Rkt.Kvm.Agent.Client;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Stage1.Entrypoints.Terminal;

/// <summary>How a session in the pod uses our stdio.</summary>
/// <param name="Tty">The process has a terminal: ours goes raw, its size follows ours (SIGWINCH).</param>
/// <param name="Stdin">Our stdin is sent to the process (else it gets none: EOF, or nothing for an attached app).</param>
internal sealed record StdioMode(bool Tty, bool Stdin)
{
    /// <summary>What rkt enter does: a terminal when stdin and stdout are one; stdin forwarded with a
    /// terminal or when it is redirected (a terminal stdin without a tty would only steal keys).</summary>
    public static StdioMode Auto(bool? tty = null, bool? stdin = null)
    {
        bool terminal = tty ?? (RawTerminal.IsTerminal(0) && RawTerminal.IsTerminal(1));
        return new StdioMode(terminal, stdin ?? (terminal || !RawTerminal.IsTerminal(0)));
    }
}

/// <summary>
/// Connects our stdin, stdout and stderr to a process in the pod (enter, run --interactive, attach):
/// output is written as it arrives, input is sent as it is typed, the terminal's size follows ours.
/// Returns the process's exit code (128 + signal when a signal ended it) after its last output byte.
/// An attached client shows only the streams asked for and leaves the app's stdin open at its own EOF.
/// </summary>
internal static class StdioRelay
{
    public static async Task<int> RunAsync(ProcessStream stream, StdioMode mode, bool closeStdinAtEof = true, bool showStdout = true, bool showStderr = true)
    {
        using var raw = mode.Tty ? RawTerminal.Enter(0) : null;
        PosixSignalRegistration? resize = null;
        if (mode.Tty)
        {
            await SendSizeAsync(stream);
            resize = PosixSignalRegistration.Create(PosixSignal.SIGWINCH, c => { c.Cancel = true; _ = SendSizeAsync(stream); });
        }
        try
        {
            if (mode.Stdin) StartStdinReader(stream, closeStdinAtEof);
            else if (closeStdinAtEof) await stream.CloseStdinAsync();
            using var stdout = showStdout ? Console.OpenStandardOutput() : Stream.Null;
            using var stderr = showStderr ? Console.OpenStandardError() : Stream.Null;
            var exit = await stream.CopyOutputAsync(stdout, stderr);
            return ProcessStream.ExitCode(exit);
        }
        finally { resize?.Dispose(); }
    }

    private static Task SendSizeAsync(ProcessStream stream) =>
        RawTerminal.CurrentSize() is { } size ? stream.ResizeAsync(size.Rows, size.Columns) : Task.CompletedTask;

    /// <summary>Reads fd 0 on a thread of its own (a blocking read never holds a pool thread) and sends what it reads; at EOF
    /// it ends the process's stdin when <paramref name="closeAtEof"/> (an attached app's stdin is the app's, not ours to close).</summary>
    private static void StartStdinReader(ProcessStream stream, bool closeAtEof)
    {
        var thread = new Thread(() =>
        {
            byte[] buffer = new byte[16 << 10];
            try
            {
                while (true)
                {
                    nint n = ReadStdin(buffer);
                    if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
                    if (n <= 0) break;
                    stream.WriteAsync(buffer.AsSpan(0, (int)n).ToArray()).GetAwaiter().GetResult();
                }
                if (closeAtEof) stream.CloseStdinAsync().GetAwaiter().GetResult();
            }
            catch (ObjectDisposedException) { /* the session is over */ }
        }) { IsBackground = true, Name = "stdin" };
        thread.Start();
    }

    private static unsafe nint ReadStdin(byte[] buffer)
    {
        fixed (byte* p = buffer) return (nint)read(0, p, buffer.Length);
    }
}
