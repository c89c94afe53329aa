using System.Diagnostics;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Cli.Pods;

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

    /// <summary>Replaces this process with stage1 run, handing it the locked pod directory.
    /// Returns only by throwing.</summary>
    public static void ExecRun(PodDirectory pod, IReadOnlyList<string> args, PodLock podLock)
    {
        var stage1 = Load(pod);
        var program = stage1.EntrypointPath(pod, "run");
        podLock.SetInheritable(true);
        Environment.SetEnvironmentVariable(PodLock.EnvironmentVariable, podLock.Fd.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Directory.SetCurrentDirectory(pod.Path);
        Console.Out.Flush();
        Console.Error.Flush();
        var env = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .Select(e => $"{e.Key}={e.Value}").Append(null).ToArray();
        Stage1.Native.Exec.Execve(program, [program, .. args], env);
    }

    /// <summary>Runs an entrypoint that inherits the environment (enter, stop, gc) and returns its exit code.
    /// Output goes straight to ours (enter is interactive).</summary>
    public static int Run(PodDirectory pod, string entrypoint, IReadOnlyList<string> args)
    {
        var psi = Start(pod, entrypoint, args);
        using var process = Process.Start(psi) ?? throw new Stage1Exception($"cannot start the stage1 {entrypoint} entrypoint");
        process.WaitForExit();
        return process.ExitCode;
    }

    /// <summary>Runs a crossing entrypoint (app/add, app/start, app/stop, app/rm, attach) with
    /// rkt's replaced environment; its output is shown only with --debug.</summary>
    public static (int ExitCode, string Output) RunCrossing(PodDirectory pod, string entrypoint, IReadOnlyList<string> args, bool debug)
    {
        var psi = Start(pod, entrypoint, args);
        psi.Environment.Clear();
        psi.Environment["PATH"] = Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin";
        psi.Environment["RKT_STAGE1_ENTERCMD"] = Load(pod).Entrypoints.ContainsKey("enter") ? Load(pod).EntrypointPath(pod, "enter") : "";
        psi.Environment["RKT_STAGE1_ENTERPID"] = pod.ReadPid()?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "";
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

    private static ProcessStartInfo Start(PodDirectory pod, string entrypoint, IReadOnlyList<string> args)
    {
        var program = Load(pod).EntrypointPath(pod, entrypoint);
        if (!File.Exists(program)) throw new Stage1Exception($"the stage1 {entrypoint} entrypoint {program} does not exist");
        var psi = new ProcessStartInfo(program) { WorkingDirectory = pod.Path, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }
}
