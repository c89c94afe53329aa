using System.Globalization;

namespace Rkt.Kvm.Vmm.Client;

/// <summary>
/// The command line of <c>rkt-kvm-vmm</c>, typed: <see cref="ToArguments"/> builds the argv that
/// <see cref="Parse"/> reads, so whoever starts a VMM and the VMM itself cannot drift apart. Parsing
/// checks syntax only (every problem an <see cref="ArgumentException"/> with a one-line message);
/// what needs the VMM's own limits (CPU count, memory size, paths) is checked by the VMM.
/// The defaults are the VMM's: an option at its default is left out of the argv.
/// </summary>
public sealed record VmmCommandLine
{
    public const ulong DefaultMemoryMiB = 128;
    public const int DefaultCpus = 1;
    public const ulong DefaultGuestCid = 3;

    /// <summary>ELF vmlinux (preferred) or bzImage.</summary>
    public required string Kernel { get; init; }
    public string? Initrd { get; init; }
    /// <summary>Appended after the VMM's own kernel options, so it can override them.</summary>
    public string? Cmdline { get; init; }
    public ulong MemoryMiB { get; init; } = DefaultMemoryMiB;
    public int Cpus { get; init; } = DefaultCpus;
    public VmmConsole Console { get; init; } = VmmConsole.Stdout;
    /// <summary>Also write the guest console to this file.</summary>
    public string? ConsoleLog { get; init; }
    public PvmMode Pvm { get; init; } = PvmMode.Auto;
    /// <summary><c>--seccomp kill|log|off</c>: the system call filter's action (off: for debugging only).</summary>
    public SeccompAction Seccomp { get; init; } = SeccompAction.Kill;
    /// <summary><c>--jail on|off</c>: own namespaces, an empty root and no capabilities on guest-facing threads (off: for debugging only).</summary>
    public bool Jail { get; init; } = true;
    /// <summary><c>--user UID:GID</c>: the unprivileged user the VMM becomes once set up; null: it stays root.</summary>
    public VmmUser? User { get; init; }
    /// <summary><c>--test-fault</c>: for tests of the VMM's confinement only.</summary>
    public VmmTestFault TestFault { get; init; } = VmmTestFault.None;
    /// <summary>The KVM device; null: the VMM's default (/dev/kvm).</summary>
    public string? KvmDevice { get; init; }
    /// <summary>The hybrid vsock Unix socket (docs/VSOCK.md); null: no vsock device.</summary>
    public string? Vsock { get; init; }
    public ulong VsockCid { get; init; } = DefaultGuestCid;
    public KvmEventFds KvmEventFds { get; init; } = KvmEventFds.On;
    /// <summary>Directories served over virtio-9p from the start.</summary>
    public IReadOnlyList<P9ExportSpec> Exports { get; init; } = [];
    /// <summary>NICs (virtio-net over a tap), in guest order: the first is eth0.</summary>
    public IReadOnlyList<NetDeviceSpec> Net { get; init; } = [];
    /// <summary>The control socket (docs/CONTROL.md); with it the 9p device is present even without exports.</summary>
    public string? Control { get; init; }
    /// <summary>The VM ends when this process (the VMM's parent) exits.</summary>
    public int? OwnerPid { get; init; }
    /// <summary>The VM ends when the process this inherited pidfd refers to exits: how a VMM in a PID
    /// namespace of its own (<see cref="VmmProcess"/>) learns its owner, whose pid means nothing there.</summary>
    public int? OwnerPidfd { get; init; }
    /// <summary>Continue from this snapshot file (written by the control socket's snapshot op) instead of booting.</summary>
    public string? Restore { get; init; }
    public bool Debug { get; init; }
    public bool Quiet { get; init; }
    public bool Help { get; init; }

    /// <summary>The argv (without the program name) that <see cref="Parse"/> turns back into this record.</summary>
    public IReadOnlyList<string> ToArguments()
    {
        var args = new List<string>();
        void Add(string option, string? value)
        {
            if (value is null) return;
            args.Add(option);
            args.Add(value);
        }
        Add("--kernel", Kernel);
        Add("--initrd", Initrd);
        Add("--cmdline", Cmdline);
        if (MemoryMiB != DefaultMemoryMiB) Add("--memory", MemoryMiB.ToString(CultureInfo.InvariantCulture));
        if (Cpus != DefaultCpus) Add("--cpus", Cpus.ToString(CultureInfo.InvariantCulture));
        if (Console != VmmConsole.Stdout) Add("--console", "none");
        Add("--console-log", ConsoleLog);
        if (Pvm != PvmMode.Auto) Add("--pvm", Pvm == PvmMode.On ? "on" : "off");
        if (Seccomp != SeccompAction.Kill) Add("--seccomp", Seccomp == SeccompAction.Log ? "log" : "off");
        if (!Jail) Add("--jail", "off");
        Add("--user", User?.ToArgument());
        if (TestFault != VmmTestFault.None) Add("--test-fault", TestFault == VmmTestFault.VcpuForbiddenSyscall ? "vcpu-forbidden-syscall" : "vcpu-thread-filter");
        Add("--kvm-device", KvmDevice);
        Add("--vsock", Vsock);
        if (VsockCid != DefaultGuestCid) Add("--vsock-cid", VsockCid.ToString(CultureInfo.InvariantCulture));
        if (KvmEventFds != KvmEventFds.On)
            Add("--kvm-eventfds", KvmEventFds switch { KvmEventFds.Off => "off", KvmEventFds.Ioeventfd => "ioeventfd", _ => "irqfd" });
        foreach (var export in Exports) Add("--9p-export", export.ToArgument());
        foreach (var nic in Net) Add("--net", nic.ToArgument());
        Add("--control", Control);
        Add("--owner-pid", OwnerPid?.ToString(CultureInfo.InvariantCulture));
        Add("--owner-pidfd", OwnerPidfd?.ToString(CultureInfo.InvariantCulture));
        Add("--restore", Restore);
        if (Debug) args.Add("--debug");
        if (Quiet) args.Add("--quiet");
        if (Help) args.Add("--help");
        return args;
    }

    /// <summary>Reads an argv: each option as <c>--name value</c> or <c>--name=value</c>; the last of a repeated option wins (exports and NICs add up).</summary>
    public static VmmCommandLine Parse(IReadOnlyList<string> args)
    {
        string? kernel = null, initrd = null, cmdline = null, consoleLog = null, kvmDevice = null, vsock = null, control = null, restore = null;
        int? owner = null, ownerPidfd = null;
        var exports = new List<P9ExportSpec>();
        var nets = new List<NetDeviceSpec>();
        ulong cid = DefaultGuestCid;
        var eventFds = KvmEventFds.On;
        ulong memory = DefaultMemoryMiB;
        int cpus = DefaultCpus;
        var console = VmmConsole.Stdout;
        bool debug = false, quiet = false, help = false;
        var pvm = PvmMode.Auto;
        var seccomp = SeccompAction.Kill;
        bool jail = true;
        var testFault = VmmTestFault.None;
        VmmUser? user = null;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            string name = arg, value = "";
            int eq = arg.IndexOf('=');
            bool inline = arg.StartsWith("--", StringComparison.Ordinal) && eq > 0;
            if (inline) { name = arg[..eq]; value = arg[(eq + 1)..]; }
            string Value()
            {
                if (inline) return value;
                if (i + 1 >= args.Count) throw new ArgumentException($"{name} needs a value.");
                return args[++i];
            }
            switch (name)
            {
                case "--kernel": kernel = Value(); break;
                case "--initrd": initrd = Value(); break;
                case "--cmdline": cmdline = Value(); break;
                case "--memory": memory = ParseMemory(Value()); break;
                case "--cpus": cpus = (int)WholeNumber(name, Value(), int.MaxValue); break;
                case "--console":
                    console = Value() switch
                    {
                        "stdout" => VmmConsole.Stdout,
                        "none" => VmmConsole.None,
                        var v => throw new ArgumentException($"--console must be stdout or none, not '{v}'."),
                    };
                    break;
                case "--console-log": consoleLog = Value(); break;
                case "--pvm":
                    pvm = Value() switch
                    {
                        "auto" => PvmMode.Auto,
                        "on" => PvmMode.On,
                        "off" => PvmMode.Off,
                        var v => throw new ArgumentException($"--pvm must be auto, on or off, not '{v}'."),
                    };
                    break;
                case "--seccomp":
                    seccomp = Value() switch
                    {
                        "kill" => SeccompAction.Kill,
                        "log" => SeccompAction.Log,
                        "off" => SeccompAction.Off,
                        var v => throw new ArgumentException($"--seccomp must be kill, log or off, not '{v}'."),
                    };
                    break;
                case "--jail":
                    jail = Value() switch
                    {
                        "on" => true,
                        "off" => false,
                        var v => throw new ArgumentException($"--jail must be on or off, not '{v}'."),
                    };
                    break;
                case "--user": user = VmmUser.Parse(Value()); break;
                case "--test-fault":
                    testFault = Value() switch
                    {
                        "vcpu-forbidden-syscall" => VmmTestFault.VcpuForbiddenSyscall,
                        "vcpu-thread-filter" => VmmTestFault.VcpuClassForbiddenSyscall,
                        var v => throw new ArgumentException($"--test-fault must be vcpu-forbidden-syscall or vcpu-thread-filter, not '{v}'."),
                    };
                    break;
                case "--kvm-device": kvmDevice = Value(); break;
                case "--vsock": vsock = Value(); break;
                case "--vsock-cid": cid = WholeNumber(name, Value(), ulong.MaxValue); break;
                case "--kvm-eventfds":
                    eventFds = Value() switch
                    {
                        "on" => KvmEventFds.On,
                        "off" => KvmEventFds.Off,
                        "ioeventfd" => KvmEventFds.Ioeventfd,
                        "irqfd" => KvmEventFds.Irqfd,
                        var v => throw new ArgumentException($"--kvm-eventfds must be on, off, ioeventfd or irqfd, not '{v}'."),
                    };
                    break;
                case "--9p-export": exports.Add(P9ExportSpec.Parse(Value())); break;
                case "--net": nets.Add(NetDeviceSpec.Parse(Value())); break;
                case "--control": control = Value(); break;
                case "--owner-pid": owner = (int)WholeNumber(name, Value(), int.MaxValue); break;
                case "--owner-pidfd": ownerPidfd = (int)WholeNumber(name, Value(), int.MaxValue); break;
                case "--restore": restore = Value(); break;
                case "--debug": debug = true; break;
                case "--quiet": quiet = true; break;
                case "--help" or "-h": help = true; break;
                default: throw new ArgumentException($"unknown argument '{arg}'.");
            }
        }
        if (help) return new VmmCommandLine { Kernel = "", Help = true };
        if (kernel is null) throw new ArgumentException("--kernel is required.");
        return new VmmCommandLine
        {
            Kernel = kernel,
            Initrd = initrd,
            Cmdline = cmdline,
            MemoryMiB = memory,
            Cpus = cpus,
            Console = console,
            ConsoleLog = consoleLog,
            Pvm = pvm,
            Seccomp = seccomp,
            Jail = jail,
            TestFault = testFault,
            User = user,
            KvmDevice = kvmDevice,
            Vsock = vsock,
            VsockCid = cid,
            KvmEventFds = eventFds,
            Exports = exports,
            Net = nets,
            Control = control,
            OwnerPid = owner,
            OwnerPidfd = ownerPidfd,
            Restore = restore,
            Debug = debug,
            Quiet = quiet,
        };
    }

    /// <summary>
    /// The <c>--vsock</c> socket of a running VMM, read leniently from its argv (program name
    /// first): the process may run another build of the VMM, whose other options this one need
    /// not know. Null when there is none.
    /// </summary>
    public static string? FindVsock(IReadOnlyList<string> argv)
    {
        for (int i = 1; i < argv.Count; i++)
        {
            if (argv[i] == "--vsock") return i + 1 < argv.Count ? argv[i + 1] : null;
            if (argv[i].StartsWith("--vsock=", StringComparison.Ordinal)) return argv[i]["--vsock=".Length..];
        }
        return null;
    }

    /// <summary>"512", "512M", "512MiB", "2G", "2GiB" → MiB.</summary>
    public static ulong ParseMemory(string text)
    {
        string t = text.Trim();
        ulong multiplier = 1;
        foreach (var (suffix, factor) in new[] { ("GiB", 1024UL), ("MiB", 1UL), ("G", 1024UL), ("M", 1UL) })
        {
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) { t = t[..^suffix.Length]; multiplier = factor; break; }
        }
        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value) || value > ulong.MaxValue / multiplier / (1 << 20))
            throw new ArgumentException($"--memory must be a size like 128, 512M or 2G, not '{text}'.");
        return value * multiplier;
    }

    private static ulong WholeNumber(string option, string text, ulong max) =>
        ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value) && value <= max
            ? value
            : throw new ArgumentException($"{option} must be a whole number, not '{text}'.");
}
