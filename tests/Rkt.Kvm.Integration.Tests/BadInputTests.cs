using System.Buffers.Binary;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// Every bad input gets one line on stderr, exit status 1 (not a crash or core dump), and leaves
/// no file behind (the console log is only created once the VM is about to start).
/// </summary>
public sealed class BadInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rkt-kvm-bad-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string ConsoleLog => Path.Combine(_dir, "console.log");

    private string Write(string name, byte[] content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, content);
        return path;
    }

    private void AssertRefused(IEnumerable<string> args, string expected)
    {
        var before = Directory.GetFileSystemEntries(_dir).Order().ToArray();
        var run = VmmProcess.Run([.. args, "--console-log", ConsoleLog], TimeSpan.FromMinutes(1), _dir);
        Assert.True(run.ExitCode == 1, run.ToString());
        var lines = run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, run.ToString());
        Assert.StartsWith("rkt-kvm-vmm: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.Equal("", run.Stdout);
        Assert.Equal(before, Directory.GetFileSystemEntries(_dir).Order().ToArray());
    }

    private void RequireKvm() => Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);

    [SkippableTheory]
    // What a device model bug or an exploit on a vCPU thread would do. An AF_INET socket: the
    // process's filter (installed on every thread before the vCPUs start) forbids it. An AF_UNIX
    // socket: the process's filter allows it (the device thread makes them), the filter each vCPU
    // thread stacks on itself as it starts does not (ThreadSyscallPolicy).
    [InlineData("vcpu-forbidden-syscall", "socket(AF_INET), which the seccomp filter forbids")]
    [InlineData("vcpu-thread-filter", "socket(AF_UNIX), which only the vCPU threads' own seccomp filter forbids")]
    public void A_locked_down_vcpu_thread_that_makes_a_forbidden_call_kills_the_vmm_by_sigsys_with_a_clear_line(string fault, string call)
    {
        RequireKvm();
        var run = VmmProcess.Run(["--kernel", TestEnvironment.Vmlinux, "--initrd", TestEnvironment.TestInitrd, "--console", "none",
            "--cmdline", "quiet rkt.init=hang", "--test-fault", fault], TimeSpan.FromMinutes(1), _dir);
        // The filter ends the VMM, and whoever waits for it must say why.
        Assert.True(run.ExitCode == 128 + 31, run.ToString());
        Assert.Contains($"--test-fault {fault}: this vCPU thread now calls {call}", run.Stderr);
        Assert.DoesNotContain("the filter did not kill the VMM", run.Stderr);
        Assert.Contains("killed by SIGSYS: it made a system call its seccomp filter forbids", Rkt.Kvm.Vmm.Client.VmmExit.Describe(run.ExitCode));
    }

    [SkippableFact]
    public void A_forged_jail_marker_does_not_make_the_vmm_pivot_the_hosts_mount_namespace()
    {
        RequireKvm();
        // The marker says "already re-executed into its own namespaces"; the VMM must check the kernel, not trust it.
        string before = File.ReadAllText("/proc/self/mountinfo");
        var run = VmmProcess.Run(["--kernel", TestEnvironment.Vmlinux, "--initrd", TestEnvironment.TestInitrd, "--console", "none"],
            TimeSpan.FromMinutes(1), _dir, new Dictionary<string, string> { ["RKT_KVM_VMM_JAIL_HOST_NETNS"] = "0" });
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.Contains("rkt-kvm-vmm: VMM jail: this process shares its mount namespace with /proc/", run.Stderr);
        Assert.Equal(before, File.ReadAllText("/proc/self/mountinfo")); // propagation (shared:N) unchanged
    }

    [SkippableFact]
    public void Missing_kernel() => AssertRefused(["--kernel", Path.Combine(_dir, "nope")], "does not exist");

    [SkippableFact]
    public void Kernel_that_is_neither_elf_nor_bzimage()
    {
        RequireKvm();
        AssertRefused(["--kernel", Write("text", "#!/bin/sh\necho not a kernel\n"u8.ToArray())], "neither an ELF vmlinux nor a bzImage");
    }

    [SkippableFact]
    public void Truncated_elf()
    {
        RequireKvm();
        var head = new byte[4096];
        using (var f = File.OpenRead(TestEnvironment.Vmlinux)) f.ReadExactly(head);
        AssertRefused(["--kernel", Write("truncated", head)], "truncated");
    }

    [SkippableFact]
    public void Elf_segment_outside_guest_ram()
    {
        RequireKvm();
        // The real vmlinux with its first PT_LOAD moved to 1 GiB, far beyond a 128 MiB guest.
        byte[] elf = File.ReadAllBytes(TestEnvironment.Vmlinux);
        int phoff = (int)BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(32));
        int phnum = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(56));
        int load = Enumerable.Range(0, phnum).First(i => BinaryPrimitives.ReadUInt32LittleEndian(elf.AsSpan(phoff + i * 56)) == 1);
        BinaryPrimitives.WriteUInt64LittleEndian(elf.AsSpan(phoff + load * 56 + 24), 0x4000_0000);
        AssertRefused(["--kernel", Write("moved", elf), "--memory", "128"], "outside guest RAM");
    }

    [SkippableFact]
    public void Memory_too_small_for_kernel_and_initrd()
    {
        RequireKvm();
        string initrd = Write("big-initrd", new byte[12 << 20]);
        AssertRefused(["--kernel", TestEnvironment.Vmlinux, "--initrd", initrd, "--memory", "32"], "too small");
    }

    [SkippableFact]
    public void Command_line_too_long()
    {
        RequireKvm();
        AssertRefused(["--kernel", TestEnvironment.Vmlinux, "--cmdline", new string('x', 3000)], "command line");
    }

    [SkippableTheory]
    [InlineData("0")]
    [InlineData("9")]
    [InlineData("-1")]
    public void Cpu_count_out_of_range(string cpus) => AssertRefused(["--kernel", "k", "--cpus", cpus], "--cpus");

    [SkippableFact]
    public void Kvm_device_missing() =>
        AssertRefused(["--kernel", Write("k", [0x7F]), "--kvm-device", Path.Combine(_dir, "no-kvm")], "Cannot open");

    [SkippableFact]
    public void Kvm_device_not_openable() =>
        AssertRefused(["--kernel", Write("k", [0x7F]), "--kvm-device", Directory.CreateDirectory(Path.Combine(_dir, "dir")).FullName], "Cannot open");

    [SkippableFact]
    public void Kvm_device_that_is_not_kvm() =>
        AssertRefused(["--kernel", Write("k", [0x7F]), "--kvm-device", "/dev/null"], "not a KVM device");
}
