using System.Globalization;

namespace Rkt.Kvm.Vmm.Cli;

/// <summary>The command line of `rkt-kvm-vmm`; every problem is an <see cref="ArgumentException"/> with a one-line message.</summary>
public sealed record VmmOptions
{
    public const string Usage = """
        Usage: rkt-kvm-vmm --kernel PATH [options]
        Boots one Linux microVM on /dev/kvm and exits with its status:
          0 guest reset or powered off, 1 VMM error, 2 guest kernel panic, 3 guest crash,
          4 its owner (--owner-pid) exited.

          --kernel PATH        ELF vmlinux (preferred) or bzImage
          --initrd PATH        initramfs / initrd image
          --cmdline TEXT       extra kernel command line, appended after the VMM's own options
          --memory SIZE        guest RAM in MiB, or with a unit: 512M, 2G (default 128)
          --cpus N             vCPUs, 1-8 (default 1)
          --console TARGET     stdout (default) or none
          --console-log PATH   also write the guest console to PATH
          --pvm auto|on|off    PVM host guest options (default auto: detect kvm_pvm)
          --kvm-device PATH    KVM device (default /dev/kvm)
          --vsock PATH         virtio-vsock, reached from the host through the Unix socket PATH
                               (hybrid vsock: write "CONNECT <port>\n"); guest connections to
                               host port P go to the Unix socket PATH_P
          --vsock-cid N        the guest's vsock CID (default 3)
          --kvm-eventfds MODE  virtio signalling through KVM eventfds where offered: on (default:
                               ioeventfd and irqfd), off, ioeventfd or irqfd (only that one)
          --9p-export NAME=PATH[,ro]
                               serve host directory PATH over virtio-9p (mount tag "rkt");
                               the guest picks it with aname=NAME; repeatable; ",ro": read-only
          --control PATH       VMM control socket (newline-delimited JSON, docs/CONTROL.md):
                               add-export, remove-export, list-exports, status, stop;
                               the 9p device is present with --control or any --9p-export
          --owner-pid PID      end the VM when process PID (the VMM's parent) exits, however
                               it exits: the VM never outlives the process that owns it
          --debug              verbose VMM logging
          --quiet              only warnings and errors from the VMM
          --help               this text

        """;

    public required MachineConfig Machine { get; init; }
    public bool ConsoleToStdout { get; init; } = true;
    public string? ConsoleLogPath { get; init; }
    public bool Debug { get; init; }
    public bool Quiet { get; init; }
    public bool ShowHelp { get; init; }

    public static VmmOptions Parse(IReadOnlyList<string> args)
    {
        string? kernel = null, initrd = null, cmdline = null, consoleLog = null, kvmDevice = null, vsock = null, control = null;
        int? owner = null;
        var exports = new List<P9ExportSpec>();
        ulong cid = 3;
        (bool Ioeventfd, bool Irqfd) eventFds = (true, true);
        ulong memory = MachineConfig.DefaultMemoryMiB;
        int cpus = 1;
        bool toStdout = true, debug = false, quiet = false, help = false;
        var pvm = PvmMode.Auto;
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
                    toStdout = Value() switch
                    {
                        "stdout" => true,
                        "none" => false,
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
                case "--kvm-device": kvmDevice = Value(); break;
                case "--vsock": vsock = Value(); break;
                case "--vsock-cid": cid = WholeNumber(name, Value(), ulong.MaxValue); break;
                case "--kvm-eventfds":
                    eventFds = Value() switch
                    {
                        "on" => (true, true),
                        "off" => (false, false),
                        "ioeventfd" => (true, false),
                        "irqfd" => (false, true),
                        var v => throw new ArgumentException($"--kvm-eventfds must be on, off, ioeventfd or irqfd, not '{v}'."),
                    };
                    break;
                case "--9p-export": exports.Add(ParseExport(Value())); break;
                case "--control": control = Value(); break;
                case "--owner-pid": owner = (int)WholeNumber(name, Value(), int.MaxValue); break;
                case "--debug": debug = true; break;
                case "--quiet": quiet = true; break;
                case "--help" or "-h": help = true; break;
                default: throw new ArgumentException($"unknown argument '{arg}'.");
            }
        }
        if (help) return new VmmOptions { Machine = new MachineConfig { KernelPath = "" }, ShowHelp = true };
        if (kernel is null) throw new ArgumentException("--kernel is required.");
        var machine = new MachineConfig
        {
            KernelPath = kernel,
            InitrdPath = initrd,
            ExtraCmdline = cmdline,
            MemoryMiB = memory,
            Cpus = cpus,
            Pvm = pvm,
            KvmDevicePath = kvmDevice ?? Kvm.KvmSystem.DefaultDevicePath,
            VsockSocketPath = vsock,
            GuestCid = cid,
            UseIoeventfd = eventFds.Ioeventfd,
            UseIrqfd = eventFds.Irqfd,
            ControlSocketPath = control,
            P9Exports = exports,
            OwnerPid = owner,
        };
        machine.Validate();
        return new VmmOptions { Machine = machine, ConsoleToStdout = toStdout, ConsoleLogPath = consoleLog, Debug = debug, Quiet = quiet };
    }

    private static ulong WholeNumber(string option, string text, ulong max) =>
        ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value) && value <= max
            ? value
            : throw new ArgumentException($"{option} must be a whole number, not '{text}'.");

    /// <summary>"NAME=PATH" or "NAME=PATH,ro" (a path may itself contain commas; only a trailing ",ro" or ",rw" is an option).</summary>
    public static P9ExportSpec ParseExport(string text)
    {
        int eq = text.IndexOf('=');
        if (eq <= 0 || eq == text.Length - 1) throw new ArgumentException($"--9p-export must be NAME=PATH[,ro], not '{text}'.");
        string name = text[..eq], path = text[(eq + 1)..];
        bool readOnly = false;
        if (path.EndsWith(",ro", StringComparison.Ordinal)) { readOnly = true; path = path[..^3]; }
        else if (path.EndsWith(",rw", StringComparison.Ordinal)) path = path[..^3];
        return new P9ExportSpec(name, path, readOnly);
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
}
