using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// A real registry for a test: Debian's <c>docker-registry</c> (distribution 2.8) on 127.0.0.1 on a
/// free port, with its own config and storage under the test's temp dir, optionally behind
/// htpasswd basic auth. Its request log is kept, so a test can count what a fetch downloaded.
/// A missing binary fails the test, saying how to install it; no test skips for lack of it.
/// (Also compiled into Rkt.Kvm.Stage1.Tests, for run docker://.)
/// </summary>
public sealed class RegistryServer : IDisposable
{
    public const string Binary = "/usr/bin/docker-registry";
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _log = new();

    /// <param name="workDir">where its config and storage go (the test's temp dir).</param>
    /// <param name="tls">serve https with this certificate and key (PEM) instead of plain http.</param>
    public RegistryServer(string workDir, string? htpasswd = null, (string Cert, string Key)? tls = null)
    {
        if (!File.Exists(Binary))
            throw new InvalidOperationException($"{Binary} is not installed: run `make deps` (Debian package docker-registry; CI installs it)");
        Port = FreePort();
        var dir = Directory.CreateDirectory(Path.Join(workDir, $"registry-{Port}")).FullName;
        var auth = htpasswd is null ? "" : $"auth:\n  htpasswd:\n    realm: rkt-kvm-test\n    path: {htpasswd}\n";
        var tlsConfig = tls is { } t ? $"  tls:\n    certificate: {t.Cert}\n    key: {t.Key}\n" : "";
        var config = Path.Join(dir, "config.yml");
        File.WriteAllText(config, $"""
            version: 0.1
            log:
              level: info
              accesslog:
                disabled: false
            storage:
              filesystem:
                rootdirectory: {Path.Join(dir, "storage")}
            http:
              addr: 127.0.0.1:{Port}
            {tlsConfig}
            {auth}
            """);
        var psi = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add(config);
        psi.Environment["OTEL_TRACES_EXPORTER"] = "none";
        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) _log.Enqueue(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) _log.Enqueue(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        WaitUntilListening();
    }

    public int Port { get; }
    public string Host => $"127.0.0.1:{Port}";

    /// <summary>Requests the registry served whose log line contains <paramref name="text"/>
    /// (its access log: "GET /v2/repo/blobs/sha256:… HTTP/1.1" 200 …).</summary>
    public int CountRequests(string text) => _log.Count(l => l.Contains(text, StringComparison.Ordinal) && l.Contains("\"GET ", StringComparison.Ordinal));

    public string Log => string.Join('\n', _log);

    private void WaitUntilListening()
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            if (_process.HasExited) throw new InvalidOperationException($"docker-registry exited {_process.ExitCode}: {Log}");
            try
            {
                using var client = new TcpClient();
                client.Connect(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) { Thread.Sleep(50); }
        }
        throw new InvalidOperationException($"docker-registry did not listen on {Host} within 20 s: {Log}");
    }

    public static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    public void Dispose()
    {
        try { _process.Kill(); _process.WaitForExit(5000); } catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
