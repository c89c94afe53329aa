using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Formats.Appc;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Trees;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage0.Pods;

/// <summary>
/// What stage0 does before stage1 runs (rkt's prepare, then the mounts of its run): the stage1
/// image and each app's image rendered into the pod directory, <c>appsinfo/</c>, and the pod
/// manifest. Where overlayfs works (and without <c>--no-overlay</c>) the pod gets rkt's overlay
/// layout (<see cref="PodMounts"/>): prepare records the tree-store IDs and <c>overlay-prepared</c>,
/// and <see cref="MountForRun"/> mounts the stage1 and app overlays just before stage1 run, as rkt
/// does. Without overlay, the trees are laid into the pod directory as hardlink farms (rkt copies;
/// hardlinks are equally safe here because every directory is made anew and pod files are only
/// ever replaced by rename, never written in place). The pod is built in <c>prepare/</c>; anything
/// that fails removes it, so no half-made pod is ever left in <c>run/</c>.
/// </summary>
/// <param name="findImage">turns an app's image argument into a stored image (fetching
/// <c>docker://</c> references, see <c>RegistryImages</c>); the store's own lookup without it.</param>
public sealed class PodPreparer(ImageStore images, PodStore pods, Func<string, ImageRecord>? findImage = null)
{
    private readonly TreeStore _trees = new(images);

    /// <summary>
    /// Prepares a pod as rkt's <c>run</c> does: the new directory is locked at once and renamed into
    /// <c>prepare/</c>, and the lock is held from then on. Returns the pod, still in <c>prepare/</c>,
    /// and its lock, which the caller keeps into <c>run/</c>. If this process dies on the way, the pod
    /// is left in <c>prepare/</c> unlocked, rkt's "aborted prepare", which gc removes.
    /// </summary>
    public (PodRef Pod, PodLock Lock) Prepare(RunRequest request)
    {
        bool overlay = !request.NoOverlay;
        if (overlay && PodMounts.OverlayUnsupportedReason(pods.Root) is { } why)
        {
            Console.Error.WriteLine($"disabling overlay support: \"{why}\"");
            overlay = false;
        }
        var embryo = pods.CreateEmbryo();
        var podLock = PodLock.TryExclusive(embryo.Path) ?? throw new Stage1Exception($"the new pod {embryo.Uuid} is locked by another process");
        var pod = pods.Move(embryo, PodPhase.Prepare); // the lock is on the directory: it moves with it
        try
        {
            var dir = pod.Directory;
            var stage1 = new Stage1Locator(images).Locate(request.Stage1);
            if (overlay)
            {
                var tree = RenderForOverlay(stage1);
                Directory.CreateDirectory(Path.Join(pod.Path, "stage1"));
                File.Copy(Path.Join(tree, "manifest"), dir.Stage1Manifest);
            }
            else _trees.Export(stage1, Path.Join(pod.Path, "stage1"), ExportMode.Hardlink, rootfsOnly: false);
            File.WriteAllText(dir.Stage1TreeStoreId, stage1.Id);
            var stage1Image = Stage1Image.Parse(File.ReadAllBytes(dir.Stage1Manifest), "stage1 manifest"); // a stage1 at all?
            if (request.Mutable && !stage1Image.SupportsMutablePods)
                throw new Stage1Exception($"stage1 {stage1Image.Name} does not support mutable pods (it lacks app/rm, app/start or app/stop)");

            var apps = new JsonArray();
            var names = new HashSet<string>();
            foreach (var app in request.Apps)
                apps.Add(PrepareApp(dir, app, request, names, overlay));

            var manifest = new JsonObject
            {
                ["acKind"] = "PodManifest",
                ["acVersion"] = AppcImageManifest.SpecVersion,
                ["apps"] = apps,
                ["volumes"] = new JsonArray(request.Volumes.Select(VolumeJson).ToArray()),
                ["isolators"] = null,
                ["annotations"] = new JsonArray(new JsonObject { ["name"] = PodManifest.MutableAnnotation, ["value"] = request.Mutable ? "true" : "false" }),
                ["ports"] = request.Ports.Count == 0 ? null : new JsonArray([.. request.Ports.Select(p => p.ToJson())]),
            };
            var bytes = JsonSerializer.SerializeToUtf8Bytes(manifest);
            // Our own output obeys the rules we enforce, and every --port names a port an app declares.
            PodManifest.Parse(bytes, "the pod manifest we wrote").ForwardedPorts();
            File.WriteAllBytes(dir.Manifest, bytes);
            File.WriteAllText(Path.Join(pod.Path, "pod-created"), "");
            if (overlay) File.WriteAllText(dir.OverlayPrepared, "");
            return (pod, podLock);
        }
        catch
        {
            Discard(pod);
            podLock.Dispose();
            throw;
        }
    }

    /// <summary>Renders one app for a pod: appsinfo, the rootfs (without overlay; with it, the
    /// rootfs is mounted by <see cref="MountApp"/>), and its RuntimeApp JSON.</summary>
    public JsonObject PrepareApp(PodDirectory dir, AppRequest request, RunRequest pod, ISet<string> takenNames, bool overlay)
    {
        var image = findImage?.Invoke(request.Image) ?? images.Resolve(request.Image);
        var imageManifest = JsonNode.Parse(images.ReadManifest(image))!.AsObject();
        var name = request.Name ?? DefaultAppName(image.Name);
        if (!takenNames.Add(name))
            throw new UsageException($"duplicate app name \"{name}\": give each app a different --name");

        var app = imageManifest["app"]?.DeepClone() as JsonObject ?? new JsonObject { ["user"] = "0", ["group"] = "0" };
        if (request.Exec is not null || request.Args is not null)
        {
            var exec = (app["exec"] as JsonArray)?.Select(n => (string)n!).ToList() ?? [];
            // --exec replaces the whole command; arguments after -- replace the image's arguments.
            if (request.Exec is not null) exec = [request.Exec];
            if (request.Args is not null) exec = [.. exec.Take(1), .. request.Args];
            app["exec"] = new JsonArray(exec.Select(s => (JsonNode)JsonValue.Create(s)).ToArray());
        }
        if (app["exec"] is not JsonArray { Count: > 0 })
            throw new UsageException($"image {image.Name} has no app to run: give --exec");
        if (request.User is not null) app["user"] = request.User;
        if (request.Group is not null) app["group"] = request.Group;
        app["user"] ??= "0";
        app["group"] ??= "0";

        var env = new List<KeyValuePair<string, string>>();
        void Set(KeyValuePair<string, string> e) { env.RemoveAll(x => x.Key == e.Key); env.Add(e); }
        foreach (var e in app["environment"] as JsonArray ?? []) Set(new((string)e!["name"]!, (string?)e["value"] ?? ""));
        foreach (var e in pod.PodEnvironment) Set(e);
        foreach (var e in request.Environment) Set(e);
        app["environment"] = new JsonArray(env.Select(e => (JsonNode)new JsonObject { ["name"] = e.Key, ["value"] = e.Value }).ToArray());

        var isolators = app["isolators"] as JsonArray ?? [];
        if (request.Memory is not null) isolators.Add(new JsonObject { ["name"] = Isolators.Memory, ["value"] = new JsonObject { ["limit"] = request.Memory } });
        if (request.Cpu is not null) isolators.Add(new JsonObject { ["name"] = Isolators.Cpu, ["value"] = new JsonObject { ["limit"] = request.Cpu } });
        app["isolators"] = isolators;

        // Mounts: explicit --mount, then the image's mount points that a pod volume of the same name fills (rkt's implicit mounts).
        var mounts = new JsonArray();
        foreach (var m in request.Mounts)
        {
            if (pod.Volumes.All(v => v.Name != m.Volume)) throw new UsageException($"--mount: no --volume is named \"{m.Volume}\"");
            mounts.Add(new JsonObject { ["volume"] = m.Volume, ["path"] = m.Path });
        }
        foreach (var mp in app["mountPoints"] as JsonArray ?? [])
        {
            var mpName = (string?)mp!["name"];
            var mpPath = (string?)mp["path"];
            if (mpName is null || mpPath is null || pod.Volumes.All(v => v.Name != mpName) || mounts.Any(m => (string?)m!["path"] == mpPath)) continue;
            mounts.Add(new JsonObject { ["volume"] = mpName, ["path"] = mpPath });
        }

        Directory.CreateDirectory(dir.AppInfoDir(name));
        File.WriteAllBytes(dir.AppInfoManifest(name), images.ReadManifest(image));
        File.WriteAllText(dir.AppTreeStoreId(name), image.Id);
        if (overlay) RenderForOverlay(image);
        else _trees.Export(image, dir.AppDir(name), ExportMode.Hardlink, rootfsOnly: false);

        return new JsonObject
        {
            ["name"] = name,
            ["image"] = new JsonObject
            {
                ["name"] = image.Name,
                ["id"] = image.Id,
                ["labels"] = new JsonArray(image.Labels.Select(l => (JsonNode)new JsonObject { ["name"] = l.Key, ["value"] = l.Value }).ToArray()),
            },
            ["app"] = app,
            ["readOnlyRootFS"] = false,
            ["mounts"] = mounts,
            ["annotations"] = new JsonArray(request.StreamModes.Select(m => (JsonNode)new JsonObject { ["name"] = StreamModes.Annotation(m.Key), ["value"] = m.Value }).ToArray()),
        };
    }

    /// <summary>rkt names an app after the last component of its image name.</summary>
    public static string DefaultAppName(string imageName)
    {
        var last = imageName.Split('/').Last().Split(':')[0];
        var name = AcIdentifier.Sanitize(last).Replace('.', '-').Replace('_', '-').Replace('~', '-');
        return AcName.IsValidName(name) ? name : "app";
    }

    /// <summary>What rkt's stage0 run does before it execs stage1 (stage0/run.go
    /// <c>setupStage1Image</c>, <c>setupAppImage</c>): with overlay, mounts the stage1 and then each
    /// app, and touches <c>rkt/status</c> (which the stage1 image must have); for every app, an
    /// <c>/etc/mtab</c> link where its image has <c>/etc</c> but no mtab.</summary>
    public void MountForRun(PodRef pod, PodManifest manifest)
    {
        var dir = pod.Directory;
        if (dir.UsesOverlay)
        {
            MountStage1(dir);
            try { Directory.SetLastWriteTimeUtc(dir.StatusDir, DateTime.UtcNow); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new Stage1Exception($"error setting up stage1: touching the status directory {dir.StatusDir}: {e.Message}", e);
            }
        }
        foreach (var app in manifest.Apps) MountApp(dir, app.Name);
    }

    /// <summary>Mounts an overlay pod's stage1 rootfs.</summary>
    public void MountStage1(PodDirectory dir)
    {
        var stage1 = File.ReadAllText(dir.Stage1TreeStoreId).Trim();
        PodMounts.MountStage1(dir, stage1, TreeRootfs(stage1));
    }

    /// <summary>Gives a prepared app its rootfs in the pod (rkt's <c>setupAppImage</c>).</summary>
    public void MountApp(PodDirectory dir, string app)
    {
        if (dir.UsesOverlay)
        {
            var tree = File.ReadAllText(dir.AppTreeStoreId(app)).Trim();
            PodMounts.MountApp(dir, app, tree, TreeRootfs(tree));
            File.Copy(dir.AppInfoManifest(app), Path.Join(dir.AppDir(app), "manifest"), overwrite: true);
        }
        EnsureMtab(dir.AppRootfs(app));
    }

    private string TreeRootfs(string id) => Path.Join(_trees.TreePath(id), "rootfs");

    /// <summary>An overlay pod uses the image's tree in place: render it (once) and count it as used,
    /// as an export would.</summary>
    private string RenderForOverlay(ImageRecord image)
    {
        var tree = _trees.Render(image);
        images.MarkUsed(image.Id, DateTimeOffset.UtcNow);
        return tree;
    }

    /// <summary>rkt's <c>ensureMtabExists</c>: <c>etc/mtab -> ../proc/self/mounts</c> where an image has <c>/etc</c> but no mtab.</summary>
    private static void EnsureMtab(string rootfs)
    {
        var etc = Path.Join(rootfs, "etc");
        var mtab = Path.Join(etc, "mtab");
        if (new DirectoryInfo(etc) is { Exists: true, LinkTarget: null } && !Path.Exists(mtab) && new FileInfo(mtab).LinkTarget is null)
            File.CreateSymbolicLink(mtab, "../proc/self/mounts");
    }

    private static JsonNode VolumeJson(VolumeRequest v) => v.Kind == "host"
        ? new JsonObject { ["name"] = v.Name, ["kind"] = "host", ["source"] = v.Source, ["readOnly"] = v.ReadOnly }
        : new JsonObject { ["name"] = v.Name, ["kind"] = "empty", ["readOnly"] = v.ReadOnly, ["mode"] = "0755", ["uid"] = 0, ["gid"] = 0 };

    /// <summary>Removes a pod that did not get to run, once nothing is mounted in it any more
    /// (deleting through a mount would reach into what it mounts).</summary>
    public static void Discard(PodRef pod)
    {
        try
        {
            if (Directory.Exists(pod.Path) && PodMounts.UnmountAllUnder(pod.Path)) Directory.Delete(pod.Path, recursive: true);
        }
        catch (IOException) { /* best effort: gc removes what is left */ }
    }
}
