using System.Diagnostics;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage0.Pods;

/// <summary>
/// Calls a pod's stage1 entrypoints exactly as rkt's stage0 does (STAGE1-ABI.md): cwd = the pod
/// directory; run, enter, stop and gc inherit the whole environment (run also gets RKT_LOCK_FD);
/// the crossing entrypoints (app/*, attach) get a replaced environment with only
/// RKT_STAGE1_ENTERCMD, RKT_STAGE1_ENTERPID and PATH.
/// </summary>
public static class Stage1Invoker
{
    public static Stage1Image Load(PodDirectory pod) =>
        Stage1Image.Parse(File.ReadAllBytes(pod.Stage1Manifest), Path.Join(pod.Path, "stage1", "manifest"));

    /// <summary>
    /// Runs stage1 run for a pod whose lock we hold: the lock fd is handed over as RKT_LOCK_FD
    /// (close-on-exec cleared), cwd is the pod directory, the environment and stdio are ours.
    /// rkt execs here; we start it as our child and wait instead, which stage1 cannot tell apart
    /// (same argv, environment, cwd and lock), so that a pod whose stage1 failed before it started
    /// (no <c>pid</c> file) can be removed rather than left half-made in <c>run/</c>. SIGINT and
    /// SIGTERM reach stage1 through the process group, or are passed on.
    /// </summary>
    public static int RunPod(PodDirectory pod, IReadOnlyList<string> args, PodLock podLock)
    {
        podLock.SetInheritable(true);
        var psi = Start(pod, "run", args);
        psi.Environment[PodLock.EnvironmentVariable] = podLock.Fd.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = Process.Start(psi) ?? throw new Stage1Exception("cannot start the stage1 run entrypoint");
        podLock.SetInheritable(false);
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            try { Stage1.Native.Signals.Kill(process.Id, Stage1.Native.Signals.SIGTERM); } catch (InvalidOperationException) { }
        });
        using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => c.Cancel = true);
        process.WaitForExit();
        return process.ExitCode;
    }

    /// <summary>Runs an entrypoint that inherits the environment (enter, stop, gc) and returns its exit code.
    /// Output goes straight to ours (enter is interactive). <paramref name="stage1Rootfs"/> runs it
    /// from another copy of the stage1 image: rkt runs enter from the tree store's.</summary>
    public static int Run(PodDirectory pod, string entrypoint, IReadOnlyList<string> args, string? stage1Rootfs = null)
    {
        var psi = Start(pod, entrypoint, args, stage1Rootfs);
        using var process = Process.Start(psi) ?? throw new Stage1Exception($"cannot start the stage1 {entrypoint} entrypoint");
        process.WaitForExit();
        return process.ExitCode;
    }

    /// <summary>Runs a crossing entrypoint (app/add, app/start, app/stop, app/rm, attach) with
    /// rkt's replaced environment; its output is shown only with --debug.</summary>
    public static (int ExitCode, string Output) RunCrossing(PodDirectory pod, string entrypoint, IReadOnlyList<string> args, bool debug)
    {
        var psi = CrossingStart(pod, entrypoint, args);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        using var process = Process.Start(psi) ?? throw new Stage1Exception($"cannot start the stage1 {entrypoint} entrypoint");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        var output = stdout.Result + stderr.Result;
        if (debug) Console.Error.Write(output);
        return (process.ExitCode, output);
    }

    /// <summary>Runs a crossing entrypoint on our own stdio (attach: the user's terminal is the session's) and returns its exit code.</summary>
    public static int RunCrossingAttached(PodDirectory pod, string entrypoint, IReadOnlyList<string> args)
    {
        using var process = Process.Start(CrossingStart(pod, entrypoint, args)) ?? throw new Stage1Exception($"cannot start the stage1 {entrypoint} entrypoint");
        process.WaitForExit();
        return process.ExitCode;
    }

    /// <summary>rkt's replaced environment for the crossing entrypoints: only PATH, RKT_STAGE1_ENTERCMD and RKT_STAGE1_ENTERPID.</summary>
    private static ProcessStartInfo CrossingStart(PodDirectory pod, string entrypoint, IReadOnlyList<string> args)
    {
        var psi = Start(pod, entrypoint, args);
        psi.Environment.Clear();
        psi.Environment["PATH"] = Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin";
        var stage1 = Load(pod);
        psi.Environment["RKT_STAGE1_ENTERCMD"] = stage1.Entrypoints.ContainsKey("enter") ? stage1.EntrypointPath(pod, "enter") : "";
        psi.Environment["RKT_STAGE1_ENTERPID"] = pod.ReadPid()?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "";
        return psi;
    }

    private static ProcessStartInfo Start(PodDirectory pod, string entrypoint, IReadOnlyList<string> args, string? stage1Rootfs = null)
    {
        var program = Load(pod).EntrypointPath(stage1Rootfs ?? pod.Stage1Rootfs, entrypoint);
        if (!File.Exists(program)) throw new Stage1Exception($"the stage1 {entrypoint} entrypoint {program} does not exist");
        var psi = new ProcessStartInfo(program) { WorkingDirectory = pod.Path, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }
}
