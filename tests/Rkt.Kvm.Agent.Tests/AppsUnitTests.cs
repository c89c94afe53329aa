using Rkt.Kvm.GuestAgent;
using Rkt.Kvm.GuestAgent.Apps;

namespace Rkt.Kvm.Agent.Tests;

public class UserDbTests
{
    private const string Passwd = """
        # comment line
        root:x:0:0:root:/root:/bin/sh

        alice:x:1000:1000:Alice:/home/alice:/bin/sh
        broken line without colons
        bad:x:notanumber:1:::
        bob:x:1001:1001::/home/bob:/bin/sh
        """;
    private const string Group = """
        root:x:0:
        #staff:x:49:alice
        staff:x:50:alice
        wheel:x:10:alice, bob
        alice:x:1000:
        garbage
        bad:x:xx:alice
        """;

    private static UserDb Db => new(Passwd, Group);

    [Fact]
    public void Parses_valid_lines_and_skips_comments_blanks_and_malformed()
    {
        Assert.Equal(["root", "alice", "bob"], Db.Users.Select(u => u.Name));
        Assert.Equal(["root", "staff", "wheel", "alice"], Db.Groups.Select(g => g.Name));
        Assert.Equal(["alice", "bob"], Db.Groups.Single(g => g.Name == "wheel").Members);
    }

    [Fact]
    public void Resolves_a_name_with_its_primary_group_and_member_groups()
    {
        var c = Db.Resolve("alice", null, [2000]);
        Assert.Equal((1000u, 1000u), (c.Uid, c.Gid));
        Assert.Equal([50u, 10u, 2000u], c.Groups);
    }

    [Fact]
    public void Group_by_name_or_number_overrides_the_primary_group()
    {
        Assert.Equal(50u, Db.Resolve("alice", "staff", []).Gid);
        Assert.Equal(77u, Db.Resolve("bob", "77", []).Gid);
        Assert.Equal([10u], Db.Resolve("bob", null, []).Groups);
    }

    [Fact]
    public void Numeric_ids_work_without_files()
    {
        var c = new UserDb(null, null).Resolve("1234", "5678", [1, 1, 2]);
        Assert.Equal((1234u, 5678u), (c.Uid, c.Gid));
        Assert.Equal([1u, 2u], c.Groups);
        Assert.Equal((0u, 0u), (new UserDb(null, null).Resolve("", "", []).Uid, new UserDb(null, null).Resolve(null, null, []).Gid));
        Assert.Equal(1001u, Db.Resolve("1001", null, []).Gid); // number in /etc/passwd: its group
    }

    [Fact]
    public void Unknown_names_are_errors()
    {
        Assert.Contains("'nobody' is not in the app's /etc/passwd", Assert.Throws<ArgumentException>(() => Db.Resolve("nobody", null, [])).Message);
        Assert.Contains("'nogroup' is not in the app's /etc/group", Assert.Throws<ArgumentException>(() => Db.Resolve("alice", "nogroup", [])).Message);
    }
}

public class CapabilityAndCgroupTests
{
    [Fact]
    public void Names_map_to_numbers()
    {
        Assert.Equal(12, Capabilities.Number("CAP_NET_ADMIN"));
        Assert.Equal(0, Capabilities.Number("cap_chown"));
        Assert.Equal(21, Capabilities.Number("SYS_ADMIN"));
        Assert.Equal(40, Capabilities.Number("CAP_CHECKPOINT_RESTORE"));
        Assert.Throws<ArgumentException>(() => Capabilities.Number("CAP_FLY"));
    }

    [Fact]
    public void Default_set_retain_and_remove()
    {
        ulong def = Capabilities.Effective([], []);
        Assert.Equal(14UL, ulong.PopCount(def));
        Assert.Equal(0UL, def & (1UL << 21)); // no CAP_SYS_ADMIN by default
        Assert.Equal((1UL << 12) | (1UL << 0), Capabilities.Effective(["CAP_NET_ADMIN", "CAP_CHOWN"], []));
        Assert.Equal(def & ~(1UL << 13), Capabilities.Effective([], ["CAP_NET_RAW"]));
        Assert.Throws<ArgumentException>(() => Capabilities.Effective(["CAP_CHOWN"], ["CAP_KILL"]));
    }

    [Theory]
    [InlineData(0UL, 0UL)]
    [InlineData(2UL, 1UL)]
    [InlineData(1024UL, 39UL)]
    [InlineData(262144UL, 10000UL)]
    [InlineData(1UL, 1UL)]
    [InlineData(999999UL, 10000UL)]
    public void Cpu_shares_convert_like_runc(ulong shares, ulong weight) => Assert.Equal(weight, Cgroup.SharesToWeight(shares));
}

public class Stage2ArgsTests
{
    private static readonly ProcessSpec Spec = new(["sh", "-c", "echo hi"], ["PATH=/bin", "A=b c"], "/work",
        new Credentials(1000, 1000, [50, 10], "alice"), 0x3001, true, "/sys/fs/cgroup/pod/web");

    [Fact]
    public void App_argv_carries_everything_as_flags()
    {
        Assert.Equal(
            ["app", "--status-fd", "3", "--pod-pid", "42", "--root", "/apps/web/root", "--cgroup", "/sys/fs/cgroup/pod/web", "--cwd", "/work",
             "--uid", "1000", "--gid", "1000", "--groups", "50,10", "--caps", "3001", "--no-new-privs", "--env", "PATH=/bin", "--env", "A=b c",
             "--", "sh", "-c", "echo hi"],
            Stage2.AppArgs(42, "/apps/web/root", Spec));
    }

    [Fact]
    public void Exec_and_pod_init_argv()
    {
        var exec = Stage2.ExecArgs(77, Spec with { WorkingDir = "", Credentials = new Credentials(0, 0, [], null), NoNewPrivileges = false });
        Assert.Equal(["exec", "--status-fd", "3", "--target-pid", "77", "--cgroup", "/sys/fs/cgroup/pod/web", "--cwd", "/", "--uid", "0", "--gid", "0", "--caps", "3001"], exec.Take(15));
        Assert.DoesNotContain("--groups", exec);
        Assert.Equal(["pod-init", "--status-fd", "3", "--hostname", "pod1"], Stage2.PodInitArgs("pod1"));
    }

    [Fact]
    public void Status_lines_parse()
    {
        Assert.Equal((123, (string?)null, false), Stage2.ParseStatus("PID 123\n"));
        Assert.Equal((123, (string?)null, true), Stage2.ParseStatus("PID 123\nOK\n"));
        Assert.Equal((55, "execve: No such file or directory", false), Stage2.ParseStatus("PID 55\nERR execve: No such file or directory\n"));
        Assert.Equal((0, "setns: Operation not permitted", false), Stage2.ParseStatus("ERR setns: Operation not permitted\n"));
        Assert.Equal((7, (string?)null, false), Stage2.ParseStatus("PID 7\nOKAY\n"));
    }
}

public class LogBufferTests
{
    [Fact]
    public void Keeps_order_and_sequence()
    {
        var b = new LogBuffer();
        b.Append(LogBuffer.Stdout, "a"u8, 1);
        b.Append(LogBuffer.Stderr, "b"u8, 2);
        b.Append(LogBuffer.Stdout, ""u8, 3); // ignored
        b.Append(LogBuffer.Stdout, "c"u8, 4);
        var (records, complete, _) = b.Read(0);
        Assert.Equal([1UL, 2UL, 3UL], records.Select(r => r.Sequence));
        Assert.Equal([1, 2, 1], records.Select(r => r.Stream));
        Assert.Equal("abc", string.Concat(records.Select(r => System.Text.Encoding.ASCII.GetString(r.Data))));
        Assert.False(complete);
        Assert.Equal([3UL], b.Read(3).Records.Select(r => r.Sequence));
    }

    [Fact]
    public void Timestamps_never_go_back_along_the_sequence()
    {
        // Two pump threads take their clocks before the buffer's lock: a later record may carry an earlier time.
        var b = new LogBuffer();
        b.Append(LogBuffer.Stdout, "a"u8, 100);
        b.Append(LogBuffer.Stderr, "b"u8, 90);
        b.Append(LogBuffer.Stdout, "c"u8, 120);
        Assert.Equal([100L, 100L, 120L], b.Read(0).Records.Select(r => r.TimestampNs));
    }

    [Fact]
    public void Drops_oldest_past_the_bound_and_counts()
    {
        var b = new LogBuffer(maxBytes: 10);
        for (int i = 0; i < 6; i++) b.Append(LogBuffer.Stdout, "abcd"u8, i);
        var records = b.Read(0).Records;
        Assert.Equal([5UL, 6UL], records.Select(r => r.Sequence));
        Assert.Equal(4UL, b.Dropped);
        Assert.True(b.Bytes <= 10);
        b.Append(LogBuffer.Stdout, new byte[25], 9); // a record larger than the bound keeps its tail
        Assert.Equal(10, b.Bytes);
    }

    [Fact]
    public async Task Follow_streams_new_records_until_complete()
    {
        var b = new LogBuffer();
        b.Append(LogBuffer.Stdout, "1"u8, 1);
        var seen = new List<ulong>();
        var reader = Task.Run(async () => { await foreach (var r in b.ReadAllAsync(0, follow: true)) seen.Add(r.Sequence); });
        await Task.Delay(50);
        b.Append(LogBuffer.Stderr, "2"u8, 2);
        await Task.Delay(50);
        b.Append(LogBuffer.Stdout, "3"u8, 3);
        b.Complete();
        await reader.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal([1UL, 2UL, 3UL], seen);
        b.Append(LogBuffer.Stdout, "late"u8, 4); // after completion: ignored
        Assert.Equal(3, b.Read(0).Records.Count);
    }
}

public class ChildStatusTableTests
{
    [Fact]
    public async Task Status_before_claim_is_kept_and_claim_before_exit_waits()
    {
        var t = new ChildStatusTable();
        t.Deliver(10, new ExitStatus(3, 0));
        Assert.Equal(new ExitStatus(3, 0), await t.Claim(10));
        Assert.Equal(0, t.UnclaimedCount);
        var waiting = t.Claim(11);
        Assert.False(waiting.IsCompleted);
        t.Deliver(11, ExitStatus.FromWaitStatus(9));
        Assert.Equal(new ExitStatus(0, 9), await waiting);
    }

    [Fact]
    public void Unclaimed_map_is_bounded_oldest_dropped()
    {
        var t = new ChildStatusTable(capacity: 3);
        for (int pid = 1; pid <= 5; pid++) t.Deliver(pid, new ExitStatus(pid, 0));
        Assert.Equal(3, t.UnclaimedCount);
        Assert.Equal(2, t.Dropped);
        Assert.False(t.Claim(1).IsCompleted);
        Assert.True(t.Claim(5).IsCompleted);
    }

    [Fact]
    public void Wait_status_decodes()
    {
        Assert.Equal(new ExitStatus(3, 0), ExitStatus.FromWaitStatus(3 << 8));
        Assert.Equal(new ExitStatus(0, 15), ExitStatus.FromWaitStatus(15));
        Assert.Equal(new ExitStatus(0, 9), ExitStatus.FromWaitStatus(9 | 0x80)); // core dumped flag
    }
}

public class BlockingThreadsTests
{
    [Fact]
    public async Task Work_runs_off_the_caller_and_its_result_or_exception_comes_back()
    {
        int caller = Environment.CurrentManagedThreadId;
        Assert.NotEqual(caller, await BlockingThreads.Run(() => Environment.CurrentManagedThreadId));
        var e = await Assert.ThrowsAsync<IOException>(() => BlockingThreads.Run(() => throw new IOException("read failed")));
        Assert.Equal("read failed", e.Message);
    }

    [Fact]
    public async Task Work_goes_to_parked_threads_without_making_new_ones()
    {
        // Two threads busy at once, then parked.
        using (var both = new Barrier(2))
            await Task.WhenAll(BlockingThreads.Run(() => both.SignalAndWait(TimeSpan.FromSeconds(10))), BlockingThreads.Run(() => both.SignalAndWait(TimeSpan.FromSeconds(10))));
        for (int j = 0; j < 200 && BlockingThreads.Idle < 2; j++) await Task.Delay(5);
        Assert.True(BlockingThreads.Idle >= 2);
        int created = BlockingThreads.Created;
        for (int i = 0; i < 5; i++)
        {
            await BlockingThreads.Run(() => Thread.Sleep(1));
            // The thread parks again right after its work; wait until it has.
            for (int j = 0; j < 200 && BlockingThreads.Idle < 2; j++) await Task.Delay(5);
        }
        Assert.Equal(created, BlockingThreads.Created);
        Assert.True(BlockingThreads.Idle is >= 2 and <= BlockingThreads.MaxIdle);
    }

    [Fact]
    public async Task Blocked_work_does_not_hold_up_other_work()
    {
        using var gate = new ManualResetEventSlim();
        Task blocked = BlockingThreads.Run(() => gate.Wait(TimeSpan.FromSeconds(30)));
        Assert.Equal(42, await BlockingThreads.Run(() => 42).WaitAsync(TimeSpan.FromSeconds(10)));
        gate.Set();
        await blocked.WaitAsync(TimeSpan.FromSeconds(10));
    }
}

public class FaultPointsTests
{
    [Fact]
    public void Points_fire_once_each_in_the_order_given()
    {
        var points = new FaultPoints(" stage2:app-setup, pod-init-after-start:c ,stage2:exec-started");
        Assert.Null(points.FireForStage2("exec"));          // not its turn: the app point comes first
        Assert.False(points.Fire("pod-init-after-start:c"));
        Assert.Equal("app-setup", points.FireForStage2("app"));
        Assert.Null(points.FireForStage2("app"));           // fired once
        Assert.False(points.Fire("pod-init-after-start:a")); // another app's start
        Assert.True(points.Fire("pod-init-after-start:c"));
        Assert.Null(points.FireForStage2("pod-init"));
        Assert.Equal("exec-started", points.FireForStage2("exec"));
        Assert.Null(points.FireForStage2("exec"));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData(" , ,")]
    public void Nothing_is_armed_without_the_variable(string? value)
    {
        var points = new FaultPoints(value);
        Assert.Null(points.FireForStage2("app"));
        Assert.False(points.Fire("pod-init-after-start:a"));
    }
}
