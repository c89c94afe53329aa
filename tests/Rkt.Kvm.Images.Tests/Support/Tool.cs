using System.Diagnostics;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// Runs the real tools that build the fixtures. A missing tool fails the test with the Debian
/// package to install (`make deps` installs them all); tests never skip for lack of one.
/// </summary>
public static class Tool
{
    private static readonly Dictionary<string, string> Packages = new()
    {
        ["actool"] = "appc-spec", ["umoci"] = "umoci", ["skopeo"] = "skopeo", ["tar"] = "tar",
        ["zstd"] = "zstd", ["xz"] = "xz-utils", ["bzip2"] = "bzip2", ["gzip"] = "gzip",
        ["setfattr"] = "attr", ["getfattr"] = "attr", ["mkfifo"] = "coreutils", ["mknod"] = "coreutils",
    };

    public const string BusyboxPath = "/bin/busybox";

    public static string Find(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            var path = Path.Join(dir, name);
            if (File.Exists(path)) return path;
        }
        var package = Packages.GetValueOrDefault(name, name);
        throw new InvalidOperationException($"fixture tool \"{name}\" is not installed: run `make deps` (Debian package {package})");
    }

    public static string RequireBusybox() =>
        File.Exists(BusyboxPath) ? BusyboxPath
            : throw new InvalidOperationException($"{BusyboxPath} is missing: run `make deps` (Debian package busybox-static)");

    /// <summary>Runs a tool; its non-zero exit fails the test with its output.</summary>
    public static string Run(string name, string? cwd, params string[] args)
    {
        var (rc, stdout, stderr) = TryRun(name, cwd, args);
        if (rc != 0) throw new InvalidOperationException($"{name} {string.Join(' ', args)} exited {rc}: {stderr}{stdout}");
        return stdout;
    }

    public static (int Rc, string Stdout, string Stderr) TryRun(string name, string? cwd, params string[] args)
    {
        var psi = new ProcessStartInfo(Find(name)) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (cwd is not null) psi.WorkingDirectory = cwd;
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>A shell pipeline (for "gzip -dc x | sha512sum" and the like).</summary>
    public static string Shell(string script, string? cwd = null) => Run("bash", cwd, "-euo", "pipefail", "-c", script);
}
