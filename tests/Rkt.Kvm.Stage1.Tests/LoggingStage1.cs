using System.Diagnostics;
using System.Text.Json.Nodes;
using Rkt.Kvm.Images.Builders;

namespace Rkt.Kvm.Stage1.Tests;

/// <summary>
/// A stage1 whose entrypoints are shell scripts that record how they were called (argv, cwd,
/// environment, whether RKT_LOCK_FD is an open, locked directory fd) into <c>calls/</c> of the pod
/// directory, and behave just enough like a stage1 for stage0 to proceed: run writes <c>pid</c>,
/// the supervisor symlink and an exit status per app, then exits with $STAGE1_TEST_RUN_EXIT (or
/// stays up, as a mutable pod, until stop kills it). app/stop exits with the number in the pod's
/// <c>app-stop-exit</c> file: crossing entrypoints get no environment from the caller. A
/// <c>hang-&lt;entrypoint&gt;</c> file (<c>hang-app-rm</c>, <c>hang-gc</c>…) in the pod makes that one hang.
/// </summary>
public static class LoggingStage1
{
    private const string Record = """
        record() {
          name="$1"; shift
          mkdir -p calls
          n=$(ls calls | wc -l)
          f="calls/$(printf %03d "$n")-$(echo "$name" | tr / -)"
          { echo "cwd=$PWD"; echo "self=$0"; for a in "$@"; do echo "arg=$a"; done; env | sort | sed 's/^/env=/';
            if [ -n "$RKT_LOCK_FD" ]; then echo "lockfd=$(readlink /proc/$$/fd/$RKT_LOCK_FD)"; fi; } > "$f"
          # A hang-<entrypoint> file in the pod makes that entrypoint hang, for tests that kill stage0 mid-call.
          if [ -e "hang-$(echo "$name" | tr / -)" ]; then exec sleep 1000; fi
        }
        """;

    private static readonly Dictionary<string, string> Entrypoints = new()
    {
        ["run"] = """
            . "$(dirname "$0")/record"; record run "$@"
            if [ -n "$STAGE1_TEST_RUN_FAIL_EARLY" ]; then echo "stage1: cannot start" >&2; exit 9; fi
            echo $$ > pid
            mkdir -p stage1/rootfs/rkt/status
            ln -sfn ready stage1/rootfs/rkt/supervisor-status
            case " $* " in *" --mutable "*) trap 'exit 0' TERM; while true; do sleep 0.1; done ;; esac
            for app in $(ls stage1/rootfs/opt/stage2 2>/dev/null); do echo "${STAGE1_TEST_RUN_EXIT:-0}" > "stage1/rootfs/rkt/status/$app"; done
            exit "${STAGE1_TEST_RUN_EXIT:-0}"
            """,
        ["enter"] = """
            . "$(dirname "$0")/record"; record enter "$@"
            exit 7
            """,
        ["stop"] = """
            . "$(dirname "$0")/record"; record stop "$@"
            kill "$(cat pid)"
            """,
        ["gc"] = """. "$(dirname "$0")/record"; record gc "$@" """,
        ["app/add"] = """. "$(dirname "$0")/../record"; record app/add "$@" """,
        ["app/start"] = """. "$(dirname "$0")/../record"; record app/start "$@" """,
        ["app/stop"] = """
            . "$(dirname "$0")/../record"; record app/stop "$@"
            exit "$(cat app-stop-exit 2>/dev/null || echo 0)"
            """,
        ["app/rm"] = """. "$(dirname "$0")/../record"; record app/rm "$@" """,
    };

    /// <summary>Writes the stage1 ACI to <paramref name="aci"/>; <paramref name="withStatusDirs"/>
    /// false leaves out <c>rkt/status</c> and <c>rkt/env</c>, which rkt's stage0 needs.</summary>
    public static string Build(string workDir, string aci, bool withStatusDirs = true)
    {
        var rootfs = Path.Join(workDir, "logging-stage1-rootfs-" + Path.GetFileNameWithoutExtension(aci));
        Directory.CreateDirectory(Path.Join(rootfs, "app"));
        if (withStatusDirs)
            foreach (var dir in Rkt.Kvm.Stage0.Commands.BuildStage1Command.StageZeroDirectories) Directory.CreateDirectory(Path.Join(rootfs, dir));
        File.WriteAllText(Path.Join(rootfs, "record"), Record.Replace("\r", "") + "\n");
        foreach (var (name, body) in Entrypoints)
        {
            var path = Path.Join(rootfs, name);
            File.WriteAllText(path, "#!/bin/sh\n" + body.Replace("\r", "") + "\n");
            File.SetUnixFileMode(path, (UnixFileMode)Convert.ToInt32("755", 8));
        }
        var manifest = AciWriter.Manifest("example.com/logging-stage1", ["/run"]);
        manifest.Remove("app");
        var annotations = new JsonArray { new JsonObject { ["name"] = "coreos.com/rkt/stage1/interface-version", ["value"] = "6" } };
        foreach (var name in Entrypoints.Keys)
            annotations.Add(new JsonObject { ["name"] = "coreos.com/rkt/stage1/" + name, ["value"] = "/" + name });
        manifest["annotations"] = annotations;
        AciWriter.Write(aci, manifest, rootfs);
        return aci;
    }

    /// <summary>The recorded calls of a pod, in order: (entrypoint file name, lines).</summary>
    public static List<(string Name, string[] Lines)> Calls(string podDir)
    {
        var dir = Path.Join(podDir, "calls");
        return Directory.Exists(dir)
            ? Directory.GetFiles(dir).Order(StringComparer.Ordinal).Select(f => (Path.GetFileName(f)[4..], File.ReadAllLines(f))).ToList()
            : [];
    }
}

/// <summary>Runs the real rkt-kvm (the built Rkt.Kvm.Stage0 assembly) as its own process, as users do:
/// `run` execs stage1, which would replace a test host process.</summary>
public static class RktKvm
{
    public static (int ExitCode, string Stdout, string Stderr) Run(string dataDir, IDictionary<string, string>? env, params string[] args)
    {
        using var p = Start(dataDir, env, args, redirect: true);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2))) { p.Kill(true); throw new TimeoutException($"rkt-kvm {string.Join(' ', args)} did not finish"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Starts rkt-kvm without waiting (a sandbox pod runs in the foreground).</summary>
    public static Process Start(string dataDir, IDictionary<string, string>? env, params string[] args) => Start(dataDir, env, args, redirect: false);

    private static Process Start(string dataDir, IDictionary<string, string>? env, string[] args, bool redirect)
    {
        var dll = Path.Join(AppContext.BaseDirectory, "rkt-kvm.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = redirect, RedirectStandardError = redirect, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add($"--dir={dataDir}");
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }
}
