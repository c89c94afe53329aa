using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Vmm.Cli;

/// <summary>The command line of `rkt-kvm-vmm` as the VMM uses it: the usage text, and the parsed
/// <see cref="VmmCommandLine"/> mapped onto a validated <see cref="MachineConfig"/>. Every problem is an
/// <see cref="ArgumentException"/> with a one-line message.</summary>
public sealed record VmmOptions
{
    public const string Usage = """
        Usage: rkt-kvm-vmm --kernel PATH [options]
        Boots one Linux microVM on /dev/kvm and exits with its status:
          0 guest reset or powered off, or stopped (control socket, SIGTERM), 1 VMM error, 2 guest kernel panic, 3 guest crash,
          4 its owner (--owner-pid, --owner-pidfd) exited.

          --kernel PATH        ELF vmlinux (preferred) or bzImage
          --initrd PATH        initramfs / initrd image
          --cmdline TEXT       extra kernel command line, appended after the VMM's own options
          --memory SIZE        guest RAM in MiB, or with a unit: 512M, 2G (default 128)
          --cpus N             vCPUs, 1-8 (default 1)
          --console TARGET     stdout (default) or none
          --console-log PATH   also write the guest console to PATH
          --pvm auto|on|off    PVM host guest options (default auto: detect kvm_pvm)
          --seccomp kill|log|off
                               what the system call filter installed after set-up does to a
                               call outside it: kill the VMM (default), log it (the kernel log
                               names it), or no filter at all (off: for debugging only)
          --jail on|off        once set up, run in the VMM's own mount, UTS, IPC and network
                               namespaces with an empty read-only root (only the socket
                               directories in it) and no capabilities on the vCPU and device
                               threads (default on; off: for debugging only). A PID namespace
                               must come from the VMM's starter (stage1 gives it one): a
                               process cannot enter one itself
          --user UID:GID       once set up (before the first vCPU runs), become this unprivileged
                               user and group, with no supplementary groups: only the 9p
                               workers keep file passthrough's capabilities (default: stay root)
          --test-fault vcpu-forbidden-syscall|vcpu-thread-filter
                               for tests of the confinement only: a vCPU thread makes a system
                               call the process's filter forbids (AF_INET socket), or one only
                               the vCPU threads' own filter forbids (AF_UNIX socket), once locked
                               down (the VMM dies by SIGSYS)
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
          --net tap=NAME[,netns=PATH][,mac=MAC][,mtu=N]
          --net fd=N[,mac=MAC][,mtu=N]
                               a virtio-net NIC on the tap NAME (opened, or created, inside the
                               network namespace file PATH when given) or on an inherited tap fd
                               (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR); MAC default: random 02:xx:..;
                               mtu: told to the guest; repeatable (eth0, eth1, ...; at most 4)
          --control PATH       VMM control socket (newline-delimited JSON, docs/CONTROL.md):
                               add-export, remove-export, list-exports, status, snapshot, stop;
                               the 9p device is present with --control or any --9p-export
          --owner-pid PID      end the VM when process PID (the VMM's parent) exits, however
                               it exits: the VM never outlives the process that owns it
          --owner-pidfd FD     the same, for the process that the inherited pidfd FD refers
                               to (a VMM in its own PID namespace cannot name its owner)
          --restore FILE       continue from a snapshot (the control socket's snapshot op)
                               instead of booting; the other options must describe the VM it
                               was taken from (same kernel, initrd, memory, vCPUs, devices);
                               its RAM is mapped copy-on-write, shared with every VM restored
                               from FILE; 9p exports and taps are this VM's own
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

    /// <summary>Parses with <see cref="VmmCommandLine.Parse"/>, the same code that builds a VMM's argv, then checks the machine against the VMM's limits.</summary>
    public static VmmOptions Parse(IReadOnlyList<string> args)
    {
        var line = VmmCommandLine.Parse(args);
        if (line.Help) return new VmmOptions { Machine = new MachineConfig { KernelPath = "" }, ShowHelp = true };
        var machine = new MachineConfig
        {
            KernelPath = line.Kernel,
            InitrdPath = line.Initrd,
            ExtraCmdline = line.Cmdline,
            MemoryMiB = line.MemoryMiB,
            Cpus = line.Cpus,
            Pvm = line.Pvm,
            LockDown = line.Seccomp,
            Jail = line.Jail,
            TestFault = line.TestFault,
            User = line.User,
            KvmDevicePath = line.KvmDevice ?? Kvm.KvmSystem.DefaultDevicePath,
            VsockSocketPath = line.Vsock,
            GuestCid = line.VsockCid,
            UseIoeventfd = line.KvmEventFds is KvmEventFds.On or KvmEventFds.Ioeventfd,
            UseIrqfd = line.KvmEventFds is KvmEventFds.On or KvmEventFds.Irqfd,
            ControlSocketPath = line.Control,
            P9Exports = line.Exports,
            NetDevices = line.Net,
            OwnerPid = line.OwnerPid,
            OwnerPidfd = line.OwnerPidfd,
            RestorePath = line.Restore,
        };
        machine.Validate();
        return new VmmOptions
        {
            Machine = machine,
            ConsoleToStdout = line.Console == VmmConsole.Stdout,
            ConsoleLogPath = line.ConsoleLog,
            Debug = line.Debug,
            Quiet = line.Quiet,
        };
    }

    /// <summary>"512", "512M", "512MiB", "2G", "2GiB" → MiB.</summary>
    public static ulong ParseMemory(string text) => VmmCommandLine.ParseMemory(text);
}
