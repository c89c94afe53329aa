using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Cli.Cli;
using Rkt.Kvm.Images;
using Rkt.Kvm.Images.Formats.Appc;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Trees;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Cli.Pods;

/// <summary>
/// What stage0 does before stage1 runs (rkt's prepare): the stage1 image and each app's image
/// rendered into the pod directory, <c>appsinfo/</c>, and the pod manifest. The pod is built in
/// <c>prepare/</c>; anything that fails removes it, so no half-made pod is ever left in <c>run/</c>.
/// </summary>
public sealed class PodPreparer(ImageStore images, PodStore pods)
{
    public const string Stage1EnvironmentVariable = "RKT_KVM_STAGE1";

    private readonly TreeStore _trees = new(images);

    /// <summary>The stage1 image to use: --stage1-path, then $RKT_KVM_STAGE1, then the one
    /// installed beside rkt-kvm (<c>../stage1/stage1-kvm.aci</c>, as <c>make</c> lays out out/).</summary>
    public static string LocateStage1(string? flag)
    {
        var path = flag ?? Environment.GetEnvironmentVariable(Stage1EnvironmentVariable)
            ?? Path.GetFullPath(Path.Join(AppContext.BaseDirectory, "..", "stage1", "stage1-kvm.aci"));
        return File.Exists(path) ? path
            : throw new Stage1Exception($"stage1 image {path} does not exist (build it with `make stage1`, or give --stage1-path)");
    }

    /// <summary>Prepares a pod in <c>prepared/</c>; returns it.</summary>
    public PodRef Prepare(RunRequest request)
    {
        var pod = pods.Move(pods.CreateEmbryo(), PodPhase.Prepare);
        try
        {
            var dir = pod.Directory;
            var stage1 = ImportStage1(LocateStage1(request.Stage1Path));
            _trees.Export(stage1, Path.Join(pod.Path, "stage1"), ExportMode.Hardlink, rootfsOnly: false);
            Stage1Image.Parse(File.ReadAllBytes(dir.Stage1Manifest), "stage1 manifest"); // a stage1 at all?

            var apps = new JsonArray();
            var names = new HashSet<string>();
            foreach (var app in request.Apps)
                apps.Add(PrepareApp(dir, app, request, names));

            var manifest = new JsonObject
            {
                ["acKind"] = "PodManifest",
                ["acVersion"] = AppcImageManifest.SpecVersion,
                ["apps"] = apps,
                ["volumes"] = new JsonArray(request.Volumes.Select(VolumeJson).ToArray()),
                ["isolators"] = null,
                ["annotations"] = new JsonArray(new JsonObject { ["name"] = PodManifest.MutableAnnotation, ["value"] = request.Mutable ? "true" : "false" }),
                ["ports"] = null,
            };
            var bytes = JsonSerializer.SerializeToUtf8Bytes(manifest);
            PodManifest.Parse(bytes, "the pod manifest we wrote"); // our own output obeys the rules we enforce
            File.WriteAllBytes(dir.Manifest, bytes);
            File.WriteAllText(Path.Join(pod.Path, "pod-created"), "");
            return pods.Move(pod, PodPhase.Prepared);
        }
        catch
        {
            Discard(pod);
            throw;
        }
    }

    /// <summary>Renders one app for a pod: rootfs, appsinfo, and its RuntimeApp JSON.</summary>
    public JsonObject PrepareApp(PodDirectory dir, AppRequest request, RunRequest pod, ISet<string> takenNames)
    {
        var image = images.Resolve(request.Image);
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

        _trees.Export(image, dir.AppRootfs(name), ExportMode.Hardlink, rootfsOnly: true);
        Directory.CreateDirectory(Path.GetDirectoryName(dir.AppInfoManifest(name))!);
        File.WriteAllBytes(dir.AppInfoManifest(name), images.ReadManifest(image));
        File.WriteAllText(Path.Join(Path.GetDirectoryName(dir.AppInfoManifest(name))!, "treeStoreID"), image.Id);

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
            ["annotations"] = new JsonArray(),
        };
    }

    /// <summary>rkt names an app after the last component of its image name.</summary>
    public static string DefaultAppName(string imageName)
    {
        var last = imageName.Split('/').Last().Split(':')[0];
        var name = AcIdentifier.Sanitize(last).Replace('.', '-').Replace('_', '-').Replace('~', '-');
        return AcName.IsValidName(name) ? name : "app";
    }

    private ImageRecord ImportStage1(string path)
    {
        try { return new ImageImporter(images).Import(path, new ImportOptions(null, null)); }
        catch (ImageException e) { throw new Stage1Exception($"stage1 image {path}: {e.Message}", e); }
    }

    private static JsonNode VolumeJson(VolumeRequest v) => v.Kind == "host"
        ? new JsonObject { ["name"] = v.Name, ["kind"] = "host", ["source"] = v.Source, ["readOnly"] = v.ReadOnly }
        : new JsonObject { ["name"] = v.Name, ["kind"] = "empty", ["readOnly"] = v.ReadOnly, ["mode"] = "0755", ["uid"] = 0, ["gid"] = 0 };

    /// <summary>Removes a pod that did not get to run.</summary>
    public static void Discard(PodRef pod)
    {
        try { if (Directory.Exists(pod.Path)) Directory.Delete(pod.Path, recursive: true); }
        catch (IOException) { /* best effort: gc removes what is left */ }
    }
}
