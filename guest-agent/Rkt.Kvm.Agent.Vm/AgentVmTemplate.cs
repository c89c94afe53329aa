using System.Diagnostics;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Vmm.Client.Control;

namespace Rkt.Kvm.Agent.Vm;

/// <summary>What making a template took: the cold boot it replaces for every later VM, and the snapshot.</summary>
public sealed record AgentVmTemplateInfo(string SnapshotPath, TimeSpan StartToReady, long MemoryBytes, TimeSpan Snapshot);

/// <summary>
/// A template is an agent VM booted once and snapshotted as soon as its agent is ready: every
/// later VM with the same kernel, initrd, size and devices is restored from it
/// (<see cref="VmmCommandLine.Restore"/>) instead of booting. The template must hold nothing of
/// any pod: no 9p exports (the guest must not have mounted anything), NICs without traffic
/// (<see cref="NetDeviceSpec.Isolated"/>), no configuration sent to the agent.
/// </summary>
public static class AgentVmTemplate
{
    /// <summary>Boots the VM <paramref name="options"/> describes, snapshots it to <paramref name="snapshotPath"/> and stops it.</summary>
    public static async Task<AgentVmTemplateInfo> CreateAsync(AgentVmOptions options, string snapshotPath, CancellationToken cancellation = default)
    {
        var line = options.CommandLine;
        if (line.Control is not { } control) throw new ArgumentException("A template VM needs a control socket (the snapshot is taken through it).");
        if (line.Exports.Count > 0) throw new ArgumentException("A template VM must not have 9p exports: their files are not there after a restore.");
        if (line.Net.Any(n => !n.Isolated)) throw new ArgumentException("A template VM's NICs must be isolated: its traffic would be state no restored VM could continue.");
        if (line.Restore is not null) throw new ArgumentException("A template VM boots cold.");
        using var vm = await AgentVmProcess.StartAsync(options, cancellation).ConfigureAwait(false);
        var client = new VmmControlClient(control);
        var clock = Stopwatch.StartNew();
        ControlReply reply;
        try
        {
            reply = client.Snapshot(snapshotPath);
        }
        catch (VmmControlException e)
        {
            throw new AgentException(AgentFailure.Failed, $"The template VM could not be snapshotted: {e.Message}\n{vm.Diagnostics()}", e);
        }
        var snapshotTime = clock.Elapsed;
        try { client.Stop(); }
        catch (VmmControlException) { /* disposing the VM kills it */ }
        try { await vm.WaitForExitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false); }
        catch (AgentException) { /* disposing the VM kills it */ }
        return new AgentVmTemplateInfo(snapshotPath, vm.StartToReady, reply.Snapshot?.MemoryBytes ?? 0, snapshotTime);
    }
}
