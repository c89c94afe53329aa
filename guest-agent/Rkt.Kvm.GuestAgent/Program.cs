using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Rkt.Kvm.Agent;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent;

/// <summary>Command line of the agent.</summary>
internal sealed record AgentOptions(string? ListenUnix, string? ReadyUnix, uint VsockPort)
{
    public const string Usage = "usage: rkt-kvm-agent [--listen-unix PATH [--ready-unix PATH]] [--vsock-port N] [--version]";

    /// <summary>Parses the arguments. As PID 1 the kernel passes its unknown command-line words as
    /// arguments, so <paramref name="strict"/> is false there and unknown words are ignored.</summary>
    public static AgentOptions Parse(string[] args, bool strict)
    {
        string? listenUnix = null, readyUnix = null;
        uint port = AgentProtocol.GrpcPort;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--listen-unix" when i + 1 < args.Length: listenUnix = args[++i]; break;
                case "--ready-unix" when i + 1 < args.Length: readyUnix = args[++i]; break;
                case "--vsock-port" when i + 1 < args.Length && uint.TryParse(args[i + 1], out uint p): port = p; i++; break;
                default:
                    if (strict) throw new ArgumentException($"unexpected argument '{args[i]}'. {Usage}");
                    break;
            }
        }
        if (readyUnix is not null && listenUnix is null && strict)
            throw new ArgumentException($"--ready-unix needs --listen-unix. {Usage}");
        return new AgentOptions(listenUnix, readyUnix, port);
    }
}

/// <summary>Hands every endpoint to the socket transport. SocketTransportFactory's CanBind accepts only IP, Unix and
/// file-handle endpoints, so Kestrel would refuse the vsock endpoint; a factory that is not an
/// IConnectionListenerFactorySelector is used for all endpoints, and the socket transport binds through
/// SocketTransportOptions.CreateBoundListenSocket, which makes the AF_VSOCK socket.</summary>
internal sealed class AnyEndPointTransportFactory(SocketTransportFactory inner) : Microsoft.AspNetCore.Connections.IConnectionListenerFactory
{
    public ValueTask<Microsoft.AspNetCore.Connections.IConnectionListener> BindAsync(System.Net.EndPoint endpoint, CancellationToken cancellationToken = default) =>
        inner.BindAsync(endpoint, cancellationToken);
}

public static class Program
{
    private static PosixSignalRegistration? s_sigterm, s_sigint;

    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public static int Main(string[] args)
    {
        long mainStart = Stopwatch.GetTimestamp();
        bool pid1 = Libc.getpid() == 1;
        if (pid1)
        {
            // Before anything else: the runtime and Kestrel read /dev/urandom.
            string? mountError = Pid1.MountEarly();
            if (mountError is not null) Log.Line("rkt-kvm-agent: " + mountError);
            Pid1.SetEnvironment();
            Reaper.Start();
        }
        if (args is ["--version"])
        {
            Log.Line(AgentService.Version);
            return 0;
        }
        AgentOptions options;
        try { options = AgentOptions.Parse(args, strict: !pid1); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("rkt-kvm-agent: " + e.Message);
            return 2;
        }
        try
        {
            return Run(options, pid1, mainStart);
        }
        catch (Exception e)
        {
            // As PID 1 returning panics the kernel (panic=-1 ends the VM); say why first.
            Log.Line($"rkt-kvm-agent: fatal: {e.GetType().Name}: {e.Message}"); if (Environment.GetEnvironmentVariable("RKT_KVM_AGENT_DEBUG") is not null) Log.Line(e.ToString());
            return 1;
        }
    }

    private static int Run(AgentOptions options, bool pid1, long mainStart)
    {
        bool guest = options.ListenUnix is null;
        var service = new AgentService(guest ? AgentMode.Guest : AgentMode.HostProcess);
        s_sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; service.RequestShutdown("SIGTERM"); });
        if (!pid1) s_sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; service.RequestShutdown("SIGINT"); });

        // pod-init before READY: a template holds it, a pod does not wait for it at its first app.
        if (guest) service.Apps.PrepareAhead(TimeSpan.FromMinutes(2));
        var bench = AgentBenchService.FromEnvironment();
        var server = CreateServer(options, out string listening);
        server.StartAsync(new GrpcApplication(service, bench), CancellationToken.None).GetAwaiter().GetResult();

        // Ready: tell the host once (no polling on its side), then record what start-up cost.
        ulong bootMs = Libc.BootTimeMilliseconds();
        byte[] readyLine = new ReadyLine(AgentService.Version, bootMs).ToBytes();
        string? readyError = guest
            ? Vsock.SendOnce(AgentProtocol.HostCid, AgentProtocol.ReadyPort, readyLine)
            : options.ReadyUnix is null ? null : SendUnixOnce(options.ReadyUnix, readyLine);
        ulong mainToReadyUs = (ulong)Stopwatch.GetElapsedTime(mainStart).Ticks / 10;
        ulong startMs = ProcStats.StartTimeMilliseconds();
        service.Ready = new ReadyFigures(bootMs, bootMs > startMs ? bootMs - startMs : 0, mainToReadyUs, ProcStats.Capture());
        string serving = bench is null ? "" : " (and the benchmark service)";
        Log.Line(readyError is null
            ? $"rkt-kvm-agent {AgentService.Version}: ready on {listening}{serving} at {bootMs} ms"
            : $"rkt-kvm-agent {AgentService.Version}: ready on {listening}{serving} at {bootMs} ms; READY not delivered ({readyError})");

        string reason = service.ShutdownRequested.GetAwaiter().GetResult();
        // Graceful stop lets the Shutdown reply and its trailers leave; bounded so a stuck client cannot hold the VM.
        using (var stopTimeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(500)))
        {
            try { server.StopAsync(stopTimeout.Token).GetAwaiter().GetResult(); }
            catch (Exception) { /* best effort */ }
        }
        if (guest && pid1)
        {
            Log.Line($"rkt-kvm-agent: power-off ({reason})");
            Thread.Sleep(20); // let the guest's vsock worker hand the last packets to the VMM
            Pid1.PowerOff();
            return 1;
        }
        server.Dispose();
        if (options.ListenUnix is not null) File.Delete(options.ListenUnix);
        return 0;
    }

    private static KestrelServer CreateServer(AgentOptions options, out string listening)
    {
        var kestrel = new KestrelServerOptions { AddServerHeader = false };
        kestrel.Limits.MinRequestBodyDataRate = null;
        kestrel.Limits.MinResponseDataRate = null;
        kestrel.Limits.MaxRequestBodySize = null;
        kestrel.Limits.Http2.MaxStreamsPerConnection = 256;
        if (options.ListenUnix is { } path)
        {
            File.Delete(path);
            kestrel.ListenUnixSocket(path, l => l.Protocols = HttpProtocols.Http2);
            listening = "unix:" + path;
        }
        else
        {
            var endPoint = new VsockEndPoint(AgentProtocol.AnyCid, options.VsockPort);
            kestrel.Listen(endPoint, l => l.Protocols = HttpProtocols.Http2);
            listening = endPoint.ToString();
        }
        var transport = new SocketTransportOptions
        {
            // Run socket completions on the socket engine's thread instead of handing each one to
            // the thread pool: in the guest every thread hand-off is futex syscalls and a context
            // switch of interpreted kernel code (measured with bench/vsock).
            UnsafePreferInlineScheduling = true,
            CreateBoundListenSocket = ep => ep is VsockEndPoint v ? Vsock.CreateBoundListenSocket(v) : SocketTransportOptions.CreateDefaultBoundListenSocket(ep),
        };
        var sockets = new SocketTransportFactory(Options.Create(transport), NullLoggerFactory.Instance);
        return new KestrelServer(Options.Create(kestrel), new AnyEndPointTransportFactory(sockets), NullLoggerFactory.Instance);
    }

    private static string? SendUnixOnce(string path, byte[] line)
    {
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(path));
            socket.Send(line);
            return null;
        }
        catch (SocketException e) { return e.Message; }
    }
}
