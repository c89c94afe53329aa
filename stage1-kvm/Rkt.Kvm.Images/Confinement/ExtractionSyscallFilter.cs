using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>
/// The confined extraction's seccomp filter: a deny-list, since the child is a JIT-compiled .NET
/// process whose runtime makes calls no trace can promise to cover (the VMM, NativeAOT and traced,
/// has an allow-list). Killed: anything not x86-64 (or x32), and every call an extraction never
/// makes that would reach past its tree: sockets, execve, ptrace and process_vm_*, mounts and
/// namespaces (after the pivot; clone's namespace flags too), id changes (after the drop), modules, kexec, bpf, perf,
/// keyrings, io_uring, userfaultfd, handles, the host's name and clock, swap, reboot.
/// </summary>
internal static class ExtractionSyscallFilter
{
    public const uint RetKillProcess = SeccompProgram.RetKillProcess, RetAllow = SeccompProgram.RetAllow;

    /// <summary>x86-64 numbers, by name for the threat model and the tests: everything past the process, and sockets.</summary>
    public static readonly IReadOnlyDictionary<string, int> Denied =
        DeniedSyscalls.BeyondTheProcess.Concat(DeniedSyscalls.Sockets).ToDictionary(p => p.Key, p => p.Value);

    public static BpfInstruction[] Build() =>
        SeccompProgram.BuildDenyList(Denied.Values, RetKillProcess, refusals: DeniedSyscalls.NamespaceCreation(RetKillProcess));

    /// <summary>Runs the program the way the kernel does, for one call (tests).</summary>
    public static uint Evaluate(IReadOnlyList<BpfInstruction> program, int nr, uint arch = SeccompProgram.AuditArchX86_64, ulong firstArgument = 0) =>
        SeccompProgram.Evaluate(program, nr, [firstArgument, 0, 0, 0, 0, 0], arch);
}
