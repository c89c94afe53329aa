using System.Diagnostics;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>rkt-kvm as a real process (the build's rkt-kvm.dll): for concurrency, kills, and
/// what goes to the process's own stderr (the --debug log), which in-process runs share.</summary>
public static class CliProcess
{
    public static string Dll => Path.Join(AppContext.BaseDirectory, "rkt-kvm.dll");

    public static Task<(int Rc, string Out, string Err)> Run(params string[] args) => Run(null, args);

    public static async Task<(int Rc, string Out, string Err)> Run(IDictionary<string, string>? env, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        psi.ArgumentList.Add(Dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        return (p.ExitCode, await stdout, await stderr);
    }
}
