using System.Globalization;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Stage1.Runtime;

/// <summary>A host process that belongs to a pod: its VMM, its stage1 <c>run</c> or its supervisor.</summary>
public sealed record PodProcess(int Pid, string Program);

/// <summary>What <see cref="PodRuntime.SweepOrphans"/> found and removed.</summary>
public sealed record OrphanSweep(IReadOnlyList<string> RuntimeDirs, IReadOnlyList<PodProcess> Killed);

/// <summary>
/// The host side of a running pod outside its pod directory: the runtime directory with its
/// sockets (<c>/run/rkt-kvm/&lt;uuid&gt;/</c>, or under <c>$RKT_KVM_RUNTIME_DIR</c>), which records the
/// pods directory that owns it and the pod's cgroups, and the pod's processes. A process is the
/// pod's when it is in the pod's cgroup (<see cref="PodCgroup"/>), or when its executable is ours
/// (<c>rkt-kvm-vmm</c>, or <c>rkt-kvm-stage1</c> running <c>run</c> or <c>supervise</c>) and its command line names the
/// pod's UUID: never by name alone. So <c>gc</c> can find what a killed stage1 left, even after its
/// pod directory is gone.
/// </summary>
public static class PodRuntime
{
    public const string RootVariable = "RKT_KVM_RUNTIME_DIR";
    public const string DefaultRoot = "/run/rkt-kvm";
    /// <summary>In each runtime directory: the pods directory (<c>&lt;data&gt;/pods</c>) of the pod it serves.</summary>
    public const string OwnerFile = "pods-root";
    public const string VmmProgram = "rkt-kvm-vmm", Stage1Program = "rkt-kvm-stage1";
    /// <summary>The entrypoint of a pod's supervisor, <c>rkt-kvm-stage1 supervise UUID …</c>, which run starts as the pod's user.</summary>
    public const string SupervisorEntrypoint = "supervise";

    public static string Root => Environment.GetEnvironmentVariable(RootVariable) is { Length: > 0 } root ? root : DefaultRoot;

    public static string Directory(string uuid) => Path.Join(Root, uuid);

    /// <summary>The pods directory that owns a pod directory <c>&lt;data&gt;/pods/&lt;phase&gt;/&lt;uuid&gt;</c>.</summary>
    public static string PodsRootOf(string podDir) => Path.GetDirectoryName(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(podDir)))!)!;

    /// <summary>The live processes of pod <paramref name="uuid"/> (not the caller): in its cgroup, or ours and naming it.</summary>
    public static IReadOnlyList<PodProcess> Processes(string uuid) =>
        HostProcesses().Where(p => PodCgroup.Contains(p.Cgroups, uuid)
                || p.Ours && (p.Argv.Contains(uuid) || p.Argv.Any(a => a.Contains("/" + uuid + "/", StringComparison.Ordinal))))
            .Select(p => new PodProcess(p.Pid, p.Program)).ToList();

    /// <summary>SIGKILLs the processes and waits up to <paramref name="timeout"/> for them to go.</summary>
    public static void Kill(IReadOnlyCollection<PodProcess> processes, TimeSpan timeout)
    {
        foreach (var p in processes) Native.Signals.Kill(p.Pid, Native.Signals.SIGKILL);
        var deadline = DateTime.UtcNow + timeout;
        while (processes.Any(p => Alive(p)) && DateTime.UtcNow < deadline) Thread.Sleep(20);
    }

    /// <summary>
    /// Frees what no pod of <paramref name="podsRoot"/> can reach any more: runtime directories
    /// this pods directory owns whose pod is gone (with the pod's cgroups and the processes still
    /// serving them), and VMMs under the runtime root whose runtime directory is gone (nothing can
    /// reach them; their pod cgroup goes with them).
    /// </summary>
    public static OrphanSweep SweepOrphans(string podsRoot, Func<string, bool> podExists)
    {
        var dirs = new List<string>();
        var killed = new List<PodProcess>();
        podsRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(podsRoot));
        if (System.IO.Directory.Exists(Root))
        {
            foreach (var dir in System.IO.Directory.EnumerateDirectories(Root))
            {
                var uuid = Path.GetFileName(dir);
                var owner = Path.Join(dir, OwnerFile);
                if (!Entrypoints.PodUuid.IsValid(uuid) || !File.Exists(owner) || File.ReadAllText(owner).Trim() != podsRoot || podExists(uuid)) continue;
                var processes = Processes(uuid);
                PodCgroup.KillAndRemove(Path.Join(dir, PodCgroup.RecordFileName), uuid, TimeSpan.FromSeconds(5));
                Kill(processes, TimeSpan.FromSeconds(5));
                killed.AddRange(processes);
                System.IO.Directory.Delete(dir, recursive: true);
                dirs.Add(dir);
            }
        }
        var rootPrefix = Path.TrimEndingDirectorySeparator(Path.GetFullPath(Root)) + "/";
        var unreachable = HostProcesses().Where(p => p.Ours && p.Program == VmmProgram && VmmCommandLine.FindVsock(p.Argv) is { } sock
            && sock.StartsWith(rootPrefix, StringComparison.Ordinal) && !System.IO.Directory.Exists(Path.GetDirectoryName(sock)))
            .Select(p => new PodProcess(p.Pid, p.Program)).ToList();
        foreach (var p in unreachable) PodCgroup.KillAndRemoveOf(p.Pid, TimeSpan.FromSeconds(5));
        Kill(unreachable, TimeSpan.FromSeconds(5));
        killed.AddRange(unreachable);
        return new OrphanSweep(dirs, killed);
    }

    /// <summary>Running and not a zombie. A process that ends while we read its stat is gone (ESRCH comes as IOException).</summary>
    private static bool Alive(PodProcess p)
    {
        try { return !File.ReadAllText($"/proc/{p.Pid}/stat").Split(')').Last().TrimStart().StartsWith('Z'); }
        catch (IOException) { return false; }
    }

    /// <summary>A host process as gc sees it: <c>Ours</c> when it is a VMM, a stage1 <c>run</c> or a pod supervisor.</summary>
    private sealed record HostProcess(int Pid, string Program, IReadOnlyList<string> Argv, string Cgroups)
    {
        public bool Ours => Program == VmmProgram || (Program == Stage1Program && Argv.Count > 1 && Argv[1] is "run" or SupervisorEntrypoint);
    }

    /// <summary>Every process on the host we may read, never the caller.</summary>
    private static IEnumerable<HostProcess> HostProcesses()
    {
        foreach (var entry in System.IO.Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid == Environment.ProcessId) continue;
            HostProcess process;
            try
            {
                process = new HostProcess(pid,
                    Path.GetFileName(new FileInfo($"/proc/{pid}/exe").LinkTarget ?? "").Replace(" (deleted)", ""),
                    File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries),
                    File.ReadAllText($"/proc/{pid}/cgroup"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; } // gone, or not ours to read (a kernel thread has no exe)
            yield return process;
        }
    }
}
