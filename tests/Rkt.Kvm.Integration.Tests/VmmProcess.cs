using System.Diagnostics;
using System.Text;

namespace Rkt.Kvm.Integration.Tests;

/// <summary>What one run of the VMM did.</summary>
public sealed record VmmRun(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
{
    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:F1} s\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>Runs the published VMM binary as a child process, as stage1 will.</summary>
public static class VmmProcess
{
    /// <summary>Boots on this host take 15-40 s; the limit is generous so a slow CI machine fails only on real hangs.</summary>
    public static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(5);

    public static VmmRun Run(IEnumerable<string> args, TimeSpan? timeout = null, string? workingDirectory = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(TestEnvironment.Vmm)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) psi.Environment[name] = value;
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var watch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        StartAsStage1Does(process, args);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout ?? BootTimeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"The VMM did not exit within {(timeout ?? BootTimeout).TotalMinutes} minutes.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
        }
        process.WaitForExit(); // drain the output readers
        return new VmmRun(process.ExitCode, stdout.ToString(), stderr.ToString(), watch.Elapsed);
    }

    /// <summary>
    /// Starts a VMM <paramref name="process"/> the way <see cref="Rkt.Kvm.Vmm.Client.VmmProcess"/>
    /// (stage1's) does: a jailed VMM in a PID namespace of its own when this test may make one.
    /// </summary>
    public static void StartAsStage1Does(Process process, IEnumerable<string> args)
    {
        var list = args.ToList();
        bool jailOff = list.Contains("--jail=off") || list.Select((a, i) => a == "--jail" && i + 1 < list.Count && list[i + 1] == "off").Any(b => b);
        if (jailOff) process.Start();
        else Rkt.Kvm.Posix.ChildNamespaces.StartWherePermitted(Rkt.Kvm.Posix.ChildNamespaces.Pid, () => process.Start());
    }

    /// <summary>Boots the busybox guest; <paramref name="initMode"/> selects what its init does (see tests/guest/init.sh).</summary>
    public static VmmRun BootBusybox(int cpus = 1, string? initMode = null, string? kernel = null, IEnumerable<string>? extra = null)
    {
        var args = new List<string>
        {
            "--kernel", kernel ?? TestEnvironment.Vmlinux, "--initrd", TestEnvironment.TestInitrd,
            "--memory", "128", "--cpus", cpus.ToString(),
            "--cmdline", "quiet" + (initMode is null ? "" : $" rkt.init={initMode}"),
        };
        if (extra is not null) args.AddRange(extra);
        return Run(args);
    }
}
