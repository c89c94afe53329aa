using System.Diagnostics;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Agent.V1;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Agent.Vm;

/// <summary>How to boot a VM whose init is the guest agent, and how to talk to it once it is up.</summary>
public sealed record AgentVmOptions
{
    public required string VmmPath { get; init; }
    /// <summary>
    /// The VM: kernel, agent initramfs, size, console and any other VMM option (start from
    /// <see cref="DefaultCommandLine"/>). <see cref="AgentVmProcess"/> sets the vsock socket and
    /// <c>--owner-pid</c>, and a console log in <see cref="RuntimeDirectory"/> when none is given.
    /// </summary>
    public required VmmCommandLine CommandLine { get; init; }
    /// <summary>Directory for the vsock socket and console log; a fresh temporary one (removed on dispose) when null.</summary>
    public string? RuntimeDirectory { get; init; }
    /// <summary>Options of <see cref="AgentVmProcess.Client"/> (call deadlines).</summary>
    public AgentClientOptions? ClientOptions { get; init; }
    /// <summary>Booting is slow on nested KVM (15-40 s); only a hang should hit this.</summary>
    public TimeSpan ReadyTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>An agent VM as stage1 boots one: 1 vCPU, 256 MiB, the guest console only in the log, a quiet kernel.</summary>
    public static VmmCommandLine DefaultCommandLine(string kernelPath, string initrdPath) => new()
    {
        Kernel = kernelPath,
        Initrd = initrdPath,
        MemoryMiB = 256,
        Console = VmmConsole.None,
        Cmdline = "quiet",
    };

    /// <summary>
    /// <paramref name="line"/> with <see cref="AgentProtocol.BenchServiceKernelWord"/> added, so that its agent
    /// also serves the benchmark service (Echo, Sink, Source): for tests and benchmarks, never for a pod.
    /// </summary>
    public static VmmCommandLine WithBenchService(VmmCommandLine line) => line with
    {
        Cmdline = string.IsNullOrEmpty(line.Cmdline) ? AgentProtocol.BenchServiceKernelWord : $"{line.Cmdline} {AgentProtocol.BenchServiceKernelWord}",
    };
}

/// <summary>
/// A VMM process running a VM whose init is the guest agent, with virtio-vsock on
/// <c>&lt;dir&gt;/vm.sock</c>: started the way stage1 starts pods, and returned once the agent
/// announced itself (READY on <c>vm.sock_1025</c>), so nobody polls. Disposing kills a VMM that
/// still runs and removes a directory this class created. The VMM process itself is a
/// <see cref="VmmProcess"/>; this class adds the agent's READY and its gRPC client.
/// </summary>
public sealed class AgentVmProcess : IDisposable
{
    private readonly VmmProcess _vmm;
    private readonly bool _ownsDirectory;

    public string Directory { get; }
    public string SocketPath { get; }
    public string ConsoleLog { get; }
    public ReadyLine Ready { get; private set; }
    /// <summary>VMM process start → READY received (a restored VM: → Resume answered).</summary>
    public TimeSpan StartToReady { get; private set; }
    /// <summary>What the agent did on Resume, for a VM restored from a template (<see cref="VmmCommandLine.Restore"/>); null for a cold boot.</summary>
    public ResumeReply? Resumed { get; private set; }
    public AgentClient Client { get; }
    public int Pid => _vmm.Pid;
    public bool HasExited => _vmm.HasExited;

    private AgentVmProcess(AgentVmOptions options)
    {
        _ownsDirectory = options.RuntimeDirectory is null;
        Directory = options.RuntimeDirectory ?? System.IO.Directory.CreateTempSubdirectory("rkt-kvm-vm-").FullName;
        // A VMM that drops to its own user (--user) must still pass through our directory (0700 when
        // we made it) to dial the ready listener; search only: it cannot list it, and only the
        // listener is its to connect to (VmmUser.GrantConnect).
        if (_ownsDirectory && options.CommandLine.User is not null && OperatingSystem.IsLinux())
            File.SetUnixFileMode(Directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        SocketPath = Path.Combine(Directory, "vm.sock");
        ConsoleLog = options.CommandLine.ConsoleLog ?? Path.Combine(Directory, "console.log");
        _vmm = new VmmProcess(options.VmmPath, options.CommandLine with
        {
            Vsock = SocketPath,
            ConsoleLog = ConsoleLog,
            // The VM never outlives us, however we end (SIGKILL included): no orphan VMs.
            OwnerPid = Environment.ProcessId,
        });
        Client = AgentClient.ForVm(SocketPath, options.ClientOptions);
    }

    /// <summary>
    /// Starts the VMM and waits for the agent: a cold boot until its READY, a VM restored from a
    /// snapshot until it answered Resume (the restored agent sent its READY long ago, to the
    /// template's host). Throws <see cref="AgentException"/> with the console and VMM log when the
    /// agent never comes.
    /// </summary>
    public static async Task<AgentVmProcess> StartAsync(AgentVmOptions options, CancellationToken cancellation = default)
    {
        var vm = new AgentVmProcess(options);
        string? failure = null;
        Exception? inner = null;
        var kind = AgentFailure.Unreachable;
        try
        {
            if (options.CommandLine.Restore is not null)
            {
                var clock = Stopwatch.StartNew();
                vm.StartVmm();
                var resumeTask = ResumeRestoredAsync(vm, cancellation);
                if (await Task.WhenAny(resumeTask, vm._vmm.WaitForExitAsync(cancellation)).ConfigureAwait(false) == resumeTask)
                {
                    vm.Ready = await resumeTask.ConfigureAwait(false);
                    vm.StartToReady = clock.Elapsed;
                    return vm;
                }
                throw new AgentException(AgentFailure.Unreachable, $"The VMM ended ({VmmExit.Describe(vm._vmm.ExitCode)}) before the restored agent answered.");
            }
            // Listen before the VM exists, so the announcement cannot be missed.
            using var ready = ReadyListener.ForVm(vm.SocketPath);
            options.CommandLine.User?.GrantConnect(ready.Path); // a VMM that drops to its user must still reach us
            var watch = Stopwatch.StartNew();
            vm.StartVmm();
            var readyTask = ready.WaitAsync(options.ReadyTimeout, cancellation);
            if (await Task.WhenAny(readyTask, vm._vmm.WaitForExitAsync(cancellation)).ConfigureAwait(false) == readyTask)
            {
                vm.Ready = await readyTask.ConfigureAwait(false);
                vm.StartToReady = watch.Elapsed;
                return vm;
            }
            failure = $"The VMM ended ({VmmExit.Describe(vm._vmm.ExitCode)}) before the agent was ready.";
        }
        catch (AgentException e)
        {
            (kind, failure, inner) = (e.Failure, e.Message, e);
        }
        catch
        {
            vm.Dispose();
            throw;
        }
        string diagnostics = vm.Diagnostics();
        vm.Dispose();
        throw new AgentException(kind, $"{failure}\n{diagnostics}", inner);
    }

    /// <summary>A VMM that cannot be started (no such program, a namespace refused) fails the start as an agent that never came does.</summary>
    private void StartVmm()
    {
        try { _vmm.Start(); }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or UnauthorizedAccessException)
        {
            throw new AgentException(AgentFailure.Unreachable, $"Cannot start the VMM: {e.Message}", e);
        }
    }

    private static async Task<ReadyLine> ResumeRestoredAsync(AgentVmProcess vm, CancellationToken cancellation)
    {
        vm.Resumed = await vm.Client.ResumeAsync(cancellation).ConfigureAwait(false);
        return new ReadyLine(vm.Resumed.AgentVersion, 0);
    }

    /// <summary>Waits for the VMM to end and returns its exit status (0: the guest powered off).</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _vmm.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            throw new AgentException(AgentFailure.Timeout, $"The VMM did not exit within {timeout.TotalSeconds:0} s.\n{Diagnostics()}");
        }
        return _vmm.ExitCode;
    }

    /// <summary>The guest console and the VMM's own log, for error reports.</summary>
    public string Diagnostics() => _vmm.Diagnostics();

    public void Dispose()
    {
        Client.Dispose();
        _vmm.Dispose();
        if (_ownsDirectory)
        {
            try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
        }
    }
}
