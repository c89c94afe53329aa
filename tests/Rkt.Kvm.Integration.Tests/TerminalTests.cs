namespace Rkt.Kvm.Integration.Tests;

/// <summary>One running pod (busybox sleeping) that the terminal tests enter, as a user would.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class TerminalPodFixture : IDisposable
{
    public RktKvmCli? Cli { get; }
    public string? Uuid { get; }
    /// <summary>1 MiB of numbered lines, in the pod at /data/big.</summary>
    public string BigText { get; } = string.Concat(Enumerable.Range(0, 1024).Select(line =>
        string.Join(' ', Enumerable.Range(line * 150, 150).Select(n => n.ToString("D6"))) + "\n"))[..(1 << 20)];

    public TerminalPodFixture()
    {
        if (!TestEnvironment.HasKvm) return;
        Cli = new RktKvmCli();
        var data = Directory.CreateDirectory(Path.Join(Cli.Root, "data")).FullName;
        File.WriteAllText(Path.Join(data, "big"), BigText);
        // "shell" sleeps (enter and exec go into it); "tty" is a shell on a terminal of its own that attach reaches.
        (_, Uuid) = Cli.Start("run", $"--volume=data,kind=host,source={data},readOnly=true", RktKvmCli.Busybox, "--name=shell",
            "--mount=volume=data,target=/data", "--exec=/bin/sleep", "--", "3600", "---",
            RktKvmCli.Busybox, "--name=tty", "--stdin=tty", "--stdout=tty", "--stderr=tty", "--exec=/bin/sh");
        Cli.WaitReady(Uuid);
    }

    public void Dispose() => Cli?.Dispose();
}

/// <summary>
/// Terminals through rkt-kvm, driven from a real pseudo-terminal on the host (<see cref="HostTerminal"/>):
/// <c>enter</c> without a command gets a shell with a terminal of the app's own, which follows resizes,
/// takes ^C as the app's, and returns the shell's exit code; <c>app exec -t</c> streams 1 MiB in order
/// (about 40 s: a terminal in these VMs moves ~27 KB/s, against ~200 KB/s for a pipe);
/// <c>run --interactive</c> is a shell in a one-app pod. The user's terminal is back in cooked mode after each.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class TerminalTests(TerminalPodFixture pod) : IClassFixture<TerminalPodFixture>
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);
    private const string Prompt = "/ # ";

    private RktKvmCli Cli
    {
        get
        {
            Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
            return pod.Cli!;
        }
    }

    [SkippableFact]
    public void Enter_without_a_command_is_a_shell_on_a_terminal_that_follows_resizes_and_takes_ctrl_c()
    {
        var cli = Cli;
        using var term = HostTerminal.Start(cli.StartInfo(["enter", "--app=shell", pod.Uuid!], redirect: false), rows: 30, columns: 100);
        int at = term.WaitFor(Prompt, Wait);
        term.Type("tty; stty size\r");
        at = term.WaitFor("/dev/pts/", Wait, at);
        at = term.WaitFor("30 100", Wait, at);

        term.Resize(40, 120);
        Thread.Sleep(500); // SIGWINCH reaches stage1, which sends the size on
        term.Type("stty size\r");
        at = term.WaitFor("40 120", Wait, at);

        // ^C goes to the app's foreground job, not to rkt-kvm: the sleep ends, the shell and the CLI stay.
        // It is typed once the shell printed "running-42", i.e. took the line and gave the terminal back
        // its cooked modes (ISIG): before that the shell's line editor would read ^C as a plain byte.
        // Even then the sleep must first be the terminal's foreground job (fork, setpgid, tcsetpgrp:
        // seconds on a loaded nested host); a ^C before that reaches the shell, which waits and goes
        // on. So ^C again until the prompt is back (at most 6 tries, well inside the sleep's 30 s).
        term.Type("echo running-$((6*7)); sleep 30; echo slept\r");
        at = term.WaitFor("running-42", Wait, at);
        for (int attempt = 1; ; attempt++)
        {
            Thread.Sleep(300);
            term.Type("\u0003");
            try
            {
                at = term.WaitFor(Prompt, TimeSpan.FromSeconds(3), at);
                break;
            }
            catch (TimeoutException) when (attempt < 6) { }
        }
        term.Type("echo after-$((40+2))\r");
        at = term.WaitFor("after-42", TimeSpan.FromSeconds(20), at);
        Assert.DoesNotContain("\nslept", term.Screen);

        term.Type("exit 3\r");
        Assert.Equal(3, term.WaitForExit(Wait));
        Assert.True(term.IsCooked, "the terminal must be back in cooked mode after the session");
    }

    [SkippableFact]
    public void App_exec_with_a_terminal_delivers_a_MiB_complete_and_in_order()
    {
        var cli = Cli;
        using var term = HostTerminal.Start(cli.StartInfo(["app", "exec", "-t", "--app=shell", pod.Uuid!, "/bin/cat", "/data/big"], redirect: false));
        Assert.Equal(0, term.WaitForExit(TimeSpan.FromMinutes(4)));
        // The app's terminal turns "\n" into "\r\n" (ONLCR), as any terminal does; nothing else may change.
        var shown = term.Screen.Replace("\r\n", "\n");
        Assert.True(shown.Contains(pod.BigText, StringComparison.Ordinal), $"{shown.Length} characters arrived, not the 1 MiB in order");
        Assert.True(term.IsCooked);
    }

    [SkippableFact]
    public void Bad_terminal_requests_fail_with_a_sentence_and_leave_nothing_running()
    {
        var cli = Cli;
        var before = cli.ProcessesMentioning(cli.Root).Count;
        var (rc, _, err) = cli.Run("app", "exec", "-t", "--app=shell", pod.Uuid!, "/bin/true");
        Assert.NotEqual(0, rc);
        Assert.Contains("-t needs a terminal", err);

        (rc, _, err) = cli.Run("enter", "--app=nosuch", pod.Uuid!);
        Assert.NotEqual(0, rc);
        Assert.Contains("no app \"nosuch\"", err);

        // stdin closed at once (not a terminal): the shell reads EOF and ends; its exit code is ours.
        (rc, var stdout, err) = cli.Run("enter", "--app=shell", pod.Uuid!);
        Assert.True(rc == 0, err);

        (rc, stdout, err) = cli.Run("enter", "--app=shell", pod.Uuid!, "/bin/sh", "-c", "echo out; echo err >&2; exit 4");
        Assert.Equal((4, "out\n"), (rc, stdout));
        Assert.Contains("err", err);
        Assert.Equal(before, cli.ProcessesMentioning(cli.Root).Count);
    }

    [SkippableFact]
    public void Attach_reaches_a_running_apps_terminal_and_lists_each_apps_endpoints()
    {
        var cli = Cli;
        Assert.Equal((0, "tty\n"), (cli.Run("attach", "--app=tty", "--mode=list", pod.Uuid!).ExitCode, cli.Run("attach", "--app=tty", "--mode=list", pod.Uuid!).Stdout));
        Assert.Equal("stdout\nstderr\n", cli.Run("attach", "--app=shell", "--mode=list", pod.Uuid!).Stdout);
        var (rc, _, err) = cli.Run("attach", "--app=shell", "--mode=stdin", pod.Uuid!);
        Assert.NotEqual(0, rc);
        Assert.Contains("has no stdin endpoint", err);

        using (var term = HostTerminal.Start(cli.StartInfo(["attach", "--app=tty", pod.Uuid!], redirect: false), rows: 25, columns: 77))
        {
            term.Type("tty; stty size; echo attached-$((40+2))\r");
            int at = term.WaitFor("attached-42", Wait);
            Assert.Contains("25 77", term.Screen);
            Assert.Contains("/dev/pts/", term.Screen);
        } // the attach ends (killed, as a closed terminal would); the app goes on
        Assert.Equal("running", cli.Run("app", "status", pod.Uuid!, "--app=tty").Stdout.Split('\n').First(l => l.StartsWith("state=", StringComparison.Ordinal))[6..]);
        using (var again = HostTerminal.Start(cli.StartInfo(["attach", "--app=tty", pod.Uuid!], redirect: false)))
        {
            again.Type("echo again-$((1+1))\r");
            again.WaitFor("again-2", Wait);
        }

        Assert.Equal(0, cli.Run("console", pod.Uuid!).ExitCode);
    }

    [SkippableFact]
    public void Run_interactive_is_a_shell_in_the_pod_and_the_pod_ends_with_its_exit_code()
    {
        var cli = Cli;
        var uuidFile = Path.Join(cli.Root, "interactive-uuid");
        using var term = HostTerminal.Start(cli.StartInfo(["run", "--interactive", $"--uuid-file-save={uuidFile}", RktKvmCli.Busybox, "--exec=/bin/sh"], redirect: false), rows: 33, columns: 90);
        int at = term.WaitFor(Prompt, TimeSpan.FromMinutes(3));
        term.Type("tty; stty size; hostname\r");
        at = term.WaitFor("/dev/pts/0", Wait, at);
        at = term.WaitFor("33 90", Wait, at);
        at = term.WaitFor("rkt-", Wait, at);
        term.Type("exit 5\r");
        Assert.Equal(5, term.WaitForExit(Wait));
        Assert.True(term.IsCooked);
        var list = cli.Run("list", "--no-legend").Stdout;
        Assert.Contains("exited", list);
        // A terminal for a pod that is not running any more: a sentence, no session.
        var uuid = File.ReadAllText(uuidFile).Trim();
        var (rc, _, err) = cli.Run("enter", uuid);
        Assert.NotEqual(0, rc);
        Assert.Contains("is not running", err);
        (rc, _, err) = cli.Run("attach", uuid);
        Assert.NotEqual(0, rc);
        Assert.Contains("isn't currently running", err);
        // The VM's console, for diagnosing the sandbox: the agent's own lines are there.
        var console = cli.Run("console", uuid);
        Assert.Equal(0, console.ExitCode);
        Assert.Contains("rkt-kvm-agent", console.Stdout);
    }

    [SkippableFact]
    public void Run_interactive_refuses_two_apps()
    {
        var cli = Cli;
        var (rc, _, err) = cli.Run("run", "--interactive", RktKvmCli.Busybox, "--name=a", RktKvmCli.Busybox, "--name=b");
        Assert.NotEqual(0, rc);
        Assert.Contains("--interactive supports only one app", err);
    }
}
