namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// Where the built artifacts are: from the environment `make test` sets, else from out/ at the
/// repository root. VM tests skip only when /dev/kvm is absent; with /dev/kvm present, missing
/// artifacts are a failure (run `make test`, which builds them), never a skip.
/// </summary>
public static class TestEnvironment
{
    public const string KvmDevice = "/dev/kvm";

    public static bool HasKvm => File.Exists(KvmDevice);

    /// <summary>The VM template store every <see cref="RktKvmCli"/> of this machine's test runs shares (root-only, like the real one).</summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public static string SharedTemplates => Directory.CreateDirectory(Path.Join(Path.GetTempPath(), "rkt-kvm-test-templates"),
        UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute).FullName;

    public static string NoKvmReason => $"{KvmDevice} is absent on this machine, so no VM can boot here.";

    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Rkt.Kvm.sln"))) return dir.FullName;
            throw new InvalidOperationException("Cannot find the repository root (Rkt.Kvm.sln) above the test assembly.");
        }
    }

    public static string Vmm => Artifact("RKT_KVM_VMM", "out/vmm/rkt-kvm-vmm");
    public static string TestInitrd => Artifact("RKT_KVM_TEST_INITRD", "out/busybox-initrd.cpio");
    /// <summary>The busybox guest plus tests/guest/hostile.c (HostileGuestTests).</summary>
    public static string HostileInitrd => Artifact("RKT_KVM_HOSTILE_INITRD", "out/hostile-initrd.cpio");
    public static string AgentInitrd => Artifact("RKT_KVM_AGENT_INITRD", "out/agent-initrd.cpio");
    public static string Cli => Artifact("RKT_KVM_CLI", "out/cli/rkt-kvm");
    public static string Stage1Aci => Artifact("RKT_KVM_STAGE1", "out/stage1/stage1-kvm.aci");
    public static string BusyboxAci => Artifact("RKT_KVM_BUSYBOX_ACI", "out/images/busybox.aci");
    public static string KernelDir => Environment.GetEnvironmentVariable("RKT_KVM_KERNEL_DIR") is { Length: > 0 } dir
        ? dir
        : File.ReadAllText(Path.Combine(RepositoryRoot, "out/kernel-dir")).Trim();
    public static string Vmlinux => Existing(Path.Combine(KernelDir, "vmlinux"));
    public static string BzImage => Existing(Path.Combine(KernelDir, "bzImage"));

    private static string Artifact(string variable, string fallback) =>
        Existing(Environment.GetEnvironmentVariable(variable) is { Length: > 0 } path ? path : Path.Combine(RepositoryRoot, fallback));

    private static string Existing(string path) =>
        File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing: build it with `make test` (or `make all`).");
}
