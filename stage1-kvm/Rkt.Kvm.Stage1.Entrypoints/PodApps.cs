using System.Globalization;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Vmm.Client.Control;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// The pod manifest turned into what the VM needs: 9p exports (each app's rendered root,
/// read-only: the agent gives the app a tmpfs overlay, so the image's files on the host, which are
/// hardlinks into the tree store, are never written; each volume, read-only when it says so) and
/// the agent's AddApp requests.
/// </summary>
public static class PodApps
{
    /// <summary>Export name → (host path, read-only) for the whole pod.</summary>
    public static Dictionary<string, (string Path, bool ReadOnly)> Exports(Stage1Files files, PodManifest pod)
    {
        var exports = new Dictionary<string, (string, bool)>();
        foreach (var app in pod.Apps) exports[Stage1Files.AppExport(app.Name)] = (files.Pod.AppRootfs(app.Name), true);
        foreach (var volume in pod.Volumes) exports[Stage1Files.VolumeExport(volume.Name)] = (VolumePath(files, volume), volume.ReadOnly ?? false);
        return exports;
    }

    /// <summary>A host volume's source, or the pod's own directory for an empty volume (made on first use).</summary>
    public static string VolumePath(Stage1Files files, Volume volume)
    {
        if (volume.IsHost)
            return Directory.Exists(volume.Source) ? volume.Source! : throw new Stage1Exception($"volume {volume.Name}: host directory {volume.Source} does not exist");
        var path = files.Pod.SharedVolume(volume.Name);
        if (!Directory.Exists(path))
        {
            Directory.CreateDirectory(path);
            File.SetUnixFileMode(path, (UnixFileMode)Convert.ToInt32(volume.Mode, 8));
            if (volume.Uid is { } uid && volume.Gid is { } gid && (uid != 0 || gid != 0))
                Native.Ownership.Chown(path, checked((uint)uid), checked((uint)gid));
        }
        return path;
    }

    /// <summary>Exports every export of the pod the VMM does not have yet (app/add adds one app's).</summary>
    public static void EnsureExports(VmmControlClient control, IReadOnlyDictionary<string, (string Path, bool ReadOnly)> wanted)
    {
        var existing = control.ListExports().Select(e => e.Name).ToHashSet();
        foreach (var (name, (path, readOnly)) in wanted)
            if (!existing.Contains(name)) control.AddExport(name, path, readOnly);
    }

    public static AddAppRequest AddAppRequest(Stage1Files files, PodManifest pod, RuntimeApp app)
    {
        var spec = app.App ?? throw new Stage1Exception($"app {app.Name}: the pod manifest has no app section (exec, user, group)");
        if (spec.Exec.Count == 0) throw new Stage1Exception($"app {app.Name}: nothing to execute (empty exec)");
        var request = new AddAppRequest
        {
            Name = app.Name,
            RootfsExport = Stage1Files.AppExport(app.Name),
            WorkingDir = spec.WorkingDirectory ?? "/",
            User = spec.User,
            Group = spec.Group,
            ReadOnlyRootfs = app.ReadOnlyRootFs,
            NoNewPrivileges = spec.Isolators.NoNewPrivileges,
            MemoryLimitBytes = (ulong)(spec.Isolators.MemoryLimitBytes ?? 0),
            // appc CPU limits are in CPUs; the agent takes cgroup-v1-style shares (1024 per CPU, at most
            // 262144: 256 CPUs), so an absurd limit clamps instead of overflowing.
            CpuShares = spec.Isolators.CpuLimit is { } cpu ? (ulong)Math.Max(2, Math.Round(Math.Min(cpu, 256m) * 1024)) : 0,
        };
        // rkt's stream modes: a terminal of its own (attachable), or a stdin pipe (attach, or run --interactive
        // without a terminal, which RunEntrypoint turns into a terminal when it has one).
        switch (StreamModes.Of(app, "stdin"))
        {
            case StreamModes.Tty: request.Tty = true; break;
            case StreamModes.Stream or StreamModes.Interactive: request.Stdin = true; break;
        }
        request.Exec.AddRange(spec.Exec);
        // The env file is authoritative when it exists: stage0 writes it for `app add`, we write it for `run`.
        var env = File.Exists(files.Pod.AppEnv(app.Name)) ? files.Pod.ReadEnvironment(app.Name) : spec.Environment;
        request.Env.AddRange(env.Select(e => $"{e.Key}={e.Value}"));
        request.SupplementaryGids.AddRange(spec.SupplementaryGids);
        if (spec.Isolators.RetainCapabilities is { } retain) request.CapabilitiesRetain.AddRange(retain);
        if (spec.Isolators.RemoveCapabilities is { } remove) request.CapabilitiesRemove.AddRange(remove);
        foreach (var mount in app.Mounts)
        {
            var volume = pod.Volumes.FirstOrDefault(v => v.Name == mount.Volume)
                ?? throw new Stage1Exception($"app {app.Name}: mount of unknown volume {mount.Volume}");
            bool readOnly = (volume.ReadOnly ?? false) || spec.MountPoints.Any(mp => mp.Path == mount.Path && mp.ReadOnly);
            request.Mounts.Add(new VolumeMount { Export = Stage1Files.VolumeExport(volume.Name), Target = mount.Path, ReadOnly = readOnly });
        }
        return request;
    }

    /// <summary>rkt records a signal death as 128 + the signal, like a shell.</summary>
    public static int ExitCode(AppInfo app) => app.Signal != 0 ? 128 + app.Signal : app.ExitCode;

    public static string Describe(AppInfo app) =>
        app.Signal != 0 ? $"killed by signal {app.Signal.ToString(CultureInfo.InvariantCulture)}" : $"exited {app.ExitCode.ToString(CultureInfo.InvariantCulture)}";
}
