namespace Rkt.Kvm.Vmm.Client;

/// <summary>A VMM process's exit status in words, for the logs of those who started it.</summary>
public static class VmmExit
{
    /// <summary>What .NET reports for a child a signal killed: 128 + the signal.</summary>
    private const int SignalBase = 128, Sigkill = 9, Sigsegv = 11, Sigsys = 31;

    public static string Describe(int exitCode) => exitCode switch
    {
        SignalBase + Sigsys => "killed by SIGSYS: it made a system call its seccomp filter forbids (the kernel log names it: dmesg, type=1326; --seccomp=log lets it through)",
        SignalBase + Sigkill => "killed by SIGKILL",
        SignalBase + Sigsegv => "killed by SIGSEGV",
        > SignalBase and < SignalBase + 65 => $"killed by signal {exitCode - SignalBase}",
        _ => $"exit status {exitCode}",
    };
}
