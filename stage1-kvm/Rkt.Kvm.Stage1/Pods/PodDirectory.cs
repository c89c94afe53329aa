namespace Rkt.Kvm.Stage1.Pods;

/// <summary>
/// The files of a pod directory that stage0 and stage1 share (STAGE1-ABI.md, "Pod directory"),
/// and the status files stage1 writes. Everything app-specific is under a checked ACName, so no
/// name can point outside the pod directory.
/// </summary>
public sealed class PodDirectory(string path)
{
    public const string ReadyTarget = "ready";

    public string Path { get; } = System.IO.Path.GetFullPath(path);

    public string Manifest => Join("pod");
    public string PidFile => Join("pid");
    public string NetInfo => Join("net-info.json");
    public string Stage1Manifest => Join("stage1", "manifest");
    public string Stage1Rootfs => Join("stage1", "rootfs");
    public string RktDir => Join("stage1", "rootfs", "rkt");
    public string StatusDir => Join("stage1", "rootfs", "rkt", "status");
    public string EnvDir => Join("stage1", "rootfs", "rkt", "env");
    public string SupervisorStatus => Join("stage1", "rootfs", "rkt", "supervisor-status");
    public string SharedVolumes => Join("sharedVolumes");

    /// <summary>rkt's overlay layout (stage0/run.go): the marker that says the pod's stage1 and apps
    /// are overlays, the tree-store IDs they are layered on, and their upper and work directories.</summary>
    public string OverlayPrepared => Join("overlay-prepared");
    public bool UsesOverlay => File.Exists(OverlayPrepared);
    public string Stage1TreeStoreId => Join("stage1TreeStoreID");
    public string OverlayDir => Join("overlay");

    /// <summary>Where stage1-kvm keeps its own per-pod state (VMM sockets, logs): inside the pod
    /// directory, so rkt's gc removes it with the pod.</summary>
    public string Stage1State => Join("stage1-kvm");

    /// <summary>The guest's serial console, as the VMM writes it while the pod runs (<c>rkt-kvm console</c> shows it).</summary>
    public string ConsoleLog => Join("stage1-kvm", "console.log");

    public string AppDir(string app) => Join("stage1", "rootfs", "opt", "stage2", Checked(app));
    public string AppRootfs(string app) => System.IO.Path.Join(AppDir(app), "rootfs");
    public string AppInfoDir(string app) => Join("appsinfo", Checked(app));
    public string AppInfoManifest(string app) => System.IO.Path.Join(AppInfoDir(app), "manifest");
    public string AppTreeStoreId(string app) => System.IO.Path.Join(AppInfoDir(app), "treeStoreID");
    public string AppStatus(string app) => System.IO.Path.Join(StatusDir, Checked(app));
    public string AppCreated(string app) => System.IO.Path.Join(StatusDir, Checked(app) + "-created");
    public string AppStarted(string app) => System.IO.Path.Join(StatusDir, Checked(app) + "-started");
    public string AppEnv(string app) => System.IO.Path.Join(EnvDir, Checked(app));
    public string SharedVolume(string volume) => System.IO.Path.Join(SharedVolumes, Checked(volume));

    /// <summary>Records an app's exit code as decimal text, once, at the moment it exits: its
    /// mtime is the app's finish time. Written atomically, so a reader never sees it half-written.</summary>
    public void WriteExitStatus(string app, int exitCode)
    {
        Directory.CreateDirectory(StatusDir);
        WriteAtomically(AppStatus(app), exitCode.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    public int? ReadExitStatus(string app) =>
        File.Exists(AppStatus(app)) && int.TryParse(File.ReadAllText(AppStatus(app)).Trim(), out var code) ? code : null;

    /// <summary><c>pid</c>: decimal and a newline, mode 0644; its mtime is the pod's start time.</summary>
    public void WritePid(int pid) => WriteAtomically(PidFile, $"{pid}\n");

    public int? ReadPid() =>
        File.Exists(PidFile) && int.TryParse(File.ReadAllText(PidFile).Trim(), out var pid) && pid > 0 ? pid : null;

    /// <summary>The <c>supervisor-status -> ready</c> symlink that lets `rkt app add` proceed.</summary>
    public void MarkSupervisorReady()
    {
        Directory.CreateDirectory(RktDir);
        var tmp = SupervisorStatus + ".tmp";
        if (System.IO.Path.Exists(tmp)) File.Delete(tmp);
        File.CreateSymbolicLink(tmp, ReadyTarget);
        File.Move(tmp, SupervisorStatus, overwrite: true);
    }

    public bool SupervisorReady => new FileInfo(SupervisorStatus).LinkTarget == ReadyTarget;

    /// <summary>One <c>NAME=VALUE</c> per line, as rkt's stage0 writes app env files.</summary>
    public void WriteEnvironment(string app, IEnumerable<KeyValuePair<string, string>> environment)
    {
        Directory.CreateDirectory(EnvDir);
        foreach (var (name, value) in environment)
            if (name.Length == 0 || name.Contains('=') || name.Contains('\n') || value.Contains('\n'))
                throw new Stage1Exception($"app {app}: environment variable \"{name}\" cannot be written as one NAME=VALUE line");
        WriteAtomically(AppEnv(app), string.Concat(environment.Select(e => $"{e.Key}={e.Value}\n")));
    }

    public IReadOnlyList<KeyValuePair<string, string>> ReadEnvironment(string app)
    {
        if (!File.Exists(AppEnv(app))) return [];
        return File.ReadAllLines(AppEnv(app)).Where(l => l.Length > 0).Select(l =>
        {
            int eq = l.IndexOf('=');
            return eq > 0 ? new KeyValuePair<string, string>(l[..eq], l[(eq + 1)..])
                : throw new Stage1Exception($"app {app}: malformed line in {AppEnv(app)}: \"{l}\"");
        }).ToList();
    }

    private string Join(params string[] parts) => System.IO.Path.Join([Path, .. parts]);

    private static string Checked(string name) =>
        Manifests.AcName.IsValidName(name) ? name : throw new Stage1Exception($"\"{name}\" is not a valid app or volume name");

    private static void WriteAtomically(string path, string content) => WriteAtomically(path, System.Text.Encoding.UTF8.GetBytes(content));

    /// <summary>Replaces a pod file in one rename, mode 0644: readers see the old content or the new.
    /// Not fsynced: these files describe processes that a power loss ends anyway.</summary>
    public static void WriteAtomically(string path, byte[] content) =>
        Posix.AtomicFile.Write(path, content, durable: false,
            mode: UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
}
