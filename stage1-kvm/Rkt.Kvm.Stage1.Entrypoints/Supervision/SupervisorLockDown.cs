using Rkt.Kvm.Posix;
using Rkt.Kvm.Stage1.Runtime;

namespace Rkt.Kvm.Stage1.Entrypoints.Supervision;

/// <summary>
/// What the pod supervisor gives up before it talks to the guest (docs/THREAT-MODEL.md): core
/// dumps and ptrace by others (not dumpable), every capability (the bounding set too), root (the
/// pod's own supervisor user, <see cref="PodSupervisorUser"/>, no supplementary groups), new
/// privileges, the calls that reach past a process (<see cref="DeniedSyscalls.BeyondTheProcess"/>)
/// and sockets other than Unix ones (no network: its only peer is the agent's Unix socket).
/// The terminal ioctls that type into the user's shell fail too. Those fail with EPERM rather than killing it: the supervisor runs gRPC and the .NET runtime,
/// whose optional probes must fall back, not end the pod; a denied call does nothing either way.
/// </summary>
internal static class SupervisorLockDown
{
    private const uint EPERM = 1, AF_UNIX = 1;
    private const int SYS_ioctl = 16, SYS_socket = 41, SYS_socketpair = 53;
    /// <summary>The ioctls that type into a terminal (TIOCSTI) or drive the console (TIOCLINUX): the
    /// supervisor holds the user's terminal, often a root shell's.</summary>
    public const uint TIOCSTI = 0x5412, TIOCLINUX = 0x541C;

    /// <summary>The calls past the process fail, and so do any socket but a Unix one (the agent is a Unix
    /// socket away), the terminal ioctls that would let it type into the user's shell, and clone
    /// with a namespace flag (clone3: ENOSYS, so threads come from clone).</summary>
    public static BpfInstruction[] Filter() =>
        SeccompProgram.BuildDenyList(DeniedSyscalls.BeyondTheProcess.Values, SeccompProgram.RetErrno | EPERM,
            rules: [new ArgumentRule(SYS_socket, 0, [AF_UNIX]), new ArgumentRule(SYS_socketpair, 0, [AF_UNIX])],
            deniedValues: [new ArgumentRule(SYS_ioctl, 1, [TIOCSTI, TIOCLINUX])],
            refusals: DeniedSyscalls.NamespaceCreation(SeccompProgram.RetErrno | EPERM));

    public static void Apply(PodSupervisorUser user)
    {
        Privileges.DropBoundingSet();
        Privileges.Become(user.Uid, user.Gid);
        // After the uid change, which resets dumpability to fs.suid_dumpable.
        Privileges.ForbidDumps();
        Privileges.ForbidNewPrivileges();
        long rc = SeccompProgram.Install(Filter(), SeccompProgram.FilterFlagTsync);
        if (rc > 0) throw new IOException($"seccomp: thread {rc} could not take the supervisor's filter");
        if (rc < 0) throw ErrnoException.FromLastError("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)");
    }
}
