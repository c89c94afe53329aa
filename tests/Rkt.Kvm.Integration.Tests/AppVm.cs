using System.Diagnostics;
using System.Text;
using Rkt.Kvm.Agent.Client;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// The apps test initramfs: the agent initramfs with a busybox rootfs appended at /images/busybox
/// (the kernel unpacks concatenated cpio archives in order). The rootfs is the host's Debian
/// busybox-static with a symlink per applet, /etc/passwd and /etc/group (users alice 1000 and bob
/// 1001; alice in staff 50 and wheel 10), built with rkt-kvm-mkinitramfs from a generated spec.
/// </summary>
public static class AppVm
{
    public const string BusyboxRoot = "/images/busybox";

    public const string Passwd = "root:x:0:0:root:/root:/bin/sh\n# test users\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n";
    public const string Group = "root:x:0:\nwheel:x:10:alice,bob\nstaff:x:50:alice\nalice:x:1000:\nbob:x:1001:\n";

    public static string BuildInitrd(string directory)
    {
        const string busybox = "/usr/bin/busybox";
        if (!File.Exists(busybox)) throw new FileNotFoundException($"{busybox} is missing: install Debian's busybox-static (make deps).");
        File.WriteAllText(Path.Combine(directory, "passwd"), Passwd);
        File.WriteAllText(Path.Combine(directory, "group"), Group);
        var spec = new StringBuilder();
        foreach (string dir in new[] { "/images", BusyboxRoot, "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp", "root", "home", "home/alice", "home/bob", "data" })
        {
            string path = dir.StartsWith('/') ? dir : $"{BusyboxRoot}/{dir}";
            spec.AppendLine($"dir {path} {(dir == "tmp" ? "1777" : "0755")} 0 0");
        }
        spec.AppendLine($"file {BusyboxRoot}/bin/busybox {busybox} 0755 0 0");
        spec.AppendLine($"file {BusyboxRoot}/etc/passwd {Path.Combine(directory, "passwd")} 0644 0 0");
        spec.AppendLine($"file {BusyboxRoot}/etc/group {Path.Combine(directory, "group")} 0644 0 0");
        foreach (string applet in Run(busybox, "--list-full").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (applet == "bin/busybox") continue;
            int depth = applet.Count(c => c == '/');
            spec.AppendLine($"slink {BusyboxRoot}/{applet} {string.Concat(Enumerable.Repeat("../", depth))}bin/busybox 0777 0 0");
        }
        string specPath = Path.Combine(directory, "busybox-rootfs.spec");
        File.WriteAllText(specPath, spec.ToString());
        string rootfsCpio = Path.Combine(directory, "busybox-rootfs.cpio");
        string tool = Path.Combine(TestEnvironment.RepositoryRoot, "out/tools/rkt-kvm-mkinitramfs");
        Run(File.Exists(tool) ? tool : throw new FileNotFoundException($"{tool} is missing: build it with `make all`."), "--spec", specPath, "-o", rootfsCpio);
        string initrd = Path.Combine(directory, "apps-initrd.cpio");
        using (var output = File.Create(initrd))
        {
            using (var agent = File.OpenRead(TestEnvironment.AgentInitrd)) agent.CopyTo(output);
            using (var rootfs = File.OpenRead(rootfsCpio)) rootfs.CopyTo(output);
        }
        return initrd;
    }

    private static string Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{program} {string.Join(' ', args)} failed ({p.ExitCode}): {error}");
        return output;
    }

    public static async Task<(AgentVmProcess Vm, string Directory)> BootAsync(int cpus = 2, ulong memoryMiB = 384)
    {
        string dir = Directory.CreateTempSubdirectory("rkt-kvm-apps-").FullName;
        string initrd = BuildInitrd(dir);
        var vm = await AgentVmProcess.StartAsync(new AgentVmOptions
        {
            VmmPath = TestEnvironment.Vmm,
            CommandLine = AgentVmOptions.DefaultCommandLine(TestEnvironment.Vmlinux, initrd) with
            {
                Cpus = cpus,
                MemoryMiB = memoryMiB,
                // RKT_KVM_APPS_CONSOLE: keep the console (see AppVmFixture) and let the agent log its helper runs.
                Cmdline = Environment.GetEnvironmentVariable("RKT_KVM_APPS_CONSOLE") is { Length: > 0 } ? "quiet RKT_KVM_AGENT_DEBUG=1" : "quiet",
            },
            ReadyTimeout = VmmProcess.BootTimeout,
        });
        return (vm, dir);
    }
}
