using System.Globalization;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Stage1.Runtime;

/// <summary>A host process that belongs to a pod: its VMM, or its stage1 <c>run</c>.</summary>
public sealed record PodProcess(int Pid, string Program);

/// <summary>What <see cref="PodRuntime.SweepOrphans"/> found and removed.</summary>
public sealed record OrphanSweep(IReadOnlyList<string> RuntimeDirs, IReadOnlyList<PodProcess> Killed);

/// <summary>
/// The host side of a running pod outside its pod directory: the runtime directory with its
/// sockets (<c>/run/rkt-kvm/&lt;uuid&gt;/</c>, or under <c>$RKT_KVM_RUNTIME_DIR</c>), which records the
/// pods directory that owns it, and the pod's processes. Processes are recognised by their
/// executable (<c>rkt-kvm-vmm</c>, or <c>rkt-kvm-stage1</c> running <c>run</c>) and a command line
/// that names the pod's UUID, never by name alone; so <c>gc</c> can find what a killed stage1 left,
/// even after its pod directory is gone.
/// </summary>
public static class PodRuntime
{
    public const string RootVariable = "RKT_KVM_RUNTIME_DIR";
    public const string DefaultRoot = "/run/rkt-kvm";
    /// <summary>In each runtime directory: the pods directory (<c>&lt;data&gt;/pods</c>) of the pod it serves.</summary>
    public const string OwnerFile = "pods-root";
    public const string VmmProgram = "rkt-kvm-vmm", Stage1Program = "rkt-kvm-stage1";

    public static string Root => Environment.GetEnvironmentVariable(RootVariable) is { Length: > 0 } root ? root : DefaultRoot;

    public static string Directory(string uuid) => Path.Join(Root, uuid);

    /// <summary>The pods directory that owns a pod directory <c>&lt;data&gt;/pods/&lt;phase&gt;/&lt;uuid&gt;</c>.</summary>
    public static string PodsRootOf(string podDir) => Path.GetDirectoryName(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(podDir)))!)!;

    /// <summary>The live processes of pod <paramref name="uuid"/> (not the caller).</summary>
    public static IReadOnlyList<PodProcess> Processes(string uuid) =>
        HostProcesses().Where(p => p.Argv.Contains(uuid) || p.Argv.Any(a => a.Contains("/" + uuid + "/", StringComparison.Ordinal)))
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
    /// this pods directory owns whose pod is gone (with the processes still serving them), and
    /// VMMs under the runtime root whose runtime directory is gone (nothing can reach them).
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
                Kill(processes, TimeSpan.FromSeconds(5));
                killed.AddRange(processes);
                System.IO.Directory.Delete(dir, recursive: true);
                dirs.Add(dir);
            }
        }
        var rootPrefix = Path.TrimEndingDirectorySeparator(Path.GetFullPath(Root)) + "/";
        var unreachable = HostProcesses().Where(p => p.Program == VmmProgram && VmmCommandLine.FindVsock(p.Argv) is { } sock
            && sock.StartsWith(rootPrefix, StringComparison.Ordinal) && !System.IO.Directory.Exists(Path.GetDirectoryName(sock)))
            .Select(p => new PodProcess(p.Pid, p.Program)).ToList();
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

    /// <summary>Our processes on the host: VMMs, and stage1 run processes; never the caller.</summary>
    private static IEnumerable<(int Pid, string Program, IReadOnlyList<string> Argv)> HostProcesses()
    {
        foreach (var entry in System.IO.Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid == Environment.ProcessId) continue;
            string program;
            string[] argv;
            try
            {
                program = Path.GetFileName(new FileInfo($"/proc/{pid}/exe").LinkTarget ?? "").Replace(" (deleted)", "");
                argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; } // gone, or not ours to read
            if (program == VmmProgram || (program == Stage1Program && argv.Length > 1 && argv[1] == "run"))
                yield return (pid, program, argv);
        }
    }
}
