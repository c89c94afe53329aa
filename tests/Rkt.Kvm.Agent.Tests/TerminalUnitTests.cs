using System.Text;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.GuestAgent;
using Rkt.Kvm.GuestAgent.Apps;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>The agent's terminal and stdin pieces that run without a VM: sizes, a real pseudo-terminal
/// from the host's /dev/pts and the stdin pipe's end.</summary>
public class TerminalUnitTests
{
    [Theory]
    [InlineData(0u, 0u, 24, 80)]
    [InlineData(30u, 0u, 24, 80)]
    [InlineData(30u, 100u, 30, 100)]
    [InlineData(100000u, 7u, 65535, 7)]
    public void Sizes_default_to_24x80_and_clamp_to_what_winsize_holds(uint rows, uint columns, int wantRows, int wantColumns)
    {
        var (r, c) = Pty.Clamp(new TerminalSize { Rows = rows, Columns = columns });
        Assert.Equal((wantRows, wantColumns), ((int)r, (int)c));
        Assert.Equal(((ushort)24, (ushort)80), Pty.Clamp(null));
    }

    [Fact]
    public void A_terminal_echoes_input_turns_newlines_into_crlf_and_reports_eio_when_its_peer_is_gone()
    {
        // The host's own devpts stands in for the app's (the agent uses the app root's dev/pts the same way).
        var credentials = new Credentials(0, 0, [], null);
        using var stdio = ProcessStdio.Terminal("/", new TerminalSize { Rows = 30, Columns = 100 }, credentials);
        Assert.Equal(1, stdio.OutputCount);
        Assert.Equal(stdio.ChildStdin, stdio.ChildStdout);
        using var input = stdio.TakeInput()!;
        Assert.True(input.IsTerminal);
        var seen = new StringBuilder();
        var ended = new ManualResetEventSlim();
        stdio.StartOutput(d => { lock (seen) seen.Append(Encoding.Latin1.GetString(d)); }, _ => throw new InvalidOperationException("a terminal has no stderr"), ended.Set);
        Assert.True(input.Write("hi\n"u8)); // typed: the line discipline echoes it, as "hi\r\n"
        Assert.True(SpinWait.SpinUntil(() => { lock (seen) return seen.ToString().Contains("hi\r\n"); }, 5000), seen.ToString());
        Assert.True(input.Resize(new TerminalSize { Rows = 40, Columns = 120 }));
        stdio.Dispose(); // the peer's last holder: the master reads EIO, the pump ends
        Assert.True(ended.Wait(5000));
    }

    [Fact]
    public void A_stdin_pipe_closes_on_stdin_close_and_writes_fail_after()
    {
        using var stdio = ProcessStdio.Pipes(withStdin: true);
        using var input = stdio.TakeInput()!;
        Assert.False(input.IsTerminal);
        Assert.False(input.Resize(new TerminalSize { Rows = 1, Columns = 1 }));
        Assert.True(input.Write("x"u8));
        input.CloseInput();
        Assert.False(input.Write("y"u8));
        Assert.Null(stdio.TakeInput());
    }
}
