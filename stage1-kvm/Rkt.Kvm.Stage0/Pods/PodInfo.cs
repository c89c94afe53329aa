using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage0.Pods;

/// <summary>An app as `list` and `status` show it, read from the pod's files only.</summary>
public sealed record AppInfo(string Name, string State, int? ExitCode, string ImageId, string ImageName,
    DateTimeOffset? Created, DateTimeOffset? Started, DateTimeOffset? Finished, IReadOnlyList<AppMount> Mounts);

/// <summary>
/// A pod's state the way rkt's stage0 derives it, from files alone (no VM is asked): the phase
/// directory and the lock for the pod, <c>pod-created</c> and <c>pid</c> mtimes for its times,
/// and per app the status files stage1 writes (<c>&lt;app&gt;-created</c>, <c>-started</c>, and the
/// exit file whose content is the exit code and whose mtime is the finish time).
/// </summary>
public sealed record PodInfo(PodRef Pod, string State, DateTimeOffset? Created, DateTimeOffset? Started, int? Pid,
    IReadOnlyList<AppInfo> Apps, PodManifest? Manifest, IReadOnlyList<Stage1.Networking.NetInfo> Networks)
{
    /// <summary>rkt's NETWORKS column and <c>networks=</c> value: <c>default:ip4=172.16.28.2</c>.</summary>
    public string NetworksText => Stage1.Networking.NetInfo.Describe(Networks);

    public bool Running => State == "running";

    /// <summary>The app a command acts on: the one named (which must exist), else the pod's only app (as rkt's enter and attach).</summary>
    public string ChooseApp(string? name)
    {
        if (name is null)
        {
            if (Apps.Count != 1)
                throw new UsageException($"pod \"{Pod.Uuid}\" has {Apps.Count} apps: choose one with --app ({string.Join(", ", Apps.Select(a => a.Name))})");
            return Apps[0].Name;
        }
        return Apps.Any(a => a.Name == name) ? name : throw new Stage1.Stage1Exception($"pod \"{Pod.Uuid}\" has no app \"{name}\"");
    }

    public static PodInfo Read(PodRef pod)
    {
        var dir = pod.Directory;
        var state = pod.State;
        PodManifest? manifest = null;
        try { if (File.Exists(dir.Manifest)) manifest = PodManifest.Load(dir.Manifest); }
        catch (Stage1Exception) { /* shown without apps; `status` says the manifest is unreadable */ }

        DateTimeOffset? Mtime(string path) => File.Exists(path) || Directory.Exists(path) ? File.GetLastWriteTimeUtc(path) : null;
        var created = Mtime(Path.Join(pod.Path, "pod-created")) ?? Mtime(pod.Path);
        var started = Mtime(dir.PidFile);
        bool running = state == "running";
        bool mutable = manifest?.Mutable ?? false;

        var apps = new List<AppInfo>();
        foreach (var app in manifest?.Apps ?? [])
        {
            var exit = dir.ReadExitStatus(app.Name);
            bool createdFile = File.Exists(dir.AppCreated(app.Name)), startedFile = File.Exists(dir.AppStarted(app.Name));
            string appState = exit is not null ? "exited"
                : mutable ? (startedFile && running ? "running" : createdFile ? "created" : "unknown")
                : running ? "running" : pod.Phase is PodPhase.Embryo or PodPhase.Prepare or PodPhase.Prepared ? "prepared" : "unknown";
            apps.Add(new AppInfo(app.Name, appState, exit, app.Image.Id, app.Image.Name,
                Mtime(dir.AppCreated(app.Name)) ?? created,
                startedFile ? Mtime(dir.AppStarted(app.Name)) : started,
                exit is not null ? Mtime(dir.AppStatus(app.Name)) : null,
                app.Mounts));
        }
        return new PodInfo(pod, state, created, started, running || started is not null ? dir.ReadPid() : null, apps, manifest,
            Stage1.Networking.NetInfo.Load(dir.NetInfo));
    }
}
