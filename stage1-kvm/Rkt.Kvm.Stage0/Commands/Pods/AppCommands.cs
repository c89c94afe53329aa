using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary>What every app verb on a mutable pod checks first, with rkt's errors, and the
/// <c>pod.lck</c> flock that serialises changes to the pod manifest.</summary>
internal static class MutablePod
{
    public static PodInfo Open(CommandContext context, string uuid, bool needReady = true)
    {
        var pod = PodInfo.Read(new PodStore(context.DataDir).Find(uuid));
        if (!pod.Running) throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" is not running");
        if (pod.Manifest is not { Mutable: true }) throw new Stage1Exception($"immutable pod: pod \"{pod.Pod.Uuid}\" was started by `run`; apps can only be changed in pods started by `app sandbox`");
        if (needReady && !pod.Pod.Directory.SupervisorReady) throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" is not ready yet (try `status --wait-ready=1m`)");
        return pod;
    }

    public static FileLock LockManifest(PodInfo pod) => FileLock.Exclusive(Path.Join(pod.Pod.Path, "pod.lck"));

    public static AppInfo App(PodInfo pod, string? name)
    {
        if (name is null) throw new UsageException("--app=NAME is required");
        return pod.Apps.FirstOrDefault(a => a.Name == name) ?? throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" has no app \"{name}\"");
    }

    /// <summary>Rewrites <c>pod</c> in one rename, so stage1 never reads half a manifest.</summary>
    public static void WriteManifest(PodInfo pod, JsonObject manifest)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(manifest);
        PodManifest.Parse(bytes, "the new pod manifest");
        PodDirectory.WriteAtomically(pod.Pod.Directory.Manifest, bytes);
    }

    public static int Crossing(CommandContext context, PodInfo pod, string entrypoint, IReadOnlyList<string> args, bool debug, string failure)
    {
        var (rc, output) = Stage1Invoker.RunCrossing(pod.Pod.Directory, entrypoint, args, debug);
        if (rc != 0) throw new Stage1Exception($"{failure}: stage1 {entrypoint} exited {rc}{(debug || output.Length == 0 ? "" : ": " + output.Trim().ReplaceLineEndings(" "))}");
        return rc;
    }
}

/// <summary><c>app add UUID IMAGE [--name] [--exec] [--user] [--group] [--environment=K=V] [--mnt-volume=…] [-- ARGS ---]</c>.</summary>
public sealed class AppAddCommand() : Command("add", "Add an app to a mutable pod",
    "app add UUID IMAGE [--name=NAME] [--exec=CMD] [--user=U] [--group=G] [--environment=K=V] [--memory=Q] [--cpu=Q] [--stdin=null|stream|tty] [--stdout=log|stream|tty] [--stderr=log|stream|tty] [--mnt-volume=name=V,kind=host,source=/P,target=/T[,readOnly=true]] [-- ARGS… ---]")
{
    public override bool RawArguments => true;

    public override int Run(CommandContext context, GoFlags args)
    {
        var rest = args.Positional.ToList();
        if (rest.Count < 2) throw new UsageException($"usage: rkt-kvm {Usage}");
        var volumes = new List<VolumeRequest>();
        var mounts = new List<AppMount>();
        var appArgs = new List<string>();
        for (int i = 1; i < rest.Count; i++)
        {
            if (rest[i].StartsWith("--mnt-volume=", StringComparison.Ordinal)) (volumes, mounts) = WithMntVolume(volumes, mounts, rest[i]["--mnt-volume=".Length..]);
            else appArgs.Add(rest[i]);
        }
        var request = RunRequest.Parse(appArgs);
        if (request.Apps.Count != 1) throw new UsageException($"usage: rkt-kvm {Usage}");
        request.Volumes.AddRange(volumes);
        request.Apps[0].Mounts.AddRange(mounts);

        var pod = MutablePod.Open(context, rest[0]);
        // A docker:// image is fetched before the pod's manifest is locked: a download can take minutes.
        var image = RegistryImages.Find(context, request.Apps[0].Image, request.Insecure, request.PullPolicy);
        using var _ = MutablePod.LockManifest(pod);
        pod = PodInfo.Read(pod.Pod); // re-read under the lock
        var manifest = JsonNode.Parse(File.ReadAllBytes(pod.Pod.Directory.Manifest))!.AsObject();
        var podVolumes = manifest["volumes"] as JsonArray ?? [];
        foreach (var v in volumes)
        {
            if (podVolumes.Any(x => (string?)x!["name"] == v.Name)) throw new UsageException($"--mnt-volume: the pod already has a volume \"{v.Name}\"");
            podVolumes.Add(new JsonObject { ["name"] = v.Name, ["kind"] = v.Kind, ["source"] = v.Source, ["readOnly"] = v.ReadOnly });
        }
        foreach (var existing in podVolumes)
            request.Volumes.Add(new VolumeRequest((string)existing!["name"]!, (string)existing["kind"]!, (string?)existing["source"], (bool?)existing["readOnly"] ?? false));

        var dir = pod.Pod.Directory;
        var preparer = new PodPreparer(context.Store, new PodStore(context.DataDir), _ => image);
        var taken = new HashSet<string>(pod.Apps.Select(a => a.Name));
        JsonObject app;
        try { app = preparer.PrepareApp(dir, request.Apps[0], request, taken, dir.UsesOverlay); }
        catch (Exception e) when (e is UsageException or Images.ImageException or Stage1Exception)
        {
            // PrepareApp fails before it renders anything for a duplicate name; otherwise clean up.
            if (request.Apps[0].Name is { } n && !pod.Apps.Any(a => a.Name == n)) RemoveAppFiles(dir, n);
            throw;
        }
        var name = (string)app["name"]!;
        try
        {
            preparer.MountApp(dir, name);
            (manifest["apps"] as JsonArray ?? (JsonArray)(manifest["apps"] = new JsonArray())).Add(app);
            manifest["volumes"] = podVolumes;
            dir.WriteEnvironment(name, (app["app"]!["environment"] as JsonArray ?? []).Select(e => new KeyValuePair<string, string>((string)e!["name"]!, (string?)e["value"] ?? "")));
            MutablePod.WriteManifest(pod, manifest);
            Directory.CreateDirectory(dir.StatusDir);
            File.WriteAllText(dir.AppCreated(name), "");
            MutablePod.Crossing(context, pod, "app/add", [$"--debug={args.Bool("debug").ToString().ToLowerInvariant()}", $"--uuid={pod.Pod.Uuid}", $"--app={name}"],
                args.Bool("debug"), $"adding app \"{name}\" failed");
        }
        catch
        {
            var rollback = JsonNode.Parse(File.ReadAllBytes(dir.Manifest))!.AsObject();
            if (rollback["apps"] is JsonArray apps && apps.FirstOrDefault(a => (string?)a!["name"] == name) is { } added)
            {
                apps.Remove(added);
                MutablePod.WriteManifest(pod, rollback);
            }
            RemoveAppFiles(dir, name);
            throw;
        }
        return 0;
    }

    private static (List<VolumeRequest>, List<AppMount>) WithMntVolume(List<VolumeRequest> volumes, List<AppMount> mounts, string spec)
    {
        var kv = spec.Split(',').Select(p => p.Split('=', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : "");
        if (!kv.TryGetValue("name", out var name) || !kv.TryGetValue("target", out var target))
            throw new UsageException($"--mnt-volume={spec}: expected name=V,kind=host,source=/P,target=/T");
        var volume = RunRequest.ParseVolume(string.Join(',', new[] { name }.Concat(kv.Where(p => p.Key is "kind" or "source" or "readOnly").Select(p => $"{p.Key}={p.Value}"))));
        volumes.Add(volume);
        mounts.Add(RunRequest.ParseMount($"volume={name},target={target}"));
        return (volumes, mounts);
    }

    /// <summary>Everything stage0 made for an app (rkt's app rm removes the same, in this order):
    /// its overlay (unmounted; this fails while anything on the host still uses the app's files),
    /// appsinfo, its directory under <c>opt/stage2</c>, its status and env files.</summary>
    public static void RemoveAppFiles(PodDirectory dir, string name)
    {
        if (dir.UsesOverlay && File.Exists(dir.AppTreeStoreId(name)))
            PodMounts.RemoveApp(dir, name, File.ReadAllText(dir.AppTreeStoreId(name)).Trim());
        foreach (var path in new[] { dir.AppInfoDir(name), dir.AppDir(name) })
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        foreach (var path in new[] { dir.AppCreated(name), dir.AppStarted(name), dir.AppStatus(name), dir.AppEnv(name) })
            File.Delete(path);
    }
}

/// <summary><c>app start UUID --app=NAME</c>: resets the app's status files, then stage1 app/start.</summary>
public sealed class AppStartCommand() : Command("start", "Start an app of a mutable pod", "app start UUID --app=NAME")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("app", "the app")];

    public override int Run(CommandContext context, GoFlags args)
    {
        var pod = MutablePod.Open(context, args.Expect(1, $"rkt-kvm {Usage}")[0]);
        var app = MutablePod.App(pod, args.Get("app"));
        var dir = pod.Pod.Directory;
        File.Delete(dir.AppStarted(app.Name));
        File.Delete(dir.AppStatus(app.Name));
        File.WriteAllText(dir.AppStarted(app.Name), "");
        MutablePod.Crossing(context, pod, "app/start", [$"--debug={args.Bool("debug").ToString().ToLowerInvariant()}", $"--app={app.Name}"],
            args.Bool("debug"), $"starting app \"{app.Name}\" failed");
        return 0;
    }
}

/// <summary><c>app stop UUID --app=NAME</c>; stopping an app that already exited succeeds, as in
/// rkt. stage1's exit 5 means the pod has no such app (rkt 1.30 never tells it apart from other
/// failures, as its error wrapping hides the code; we name it).</summary>
public sealed class AppStopCommand() : Command("stop", "Stop an app of a mutable pod", "app stop UUID --app=NAME")
{
    public const int NoSuchApp = 5;

    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("app", "the app")];

    public override int Run(CommandContext context, GoFlags args)
    {
        var pod = MutablePod.Open(context, args.Expect(1, $"rkt-kvm {Usage}")[0]);
        var app = MutablePod.App(pod, args.Get("app"));
        var (rc, output) = Stage1Invoker.RunCrossing(pod.Pod.Directory, "app/stop", [$"--debug={args.Bool("debug").ToString().ToLowerInvariant()}", $"--app={app.Name}"], args.Bool("debug"));
        if (rc == NoSuchApp) throw new Stage1Exception($"stopping app \"{app.Name}\" failed: the pod's stage1 has no such app");
        if (rc != 0) throw new Stage1Exception($"stopping app \"{app.Name}\" failed: stage1 app/stop exited {rc}: {output.Trim().ReplaceLineEndings(" ")}");
        return 0;
    }
}

/// <summary><c>app rm UUID --app=NAME</c> as rkt 1.30 does it: app/stop, then app/rm (any non-zero
/// exit of either fails the command: rkt's wrapped error never lets its "exit 5" test match), then
/// the app's mounts and files, then its entry in the pod manifest.</summary>
public sealed class AppRmCommand() : Command("rm", "Remove an app from a mutable pod", "app rm UUID --app=NAME")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("app", "the app")];

    public override int Run(CommandContext context, GoFlags args)
    {
        var pod = MutablePod.Open(context, args.Expect(1, $"rkt-kvm {Usage}")[0]);
        var app = MutablePod.App(pod, args.Get("app"));
        var debug = $"--debug={args.Bool("debug").ToString().ToLowerInvariant()}";
        using var _ = MutablePod.LockManifest(pod);
        MutablePod.Crossing(context, pod, "app/stop", [debug, $"--app={app.Name}"], args.Bool("debug"), $"removing app \"{app.Name}\" failed: stopping it");
        MutablePod.Crossing(context, pod, "app/rm", [debug, $"--app={app.Name}"], args.Bool("debug"), $"removing app \"{app.Name}\" failed");
        AppAddCommand.RemoveAppFiles(pod.Pod.Directory, app.Name);
        var manifest = JsonNode.Parse(File.ReadAllBytes(pod.Pod.Directory.Manifest))!.AsObject();
        if (manifest["apps"] is JsonArray apps && apps.FirstOrDefault(a => (string?)a!["name"] == app.Name) is { } entry)
        {
            apps.Remove(entry);
            MutablePod.WriteManifest(pod, manifest);
        }
        return 0;
    }
}

/// <summary><c>app list UUID</c> and <c>app status UUID --app=NAME</c>.</summary>
public sealed class AppListCommand() : Command("list", "List the apps of a pod", "app list [--no-legend] UUID")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("no-legend", "omit the header line", IsBool: true)];

    public override int Run(CommandContext context, GoFlags args)
    {
        var pod = PodInfo.Read(new PodStore(context.DataDir).Find(args.Expect(1, $"rkt-kvm {Usage}")[0]));
        var now = DateTimeOffset.UtcNow;
        var rows = new List<string[]>();
        if (!args.Bool("no-legend")) rows.Add(["NAME", "STATE", "CREATED", "STARTED", "FINISHED", "EXIT CODE"]);
        foreach (var a in pod.Apps)
            rows.Add([a.Name, a.State, a.Created is { } c ? RelativeTime.Ago(c, now) : "", a.Started is { } s && a.State != "created" ? RelativeTime.Ago(s, now) : "",
                a.Finished is { } f ? RelativeTime.Ago(f, now) : "", a.ExitCode?.ToString() ?? ""]);
        TextTable.Write(context.Out, rows);
        return 0;
    }
}

public sealed class AppStatusCommand() : Command("status", "Show an app's status", "app status UUID --app=NAME [--format=json]")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } = [new("app", "the app"), new("format", "text (default) or json", Default: "")];

    public override int Run(CommandContext context, GoFlags args)
    {
        var pod = PodInfo.Read(new PodStore(context.DataDir).Find(args.Expect(1, $"rkt-kvm {Usage}")[0]));
        var app = MutablePod.App(pod, args.Get("app"));
        if (args.Get("format") is "json" or "json-pretty")
        {
            context.Out.WriteLine(JsonSerializer.Serialize(PodJson.App(app), PodJson.Options(args.Get("format") == "json-pretty")));
            return 0;
        }
        context.Out.WriteLine($"name={app.Name}");
        context.Out.WriteLine($"state={app.State}");
        if (app.Created is { } c) context.Out.WriteLine($"created={c.ToLocalTime():yyyy-MM-dd HH:mm:ss.fff zzz}");
        if (app.Started is { } s) context.Out.WriteLine($"started={s.ToLocalTime():yyyy-MM-dd HH:mm:ss.fff zzz}");
        if (app.Finished is { } f) context.Out.WriteLine($"finished={f.ToLocalTime():yyyy-MM-dd HH:mm:ss.fff zzz}");
        if (app.ExitCode is { } code) context.Out.WriteLine($"exit_code={code}");
        return 0;
    }
}
