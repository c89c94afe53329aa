using System.Diagnostics;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// rkt-kvm as a user runs it: the built CLI (out/cli/rkt-kvm) with its own data directory and the
/// built stage1-kvm image, the busybox image imported. Sockets go to a short runtime directory of
/// the test's own. Disposing stops and collects every pod it made.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RktKvmCli : IDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("rkt-kvm-e2e-").FullName;
    public string DataDir => Path.Join(Root, "data");
    public string RuntimeRoot { get; }

    /// <param name="sharedTemplates">
    /// Pods restore VM templates from one store shared by the whole test run (the data
    /// directory's template store is a link to it), so only the first pod of the run pays a cold
    /// boot. False: this data directory's own empty store, for a test that needs a cold boot.
    /// </param>
    public RktKvmCli(bool sharedTemplates = true)
    {
        RuntimeRoot = Path.Join("/run/rkt-kvm-test", Path.GetFileName(Root));
        if (sharedTemplates)
        {
            Directory.CreateDirectory(Path.Join(DataDir, "stage1-kvm"));
            Directory.CreateSymbolicLink(Path.Join(DataDir, "stage1-kvm", "templates"), TestEnvironment.SharedTemplates);
        }
        var (rc, _, err) = Run("image", "import", TestEnvironment.BusyboxAci);
        if (rc != 0) throw new InvalidOperationException($"image import failed: {err}");
    }

    public const string Busybox = "rkt-kvm.local/busybox";

    public ProcessStartInfo StartInfo(IEnumerable<string> args, bool redirect = true)
    {
        var psi = new ProcessStartInfo(TestEnvironment.Cli) { RedirectStandardOutput = redirect, RedirectStandardError = redirect, RedirectStandardInput = redirect, UseShellExecute = false };
        psi.ArgumentList.Add($"--dir={DataDir}");
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["RKT_KVM_STAGE1"] = TestEnvironment.Stage1Aci;
        psi.Environment["RKT_KVM_RUNTIME_DIR"] = RuntimeRoot;
        return psi;
    }

    public (int ExitCode, string Stdout, string Stderr) Run(params string[] args) => Run(TimeSpan.FromMinutes(6), args);

    public (int ExitCode, string Stdout, string Stderr) Run(TimeSpan timeout, params string[] args)
    {
        using var p = Process.Start(StartInfo(args))!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"rkt-kvm {string.Join(' ', args)} did not finish in {timeout}: {stderr.Result}");
        }
        NotePods(stdout.Result + stderr.Result);
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Every pod this CLI's data directory has held, so what the host keeps for them can be checked after they are gone.</summary>
    public HashSet<string> KnownPods { get; } = [];

    private void NotePods(string output = "")
    {
        // A pod that failed to start is already gone: its UUID is in what rkt-kvm printed.
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(output, "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"))
            KnownPods.Add(m.Value);
        var pods = Path.Join(DataDir, "pods");
        if (!Directory.Exists(pods)) return;
        foreach (var dir in Directory.GetDirectories(pods).SelectMany(Directory.GetDirectories)) KnownPods.Add(Path.GetFileName(dir));
    }

    /// <summary>What the host keeps for this CLI's pods' networks, found by their UUIDs (other pods may run
    /// beside the test): network namespaces, IPAM leases, NAT rules (masquerade, port forwarding).</summary>
    public IReadOnlyList<string> NetworkLeftovers()
    {
        NotePods();
        var leases = Directory.Exists("/var/lib/cni/networks") ? Directory.GetFiles("/var/lib/cni/networks", "*", SearchOption.AllDirectories) : [];
        var netns = Directory.Exists("/var/run/netns") ? Directory.GetFiles("/var/run/netns").Select(Path.GetFileName).ToList() : [];
        var nat = HostTool("iptables-save", "-t", "nat").Split('\n');
        return [.. KnownPods.SelectMany(uuid =>
            netns.Where(n => n == $"cni-{uuid}").Select(n => $"netns {n}")
            .Concat(leases.Where(f => { try { return File.ReadAllText(f).StartsWith(uuid, StringComparison.Ordinal); } catch (IOException) { return false; } }).Select(f => $"lease {f}"))
            .Concat(nat.Where(l => l.Contains(uuid)).Select(l => $"nat {l}"))).Order()];
    }

    /// <summary>A host program's stdout; a failure fails the test.</summary>
    public static string HostTool(string program, params string[] args) => Rkt.Kvm.Stage1.Networking.HostCommand.Check(program, args);

    /// <summary>Starts a pod in the background (run or app sandbox) and returns its process and UUID once written.</summary>
    public (Process Process, string Uuid) Start(params string[] args)
    {
        var uuidFile = Path.Join(Root, $"uuid-{Guid.NewGuid():N}");
        var p = Process.Start(StartInfo([.. args, $"--uuid-file-save={uuidFile}"]))!;
        p.StandardInput.Close();
        var output = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        Outputs[p] = output;
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (!File.Exists(uuidFile) || new FileInfo(uuidFile).Length == 0)
        {
            if (p.HasExited || DateTime.UtcNow > deadline) throw new InvalidOperationException($"rkt-kvm {string.Join(' ', args)} did not create a pod: {output}");
            Thread.Sleep(50);
        }
        var uuid = File.ReadAllText(uuidFile);
        KnownPods.Add(uuid);
        return (p, uuid);
    }

    public Dictionary<Process, System.Text.StringBuilder> Outputs { get; } = [];

    public string OutputOf(Process p) { lock (Outputs[p]) return Outputs[p].ToString(); }

    /// <summary>`status --wait-ready` (boot takes tens of seconds on nested hosts).</summary>
    public void WaitReady(string uuid)
    {
        var (rc, stdout, stderr) = Run("status", "--wait-ready=5m", uuid);
        if (rc != 0) throw new InvalidOperationException($"pod {uuid} did not become ready: {stderr}{stdout}");
    }

    public Dictionary<string, string> Status(string uuid) =>
        Run("status", uuid).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=', 2)).Where(kv => kv.Length == 2)
            .ToDictionary(kv => kv[0], kv => kv[1]);

    /// <summary>What is mounted under the test's directory, read from the kernel (not from our bookkeeping).</summary>
    public IReadOnlyList<string> MountsUnderRoot() => Rkt.Kvm.Stage1.Pods.PodMounts.MountsUnder(Root);

    /// <summary>Processes whose command line names <paramref name="text"/> (a pod's VMM and stage1 do).</summary>
    public List<string> ProcessesMentioning(string text) =>
        Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsDigit))
            .Where(pid => { try { return File.ReadAllText($"/proc/{pid}/cmdline").Contains(text); } catch (IOException) { return false; } })
            .Select(pid => pid!).ToList();

    /// <summary>What the host holds for this test's pods, read from the host itself (not from our
    /// records): processes naming the test's directories, runtime directories, mounts, pod directories.</summary>
    public HostSnapshot Snapshot() => new(
        [.. ProcessesMentioning(Root).Concat(ProcessesMentioning(RuntimeRoot)).Distinct().Select(pid => $"{pid} {Cmdline(pid)}").Order()],
        Directory.Exists(RuntimeRoot) ? [.. Directory.GetFileSystemEntries(RuntimeRoot).Order()] : [],
        [.. MountsUnderRoot().Order()],
        Directory.Exists(Path.Join(DataDir, "pods")) ? [.. Directory.GetDirectories(Path.Join(DataDir, "pods")).SelectMany(Directory.GetDirectories).Order()] : [],
        NetworkLeftovers(),
        PodCgroups(),
        UnfinishedTemplates());

    /// <summary>
    /// The cgroups of this test's pods, in every hierarchy, found on the host: stage1 makes them
    /// under its own cgroup, which is this test process's.
    /// </summary>
    public IReadOnlyList<string> PodCgroups() =>
        [.. Rkt.Kvm.Stage1.Runtime.CgroupHierarchies.Find(File.ReadAllText("/proc/self/mountinfo"), File.ReadAllText("/proc/self/cgroup"))
            .Where(h => Directory.Exists(h.OwnDirectory))
            .SelectMany(h => Directory.GetDirectories(h.OwnDirectory, Rkt.Kvm.Stage1.Runtime.PodCgroup.Prefix + "*"))
            .Where(d => KnownPods.Contains(Path.GetFileName(d)[Rkt.Kvm.Stage1.Runtime.PodCgroup.Prefix.Length..])).Order()];

    /// <summary>What this data directory's own template store holds besides finished templates and its lock (the shared store is not ours to judge).</summary>
    public IReadOnlyList<string> UnfinishedTemplates()
    {
        var store = new DirectoryInfo(Path.Join(DataDir, "stage1-kvm", "templates"));
        if (!store.Exists || store.LinkTarget is not null) return [];
        return [.. store.EnumerateFileSystemInfos("*", SearchOption.AllDirectories)
            .Where(e => e.Name != Rkt.Kvm.Stage1.Runtime.VmTemplateStore.LockFileName)
            .Where(e => !File.Exists(Path.Join(e is DirectoryInfo ? e.FullName : Path.GetDirectoryName(e.FullName)!, Rkt.Kvm.Stage1.Runtime.VmTemplateStore.SpecFileName)))
            .Select(e => Path.GetRelativePath(store.FullName, e.FullName)).Order()];
    }

    /// <summary>A process's command line, words joined by spaces; "(gone)" once it has exited.</summary>
    public static string Cmdline(string pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '); }
        catch (IOException) { return "(gone)"; }
    }

    public string PodDir(string uuid) =>
        Directory.GetDirectories(Path.Join(DataDir, "pods"), uuid, SearchOption.AllDirectories).Single();

    public void Dispose()
    {
        foreach (var p in Outputs.Keys)
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.Dispose();
        }
        foreach (var pid in Directory.Exists(Path.Join(DataDir, "pods")) ? Directory.EnumerateFiles(Path.Join(DataDir, "pods"), "pid", SearchOption.AllDirectories) : [])
            if (int.TryParse(File.ReadAllText(pid).Trim(), out var vmm)) try { Process.GetProcessById(vmm).Kill(); } catch (ArgumentException) { }
        Run(TimeSpan.FromMinutes(1), "gc", "--grace-period=0s");
        // Never delete through a mount a failed test left behind: it would reach into the tree store.
        if (Rkt.Kvm.Stage1.Pods.PodMounts.UnmountAllUnder(Root))
            try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
        try { Directory.Delete(RuntimeRoot, recursive: true); } catch (IOException) { }
    }
}

/// <summary>A host's pod-related state at one moment; two are compared by value, list by list.</summary>
public sealed record HostSnapshot(IReadOnlyList<string> Processes, IReadOnlyList<string> RuntimeEntries, IReadOnlyList<string> Mounts, IReadOnlyList<string> PodDirs,
    IReadOnlyList<string> Networks, IReadOnlyList<string> Cgroups, IReadOnlyList<string> Templates)
{
    public override string ToString() =>
        $"processes: [{string.Join("; ", Processes)}]\nruntime: [{string.Join(", ", RuntimeEntries)}]\nmounts: [{string.Join(", ", Mounts)}]\npods: [{string.Join(", ", PodDirs)}]\nnetworks: [{string.Join("; ", Networks)}]\ncgroups: [{string.Join(", ", Cgroups)}]\nunfinished templates: [{string.Join(", ", Templates)}]";

    public static void AssertSame(HostSnapshot before, HostSnapshot after)
    {
        Assert.True(before.Processes.SequenceEqual(after.Processes) && before.RuntimeEntries.SequenceEqual(after.RuntimeEntries)
            && before.Mounts.SequenceEqual(after.Mounts) && before.PodDirs.SequenceEqual(after.PodDirs) && before.Networks.SequenceEqual(after.Networks)
            && before.Cgroups.SequenceEqual(after.Cgroups) && before.Templates.SequenceEqual(after.Templates),
            $"the host was not brought back to what it was.\nbefore:\n{before}\nafter:\n{after}");
    }
}
