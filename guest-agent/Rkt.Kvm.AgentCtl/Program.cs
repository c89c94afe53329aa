using System.Globalization;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Agent.Vm;

namespace Rkt.Kvm.AgentCtl;

/// <summary>
/// <c>rkt-kvm-agentctl boot --vmm PATH --kernel PATH --initrd PATH [--cpus N] [--memory MiB]</c>:
/// boots a VM whose init is the guest agent, prints what the agent reports over gRPC, then powers
/// the VM off through the agent. Exit status: the VMM's (0 = clean power-off), 1 on errors.
/// </summary>
public static class Program
{
    private const string Usage = "usage: rkt-kvm-agentctl boot --vmm PATH --kernel PATH --initrd PATH [--cpus N] [--memory MiB]";

    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 0 || args[0] != "boot")
        {
            Console.Error.WriteLine(Usage);
            return 1;
        }
        var values = new Dictionary<string, string>();
        for (int i = 1; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
            {
                Console.Error.WriteLine($"rkt-kvm-agentctl: unexpected argument '{args[i]}'\n{Usage}");
                return 1;
            }
            values[args[i][2..]] = args[++i];
        }
        try
        {
            var options = new AgentVmOptions
            {
                VmmPath = Required(values, "vmm"),
                CommandLine = AgentVmOptions.DefaultCommandLine(Required(values, "kernel"), Required(values, "initrd")) with
                {
                    Cpus = values.TryGetValue("cpus", out var c) ? int.Parse(c, CultureInfo.InvariantCulture) : 1,
                    MemoryMiB = values.TryGetValue("memory", out var m) ? ulong.Parse(m, CultureInfo.InvariantCulture) : 256,
                },
            };
            using var vm = await AgentVmProcess.StartAsync(options);
            var info = await vm.Client.GuestInfoAsync();
            Print(vm, info);
            await vm.Client.ShutdownAsync();
            int status = await vm.WaitForExitAsync(TimeSpan.FromMinutes(2));
            Console.WriteLine($"agent powered the VM off; VMM exit status {status}");
            return status;
        }
        catch (Exception e) when (e is AgentException or ArgumentException or FormatException or IOException)
        {
            Console.Error.WriteLine($"rkt-kvm-agentctl: {e.Message}");
            return 1;
        }
    }

    private static string Required(Dictionary<string, string> values, string name) =>
        values.TryGetValue(name, out var v) ? v : throw new ArgumentException($"--{name} is required.\n{Usage}");

    private static void Print(AgentVmProcess vm, GuestInfoReply info)
    {
        var ready = info.AtReady;
        Console.WriteLine($"""
            guest agent {info.AgentVersion} answered over vsock gRPC ({vm.SocketPath}):
              kernel          {info.KernelRelease}
              CPUs online     {info.OnlineCpus}
              memory          {info.MemTotalBytes >> 20} MiB total, {info.MemAvailableBytes >> 20} MiB available
              uptime          {info.UptimeMs / 1000.0:F1} s
              boot → ready    {info.BootToReadyMs / 1000.0:F1} s after the kernel started ({vm.StartToReady.TotalSeconds:F1} s after the VMM did)
              agent start-up  {info.MainToReadyUs / 1000.0:F0} ms from Main to ready, {ready.MinorFaults} page faults, {ready.ReadSyscalls + ready.WriteSyscalls} read/write syscalls, RSS {ready.VmRssBytes >> 10} KiB
            """);
    }
}
