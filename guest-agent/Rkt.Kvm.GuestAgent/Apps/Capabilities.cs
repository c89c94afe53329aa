namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>Linux capability names and the set an app keeps (appc/rkt semantics).</summary>
internal static class Capabilities
{
    // Index = capability number (linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40 in 6.1).
    private static readonly string[] s_names =
    [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ];

    /// <summary>rkt/appc's default set for apps (stage1 "appc default capabilities").</summary>
    public static readonly IReadOnlyList<string> Default =
    [
        "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_KILL", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
    ];

    /// <summary>The number of a capability named "CAP_X" (or "X", any case); throws ArgumentException otherwise.</summary>
    public static int Number(string name)
    {
        string n = name.Trim().ToUpperInvariant();
        if (n.StartsWith("CAP_", StringComparison.Ordinal)) n = n[4..];
        int i = Array.IndexOf(s_names, n);
        return i >= 0 ? i : throw new ArgumentException($"'{name}' is not a Linux capability name (like CAP_NET_ADMIN).");
    }

    public static ulong Mask(IEnumerable<string> names)
    {
        ulong mask = 0;
        foreach (string name in names) mask |= 1UL << Number(name);
        return mask;
    }

    /// <summary>The mask an app keeps: exactly <paramref name="retain"/> if given, else the default minus <paramref name="remove"/>.</summary>
    public static ulong Effective(IReadOnlyCollection<string> retain, IReadOnlyCollection<string> remove)
    {
        if (retain.Count > 0 && remove.Count > 0)
            throw new ArgumentException("Give either capabilities_retain or capabilities_remove, not both.");
        return retain.Count > 0 ? Mask(retain) : Mask(Default) & ~Mask(remove);
    }
}
