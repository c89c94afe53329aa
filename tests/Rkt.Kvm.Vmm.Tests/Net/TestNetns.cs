using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Tmds.Linux;

namespace Rkt.Kvm.Vmm.Tests.Net;

/// <summary>
/// A network namespace of the test's own (`ip netns add rkt-kvm-test-…`, deleted on Dispose), so
/// taps, addresses and traffic never touch the host's network; plus a way to make sockets inside it.
/// </summary>
public sealed class TestNetns : IDisposable
{
    private static int _nextSubnet;

    /// <summary>Why tap tests cannot run here, or null when they can.</summary>
    public static string? UnavailableReason { get; } = FindUnavailableReason();

    public string Name { get; }
    public string Path => $"/var/run/netns/{Name}";

    public TestNetns()
    {
        Name = $"rkt-kvm-test-{Guid.NewGuid():N}"[..24];
        Run("ip", "netns", "add", Name);
        try
        {
            Ip("link", "set", "lo", "up");
            // No IPv6 chatter (router solicitations, MLD) on the test taps.
            Inside(() =>
            {
                foreach (var file in new[] { "/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6" })
                    if (File.Exists(file)) File.WriteAllText(file, "1");
                return 0;
            });
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>A /24 no other test uses: 10.200.N.0/24.</summary>
    public static int NextSubnet() => Interlocked.Increment(ref _nextSubnet) % 250;

    public void Ip(params string[] args) => Run("ip", ["-n", Name, .. args]);

    /// <summary>Runs <paramref name="action"/> on a throwaway thread that has entered the namespace (sockets made there stay there).</summary>
    public T Inside<T>(Func<T> action)
    {
        T result = default!;
        ExceptionDispatchInfo? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(Path);
                if (LibC.setns((int)ns.DangerousGetHandle(), 0x4000_0000) != 0) throw new InvalidOperationException($"setns({Path}) failed: errno {LibC.errno}");
                result = action();
            }
            catch (Exception e) { failure = ExceptionDispatchInfo.Capture(e); }
        });
        thread.Start();
        thread.Join();
        failure?.Throw();
        return result;
    }

    public static string Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{program} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Trim()}");
        return stdout;
    }

    private static string? FindUnavailableReason()
    {
        if (LibC.geteuid() != 0) return "tap tests need root (a network namespace and a tap of their own); skipped";
        if (!File.Exists("/dev/net/tun")) return "/dev/net/tun is absent, so no tap can be made; skipped";
        try { Run("ip", "-V"); }
        catch (Exception e) { return $"the ip tool (iproute2) is not usable: {e.Message}; skipped"; }
        return null;
    }

    public void Dispose()
    {
        try { Run("ip", "netns", "del", Name); }
        catch (InvalidOperationException) { }
    }
}
