using System.Collections;
using System.Runtime.InteropServices;
using System.Text;

namespace Rkt.Kvm.Vmm.Host.Confinement;

/// <summary>
/// The VMM's own namespaces and empty root (docs/THREAT-MODEL.md). Namespaces can only be changed
/// for a whole process before it has threads, and a .NET process always has some, so
/// <see cref="Enter"/> unshares on the main thread and re-executes the VMM there: the new image
/// starts with that thread's mount, UTS, IPC and network namespaces. After set-up,
/// <see cref="PivotToEmptyRoot"/> leaves the host's filesystem for a read-only tmpfs that holds
/// only the socket directories and this process's own fd table (/proc/self/fd, which the 9p server
/// reopens files through).
/// </summary>
public static unsafe partial class VmmJail
{
    /// <summary>Set in the re-executed VMM's environment: the inherited fd of the host's network namespace.</summary>
    public const string HostNetnsVariable = "RKT_KVM_VMM_JAIL_HOST_NETNS";

    private const int CLONE_NEWNS = 0x00020000, CLONE_NEWUTS = 0x04000000, CLONE_NEWIPC = 0x08000000, CLONE_NEWNET = 0x40000000;
    private const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32, MS_BIND = 4096, MS_REC = 16384, MS_PRIVATE = 1 << 18;
    private const int MNT_DETACH = 2;
    private const int O_RDONLY = 0, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000, O_PATH = 0x200000;
    private const long SYS_pivot_root = 155;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int open(string path, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int close(int fd);
    [LibraryImport("libc", SetLastError = true)] private static partial int unshare(int flags);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int execve(string path, byte** argv, byte** envp);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int mount(string? source, string target, string? type, ulong flags, string? data);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int umount2(string target, int flags);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int chdir(string path);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial long syscall(long number, string a, string b);

    /// <summary>True in the re-executed VMM, which runs in its own namespaces.</summary>
    public static bool IsInside => Environment.GetEnvironmentVariable(HostNetnsVariable) is not null;

    /// <summary>
    /// The host's network namespace while set-up lasts (a tap named without netns= is the host's, as
    /// without the jail); null outside the jail or once <see cref="PivotToEmptyRoot"/> closed it.
    /// </summary>
    public static string? HostNetworkNamespace { get; private set; } =
        int.TryParse(Environment.GetEnvironmentVariable(HostNetnsVariable), out int fd) ? $"/proc/self/fd/{fd}" : null;

    /// <summary>
    /// Unshares the mount, UTS, IPC and network namespaces on this (the main) thread and re-executes
    /// the VMM with <paramref name="args"/>; returns only by throwing. The pid stays the same, so
    /// whoever started the VMM keeps waiting on it.
    /// </summary>
    public static void Enter(IReadOnlyList<string> args)
    {
        int hostNetns = open("/proc/self/ns/net", O_RDONLY); // no O_CLOEXEC: the new image inherits it
        if (hostNetns < 0) throw Failure("open /proc/self/ns/net");
        if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) < 0)
        {
            var e = Failure("unshare (mount, UTS, IPC and network namespaces)");
            close(hostNetns);
            throw e;
        }
        var argv = new List<string> { Environment.GetCommandLineArgs()[0] };
        argv.AddRange(args);
        var env = new List<string>();
        foreach (DictionaryEntry v in Environment.GetEnvironmentVariables())
            if ((string)v.Key != HostNetnsVariable) env.Add($"{v.Key}={v.Value}");
        env.Add($"{HostNetnsVariable}={hostNetns}");
        var handles = new List<GCHandle>();
        try
        {
            byte** argvp = Pin(argv, handles), envp = Pin(env, handles);
            // By its path, not /proc/self/exe: the process name (comm) comes from the file executed.
            string self = Environment.ProcessPath ?? "/proc/self/exe";
            execve(self, argvp, envp);
            throw Failure($"execve {self} (re-executing the VMM in its namespaces)");
        }
        finally
        {
            foreach (var h in handles) h.Free();
        }
    }

    private static byte** Pin(List<string> strings, List<GCHandle> handles)
    {
        var pointers = new IntPtr[strings.Count + 1];
        for (int i = 0; i < strings.Count; i++)
        {
            var h = GCHandle.Alloc(Encoding.UTF8.GetBytes(strings[i] + "\0"), GCHandleType.Pinned);
            handles.Add(h);
            pointers[i] = h.AddrOfPinnedObject();
        }
        var array = GCHandle.Alloc(pointers, GCHandleType.Pinned);
        handles.Add(array);
        return (byte**)array.AddrOfPinnedObject();
    }

    /// <summary>
    /// Replaces the root with an empty read-only tmpfs (no suid, no devices, no exec) that holds
    /// only <paramref name="keepDirectories"/> (bound at their own paths: the control and vsock
    /// sockets, and the Unix sockets guests connect out to) and /proc/self/fd. Every mount here is
    /// private, so nothing propagates back to the host. Call once everything is open.
    /// </summary>
    public static void PivotToEmptyRoot(IEnumerable<string> keepDirectories)
    {
        // The environment says we are inside, but only the kernel knows: making mounts private and
        // pivoting in the host's own mount namespace would change the host, so check first.
        string own = new FileInfo("/proc/self/ns/mnt").LinkTarget ?? "";
        foreach (var other in new[] { $"/proc/{ParentPid()}/ns/mnt", "/proc/1/ns/mnt" })
        {
            string? theirs = null;
            try { theirs = new FileInfo(other).LinkTarget; } catch (IOException) { } catch (UnauthorizedAccessException) { }
            if (theirs == own) throw new IOException($"VMM jail: this process shares its mount namespace with {other[..other.LastIndexOf("/ns/", StringComparison.Ordinal)]}; refusing to pivot it.");
        }
        if (HostNetworkNamespace is { } netns)
        {
            close(int.Parse(netns["/proc/self/fd/".Length..]));
            HostNetworkNamespace = null;
        }
        var keep = Outermost(keepDirectories.Select(d => Path.TrimEndingDirectorySeparator(Path.GetFullPath(d))));
        var held = new List<int>();
        try
        {
            foreach (var dir in keep)
            {
                int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0) throw Failure($"open {dir}");
                held.Add(fd);
            }
            Check(mount(null, "/", null, MS_REC | MS_PRIVATE, null), "make every mount private");
            // /tmp as the mount point: it exists everywhere; in this mount namespace only it is covered.
            const string NewRoot = "/tmp";
            Check(mount("tmpfs", NewRoot, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755"), "mount the new root (tmpfs)");
            Bind("/proc/self/fd", NewRoot + "/proc/self/fd");
            for (int i = 0; i < keep.Count; i++) Bind($"/proc/self/fd/{held[i]}", NewRoot + keep[i]);
            Check(chdir(NewRoot), "chdir to the new root");
            if (syscall(SYS_pivot_root, ".", ".") < 0) throw Failure("pivot_root");
            Check(umount2(".", MNT_DETACH), "detach the host's root");
            Check(chdir("/"), "chdir /");
            Check(mount(null, "/", null, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, null), "make the new root read-only");
        }
        finally
        {
            foreach (var fd in held) close(fd);
        }
    }

    private static string ParentPid()
    {
        // /proc/self/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        string stat = File.ReadAllText("/proc/self/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1];
    }

    /// <summary>Drops directories inside another kept one: binding the outer one keeps them too.</summary>
    internal static List<string> Outermost(IEnumerable<string> directories)
    {
        var sorted = directories.Distinct().OrderBy(d => d.Length).ToList();
        var result = new List<string>();
        foreach (var d in sorted)
            if (!result.Any(r => r == "/" || d.StartsWith(r + "/", StringComparison.Ordinal))) result.Add(d);
        return result;
    }

    private static void Bind(string source, string target)
    {
        Directory.CreateDirectory(target);
        Check(mount(source, target, null, MS_BIND, null), $"bind {target}");
        Check(mount(null, target, null, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC, null), $"remount {target} nosuid,nodev,noexec");
    }

    private static void Check(int rc, string what) => ConfinementError.Check(rc, "VMM jail: " + what);

    private static IOException Failure(string what) => ConfinementError.Of("VMM jail: " + what);
}
