using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// One boot of the busybox guest with virtio-9p: exports "rw" and "ro" from the command line and
/// "late", added through the control socket while the guest waits for it. The guest runs file
/// operations (tests/guest/init.sh, mode 9p) and tries to reach a secret file that sits next to the
/// export on the host; then the host stops the VM through the control socket.
/// </summary>
public sealed class NinePBootFixture : IDisposable
{
    public const string Secret = "TOP-SECRET-9P";
    private const string Done = "rkt-kvm-guest: 9p done";
    public readonly string Root = Directory.CreateTempSubdirectory("rkt-kvm-9p-vm-").FullName;
    public string Export => Path.Combine(Root, "export");
    public string ControlPath => Path.Combine(Root, "control.sock");
    public readonly List<string> ControlReplies = [];
    public readonly StringBuilder Stdout = new(), Stderr = new();
    public readonly int ExitCode = -1;
    public readonly bool ControlSocketRemoved;

    public NinePBootFixture()
    {
        if (!TestEnvironment.HasKvm) return;
        Directory.CreateDirectory(Export);
        Directory.CreateDirectory(Path.Combine(Root, "late"));
        File.WriteAllText(Path.Combine(Root, "secret.txt"), Secret + "\n");
        File.WriteAllText(Path.Combine(Root, "late", "hello.txt"), "late\n");
        File.CreateSymbolicLink(Path.Combine(Export, "up"), "..");
        File.CreateSymbolicLink(Path.Combine(Export, "abs"), Path.Combine(Root, "secret.txt"));

        using var vmm = new ConsoleVmm(
        [
            "--kernel", TestEnvironment.Vmlinux, "--initrd", TestEnvironment.TestInitrd, "--memory", "256",
            "--cmdline", "quiet rkt.init=9p", "--control", ControlPath,
            "--9p-export", $"rw={Export}", "--9p-export", $"ro={Export},ro",
        ], Done);
        try
        {
            using var control = ConsoleVmm.ConnectControl(ControlPath, TimeSpan.FromSeconds(30));
            var reader = new StreamReader(new NetworkStream(control));
            string Ask(string line)
            {
                control.Send(Encoding.UTF8.GetBytes(line + "\n"));
                string reply = reader.ReadLine() ?? "(closed)";
                lock (ControlReplies) ControlReplies.Add(reply);
                return reply;
            }
            Ask("{\"op\":\"add-export\",\"name\":\"late\",\"path\":\"" + Path.Combine(Root, "late") + "\",\"readOnly\":true}");
            Ask("{\"op\":\"list-exports\"}");
            if (vmm.WaitFor(Done, VmmProcess.BootTimeout))
            {
                Ask("{\"op\":\"status\"}");
                Ask("{\"op\":\"remove-export\",\"name\":\"late\"}");
                Ask("{\"op\":\"stop\"}");
            }
            ExitCode = vmm.WaitForExit(TimeSpan.FromMinutes(1));
            ControlSocketRemoved = !File.Exists(ControlPath);
            // Kept for reading the guest's dd timings after a passing run.
            File.WriteAllText(Path.Combine(TestEnvironment.RepositoryRoot, "out", "9p-console.log"), vmm.Stdout);
        }
        finally
        {
            lock (Stdout) Stdout.Append(vmm.Stdout);
            lock (Stderr) Stderr.Append(vmm.Stderr);
        }
    }

    public override string ToString() => $"exit {ExitCode}\n--- control ---\n{string.Join("\n", ControlReplies)}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

public sealed class NinePTests(NinePBootFixture vm) : IClassFixture<NinePBootFixture>
{
    private string Stdout
    {
        get
        {
            Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
            lock (vm.Stdout) return vm.Stdout.ToString();
        }
    }

    [SkippableTheory]
    [InlineData("mount")] [InlineData("write")] [InlineData("read")] [InlineData("append")] [InlineData("rename")]
    [InlineData("link")] [InlineData("symlink")] [InlineData("unlink")] [InlineData("mkdir")] [InlineData("readdir")]
    [InlineData("stat")] [InlineData("chmod")] [InlineData("truncate")] [InlineData("rmdir")] [InlineData("setuid-stripped")]
    [InlineData("fifo-refused")] [InlineData("seek-write")] [InlineData("big-size")]
    [InlineData("ro-mount")] [InlineData("ro-read")] [InlineData("ro-create")] [InlineData("ro-unlink")] [InlineData("ro-write")]
    [InlineData("late-read")]
    public void Guest_file_operation_succeeds(string name)
    {
        string stdout = Stdout;
        Assert.True(Regex.IsMatch(stdout, $@"rkt-kvm-guest: 9p ok {Regex.Escape(name)}\r?$", RegexOptions.Multiline), vm.ToString());
    }

    [SkippableFact]
    public void The_guest_never_reads_the_host_file_next_to_the_export()
    {
        string stdout = Stdout;
        Assert.Contains("rkt-kvm-guest: 9p escape /mnt/rw/abs", stdout);
        Assert.DoesNotContain(NinePBootFixture.Secret, stdout);
        Assert.Equal(NinePBootFixture.Secret + "\n", File.ReadAllText(Path.Combine(vm.Root, "secret.txt")));
    }

    [SkippableFact]
    public void Guest_changes_land_in_the_host_directory()
    {
        _ = Stdout;
        Assert.Equal("hel", File.ReadAllText(Path.Combine(vm.Export, "b.txt")));
        Assert.Equal("b.txt", new FileInfo(Path.Combine(vm.Export, "s.txt")).LinkTarget);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead, OperatingSystem.IsWindows() ? 0 : File.GetUnixFileMode(Path.Combine(vm.Export, "b.txt")));
    }

    [SkippableFact]
    public void Control_socket_adds_lists_reports_removes_and_stops()
    {
        _ = Stdout;
        var replies = vm.ControlReplies;
        Assert.True(replies.Count == 5, vm.ToString());
        Assert.StartsWith("{\"ok\":true,\"export\":{\"name\":\"late\"", replies[0]);
        Assert.Contains("\"name\":\"rw\"", replies[1]);
        Assert.Contains("\"name\":\"late\"", replies[1]);
        Assert.Matches("^\\{\"ok\":true,\"state\":\"running\",\"uptimeSeconds\":[0-9.]+,\"exports\":\\[.*\\],\"fids\":[1-9][0-9]*\\}$", replies[2]);
        Assert.Matches("^\\{\"ok\":true,\"closedFds\":[1-9][0-9]*\\}$", replies[3]);
        Assert.Equal("{\"ok\":true,\"state\":\"stopping\"}", replies[4]);
        Assert.True(vm.ExitCode == 0, vm.ToString());
        Assert.True(vm.ControlSocketRemoved, "the control socket file is still there after the VM ended");
    }
}
