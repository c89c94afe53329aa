using System.Diagnostics;

namespace Rkt.Kvm.Stage1.Networking;

/// <summary>The output of a finished host command.</summary>
public sealed record HostCommandResult(int ExitCode, string Stdout, string Stderr)
{
    /// <summary>The first line of stderr, else of stdout: what a one-line error should quote.</summary>
    public string FirstLine => (Stderr.Trim().Length > 0 ? Stderr : Stdout).Trim().Split('\n')[0];
}

/// <summary>
/// Runs a host program (iproute2's <c>ip</c> and <c>tc</c>, a CNI plugin) with an optional stdin
/// and environment, and gives back what it printed. A program that is not installed is a
/// <see cref="Stage1Exception"/> naming the Debian package that has it.
/// </summary>
public static class HostCommand
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    public static HostCommandResult Run(string program, IEnumerable<string> args, string? package = null, byte[]? stdin = null,
        IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var info = new ProcessStartInfo(program)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        if (environment is not null) foreach (var (k, v) in environment) info.Environment[k] = v;
        Process process;
        try { process = Process.Start(info) ?? throw new Stage1Exception($"cannot start {program}"); }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new Stage1Exception($"cannot run {program}: {e.Message}{(package is null ? "" : $" (install Debian's {package})")}", e);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            try
            {
                if (stdin is not null) process.StandardInput.BaseStream.Write(stdin);
                process.StandardInput.Close();
            }
            catch (IOException) { /* it exited without reading: its status says why */ }
            if (!process.WaitForExit(timeout ?? DefaultTimeout))
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                throw new Stage1Exception($"{program} {string.Join(' ', info.ArgumentList)} did not finish within {(timeout ?? DefaultTimeout).TotalSeconds:0} s");
            }
            process.WaitForExit();
            return new HostCommandResult(process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
        }
    }

    /// <summary><see cref="Run"/>, failing with the command and its first line of error on a non-zero exit.</summary>
    public static string Check(string program, IEnumerable<string> args, string? package = null)
    {
        var list = args.ToList();
        var result = Run(program, list, package);
        if (result.ExitCode != 0) throw new Stage1Exception($"{program} {string.Join(' ', list)} failed: {result.FirstLine}");
        return result.Stdout;
    }
}
