using System.Diagnostics;
using System.Text;
using Rkt.Kvm.Agent.Vm;
using Rkt.Kvm.Vmm.Client;

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

    /// <summary>RKT_KVM_APPS_CONSOLE: keep the console (see AppVmFixture) and let the agent log its helper runs.</summary>
    internal static string Cmdline => Environment.GetEnvironmentVariable("RKT_KVM_APPS_CONSOLE") is { Length: > 0 } ? "quiet RKT_KVM_AGENT_DEBUG=1" : "quiet";

    private static readonly Lock s_lock = new();
    private static readonly Dictionary<(int Cpus, ulong MemoryMiB), Task<AppVmTemplate>> s_templates = [];

    /// <summary>
    /// The apps VM's template for this size: made by one cold boot the first time a test asks for it,
    /// then restored by every test that needs a fresh apps VM (each restore is its own VM, sharing
    /// nothing with the others but the template's pages, copy-on-write). Removed when the test run ends.
    /// </summary>
    public static Task<AppVmTemplate> TemplateAsync(int cpus = 2, ulong memoryMiB = 384)
    {
        lock (s_lock)
        {
            if (!s_templates.TryGetValue((cpus, memoryMiB), out var template) || template.IsFaulted)
                s_templates[(cpus, memoryMiB)] = template = MakeTemplateAsync(cpus, memoryMiB);
            return template;
        }
    }

    private static async Task<AppVmTemplate> MakeTemplateAsync(int cpus, ulong memoryMiB)
    {
        string dir = Directory.CreateTempSubdirectory("rkt-kvm-apps-template-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, recursive: true); } catch (IOException) { } };
        var template = new AppVmTemplate(dir, BuildInitrd(dir), Path.Join(dir, "vm.snapshot"), cpus, memoryMiB);
        string runtime = Directory.CreateDirectory(Path.Join(dir, "template")).FullName;
        var info = await AgentVmTemplate.CreateAsync(template.Options(runtime), template.Snapshot);
        return template with { Info = info, MadeUtc = DateTime.UtcNow };
    }

    /// <summary>A fresh apps VM (restored from <see cref="TemplateAsync"/>) and a directory of its own, which the caller deletes.</summary>
    public static async Task<(AgentVmProcess Vm, string Directory)> BootAsync(int cpus = 2, ulong memoryMiB = 384)
    {
        var template = await TemplateAsync(cpus, memoryMiB);
        string dir = Directory.CreateTempSubdirectory("rkt-kvm-apps-").FullName;
        return (await template.RestoreAsync(dir), dir);
    }
}

/// <summary>A snapshot of a booted apps VM (agent + busybox rootfs; a control socket, so a 9p device; no NICs).</summary>
public sealed record AppVmTemplate(string Directory, string Initrd, string Snapshot, int Cpus, ulong MemoryMiB)
{
    public AgentVmTemplateInfo? Info { get; init; }
    public DateTime MadeUtc { get; init; }

    /// <summary>The VM the template was made as, with its runtime (vsock and control sockets) in <paramref name="runtime"/>.</summary>
    public AgentVmOptions Options(string runtime, Func<VmmCommandLine, VmmCommandLine>? change = null)
    {
        var line = AgentVmOptions.DefaultCommandLine(TestEnvironment.Vmlinux, Initrd) with
        {
            Cpus = Cpus, MemoryMiB = MemoryMiB, Cmdline = AppVm.Cmdline, Control = Path.Join(runtime, "control.sock"),
        };
        return new AgentVmOptions { VmmPath = TestEnvironment.Vmm, CommandLine = change?.Invoke(line) ?? line, RuntimeDirectory = runtime, ReadyTimeout = VmmProcess.BootTimeout };
    }

    /// <summary>A VM restored from the template; <paramref name="change"/> alters its command line (tests of refusals).</summary>
    public Task<AgentVmProcess> RestoreAsync(string runtime, Func<VmmCommandLine, VmmCommandLine>? change = null) =>
        AgentVmProcess.StartAsync(Options(runtime, line => change?.Invoke(line with { Restore = Snapshot }) ?? line with { Restore = Snapshot }));
}
