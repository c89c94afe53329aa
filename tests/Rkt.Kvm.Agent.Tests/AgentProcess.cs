using System.Diagnostics;
using Rkt.Kvm.Agent.Client;

namespace Rkt.Kvm.Agent.Tests;

/// <summary>A host-mode agent (<c>rkt-kvm-agent --listen-unix</c>) in a temporary directory, started and waited
/// for through its READY line. Runs $RKT_KVM_AGENT when set (e.g. out/agent/rkt-kvm-agent), else the agent
/// assembly built next to the tests.</summary>
public sealed class AgentProcess : IAsyncDisposable
{
    public string Directory { get; }
    public string SocketPath { get; }
    public Process Process { get; }
    public ReadyLine Ready { get; private set; }
    public TimeSpan ExecToReady { get; private set; }
    public bool IsNativeBinary { get; }

    private AgentProcess(string directory, Process process, bool native)
    {
        Directory = directory;
        SocketPath = Path.Combine(directory, "agent.sock");
        Process = process;
        IsNativeBinary = native;
    }

    /// <summary>The published static binary: $RKT_KVM_AGENT, or out/agent/rkt-kvm-agent of this checkout; null if neither exists.</summary>
    public static string? PublishedBinary()
    {
        string? env = Environment.GetEnvironmentVariable("RKT_KVM_AGENT");
        if (!string.IsNullOrEmpty(env)) return File.Exists(env) ? env : null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Rkt.Kvm.sln")))
            {
                string candidate = Path.Combine(dir.FullName, "out", "agent", "rkt-kvm-agent");
                return File.Exists(candidate) ? candidate : null;
            }
        return null;
    }

    /// <param name="benchService">Whether the agent also serves the benchmark service (Echo, Sink, Source), as a VM's
    /// agent does with <see cref="AgentProtocol.BenchServiceKernelWord"/> on its kernel command line.</param>
    public static Task<AgentProcess> StartAsync(bool preferPublished = false, bool benchService = false) =>
        StartAsync(preferPublished || Environment.GetEnvironmentVariable("RKT_KVM_AGENT") is { Length: > 0 } ? PublishedBinary() : null, benchService);

    public static async Task<AgentProcess> StartAsync(string? binary, bool benchService = false)
    {
        // Unix socket paths are limited to 108 bytes: keep the directory short.
        string directory = Path.Combine("/tmp", "rkt-agent-test-" + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(directory);
        string socket = Path.Combine(directory, "agent.sock"), ready = Path.Combine(directory, "ready.sock");
        var info = binary is null
            ? new ProcessStartInfo("dotnet") { ArgumentList = { Path.Combine(AppContext.BaseDirectory, "rkt-kvm-agent.dll") } }
            : new ProcessStartInfo(binary);
        foreach (string a in new[] { "--listen-unix", socket, "--ready-unix", ready }) info.ArgumentList.Add(a);
        // Set or removed, never inherited: what the test asked for is what the agent gets.
        if (benchService) info.Environment[AgentProtocol.BenchServiceVariable] = "1";
        else info.Environment.Remove(AgentProtocol.BenchServiceVariable);
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        using var listener = new ReadyListener(ready);
        var clock = Stopwatch.StartNew();
        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start the agent");
        var agent = new AgentProcess(directory, process, binary is not null);
        try
        {
            agent.Ready = await listener.WaitAsync(TimeSpan.FromSeconds(60));
            agent.ExecToReady = clock.Elapsed;
            return agent;
        }
        catch
        {
            await agent.DisposeAsync();
            throw;
        }
    }

    public AgentClient Client(AgentClientOptions? options = null) => AgentClient.ForUnixSocket(SocketPath, options);

    /// <summary>A field of /proc/&lt;pid&gt;/status, in kB.</summary>
    public long StatusKb(string key)
    {
        foreach (string line in File.ReadAllLines($"/proc/{Process.Id}/status"))
            if (line.StartsWith(key + ":", StringComparison.Ordinal))
                return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        throw new KeyNotFoundException(key);
    }

    public long MinorFaults() => long.Parse(File.ReadAllText($"/proc/{Process.Id}/stat").Split(')')[^1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[7], System.Globalization.CultureInfo.InvariantCulture);

    public async ValueTask DisposeAsync()
    {
        if (!Process.HasExited)
        {
            Process.Kill();
            await Process.WaitForExitAsync();
        }
        Process.Dispose();
        try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
    }
}

/// <summary>One agent shared by a test class, serving the benchmark service too.</summary>
public sealed class AgentFixture : IAsyncLifetime
{
    public AgentProcess Agent { get; private set; } = null!;
    public async Task InitializeAsync() => Agent = await AgentProcess.StartAsync(benchService: true);
    public async Task DisposeAsync() => await Agent.DisposeAsync();
}
