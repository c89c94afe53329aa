using System.Text.RegularExpressions;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>Boots once with one vCPU; init prints its report and 200 numbered lines, then reboots.</summary>
public sealed class OneCpuBootFixture : IDisposable
{
    public const int Lines = 200;
    public readonly string ConsoleLog = Path.Combine(Path.GetTempPath(), $"rkt-kvm-console-{Guid.NewGuid():N}.log");
    public readonly VmmRun? Run;

    public OneCpuBootFixture()
    {
        if (TestEnvironment.HasKvm)
            Run = VmmProcess.BootBusybox(cpus: 1, initMode: $"count:{Lines}", extra: ["--console-log", ConsoleLog]);
    }

    public void Dispose() => File.Delete(ConsoleLog);
}

public sealed class OneCpuBootTests(OneCpuBootFixture boot) : IClassFixture<OneCpuBootFixture>
{
    private VmmRun Booted()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        return boot.Run!;
    }

    [SkippableFact]
    public void Guest_reboot_ends_the_vmm_with_status_0()
    {
        var run = Booted();
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("rkt-kvm-guest: done, rebooting", run.Stdout);
    }

    [SkippableFact]
    public void Init_reports_kernel_one_cpu_and_memory()
    {
        var run = Booted();
        Assert.Matches(@"rkt-kvm-guest: kernel 6\.1\.\d+", run.Stdout);
        Assert.Contains("rkt-kvm-guest: cpus online 1", run.Stdout);
        var mem = Regex.Match(run.Stdout, @"rkt-kvm-guest: MemTotal:\s+(\d+) kB");
        Assert.True(mem.Success, run.ToString());
        long kb = long.Parse(mem.Groups[1].Value);
        Assert.InRange(kb, 90_000, 128 * 1024); // 128 MiB less what the kernel keeps for itself
    }

    [SkippableFact]
    public void Serial_console_is_interrupt_driven()
    {
        var run = Booted();
        var m = Regex.Match(run.Stdout, @"rkt-kvm-guest: serial irq\s+4:\s+(\d+)\s.*ttyS0");
        Assert.True(m.Success, run.ToString());
        Assert.True(long.Parse(m.Groups[1].Value) > 0, m.Value);
    }

    [SkippableFact]
    public void Guest_reads_entropy_from_the_virtio_rng_device()
    {
        var run = Booted();
        var m = Regex.Match(run.Stdout, @"rkt-kvm-guest: hwrng virtio_rng\.0 ([0-9a-f]{32})");
        Assert.True(m.Success, run.ToString());
        Assert.NotEqual(new string('0', 32), m.Groups[1].Value);
    }

    [SkippableFact]
    public void Console_output_is_complete_and_in_order()
    {
        var run = Booted();
        var numbers = Regex.Matches(run.Stdout, @"^rkt-kvm-guest: line (\d+)\r?$", RegexOptions.Multiline)
            .Select(m => int.Parse(m.Groups[1].Value)).ToList();
        Assert.Equal(Enumerable.Range(1, OneCpuBootFixture.Lines), numbers);
    }

    [SkippableFact]
    public void Console_log_file_holds_exactly_what_stdout_got()
    {
        var run = Booted();
        string log = File.ReadAllText(boot.ConsoleLog);
        Assert.Equal(run.Stdout.ReplaceLineEndings("\n").TrimEnd(), log.ReplaceLineEndings("\n").TrimEnd());
    }

    [SkippableFact]
    public void Boot_timer_reports_when_init_ran()
    {
        var run = Booted();
        var m = Regex.Match(run.Stderr, @"Boot timer: guest reached init (\d+) ms after VMM start \((\d+) ms VMM CPU\)");
        Assert.True(m.Success, run.ToString());
        Assert.InRange(int.Parse(m.Groups[1].Value), 1, (int)run.Elapsed.TotalMilliseconds);
    }
}

public sealed class TwoCpuBootTests
{
    [SkippableFact]
    public void Two_vcpus_are_both_online_and_the_vm_ends_cleanly()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        var run = VmmProcess.BootBusybox(cpus: 2);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("rkt-kvm-guest: cpus online 2", run.Stdout);
    }
}

public sealed class PanicTests
{
    [SkippableFact]
    public void Guest_kernel_panic_ends_the_vm_with_status_2_and_logs_the_panic_line()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        var run = VmmProcess.BootBusybox(initMode: "panic");
        Assert.True(run.ExitCode == 2, run.ToString());
        Assert.Contains("rkt-kvm-guest: exiting init to force a kernel panic", run.Stdout);
        Assert.Contains("Kernel panic - not syncing: Attempted to kill init!", run.Stderr);
    }
}

public sealed class BzImageBootTests
{
    /// <summary>The bzImage decompressor runs in the host's interpreter, so this boot is the slowest one (PLATFORM.md).</summary>
    [SkippableFact]
    public void BzImage_boots_to_init_and_reboots()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        var run = VmmProcess.BootBusybox(kernel: TestEnvironment.BzImage);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Matches(@"rkt-kvm-guest: kernel 6\.1\.\d+", run.Stdout);
    }
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PidNamespaceTests
{
    /// <summary>
    /// Started as stage1 starts it (<see cref="VmmProcess.StartAsStage1Does"/>), a jailed VMM is PID 1
    /// of a PID namespace of its own, where it can name no host process; being that namespace's init,
    /// it gets only the signals it handles, so SIGTERM must still stop it (cleanly: status 0, said).
    /// </summary>
    [SkippableFact]
    public void A_jailed_vmm_is_pid_1_of_its_own_pid_namespace_and_sigterm_still_stops_it_cleanly()
    {
        Skip.IfNot(TestEnvironment.HasKvm, TestEnvironment.NoKvmReason);
        const string Hanging = "rkt-kvm-guest: hanging";
        using var vmm = new ConsoleVmm(["--kernel", TestEnvironment.Vmlinux, "--initrd", TestEnvironment.TestInitrd, "--cmdline", "quiet rkt.init=hang"], Hanging);
        Assert.True(vmm.WaitFor(Hanging, VmmProcess.BootTimeout), vmm.Stderr);
        string status = File.ReadAllText($"/proc/{vmm.Pid}/status");
        Assert.Contains($"\nNSpid:\t{vmm.Pid}\t1\n", status);
        Assert.NotEqual(new FileInfo("/proc/self/ns/pid").LinkTarget, new FileInfo($"/proc/{vmm.Pid}/ns/pid").LinkTarget);
        Assert.DoesNotContain("not PID 1 of a PID namespace", vmm.Stderr);

        Assert.Equal(0, Rkt.Kvm.Stage1.Native.Signals.Kill(vmm.Pid, Rkt.Kvm.Stage1.Native.Signals.SIGTERM));
        Assert.Equal(0, vmm.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("SIGTERM: stopping the VM", vmm.Stderr);
    }
}
