using System.Runtime.InteropServices;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>The libc calls of the confined extraction: spawning, namespaces and mounts, capabilities
/// and limits (the steps every confined process shares are Rkt.Kvm.Posix.Privileges). Linux x86-64 only.</summary>
internal static unsafe partial class ConfinementCalls
{
    public const int O_RDONLY = 0, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000, O_PATH = 0x200000;
    public const int F_DUPFD_CLOEXEC = 1030;
    public const int CLONE_NEWNS = 0x00020000;
    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32, MS_BIND = 4096, MS_REC = 16384, MS_PRIVATE = 1 << 18;
    public const int MNT_DETACH = 2;
    public const int PR_SET_KEEPCAPS = 8;
    public const int RLIMIT_FSIZE = 1;
    public const long SYS_capget = 125, SYS_capset = 126, SYS_pivot_root = 155;
    public const short POSIX_SPAWN_SETSIGDEF = 0x04, POSIX_SPAWN_SETSIGMASK = 0x08;
    public const int AF_INET = 2, SOCK_STREAM = 1, SOCK_CLOEXEC = 0x80000;
    public const int EINTR = 4;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int open(string path, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial int close(int fd);
    [LibraryImport("libc", SetLastError = true)] public static partial int fcntl(int fd, int cmd, int arg);
    [LibraryImport("libc", SetLastError = true)] public static partial int pipe2(int* fds, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial nint read(int fd, byte* buffer, nint count);
    [LibraryImport("libc", SetLastError = true)] public static partial int unshare(int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial int waitpid(int pid, int* status, int options);
    [LibraryImport("libc", SetLastError = true)] public static partial int socket(int domain, int type, int protocol);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int mount(string? source, string target, string? type, ulong flags, string? data);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int umount2(string target, int flags);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int chdir(string path);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int mkdir(string path, uint mode);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial long syscall(long number, string a, string b);
    [LibraryImport("libc", SetLastError = true)] public static partial long syscall(long number, nuint a, nuint b, void* c);
    [LibraryImport("libc", SetLastError = true)] public static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);
    [LibraryImport("libc", SetLastError = true)] public static partial int setrlimit(int resource, ulong* limit);

    [LibraryImport("libc")] public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attributes, byte** argv, byte** envp);
    [LibraryImport("libc")] public static partial int posix_spawn_file_actions_init(void* fileActions);
    [LibraryImport("libc")] public static partial int posix_spawn_file_actions_destroy(void* fileActions);
    [LibraryImport("libc")] public static partial int posix_spawn_file_actions_adddup2(void* fileActions, int fd, int newFd);
    [LibraryImport("libc")] public static partial int posix_spawnattr_init(void* attributes);
    [LibraryImport("libc")] public static partial int posix_spawnattr_destroy(void* attributes);
    [LibraryImport("libc")] public static partial int posix_spawnattr_setflags(void* attributes, short flags);
    [LibraryImport("libc")] public static partial int posix_spawnattr_setsigmask(void* attributes, void* mask);
    [LibraryImport("libc")] public static partial int posix_spawnattr_setsigdefault(void* attributes, void* mask);
    [LibraryImport("libc")] public static partial int sigemptyset(void* set);
    [LibraryImport("libc")] public static partial int sigfillset(void* set);

    /// <summary>A failed call as one sentence with its errno's text.</summary>
    public static IOException Failure(string what) => Failure(what, Marshal.GetLastPInvokeError());

    public static IOException Failure(string what, int errno) => new($"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)}", errno);

    public static void Check(int rc, string what)
    {
        if (rc < 0) throw Failure(what);
    }
}
