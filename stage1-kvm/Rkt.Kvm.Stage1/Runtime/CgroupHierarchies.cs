namespace Rkt.Kvm.Stage1.Runtime;

/// <summary>What a pod's cgroup uses in one hierarchy: the unified one (cgroup.kill, and limits where its controllers are on), or a v1 memory or pids one.</summary>
public enum CgroupKind { Unified, Memory, Pids }

/// <summary>One hierarchy and the directory of this process's own cgroup in it.</summary>
public sealed record CgroupHierarchy(CgroupKind Kind, string OwnDirectory);

/// <summary>
/// Finds the cgroup hierarchies a pod's cgroup goes in, from /proc/self/mountinfo and
/// /proc/self/cgroup: the unified (v2) one wherever it is mounted (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified beside v1 controllers), and v1's memory and pids hierarchies if mounted.
/// Pure: the texts come in, so it is tested on any host's layout.
/// </summary>
public static class CgroupHierarchies
{
    public static IReadOnlyList<CgroupHierarchy> Find(string mountInfo, string ownCgroups)
    {
        // /proc/self/cgroup: "ID:controllers:path"; the unified hierarchy is "0::path".
        var own = new Dictionary<string, string>();
        foreach (var line in ownCgroups.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3) continue;
            if (parts[1].Length == 0) own[""] = parts[2];
            else foreach (var controller in parts[1].Split(',')) own[controller] = parts[2];
        }
        var found = new List<CgroupHierarchy>();
        foreach (var line in mountInfo.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS"
            var halves = line.Split(" - ", 2);
            if (halves.Length != 2) continue;
            var left = halves[0].Split(' ');
            var right = halves[1].Split(' ');
            if (left.Length < 5 || right.Length < 3) continue;
            string root = Unescape(left[3]), mountPoint = Unescape(left[4]);
            CgroupKind? kind = right[0] switch
            {
                "cgroup2" => CgroupKind.Unified,
                "cgroup" when right[2].Split(',').Contains("memory") => CgroupKind.Memory,
                "cgroup" when right[2].Split(',').Contains("pids") => CgroupKind.Pids,
                _ => null,
            };
            if (kind is not { } k || found.Any(f => f.Kind == k)) continue;
            string key = k switch { CgroupKind.Unified => "", CgroupKind.Memory => "memory", _ => "pids" };
            if (!own.TryGetValue(key, out var path)) continue;
            // The mount shows the hierarchy from ROOT down (a container sees its own subtree).
            string relative = root == "/" ? path : path.StartsWith(root, StringComparison.Ordinal) ? path[root.Length..] : path;
            found.Add(new CgroupHierarchy(k, Path.TrimEndingDirectorySeparator(mountPoint + (relative == "/" ? "" : relative))));
        }
        return found;
    }

    /// <summary>mountinfo writes space, tab, newline and backslash as octal escapes.</summary>
    private static string Unescape(string field) =>
        field.Replace("\\040", " ").Replace("\\011", "\t").Replace("\\012", "\n").Replace("\\134", "\\");
}
