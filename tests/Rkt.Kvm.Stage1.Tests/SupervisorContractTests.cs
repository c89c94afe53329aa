using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Stage1.Entrypoints.Supervision;
using Rkt.Kvm.Stage1.Runtime;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>
/// The contract between stage1 run (root) and the pod supervisor it starts as the pod's user: the
/// plan goes down whole and alone, reports come back checked (run treats them as input from a less
/// trusted process), and the supervisor's seccomp filter refuses what reaches past it.
/// </summary>
public sealed class SupervisorContractTests
{
    private const string Uuid = "0f5b3c52-8a3b-4c62-9d3e-0a1b2c3d4e5f";

    [Fact]
    public void A_plan_goes_through_the_pipe_whole_and_leaves_what_follows_it_unread()
    {
        var configure = new ConfigurePodRequest { Hostname = "rkt-x", Hosts = "127.0.0.1 localhost\n", ResolvConf = "nameserver 10.0.0.1\n" };
        configure.Interfaces.Add(new NetworkInterface { Mac = "02:00:00:00:00:01", Mtu = 1500 });
        var apps = new[] { new AddAppRequest { Name = "web", Tty = true }, new AddAppRequest { Name = "db" } };
        var plan = new SupervisorPlan(false, "web", configure, apps);
        using var pipe = new MemoryStream();
        pipe.Write(plan.Serialize());
        pipe.Write(System.Text.Encoding.UTF8.GetBytes(RunNotice.Stop + RunNotice.VmExited("VMM exited with status 0")));
        pipe.Position = 0;

        var read = SupervisorPlan.ReadFrom(pipe);
        Assert.False(read.Mutable);
        Assert.Equal("web", read.InteractiveApp);
        Assert.Equal(configure, read.Configure);
        Assert.Equal(apps, read.Apps);
        using var rest = new StreamReader(pipe);
        Assert.Equal((true, (string?)null), RunNotice.Parse(rest.ReadLine()!));
        Assert.Equal((false, "VMM exited with status 0"), RunNotice.Parse(rest.ReadLine()!));

        var mutable = new SupervisorPlan(true, null, new ConfigurePodRequest(), []);
        var back = SupervisorPlan.ReadFrom(new MemoryStream(mutable.Serialize()));
        Assert.True(back.Mutable);
        Assert.Null(back.InteractiveApp);
        Assert.Empty(back.Apps);
    }

    [Fact]
    public void A_cut_short_oversized_or_padded_plan_is_refused()
    {
        var framed = new SupervisorPlan(false, null, new ConfigurePodRequest { Hostname = "h" }, [new AddAppRequest { Name = "a" }]).Serialize();
        Assert.Throws<EndOfStreamException>(() => SupervisorPlan.ReadFrom(new MemoryStream(framed[..^1])));
        var huge = (byte[])framed.Clone();
        BitConverter.TryWriteBytes(huge.AsSpan(0, 4), SupervisorPlan.MaxBytes + 1);
        Assert.Contains("a plan of", Assert.Throws<Stage1Exception>(() => SupervisorPlan.ReadFrom(new MemoryStream(huge))).Message);
        var negative = (byte[])framed.Clone();
        BitConverter.TryWriteBytes(negative.AsSpan(0, 4), -5);
        Assert.Throws<Stage1Exception>(() => SupervisorPlan.ReadFrom(new MemoryStream(negative)));
        // One byte more inside the frame than the plan holds.
        var padded = new byte[framed.Length + 1];
        framed.CopyTo(padded, 0);
        BitConverter.TryWriteBytes(padded.AsSpan(0, 4), framed.Length - 4 + 1);
        Assert.Contains("after its last app", Assert.Throws<Stage1Exception>(() => SupervisorPlan.ReadFrom(new MemoryStream(padded))).Message);
        Assert.Equal((false, (string?)null), RunNotice.Parse("garbage"));
        Assert.Equal((false, (string?)null), RunNotice.Parse("stop now"));
        // One line whatever the description holds: a newline in it would end the notice early.
        var notice = RunNotice.VmExited("a\nb c");
        Assert.Equal(notice.Length - 1, notice.IndexOf('\n'));
        Assert.Equal((false, "a b c"), RunNotice.Parse(notice.TrimEnd('\n')));
    }

    [Fact]
    public void Reports_round_trip_and_run_refuses_what_is_not_one()
    {
        SupervisorReport[] reports =
        [
            new SupervisorReport.AppExited("web", 137), new SupervisorReport.Ready(),
            new SupervisorReport.TimelineEntry("apps-started", 1764912345678), new SupervisorReport.TimelineEntry("agent-process-start-to-ready-ms", 12.5),
            new SupervisorReport.Result(0),
        ];
        foreach (var report in reports)
        {
            var line = report.Format();
            Assert.EndsWith("\n", line);
            Assert.Equal(report, SupervisorReport.Parse(line.TrimEnd('\n')));
        }
        string[] refused =
        [
            "", "ready now", "exit ../../etc/passwd 0", "exit web", "exit web 256", "exit web -1", "exit web 1e3", "exit Web 0",
            "timeline apps-started NaN", "timeline apps-started Infinity", "timeline Apps 1", "timeline ../x 1", "timeline " + new string('a', 65) + " 1",
            "result", "result 300", "status web 0", "exit web 0 extra", new string('x', SupervisorContract.MaxReportLine + 1),
        ];
        foreach (var line in refused) Assert.Throws<FormatException>(() => SupervisorReport.Parse(line));
    }

    [Fact]
    public void The_command_line_names_the_pod_and_the_two_pipes()
    {
        var args = new SupervisorArguments(Uuid, 5, 7);
        Assert.Equal(["supervise", Uuid, "--plan-fd", "5", "--report-fd", "7"], args.ToArgs());
        Assert.Equal(args, SupervisorArguments.Parse(args.ToArgs().Skip(1).ToList()));
        Assert.Equal(PodRuntime.SupervisorEntrypoint, args.ToArgs()[0]);
        Assert.Throws<Stage1Exception>(() => SupervisorArguments.Parse([Uuid, "--plan-fd", "1", "--report-fd", "7"])); // not one of stdio
        Assert.Throws<Stage1Exception>(() => SupervisorArguments.Parse([Uuid, "--plan-fd", "5"]));
        Assert.Throws<Stage1Exception>(() => SupervisorArguments.Parse(["not-a-uuid", "--plan-fd", "5", "--report-fd", "7"]));
    }

    [Fact]
    public void The_supervisor_runs_as_a_user_of_its_own_beside_the_vmms()
    {
        var supervisor = PodSupervisorUser.For(Uuid);
        var vmm = PodVmmUser.For(Uuid);
        Assert.Equal(supervisor.Uid, supervisor.Gid);
        Assert.InRange(supervisor.Uid, PodSupervisorUser.First, PodSupervisorUser.First + PodVmmUser.Count - 1);
        Assert.Equal(vmm.Uid - PodVmmUser.First, supervisor.Uid - PodSupervisorUser.First); // the same hash, the next range
        Assert.NotEqual(vmm.Uid, supervisor.Uid);
        Assert.Equal(supervisor, PodSupervisorUser.For(Uuid.ToUpperInvariant()));
    }

    [Fact]
    public void The_supervisors_filter_refuses_what_reaches_past_it_and_every_socket_but_a_unix_one_and_terminal_typing_with_eperm()
    {
        var program = SupervisorLockDown.Filter();
        const uint Eperm = SeccompProgram.RetErrno | 1;
        foreach (var (name, nr) in DeniedSyscalls.BeyondTheProcess)
            Assert.True(SeccompProgram.Evaluate(program, nr, new ulong[6]) == Eperm, $"{name} should fail with EPERM");
        // What a gRPC client over a Unix socket and the .NET runtime do: sockets, epoll, files, memory, threads, signals.
        foreach (int nr in new[] { 0, 1, 3, 9, 10, 11, 13, 14, 42, 44, 45, 56, 62, 202, 232, 233, 257, 281, 291 })
            Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(program, nr, new ulong[6]));
        Assert.Equal(SeccompProgram.RetKillProcess, SeccompProgram.Evaluate(program, 0, new ulong[6], arch: 0x40000003 /* i386 */));
        // Sockets: Unix ones only (socket and socketpair, by family); no network.
        Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(program, 41, [1, 1, 0, 0, 0, 0]));
        Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(program, 53, [1, 1, 0, 0, 0, 0]));
        foreach (ulong family in new ulong[] { 2, 10, 16, 17, 40, 0x1_0000_0001 /* high half ignored: AF_UNIX to the kernel */ })
            Assert.Equal(family == 0x1_0000_0001 ? SeccompProgram.RetAllow : Eperm, SeccompProgram.Evaluate(program, 41, [family, 1, 0, 0, 0, 0]));
        Assert.Equal(Eperm, SeccompProgram.Evaluate(program, 53, [2, 1, 0, 0, 0, 0]));
        // ioctl: any request but the two that type into or drive the user's terminal.
        Assert.Equal(Eperm, SeccompProgram.Evaluate(program, 16, [0, SupervisorLockDown.TIOCSTI, 0, 0, 0, 0]));
        Assert.Equal(Eperm, SeccompProgram.Evaluate(program, 16, [1, SupervisorLockDown.TIOCLINUX, 0, 0, 0, 0]));
        foreach (ulong request in new ulong[] { 0x5401 /* TCGETS */, 0x5402 /* TCSETS */, 0x5413 /* TIOCGWINSZ */, 0x541B /* FIONREAD */, 0x5421 /* FIONBIO */ })
            Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(program, 16, [0, request, 0, 0, 0, 0]));
        // Threads, not namespaces: clone with glibc's thread flags, never with CLONE_NEWUSER and the rest; clone3 says ENOSYS (glibc then clones).
        Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(program, 56, [0x003D0F00, 0, 0, 0, 0, 0]));
        foreach (uint flag in new uint[] { 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000 })
            Assert.Equal(Eperm, SeccompProgram.Evaluate(program, 56, [0x003D0F00 | flag, 0, 0, 0, 0, 0]));
        Assert.Equal(SeccompProgram.RetErrno | 38, SeccompProgram.Evaluate(program, 435, new ulong[6]));
        // The rules do not disturb the calls after them.
        Assert.Equal(Eperm, SeccompProgram.Evaluate(program, 59, new ulong[6]));
        Assert.Equal(SeccompProgram.RetAllow, SeccompProgram.Evaluate(program, 17, [0, SupervisorLockDown.TIOCSTI, 0, 0, 0, 0]));
    }
}
