using System.Globalization;

namespace Rkt.Kvm.Stage1.Runtime;

/// <summary>
/// A pod's cgroup on the host: a directory <c>rkt-kvm-&lt;uuid&gt;</c> under stage1's own cgroup in
/// each hierarchy <see cref="CgroupHierarchies"/> finds, with memory and task limits sized from the
/// VM. stage1 run joins it before it starts anything, so the VMM (and the template VMM, and the CNI
/// plugins) are born inside; gc kills whatever is left in it (cgroup.kill where the unified
/// hierarchy has it) and removes it. The directories are recorded as they are made, in the pod's
/// stage1 state and in its runtime directory, so gc finds them however run ended, and even once the
/// pod directory is gone (<see cref="PodRuntime.SweepOrphans"/>).
/// </summary>
public sealed class PodCgroup
{
    public const string Prefix = "rkt-kvm-";
    /// <summary>Beyond guest RAM: the VMM's runtime and heap, stage1 run beside it, page tables, a template's page cache.</summary>
    public const ulong OverheadMiB = 512;
    /// <summary>Tasks (threads count): the VMM has ~20 (runtime, vCPUs, devices, 9p workers), stage1 run as many, a CNI plugin a few.</summary>
    public const int MaxTasks = 512;
    /// <summary>The record's name in the pod's runtime directory.</summary>
    public const string RecordFileName = "cgroups";

    private const string CgroupRoot = "/sys/fs/cgroup/";

    public IReadOnlyList<(CgroupKind Kind, string Directory)> Directories { get; }
    public ulong MemoryLimitBytes { get; }

    private PodCgroup(IReadOnlyList<(CgroupKind, string)> directories, ulong memoryLimitBytes)
    {
        Directories = directories;
        MemoryLimitBytes = memoryLimitBytes;
    }

    /// <summary>
    /// Makes the pod's cgroup for a VM of <paramref name="vmMemoryMiB"/>, each directory written to
    /// every one of <paramref name="recordPaths"/> before it exists; throws IOException (with the
    /// path) when the host's cgroups cannot take it.
    /// </summary>
    public static PodCgroup Create(string uuid, ulong vmMemoryMiB, params string[] recordPaths)
    {
        var hierarchies = CgroupHierarchies.Find(File.ReadAllText("/proc/self/mountinfo"), File.ReadAllText("/proc/self/cgroup"));
        if (hierarchies.Count == 0) throw new IOException("no cgroup hierarchy is mounted (neither cgroup2 nor v1 memory or pids)");
        ulong limit = (vmMemoryMiB + OverheadMiB) << 20;
        var made = new List<(CgroupKind, string)>();
        foreach (var h in hierarchies)
        {
            string dir = Path.Join(h.OwnDirectory, Prefix + uuid);
            // Recorded before it exists: gc must find whatever this run managed to make.
            foreach (var record in recordPaths) File.AppendAllText(record, $"{h.Kind.ToString().ToLowerInvariant()} {dir}\n");
            Directory.CreateDirectory(dir);
            made.Add((h.Kind, dir));
            switch (h.Kind)
            {
                case CgroupKind.Memory:
                    Write(dir, "memory.limit_in_bytes", limit.ToString(CultureInfo.InvariantCulture));
                    break;
                case CgroupKind.Pids:
                    Write(dir, "pids.max", MaxTasks.ToString(CultureInfo.InvariantCulture));
                    break;
                case CgroupKind.Unified:
                    // Only where the parent hands these controllers down (on hosts with v1 controllers it has none).
                    if (File.Exists(Path.Join(dir, "memory.max"))) Write(dir, "memory.max", limit.ToString(CultureInfo.InvariantCulture));
                    if (File.Exists(Path.Join(dir, "pids.max"))) Write(dir, "pids.max", MaxTasks.ToString(CultureInfo.InvariantCulture));
                    break;
            }
        }
        return new PodCgroup(made, limit);
    }

    /// <summary>Moves process <paramref name="pid"/> (all its threads) into the pod's cgroup in every hierarchy.</summary>
    public void Join(int pid)
    {
        foreach (var (_, dir) in Directories) Write(dir, "cgroup.procs", pid.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>What it limits, for run's log.</summary>
    public string Describe()
    {
        bool memory = Directories.Any(d => d.Kind == CgroupKind.Memory || d.Kind == CgroupKind.Unified && File.Exists(Path.Join(d.Directory, "memory.max")));
        bool tasks = Directories.Any(d => d.Kind == CgroupKind.Pids || d.Kind == CgroupKind.Unified && File.Exists(Path.Join(d.Directory, "pids.max")));
        return $"cgroup {Prefix}…: memory {(memory ? $"{MemoryLimitBytes >> 20} MiB" : "unlimited (no memory controller)")}, tasks {(tasks ? MaxTasks.ToString(CultureInfo.InvariantCulture) : "unlimited (no pids controller)")}";
    }

    /// <summary>
    /// At the end of run, once the VMM is gone: this process moves back to its parent cgroup and the
    /// pod's directories go; one still busy (something survived) stays for gc.
    /// </summary>
    public void Leave()
    {
        foreach (var (_, dir) in Directories)
        {
            try
            {
                Write(Path.GetDirectoryName(dir)!, "cgroup.procs", Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
                Directory.Delete(dir);
            }
            catch (IOException) { }
        }
    }

    /// <summary>
    /// gc: kills every process left in the pod's recorded cgroups, waits for them to go, removes the
    /// directories and the record. Only directories named for this pod under /sys/fs/cgroup are
    /// touched, whatever the record says. Idempotent.
    /// </summary>
    public static void KillAndRemove(string recordPath, string uuid, TimeSpan timeout)
    {
        if (!File.Exists(recordPath)) return;
        var recorded = File.ReadAllLines(recordPath).Select(l => l.Split(' ', 2)).Where(p => p.Length == 2).Select(p => (p[0], p[1]));
        KillAndRemove(recorded, uuid, timeout);
        File.Delete(recordPath);
    }

    /// <summary>
    /// gc of a process no pod can reach: kills everything in the pod cgroup process
    /// <paramref name="pid"/> is in (read from the host, not from a record) and removes it. Returns
    /// false when the process is in no pod cgroup, or is gone.
    /// </summary>
    public static bool KillAndRemoveOf(int pid, TimeSpan timeout)
    {
        string own;
        try { own = File.ReadAllText($"/proc/{pid}/cgroup"); }
        catch (IOException) { return false; }
        var dirs = CgroupHierarchies.Find(File.ReadAllText("/proc/self/mountinfo"), own)
            .Where(h => Path.GetFileName(h.OwnDirectory).StartsWith(Prefix, StringComparison.Ordinal)).ToList();
        if (dirs.Count == 0) return false;
        string uuid = Path.GetFileName(dirs[0].OwnDirectory)[Prefix.Length..];
        if (!Entrypoints.PodUuid.IsValid(uuid)) return false;
        KillAndRemove(dirs.Select(h => (h.Kind == CgroupKind.Unified ? "unified" : "v1", h.OwnDirectory)), uuid, timeout);
        return true;
    }

    /// <summary>Whether a process's /proc/PID/cgroup text puts it in pod <paramref name="uuid"/>'s cgroup (or below it) in any hierarchy.</summary>
    public static bool Contains(string processCgroups, string uuid) =>
        processCgroups.Split('\n').Any(line => line.Split(':', 3) is [_, _, var path] && (path.EndsWith("/" + Prefix + uuid, StringComparison.Ordinal) || path.Contains("/" + Prefix + uuid + "/", StringComparison.Ordinal)));

    /// <summary>Only directories named for this pod under /sys/fs/cgroup are touched, whatever the caller read.</summary>
    private static void KillAndRemove(IEnumerable<(string Kind, string Directory)> directories, string uuid, TimeSpan timeout)
    {
        foreach (var (kind, recorded) in directories)
        {
            string dir = Path.GetFullPath(recorded);
            if (Path.GetFileName(dir) != Prefix + uuid || !dir.StartsWith(CgroupRoot, StringComparison.Ordinal) || !Directory.Exists(dir)) continue;
            string kill = Path.Join(dir, "cgroup.kill");
            if (kind == "unified" && File.Exists(kill)) Write(dir, "cgroup.kill", "1");
            else foreach (int pid in Tasks(dir)) Native.Signals.Kill(pid, Native.Signals.SIGKILL);
            var deadline = DateTime.UtcNow + timeout;
            while (Tasks(dir).Count > 0 && DateTime.UtcNow < deadline) Thread.Sleep(20);
            try { Directory.Delete(dir); }
            catch (IOException e) { throw new IOException($"the pod's cgroup {dir} still has processes after SIGKILL: {e.Message}", e); }
        }
    }

    private static List<int> Tasks(string dir)
    {
        try
        {
            return File.ReadAllLines(Path.Join(dir, "cgroup.procs")).Select(l => int.Parse(l, CultureInfo.InvariantCulture)).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return []; }
    }

    private static void Write(string dir, string file, string value)
    {
        string path = Path.Join(dir, file);
        try { File.WriteAllText(path, value); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new IOException($"cannot write {value} to {path}: {e.Message}", e); }
    }
}
