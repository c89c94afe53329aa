using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>
/// A running VMM whose guest console (its stdout) the test reads while the VM runs: fixtures that
/// drive a busybox guest step by step (NinePTests, HostileGuestTests) wait for the guest's marker
/// lines and answer them through the control socket. <see cref="VmmProcess.Run"/> is for VMs that
/// only need to be waited for. Disposing kills a VMM that still runs.
/// </summary>
public sealed class ConsoleVmm : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new(), _stderr = new();
    private readonly List<(string Marker, ManualResetEventSlim Seen)> _markers;

    /// <param name="markers">console text that <see cref="WaitForAny"/> can wait for; known before the start, so no line is missed.</param>
    public ConsoleVmm(IEnumerable<string> args, params string[] markers)
    {
        args = args.ToList();
        _markers = [.. markers.Select(m => (m, new ManualResetEventSlim()))];
        var psi = new ProcessStartInfo(TestEnvironment.Vmm) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi };
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stdout) _stdout.AppendLine(e.Data);
            foreach (var (marker, seen) in _markers)
                if (e.Data.Contains(marker, StringComparison.Ordinal)) seen.Set();
        };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
        VmmProcess.StartAsStage1Does(_process, args);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    public string Stdout { get { lock (_stdout) return _stdout.ToString(); } }
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    /// <summary>
    /// The first of <paramref name="markers"/> (given to the constructor) the console has shown, in the
    /// order asked; null after <paramref name="timeout"/>, or as soon as the VMM exited without showing one.
    /// </summary>
    public string? WaitForAny(TimeSpan timeout, params string[] markers)
    {
        var watched = markers.Select(m => _markers.Single(w => w.Marker == m)).ToList();
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            foreach (var (marker, seen) in watched)
                if (seen.IsSet) return marker;
            if (_process.HasExited)
            {
                _process.WaitForExit(); // the last lines may still be on their way
                return watched.FirstOrDefault(w => w.Seen.IsSet).Marker;
            }
            if (DateTime.UtcNow >= deadline) return null;
            WaitHandle.WaitAny([.. watched.Select(w => w.Seen.WaitHandle)], TimeSpan.FromMilliseconds(200));
        }
    }

    public bool WaitFor(string marker, TimeSpan timeout) => WaitForAny(timeout, marker) is not null;

    /// <summary>The exit status, killing the VMM if it has not exited within <paramref name="timeout"/>.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(); // drains the output readers
        return _process.ExitCode;
    }

    /// <summary>A connection to the control socket at <paramref name="path"/>, retried until the VMM listens.</summary>
    public static Socket ConnectControl(string path, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                s.Connect(new UnixDomainSocketEndPoint(path));
                return s;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                s.Dispose();
                Thread.Sleep(50);
            }
        }
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
        foreach (var (_, seen) in _markers) seen.Dispose();
    }
}
