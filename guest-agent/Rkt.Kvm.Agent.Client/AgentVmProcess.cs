using System.Diagnostics;
using System.Text;

namespace Rkt.Kvm.Agent.Client;

/// <summary>What to boot: the VMM binary, the guest kernel and the agent initramfs, and the VM's size.</summary>
public sealed record AgentVmOptions
{
    public required string VmmPath { get; init; }
    public required string KernelPath { get; init; }
    public required string InitrdPath { get; init; }
    public int Cpus { get; init; } = 1;
    public int MemoryMiB { get; init; } = 256;
    /// <summary>Directory for the vsock socket and console log; a fresh temporary one (removed on dispose) when null.</summary>
    public string? RuntimeDirectory { get; init; }
    /// <summary>Also copy the guest console to our stdout.</summary>
    public bool ConsoleToStdout { get; init; }
    public IReadOnlyList<string> ExtraVmmArguments { get; init; } = [];
    /// <summary>Options of <see cref="AgentVmProcess.Client"/> (call deadlines).</summary>
    public AgentClientOptions? ClientOptions { get; init; }
    /// <summary>Where the guest console goes; <c>&lt;RuntimeDirectory&gt;/console.log</c> when null.</summary>
    public string? ConsoleLogPath { get; init; }
    /// <summary>Booting is slow on nested KVM (15-40 s); only a hang should hit this.</summary>
    public TimeSpan ReadyTimeout { get; init; } = TimeSpan.FromMinutes(5);
}

/// <summary>
/// A VMM process running a VM whose init is the guest agent, with virtio-vsock on
/// <c>&lt;dir&gt;/vm.sock</c>: started the way stage1 starts pods, and returned once the agent
/// announced itself (READY on <c>vm.sock_1025</c>), so nobody polls. Disposing kills a VMM that
/// still runs and removes a directory this class created.
/// </summary>
public sealed class AgentVmProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly bool _ownsDirectory;

    public string Directory { get; }
    public string SocketPath { get; }
    public string ConsoleLog { get; }
    public ReadyLine Ready { get; private set; }
    /// <summary>VMM process start → READY received.</summary>
    public TimeSpan StartToReady { get; private set; }
    public AgentClient Client { get; }
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    private AgentVmProcess(AgentVmOptions options)
    {
        _ownsDirectory = options.RuntimeDirectory is null;
        Directory = options.RuntimeDirectory ?? System.IO.Directory.CreateTempSubdirectory("rkt-kvm-vm-").FullName;
        SocketPath = Path.Combine(Directory, "vm.sock");
        ConsoleLog = options.ConsoleLogPath ?? Path.Combine(Directory, "console.log");
        var psi = new ProcessStartInfo(options.VmmPath) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[]
                 {
                     "--kernel", options.KernelPath, "--initrd", options.InitrdPath, "--vsock", SocketPath,
                     "--memory", options.MemoryMiB.ToString(), "--cpus", options.Cpus.ToString(),
                     "--console", options.ConsoleToStdout ? "stdout" : "none", "--console-log", ConsoleLog, "--cmdline", "quiet",
                     // The VM never outlives us, however we end (SIGKILL included): no orphan VMs.
                     "--owner-pid", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture),
                 })
            psi.ArgumentList.Add(a);
        foreach (var a in options.ExtraVmmArguments) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
        Client = AgentClient.ForVm(SocketPath, options.ClientOptions);
    }

    /// <summary>Starts the VMM and waits for the agent's READY; throws <see cref="AgentException"/> with the console and VMM log when it never comes.</summary>
    public static async Task<AgentVmProcess> StartAsync(AgentVmOptions options, CancellationToken cancellation = default)
    {
        var vm = new AgentVmProcess(options);
        string? failure = null;
        Exception? inner = null;
        var kind = AgentFailure.Unreachable;
        try
        {
            // Listen before the VM exists, so the announcement cannot be missed.
            using var ready = ReadyListener.ForVm(vm.SocketPath);
            var watch = Stopwatch.StartNew();
            vm._process.Start();
            vm._process.BeginErrorReadLine();
            var readyTask = ready.WaitAsync(options.ReadyTimeout, cancellation);
            if (await Task.WhenAny(readyTask, vm._process.WaitForExitAsync(cancellation)).ConfigureAwait(false) == readyTask)
            {
                vm.Ready = await readyTask.ConfigureAwait(false);
                vm.StartToReady = watch.Elapsed;
                return vm;
            }
            failure = $"The VMM exited with status {vm._process.ExitCode} before the agent was ready.";
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

    /// <summary>Waits for the VMM to end and returns its exit status (0: the guest powered off).</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            throw new AgentException(AgentFailure.Timeout, $"The VMM did not exit within {timeout.TotalSeconds:0} s.\n{Diagnostics()}");
        }
        return _process.ExitCode;
    }

    /// <summary>The guest console and the VMM's own log, for error reports.</summary>
    public string Diagnostics()
    {
        string console = File.Exists(ConsoleLog) ? File.ReadAllText(ConsoleLog) : "(no console log)";
        lock (_stderr) return $"--- guest console ---\n{console.TrimEnd()}\n--- VMM log ---\n{_stderr.ToString().TrimEnd()}";
    }

    public void Dispose()
    {
        Client.Dispose();
        try
        {
            if (!_process.HasExited) _process.Kill();
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { } // never started
        _process.Dispose();
        if (_ownsDirectory)
        {
            try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
        }
    }
}
