using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// Where a pod's stage1-kvm things are. The VM's parts ship inside the stage1 image, beside this
/// binary (<c>stage1/rootfs/kvm/</c>); per-pod logs live in the pod directory (<c>stage1-kvm/</c>,
/// removed with the pod); sockets live in a short runtime directory
/// (<c>/run/rkt-kvm/&lt;uuid&gt;/</c>, or $RKT_KVM_RUNTIME_DIR/&lt;uuid&gt;) because Unix socket paths are
/// limited to 107 bytes and pod directories can be deep.
/// </summary>
public sealed class Stage1Files(PodDirectory pod, string uuid)
{

    public PodDirectory Pod { get; } = pod;
    public string Uuid { get; } = uuid;

    public static string KvmDir => AppContext.BaseDirectory;
    public static string Vmm => Path.Join(KvmDir, "rkt-kvm-vmm");
    public static string Kernel => Path.Join(KvmDir, "vmlinux");
    public static string Initrd => Path.Join(KvmDir, "agent-initrd.cpio");

    /// <summary>The runtime directory run chose, recorded in the pod directory: the crossing
    /// entrypoints get a replaced environment from stage0, so they cannot recompute it.</summary>
    public string RuntimeDir => File.Exists(RuntimeDirRecord) ? File.ReadAllText(RuntimeDirRecord).Trim() : Runtime.PodRuntime.Directory(Uuid);

    public string RuntimeDirRecord => Path.Join(StateDir, "runtime-dir");
    public string AgentSocket => Path.Join(RuntimeDir, "vm.sock");
    public string ControlSocket => Path.Join(RuntimeDir, "control.sock");

    public string StateDir => Pod.Stage1State;
    public string ConsoleLog => Pod.ConsoleLog;
    public string RunPid => Path.Join(StateDir, "run.pid");
    /// <summary>The pod's cgroup directories, one per line (<see cref="Runtime.PodCgroup"/>), for gc.</summary>
    public string CgroupRecord => Path.Join(StateDir, "cgroups");
    public string LogsDir => Path.Join(StateDir, "logs");
    public string AppLog(string app) => Path.Join(LogsDir, app + ".log");

    /// <summary>The pod UUID is the pod directory's name (rkt's layout: pods/&lt;phase&gt;/&lt;uuid&gt;).</summary>
    public static Stage1Files ForCurrentPod() => ForPod(Directory.GetCurrentDirectory());

    public static Stage1Files ForPod(string podDir)
    {
        var uuid = Path.GetFileName(Path.TrimEndingDirectorySeparator(podDir));
        return new Stage1Files(new PodDirectory(podDir), Entrypoints.PodUuid.Require(uuid, "stage1"));
    }

    /// <summary>A clear error for a stage1 image that lacks a part of the VM.</summary>
    public static void RequireVmParts()
    {
        foreach (var (path, what) in new[] { (Vmm, "the VMM"), (Kernel, "the guest kernel"), (Initrd, "the agent initramfs") })
            if (!File.Exists(path)) throw new Stage1Exception($"{what} is missing from the stage1 image: {path} does not exist");
    }

    /// <summary>Agent calls from stage1: an app start runs set-up in a guest whose every syscall is
    /// slow on nested hosts, so a call may take seconds; only a hung guest should hit these.</summary>
    public static readonly AgentClientOptions AgentOptions = new() { CallTimeout = TimeSpan.FromMinutes(3), ConnectTimeout = TimeSpan.FromSeconds(30) };

    public AgentClient Agent() => AgentClient.ForVm(AgentSocket, AgentOptions);

    public static string AppExport(string app) => "app-" + app;
    public static string VolumeExport(string volume) => "vol-" + volume;
}
