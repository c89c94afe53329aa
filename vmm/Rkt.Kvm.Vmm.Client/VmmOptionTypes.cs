namespace Rkt.Kvm.Vmm.Client;

/// <summary><c>--pvm</c>: whether the VMM adds the guest options a PVM host needs.</summary>
public enum PvmMode
{
    /// <summary>Detect a PVM host and add its guest options only there.</summary>
    Auto,
    On,
    Off,
}

/// <summary><c>--seccomp</c>: what the VMM's system call filter does to a call outside its allow-list.</summary>
public enum SeccompAction
{
    /// <summary>The VMM dies by SIGSYS (the kernel logs the call): the default.</summary>
    Kill,
    /// <summary>The call goes through and the kernel logs it (for finding what a new code path needs).</summary>
    Log,
    /// <summary>No filter: for debugging only.</summary>
    Off,
}

/// <summary><c>--console</c>: where the guest console goes besides <c>--console-log</c>.</summary>
public enum VmmConsole
{
    Stdout,
    None,
}

/// <summary><c>--kvm-eventfds</c>: which KVM eventfds carry virtio signalling where the VMM offers them.</summary>
public enum KvmEventFds
{
    /// <summary>ioeventfd for queue notifies and irqfd for interrupts.</summary>
    On,
    /// <summary>Neither: notifies exit to a vCPU thread, interrupts go by KVM_IRQ_LINE (for measuring).</summary>
    Off,
    Ioeventfd,
    Irqfd,
}

/// <summary>A host directory the guest can mount over virtio-9p (aname = <see cref="Name"/>); <c>--9p-export NAME=PATH[,ro]</c>.</summary>
public sealed record P9ExportSpec(string Name, string Path, bool ReadOnly)
{
    /// <summary>"NAME=PATH" or "NAME=PATH,ro" (a path may itself contain commas; only a trailing ",ro" or ",rw" is an option).</summary>
    public static P9ExportSpec Parse(string text)
    {
        int eq = text.IndexOf('=');
        if (eq <= 0 || eq == text.Length - 1) throw new ArgumentException($"--9p-export must be NAME=PATH[,ro], not '{text}'.");
        string name = text[..eq], path = text[(eq + 1)..];
        bool readOnly = false;
        if (path.EndsWith(",ro", StringComparison.Ordinal)) { readOnly = true; path = path[..^3]; }
        else if (path.EndsWith(",rw", StringComparison.Ordinal)) path = path[..^3];
        return new P9ExportSpec(name, path, readOnly);
    }

    /// <summary>The text <see cref="Parse"/> reads back: a writable path that itself ends in ",ro" or ",rw" gets an explicit ",rw".</summary>
    public string ToArgument() =>
        ReadOnly ? $"{Name}={Path},ro"
        : Path.EndsWith(",ro", StringComparison.Ordinal) || Path.EndsWith(",rw", StringComparison.Ordinal) ? $"{Name}={Path},rw"
        : $"{Name}={Path}";
}

/// <summary>
/// A NIC: virtio-net backed by a tap. <c>--net tap=NAME[,netns=PATH][,mac=MAC][,mtu=N]</c> opens (or
/// creates) the tap NAME, inside the network namespace at PATH when given (e.g. /var/run/netns/cni-…);
/// <c>--net fd=N[,mac=MAC][,mtu=N]</c> adopts a tap file descriptor the VMM inherited. Without a MAC the
/// VMM picks a random locally administered one; with an MTU the guest is told it (VIRTIO_NET_F_MTU).
/// Values may not contain commas. Parsing checks syntax; the VMM checks the rest (MachineConfig).
/// </summary>
public sealed record NetDeviceSpec
{
    /// <summary>The tap interface name; null when <see cref="Fd"/> is given.</summary>
    public string? Tap { get; init; }
    /// <summary>A network namespace file (only with <see cref="Tap"/>); null: the VMM's own namespace.</summary>
    public string? Netns { get; init; }
    /// <summary>An inherited tap descriptor; null when <see cref="Tap"/> is given.</summary>
    public int? Fd { get; init; }
    /// <summary>
    /// A tap the VMM creates in a network namespace of its own that nothing else can reach: the
    /// NIC exists for the guest but carries no traffic (a template VM, restored later with a real tap).
    /// </summary>
    public bool Isolated { get; init; }
    /// <summary>Lower-case "xx:xx:xx:xx:xx:xx"; null: random.</summary>
    public string? Mac { get; init; }
    public int? Mtu { get; init; }

    public static NetDeviceSpec Parse(string text)
    {
        ArgumentException Bad(string why) => new($"--net {why} (expected tap=NAME[,netns=PATH][,mac=XX:XX:XX:XX:XX:XX][,mtu=N], fd=N[,mac=...][,mtu=N] or isolated[,mac=...][,mtu=N], got '{text}').");
        string? tap = null, netns = null, mac = null;
        int? fd = null, mtu = null;
        bool isolated = false;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string part in text.Split(','))
        {
            if (part == "isolated")
            {
                if (!seen.Add(part)) throw Bad("gives isolated twice");
                isolated = true;
                continue;
            }
            int eq = part.IndexOf('=');
            if (eq <= 0 || eq == part.Length - 1) throw Bad($"needs key=value pairs, not '{part}'");
            string key = part[..eq], value = part[(eq + 1)..];
            if (!seen.Add(key)) throw Bad($"gives {key} twice");
            switch (key)
            {
                case "tap": tap = value; break;
                case "netns": netns = value; break;
                case "fd": fd = (int)Number(value, int.MaxValue); break;
                case "mac": mac = FormatMac(ParseMac(value) ?? throw Bad($"mac '{value}' is not six hex bytes separated by colons")); break;
                case "mtu": mtu = (int)Number(value, int.MaxValue); break;
                default: throw Bad($"has an unknown key '{key}'");
            }
        }
        if ((tap is null ? 0 : 1) + (fd is null ? 0 : 1) + (isolated ? 1 : 0) != 1) throw Bad("needs exactly one of tap=, fd= and isolated");
        if (netns is not null && tap is null) throw Bad("netns= only goes with tap= (an inherited fd is already open, an isolated tap has its own)");
        return new NetDeviceSpec { Tap = tap, Netns = netns, Fd = fd, Isolated = isolated, Mac = mac, Mtu = mtu };

        ulong Number(string value, ulong max) =>
            ulong.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong n) && n <= max
                ? n
                : throw Bad($"'{value}' is not a whole number");
    }

    /// <summary>The text <see cref="Parse"/> reads back.</summary>
    public string ToArgument()
    {
        var parts = new List<string>();
        if (Tap is not null) parts.Add($"tap={Tap}");
        if (Netns is not null) parts.Add($"netns={Netns}");
        if (Fd is { } fd) parts.Add($"fd={fd.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
        if (Isolated) parts.Add("isolated");
        if (Mac is not null) parts.Add($"mac={Mac}");
        if (Mtu is { } mtu) parts.Add($"mtu={mtu.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
        foreach (var p in parts)
            if (p.IndexOf(',') >= 0) throw new ArgumentException($"--net values may not contain commas: '{p}'.");
        return string.Join(",", parts);
    }

    /// <summary>"02:AB:cd:00:11:22" → 6 bytes; null when it is not six colon-separated hex bytes.</summary>
    public static byte[]? ParseMac(string text)
    {
        var parts = text.Split(':');
        if (parts.Length != 6) return null;
        var mac = new byte[6];
        for (int i = 0; i < 6; i++)
        {
            if (parts[i].Length != 2 || !byte.TryParse(parts[i], System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out mac[i]))
                return null;
        }
        return mac;
    }

    public static string FormatMac(ReadOnlySpan<byte> mac) =>
        string.Join(":", mac.ToArray().Select(b => b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture)));
}

/// <summary>
/// <c>--test-fault</c>: a fault the VMM injects into itself, for tests of its confinement only.
/// stage1 never passes one. Each only harms the VMM it is given to.
/// </summary>
public enum VmmTestFault
{
    None,
    /// <summary>A vCPU thread, locked down, makes a system call the filter forbids (an AF_INET socket): the VMM must die by SIGSYS.</summary>
    VcpuForbiddenSyscall,
    /// <summary>
    /// A vCPU thread makes a call the process's filter allows but the vCPU threads' own filter does
    /// not (an AF_UNIX socket, which only the device thread makes): the VMM must die by SIGSYS.
    /// </summary>
    VcpuClassForbiddenSyscall,
}

/// <summary>
/// <c>--user UID:GID</c>: the unprivileged user and group the VMM becomes once set up (no
/// supplementary groups). Root is refused: it would drop nothing.
/// </summary>
public readonly record struct VmmUser(uint Uid, uint Gid)
{
    public static VmmUser Parse(string text)
    {
        var parts = text.Split(':');
        if (parts.Length != 2 || !uint.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out uint uid)
            || !uint.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out uint gid))
            throw new ArgumentException($"--user must be UID:GID (numbers), not '{text}'.");
        // (uid_t)-1 means "leave unchanged" to setresuid: it would drop nothing either.
        if (uid == 0 || gid == 0 || uid == uint.MaxValue || gid == uint.MaxValue)
            throw new ArgumentException($"--user must name an unprivileged user and group, not '{text}'.");
        return new VmmUser(uid, gid);
    }

    public string ToArgument() => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Uid}:{Gid}");

    /// <summary>
    /// Lets a VMM running as this user connect to the host listener at <paramref name="socketPath"/>
    /// (guests dial the host through <c>&lt;vsock&gt;_&lt;port&gt;</c> sockets; connecting takes write
    /// access to the socket file): the socket becomes this user's. Only its owner and root reach it.
    /// </summary>
    public unsafe void GrantConnect(string socketPath)
    {
        fixed (byte* p = Rkt.Kvm.Posix.CString.Utf8(socketPath))
            if (Tmds.Linux.LibC.chown(p, Uid, Gid) < 0)
                throw new IOException($"cannot hand {socketPath} to uid {Uid}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(Tmds.Linux.LibC.errno)}");
    }
}
