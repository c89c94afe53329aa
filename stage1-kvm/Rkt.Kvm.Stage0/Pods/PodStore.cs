using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Entrypoints;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage0.Pods;

/// <summary>Where a pod directory is in its life; the directory it sits in under <c>pods/</c>.</summary>
public enum PodPhase { Embryo, Prepare, Prepared, Run, ExitedGarbage, Garbage }

/// <summary>One pod directory: its UUID, phase and path.</summary>
public sealed record PodRef(string Uuid, PodPhase Phase, string Path)
{
    public const string AbortedPrepare = "aborted prepare";

    public PodDirectory Directory => new(Path);

    /// <summary>rkt's state names: a pod in <c>run/</c> is running while its lock is held, one in
    /// <c>prepare/</c> is being prepared while its lock is held and an aborted prepare otherwise.</summary>
    public string State => Phase switch
    {
        PodPhase.Embryo => "embryo",
        PodPhase.Prepare => PodLock.IsHeld(Path) ? "preparing" : AbortedPrepare,
        PodPhase.Prepared => "prepared",
        PodPhase.Run => PodLock.IsHeld(Path) ? "running" : "exited",
        PodPhase.ExitedGarbage => "exited garbage",
        _ => "garbage",
    };
}

/// <summary>
/// The pods under <c>&lt;dir&gt;/pods/</c>, laid out as rkt lays them out: one directory per phase
/// (<c>embryo prepare prepared run exited-garbage garbage</c>), a pod moving between them by
/// rename, so it is always in exactly one.
/// </summary>
public sealed class PodStore(string dataDir)
{
    public string Root { get; } = Path.Join(dataDir, "pods");

    public static string DirectoryName(PodPhase phase) => phase switch
    {
        PodPhase.Embryo => "embryo",
        PodPhase.Prepare => "prepare",
        PodPhase.Prepared => "prepared",
        PodPhase.Run => "run",
        PodPhase.ExitedGarbage => "exited-garbage",
        _ => "garbage",
    };

    public string PhaseDir(PodPhase phase) => Path.Join(Root, DirectoryName(phase));

    /// <summary>A new pod directory in <c>embryo/</c> with a fresh random UUID.</summary>
    public PodRef CreateEmbryo()
    {
        foreach (var phase in Enum.GetValues<PodPhase>()) Directory.CreateDirectory(PhaseDir(phase));
        var uuid = Guid.NewGuid().ToString("D");
        var path = Path.Join(PhaseDir(PodPhase.Embryo), uuid);
        Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        return new PodRef(uuid, PodPhase.Embryo, path);
    }

    /// <summary>Moves a pod to another phase (one rename; the pod's lock, on the directory, moves with it).</summary>
    public PodRef Move(PodRef pod, PodPhase to)
    {
        Directory.CreateDirectory(PhaseDir(to));
        var target = Path.Join(PhaseDir(to), pod.Uuid);
        Directory.Move(pod.Path, target);
        return pod with { Phase = to, Path = target };
    }

    public IEnumerable<PodRef> All()
    {
        foreach (var phase in Enum.GetValues<PodPhase>())
        {
            var dir = PhaseDir(phase);
            if (!Directory.Exists(dir)) continue;
            foreach (var path in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
            {
                var uuid = Path.GetFileName(path);
                if (PodUuid.IsValid(uuid)) yield return new PodRef(uuid, phase, path);
            }
        }
    }

    /// <summary>The pod whose UUID is or starts with <paramref name="uuidOrPrefix"/>; rkt's
    /// errors for none and for more than one.</summary>
    public PodRef Find(string uuidOrPrefix)
    {
        var prefix = uuidOrPrefix.Trim().ToLowerInvariant();
        if (prefix.Length == 0 || prefix.Any(c => c is not (>= '0' and <= '9' or >= 'a' and <= 'f' or '-')))
            throw new Stage1Exception($"\"{uuidOrPrefix}\" is not a pod UUID");
        var matches = All().Where(p => p.Uuid.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        return matches.Count switch
        {
            0 => throw new Stage1Exception($"no matches found for \"{uuidOrPrefix}\""),
            1 => matches[0],
            _ => throw new Stage1Exception($"ambiguous UUID \"{uuidOrPrefix}\": {matches.Count} pods match"),
        };
    }

    /// <summary>The image trees that pods refer to (<c>stage1TreeStoreID</c>, <c>appsinfo/*/treeStoreID</c>),
    /// in any phase: an overlay pod mounts them, so the image store must keep them (rkt's tree-store gc
    /// asks the same of its pods).</summary>
    public IReadOnlySet<string> TreesInUse()
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        void Add(string file) { try { ids.Add(File.ReadAllText(file).Trim()); } catch (IOException) { } }
        foreach (var pod in All())
        {
            if (File.Exists(pod.Directory.Stage1TreeStoreId)) Add(pod.Directory.Stage1TreeStoreId);
            var appsinfo = System.IO.Path.Join(pod.Path, "appsinfo");
            if (Directory.Exists(appsinfo))
                foreach (var file in Directory.EnumerateFiles(appsinfo, "treeStoreID", SearchOption.AllDirectories)) Add(file);
        }
        return ids;
    }
}
