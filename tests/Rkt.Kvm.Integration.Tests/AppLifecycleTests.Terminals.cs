using System.Text;
using System.Text.RegularExpressions;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>The agent's terminals and attachable streams: Exec with a tty, apps with stdin or a tty, Attach.</summary>
public sealed partial class AppLifecycleTests
{
    /// <summary>Reads <paramref name="stream"/> until its output contains <paramref name="text"/>; returns all it read.</summary>
    private static async Task<string> ReadUntil(ProcessStream stream, StringBuilder seen, string text)
    {
        using var timeout = new CancellationTokenSource(Long);
        while (!seen.ToString().Contains(text, StringComparison.Ordinal))
        {
            var output = await stream.ReadAsync(timeout.Token) ?? throw new Xunit.Sdk.XunitException($"the stream ended before '{text}': {seen}");
            if (output.Exit is { } exit) throw new Xunit.Sdk.XunitException($"the process exited ({exit}) before '{text}': {seen}");
            seen.Append(Encoding.Latin1.GetString(output.Data.Span));
        }
        return seen.ToString();
    }

    private static async Task<ExecExit> ReadToExit(ProcessStream stream, StringBuilder seen)
    {
        using var timeout = new CancellationTokenSource(Long);
        while (await stream.ReadAsync(timeout.Token) is { } output)
        {
            if (output.Exit is { } exit) return exit;
            seen.Append(Encoding.Latin1.GetString(output.Data.Span));
        }
        throw new Xunit.Sdk.XunitException($"the stream ended without an exit: {seen}");
    }

    [SkippableFact]
    public async Task Exec_with_a_tty_is_a_terminal_of_the_apps_own_that_resizes_interrupts_and_streams_in_order()
    {
        var client = Client;
        await client.AddAppAsync(App("ttyhost", "exec sleep 600", r => r.User = "1000"));
        await client.StartAppAsync("ttyhost");
        var start = new ExecStart { App = "ttyhost", Tty = true, Size = new TerminalSize { Rows = 30, Columns = 100 } };
        start.Argv.Add("/bin/sh");
        using var shell = await client.StartExecAsync(start, Long);
        var seen = new StringBuilder();
        await shell.WriteAsync("tty; stty size; ls -ln $(tty); echo term=$TERM\n"u8.ToArray());
        await ReadUntil(shell, seen, "term=xterm");
        Assert.Matches("/dev/pts/[0-9]+", seen.ToString());
        Assert.Contains("30 100", seen.ToString());
        Assert.Matches("crw--w---- +1 1000 ", seen.ToString()); // the terminal is the user's, as a login's is

        await shell.ResizeAsync(40, 120);
        await shell.WriteAsync("stty size\n"u8.ToArray());
        await ReadUntil(shell, seen, "40 120");

        await shell.WriteAsync("sleep 30\n"u8.ToArray());
        await Task.Delay(1000);
        await shell.WriteAsync("\u0003"u8.ToArray());
        await shell.WriteAsync("echo rc-$?\n"u8.ToArray());
        await ReadUntil(shell, seen, "rc-130"); // the sleep died of SIGINT from the terminal

        // Bulk output, in order (one line: each newline costs the guest's terminal ~0.4 ms more, ONLCR).
        await shell.WriteAsync("seq 1 3000 | tr '\\n' ' '; echo; exit 7\n"u8.ToArray());
        seen.Clear();
        var exit = await ReadToExit(shell, seen);
        Assert.Equal((7, 0), (exit.ExitCode, exit.Signal));
        var text = seen.ToString();
        text = text[(text.IndexOf("exit 7\r\n", StringComparison.Ordinal) + "exit 7\r\n".Length)..]; // after the terminal's echo of the command
        var numbers = text.Split([' ', '\r', '\n']).Where(w => Regex.IsMatch(w, "^[0-9]+$")).Select(int.Parse).ToList();
        Assert.True(numbers.SequenceEqual(Enumerable.Range(1, 3000)), $"{numbers.Count} numbers, not 1..3000 in order");
        await client.StopAppAsync("ttyhost", TimeSpan.FromSeconds(5));
        await client.RemoveAppAsync("ttyhost");
    }

    [SkippableFact]
    public async Task Attach_writes_an_apps_stdin_or_terminal_and_reads_its_output_then_its_exit()
    {
        var client = Client;
        await client.AddAppAsync(App("reader", "while read l; do echo \"got:$l\"; done; echo eof; exit 4", r => r.Stdin = true));
        await client.StartAppAsync("reader");
        using (var attached = await client.AttachAsync(new AttachStart { Name = "reader" }, Long))
        {
            var seen = new StringBuilder();
            await attached.WriteAsync("one\n"u8.ToArray());
            await ReadUntil(attached, seen, "got:one");
            await attached.CloseStdinAsync();
            var exit = await ReadToExit(attached, seen);
            Assert.Equal(4, exit.ExitCode);
            Assert.Contains("eof", seen.ToString());
        }

        await client.AddAppAsync(App("ttyapp", "echo ready; exec sh", r => { r.Tty = true; r.TerminalSize = new TerminalSize { Rows = 20, Columns = 70 }; }));
        await client.StartAppAsync("ttyapp");
        using (var attached = await client.AttachAsync(new AttachStart { Name = "ttyapp", SinceSequence = 1 }, Long))
        {
            var seen = new StringBuilder();
            await ReadUntil(attached, seen, "ready"); // output from before the attach: the kept records
            await attached.WriteAsync("tty; stty size\n"u8.ToArray());
            await ReadUntil(attached, seen, "20 70");
            await attached.ResizeAsync(21, 71);
            await attached.WriteAsync("stty size; exit 6\n"u8.ToArray());
            var exit = await ReadToExit(attached, seen);
            Assert.Equal(6, exit.ExitCode);
            Assert.Contains("21 71", seen.ToString());
            Assert.Matches("/dev/pts/[0-9]+", seen.ToString());
        }
        // The terminal's output is the app's log too.
        var log = new StringBuilder();
        await foreach (var r in client.LogsAsync("ttyapp", follow: false, Long)) log.Append(r.Data.ToStringUtf8());
        Assert.Contains("ready", log.ToString());
        await client.RemoveAppAsync("reader");
        await client.RemoveAppAsync("ttyapp");
    }

    [SkippableFact]
    public async Task Terminal_and_attach_errors_are_statuses_with_a_sentence()
    {
        var client = Client;
        var missing = await Assert.ThrowsAsync<AgentException>(async () =>
        {
            using var s = await client.AttachAsync(new AttachStart { Name = "nosuch" }, Long);
            await ReadToExit(s, new StringBuilder());
        });
        Assert.Equal(AgentFailure.NotFound, missing.Failure);

        await client.AddAppAsync(App("plain", "exec sleep 600"));
        var notStarted = await Assert.ThrowsAsync<AgentException>(async () =>
        {
            using var s = await client.AttachAsync(new AttachStart { Name = "plain" }, Long);
            await ReadToExit(s, new StringBuilder());
        });
        Assert.Contains("once it is started", notStarted.Message);

        var execNotRunning = new ExecStart { App = "plain", Tty = true };
        execNotRunning.Argv.Add("/bin/sh");
        var notRunning = await Assert.ThrowsAsync<AgentException>(async () =>
        {
            using var s = await client.StartExecAsync(execNotRunning, Long);
            await ReadToExit(s, new StringBuilder());
        });
        Assert.Contains("not running", notRunning.Message);

        await client.StartAppAsync("plain");
        var noStdin = await Assert.ThrowsAsync<AgentException>(async () =>
        {
            using var s = await client.AttachAsync(new AttachStart { Name = "plain", Live = true }, Long);
            await s.WriteAsync("x\n"u8.ToArray());
            await ReadToExit(s, new StringBuilder());
        });
        Assert.Contains("no stdin or terminal", noStdin.Message);
        // The app is untouched by all that.
        Assert.Equal(AppState.Running, (await client.AppStatusAsync("plain")).State);
        await client.StopAppAsync("plain", TimeSpan.FromSeconds(5));
        await client.RemoveAppAsync("plain");
    }
}
