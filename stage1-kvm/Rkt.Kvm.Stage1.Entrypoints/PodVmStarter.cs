using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.Vm;
using Rkt.Kvm.Stage1.Runtime;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Vmm.Client.Control;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>
/// Starts a pod's VM warm when it can: restored from the data directory's template for the VM's
/// spec (VMM, kernel, initrd, RAM, vCPUs, NIC count), which the first pod that needs one makes
/// (a cold boot, snapshotted once the agent is ready). Whatever goes wrong with a template, the
/// pod boots cold and its log says why: a template is an optimisation, never a new way to fail.
/// </summary>
internal sealed class PodVmStarter(Stage1Files files, Timeline timeline, Action<string> log)
{
    /// <summary>A template takes a cold boot to make; a pod waiting for another pod's longer than this boots cold.</summary>
    public static readonly TimeSpan TemplateWait = TimeSpan.FromMinutes(5);

    /// <summary>Whether the VM <see cref="StartAsync"/> returned was restored from a template.</summary>
    public bool Restored { get; private set; }

    public async Task<AgentVmProcess> StartAsync(VmmCommandLine line, CancellationToken cancellation)
    {
        var store = VmTemplateStore.ForPodsRoot(PodRuntime.PodsRootOf(files.Pod.Path));
        string? snapshot = null;
        VmTemplateSpec? spec = null;
        if (store.DisabledBy is { } marker)
        {
            log($"VM templates are turned off for this data directory ({marker}); booting cold");
            timeline.Mark("vmm-start");
            return await AgentVmProcess.StartAsync(Options(line), cancellation);
        }
        try
        {
            // The stage1 image's tree ID names the VMM, kernel and initrd by content, at no cost.
            string treeId = File.ReadAllText(files.Pod.Stage1TreeStoreId).Trim();
            if (treeId.Length == 0) throw new IOException($"{files.Pod.Stage1TreeStoreId} is empty");
            spec = new VmTemplateSpec(treeId, (int)line.MemoryMiB, line.Cpus, line.Net.Count);
            snapshot = await EnsureTemplateAsync(store, spec, line, cancellation);
        }
        catch (Exception e) when (e is AgentException or VmmControlException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            log($"no VM template ({FirstLine(e.Message)}); booting cold");
        }
        if (snapshot is not null)
        {
            timeline.Mark("vmm-start");
            try
            {
                var vm = await AgentVmProcess.StartAsync(Options(line with { Restore = snapshot }), cancellation);
                Restored = true;
                log($"VM restored from template {spec!.Key} in {vm.StartToReady.TotalMilliseconds:F0} ms");
                return vm;
            }
            catch (AgentException e)
            {
                log($"restoring template {spec!.Key} failed ({FirstLine(e.Message)}); booting cold");
            }
        }
        timeline.Mark("vmm-start");
        return await AgentVmProcess.StartAsync(Options(line), cancellation);
    }

    private AgentVmOptions Options(VmmCommandLine line) => new()
    {
        VmmPath = Stage1Files.Vmm,
        CommandLine = line,
        RuntimeDirectory = files.RuntimeDir,
        ClientOptions = Stage1Files.AgentOptions,
    };

    /// <summary>The template's snapshot, made now (under the store's lock) when there is none.</summary>
    private async Task<string?> EnsureTemplateAsync(VmTemplateStore store, VmTemplateSpec spec, VmmCommandLine podLine, CancellationToken cancellation)
    {
        if (store.Find(spec) is { } ready) return ready;
        using var held = store.Lock(TemplateWait);
        if (held is null) throw new IOException($"another pod has been making template {spec.Key} for more than {TemplateWait.TotalMinutes:0} minutes");
        if (store.Find(spec) is { } madeMeanwhile) return madeMeanwhile;
        string dir = store.Prepare(spec);
        string runtime = Directory.CreateDirectory(Path.Join(files.RuntimeDir, "template")).FullName;
        timeline.Mark("template-start");
        try
        {
            var line = podLine with
            {
                Exports = [],
                Net = Enumerable.Range(0, podLine.Net.Count).Select(i => new NetDeviceSpec { Isolated = true, Mac = VmTemplateStore.TemplateMac(i) }).ToList(),
                Control = Path.Join(runtime, "control.sock"),
                ConsoleLog = Path.Join(dir, "console.log"),
            };
            var info = await AgentVmTemplate.CreateAsync(Options(line) with { RuntimeDirectory = runtime }, store.SnapshotOf(spec), cancellation);
            store.Commit(spec);
            timeline.Mark("template-ready");
            log($"made VM template {spec.Key}: booted in {info.StartToReady.TotalSeconds:F1} s, snapshot of {info.MemoryBytes >> 20} MiB in {info.Snapshot.TotalMilliseconds:F0} ms");
            return store.SnapshotOf(spec);
        }
        finally
        {
            try { Directory.Delete(runtime, recursive: true); } catch (IOException) { }
        }
    }

    private static string FirstLine(string text) => text.Split('\n')[0];
}
