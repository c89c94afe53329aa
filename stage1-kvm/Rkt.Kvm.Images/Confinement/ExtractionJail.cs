using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rkt.Kvm.Posix;
using static Rkt.Kvm.Images.Confinement.ConfinementCalls;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>
/// What the extraction child does to itself before it reads an archive (docs/THREAT-MODEL.md). It
/// was started in a mount namespace of its own (<see cref="ExtractionSandbox"/>); here every mount
/// becomes private, a read-only tmpfs holding only the destination (at <see cref="ExtractionContract.RootInChild"/>,
/// nosuid, nodev, noexec) becomes its root, the host's is detached; then it keeps only the
/// capabilities extraction needs, under an id of its own, and a seccomp filter.
/// </summary>
internal static unsafe class ExtractionJail
{
    /// <summary>The child's uid and gid: owned by no user and below the VMM's pod range (0x7A000000…).
    /// Files get the image's owners through CAP_CHOWN; the id only takes every other thread's capabilities away.</summary>
    public const uint Id = 0x79FF_FFFE;

    public const int CapChown = 0, CapDacOverride = 1, CapFowner = 3, CapFsetid = 4, CapMknod = 27, CapSetfcap = 31;

    /// <summary>
    /// What writing an image's tree needs: owners from the image (CHOWN), writing into directories
    /// whatever their modes (DAC_OVERRIDE), modes, times and xattrs of files it does not own (FOWNER),
    /// set-id bits (FSETID), file capabilities the image carries as security.capability (SETFCAP), and
    /// device nodes only where the policy allows them (MKNOD). Not CAP_SYS_ADMIN: trusted.* xattrs are
    /// not written (logged at --debug, as on a filesystem without xattrs).
    /// </summary>
    public static ulong Needed(bool devices) =>
        1UL << CapChown | 1UL << CapDacOverride | 1UL << CapFowner | 1UL << CapFsetid | 1UL << CapSetfcap | (devices ? 1UL << CapMknod : 0);

    /// <summary>
    /// Under JIT, the runtime loads an assembly or native library the first time code needs it, by
    /// path: after the pivot no path exists. Load every assembly the child can reach and each native
    /// library it calls now. (NativeAOT has everything compiled in.)
    /// </summary>
    public static void LoadEverythingNow()
    {
        _ = Native.Libc.IsRoot; // libc, the first P/Invoke of this assembly
        using (var z = new System.IO.Compression.GZipStream(new MemoryStream([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                   System.IO.Compression.CompressionMode.Decompress)) z.ReadByte(); // zlib (System.IO.Compression.Native)
        if (RuntimeFeature.IsDynamicCodeSupported) LoadAssemblies();
    }

    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("Trimming", "IL2026",
        Justification = "Only under JIT (untrimmed): NativeAOT has no assemblies to load.")]
    private static void LoadAssemblies()
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var queue = new Queue<Assembly>();
        foreach (var a in new[] { typeof(ExtractionJail).Assembly, Assembly.GetEntryAssembly() })
            if (a is not null && seen.Add(a.FullName!)) queue.Enqueue(a);
        while (queue.TryDequeue(out var assembly))
            foreach (var reference in assembly.GetReferencedAssemblies())
            {
                if (!seen.Add(reference.FullName)) continue;
                try { queue.Enqueue(Assembly.Load(reference)); }
                catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException) { } // optional, never used here
            }
    }

    /// <summary>Private mounts, the new root, the host's root detached. Returns the destination's path inside.</summary>
    public static string PivotIntoDestination(int rootFd)
    {
        // The spawner unshared our mount namespace; if that did not happen, stop before changing the host's mounts.
        string own = new FileInfo("/proc/self/ns/mnt").LinkTarget ?? "";
        if (own.Length == 0 || own == new FileInfo("/proc/1/ns/mnt").LinkTarget
            || own == new FileInfo($"/proc/{ParentPid()}/ns/mnt").LinkTarget)
            throw new IOException("extraction jail: this process shares its mount namespace with its parent or init; refusing to pivot it");
        Check(mount(null, "/", null, MS_REC | MS_PRIVATE, null), "extraction jail: make every mount private");
        const string NewRoot = "/tmp"; // exists everywhere; only in this namespace is it covered
        Check(mount("tmpfs", NewRoot, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,nr_inodes=16,mode=0755"), "extraction jail: mount the new root (tmpfs)");
        string target = NewRoot + ExtractionContract.RootInChild;
        Check(mkdir(target, 0x1ED), $"extraction jail: mkdir {target}");
        Check(mount($"/proc/self/fd/{rootFd}", target, null, MS_BIND, null), "extraction jail: bind the destination");
        Check(mount(null, target, null, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC, null), "extraction jail: remount the destination nosuid,nodev,noexec");
        close(rootFd);
        Check(chdir(NewRoot), "extraction jail: chdir to the new root");
        if (syscall(SYS_pivot_root, ".", ".") < 0) throw Failure("extraction jail: pivot_root");
        Check(umount2(".", MNT_DETACH), "extraction jail: detach the host's root");
        Check(chdir("/"), "extraction jail: chdir /");
        Check(mount(null, "/", null, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, null), "extraction jail: make the new root read-only");
        return ExtractionContract.RootInChild;
    }

    private static string ParentPid()
    {
        // /proc/self/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        string stat = File.ReadAllText("/proc/self/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1];
    }

    /// <summary>
    /// Keeps <paramref name="keep"/> on this thread and nothing on any other, empties the bounding set
    /// of the rest, and then: no core dumps, files no larger than <paramref name="maxFileBytes"/>, not
    /// dumpable, no_new_privs, the seccomp filter on every thread.
    /// </summary>
    public static void LockDown(ulong keep, long maxFileBytes)
    {
        ulong* fileSize = stackalloc ulong[2] { (ulong)maxFileBytes, (ulong)maxFileBytes };
        Check(setrlimit(RLIMIT_FSIZE, fileSize), $"setrlimit(RLIMIT_FSIZE, {maxFileBytes})");
        Privileges.DropBoundingSet(keep);
        // Capabilities are per thread and the runtime has several. Leaving uid 0 empties every thread's
        // (glibc makes each thread change its ids), except this one's permitted set, kept by KEEPCAPS.
        Check(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS, 1)");
        Privileges.Become(Id, Id);
        SetThisThread(keep);
        Check(prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS, 0)");
        Privileges.ForbidDumps(); // after the uid change, which resets dumpability to fs.suid_dumpable
        Privileges.ForbidNewPrivileges();
        long rc = SeccompProgram.Install(ExtractionSyscallFilter.Build(), SeccompProgram.FilterFlagTsync);
        if (rc > 0) throw new IOException($"seccomp: thread {rc} could not take the filter");
        if (rc < 0) throw Failure("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)");
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CapHeader { public uint Version; public int Pid; }

    [StructLayout(LayoutKind.Sequential)]
    private struct CapData { public uint Effective, Permitted, Inheritable; }

    private static void SetThisThread(ulong keep)
    {
        var header = new CapHeader { Version = 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */ };
        CapData* data = stackalloc CapData[2];
        for (int i = 0; i < 2; i++)
        {
            uint half = (uint)(keep >> (32 * i));
            data[i] = new CapData { Effective = half, Permitted = half, Inheritable = 0 };
        }
        if (syscall(SYS_capset, (nuint)(&header), (nuint)data, null) < 0) throw Failure("capset (keeping extraction's capabilities)");
    }
}
