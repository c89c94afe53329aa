using Microsoft.Win32.SafeHandles;
using System.Diagnostics;
using Rkt.Kvm.Vmm.Boot;
using Rkt.Kvm.Vmm.Client;
using Rkt.Kvm.Vmm.Control;
using Rkt.Kvm.Vmm.Devices;
using Rkt.Kvm.Vmm.Devices.BootTimer;
using Rkt.Kvm.Vmm.Devices.CmosRtc;
using Rkt.Kvm.Vmm.Devices.I8042;
using Rkt.Kvm.Vmm.Devices.Serial8250;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Virtio9p;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Vmm.Devices.VirtioNet;
using Rkt.Kvm.Vmm.Devices.VirtioRng;
using Rkt.Kvm.Vmm.Devices.Vsock;
using Rkt.Kvm.Vmm.Host;
using Rkt.Kvm.Vmm.GuestConsole;
using Rkt.Kvm.Vmm.Kvm;
using Rkt.Kvm.Vmm.Memory;
using Rkt.Kvm.Vmm.Snapshot;
using Serilog;

namespace Rkt.Kvm.Vmm;

/// <summary>
/// One microVM: KVM VM with in-kernel irqchip and PIT, guest RAM, the loaded kernel and initrd,
/// legacy devices (8250 UART, i8042 reset, CMOS clock, boot timer) and one thread per vCPU.
/// <see cref="Create"/> does all validation and loading; <see cref="Run"/> boots and blocks until the VM ends.
/// </summary>
public sealed class Machine : IDisposable
{
    /// <summary>Options every guest gets: console on the UART, reset through the i8042, a panic ends the VM at once.</summary>
    public const string BaseCmdline = "console=ttyS0 reboot=k panic=-1 8250.nr_uarts=1 io_delay=none";

    /// <summary>virtio-mmio device slots: one 4 KiB window each from 0xc0001000, IRQs from 5 (free ISA lines).</summary>
    public const int FirstVirtioIrq = 5;
    public const int RngSlot = 0;
    public const int VsockSlot = 1;
    /// <summary>virtio-9p: 0xc0003000, IRQ 7 (mount tag "rkt").</summary>
    public const int P9Slot = 2;
    /// <summary>virtio-net, one slot per NIC: 0xc0004000-0xc0007000, IRQs 9-12.</summary>
    public const int FirstNetSlot = 3;
    /// <summary>The ISA line of the CMOS RTC: no virtio device takes it, so a guest RTC driver can.</summary>
    public const int RtcIrq = 8;

    public static int NetSlot(int nic) => FirstNetSlot + nic;

    /// <summary>Slot n: window n from 0xc0001000; IRQ 5 + n, skipping <see cref="RtcIrq"/> (serial is 4, the PIT 0, the cascade 2).</summary>
    public static (ulong Address, int Irq) VirtioSlot(int slot)
    {
        int irq = FirstVirtioIrq + slot;
        if (irq >= RtcIrq) irq++;
        return (MemoryLayout.VirtioMmioStart + (ulong)slot * MmioTransport.WindowSize, irq);
    }

    /// <summary>How the guest learns about a virtio-mmio device without ACPI or device tree.</summary>
    public static string VirtioCmdline(int slot)
    {
        var (address, irq) = VirtioSlot(slot);
        return $"virtio_mmio.device=4K@0x{address:x}:{irq}";
    }

    private readonly KvmSystem _kvm;
    private readonly KvmVm _vm;
    private readonly GuestMemory _memory;
    private readonly List<KvmVcpu> _vcpus = [];
    private readonly Bus _portBus = new();
    private readonly Bus _mmioBus = new();
    private readonly PanicDetector _panicDetector = new();
    private readonly ILogger _log;
    private readonly Stopwatch _sinceStart;
    private readonly ManualResetEventSlim _exited = new();
    private readonly EventLoop _deviceLoop;
    private readonly List<IDisposable> _deviceResources = [];
    private VsockDevice? _vsock;
    private Virtio9pDevice? _p9;
    private readonly List<VirtioNetDevice> _nics = [];
    /// <summary>Opened, not yet handed to their device (which then owns them).</summary>
    private readonly List<TapDevice?> _taps = [];
    private GuestConsoleOutput? _console;
    private Serial8250? _serial;
    /// <summary>Every virtio transport by slot (what a snapshot saves and a restore puts back).</summary>
    private readonly SortedDictionary<int, MmioTransport> _transports = [];
    private MachineConfig? _config;
    /// <summary>Open while the control socket (the only way to ask for a snapshot) is.</summary>
    private SnapshotInputs? _snapshotInputs;
    private List<VcpuRunner>? _runners;
    private readonly object _snapshotLock = new();
    private VmExitResult? _result;

    public string Cmdline { get; private set; } = "";

    private Machine(KvmSystem kvm, KvmVm vm, GuestMemory memory, ILogger log, Stopwatch sinceStart)
    {
        _kvm = kvm;
        _vm = vm;
        _memory = memory;
        _log = log;
        _sinceStart = sinceStart;
        _deviceLoop = new EventLoop(log);
    }

    /// <summary>How virtio notifies and interrupts travel: "ioeventfd+irqfd" or the exit-based fallback.</summary>
    public string VirtioSignalling { get; private set; } = "none";

    /// <summary>
    /// Builds the VM. <paramref name="consoleTargets"/> is called only once all input has been
    /// validated and loaded, so a failed start leaves no console file behind.
    /// </summary>
    public static Machine Create(MachineConfig config, Func<IReadOnlyList<Stream>> consoleTargets, ILogger log, Stopwatch? sinceStart = null)
    {
        config.Validate();
        if (!File.Exists(config.KernelPath)) throw new BootException($"Kernel {config.KernelPath} does not exist.");
        if (config.InitrdPath is { } initrd && !File.Exists(initrd)) throw new BootException($"Initrd {initrd} does not exist.");

        var kvm = KvmSystem.Open(config.KvmDevicePath);
        KvmVm? vm = null;
        GuestMemory? memory = null;
        Machine? machine = null;
        try
        {
            int hostMax = kvm.MaxVcpus;
            if (config.Cpus > hostMax) throw new ArgumentException($"--cpus {config.Cpus} exceeds the {hostMax} vCPUs this host's KVM supports.");
            vm = kvm.CreateVm();
            vm.SetTssAddress(MemoryLayout.KvmTssAddress);
            vm.CreateIrqchip();
            vm.CreatePit();
            if (config.RestorePath is { } snapshotPath)
            {
                var (header, state, file) = SnapshotFile.Open(snapshotPath);
                using (file)
                {
                    SnapshotCompatibility.Check(snapshotPath, header, config);
                    if (state.Vcpus.Count != config.Cpus) throw new SnapshotException($"The snapshot {snapshotPath} holds {state.Vcpus.Count} vCPUs' state for a VM of {config.Cpus}.");
                    memory = GuestMemory.MapFile(file, header.Regions.Select(r => (r.GuestAddress, r.Size, r.FileOffset)));
                }
                RegisterMemorySlotsAsync(vm, memory).GetAwaiter().GetResult();
                machine = new Machine(kvm, vm, memory, log, sinceStart ?? Stopwatch.StartNew()) { _config = config, Cmdline = header.Cmdline };
                machine.CreateVcpus(config.Cpus, state.Vcpus);
                // After the vCPUs (setting the clock updates each one's kvm-clock page), before the
                // devices: an interrupt a device raises on restore must meet the guest's IOAPIC
                // routing, not the reset state that masks every pin (the edge would be lost).
                state.Vm.Apply(vm);
                machine.OpenTaps(config.NetDevices);
                machine.AttachDevices(config, consoleTargets());
                machine.RestoreDevices(state);
                return machine;
            }
            memory = GuestMemory.Allocate(MemoryLayout.RamRanges(config.MemoryMiB << 20));
            // Registering RAM with KVM takes milliseconds on this host; do it while the kernel is read in.
            var slots = RegisterMemorySlotsAsync(vm, memory);
            machine = new Machine(kvm, vm, memory, log, sinceStart ?? Stopwatch.StartNew()) { _config = config };
            try
            {
                machine.LoadGuest(config);
            }
            finally
            {
                slots.GetAwaiter().GetResult();
            }
            machine.CreateVcpus(config.Cpus);
            // Taps before the console: a tap that cannot be opened leaves no console file behind.
            machine.OpenTaps(config.NetDevices);
            machine.AttachDevices(config, consoleTargets());
            return machine;
        }
        catch
        {
            if (machine is not null) machine.Dispose();
            else
            {
                memory?.Dispose();
                vm?.Dispose();
                kvm.Dispose();
            }
            throw;
        }
    }

    /// <summary>Our options and virtio devices, then the PVM host's (only on such a host), then the user's, which may override ours.</summary>
    public static KernelCommandLine GuestCmdline(bool pvmHost, string? extra, bool vsock = false, bool p9 = false, int nics = 0)
    {
        var cmdline = new KernelCommandLine().Add(BaseCmdline).Add(VirtioCmdline(RngSlot));
        if (vsock) cmdline.Add(VirtioCmdline(VsockSlot));
        if (p9) cmdline.Add(VirtioCmdline(P9Slot));
        // In NIC order: the guest names them eth0, eth1, ... in the order it probes them.
        for (int i = 0; i < nics; i++) cmdline.Add(VirtioCmdline(NetSlot(i)));
        if (pvmHost) cmdline.Add(HostPlatform.PvmGuestOptions);
        return cmdline.Add(extra);
    }

    private static Task RegisterMemorySlotsAsync(KvmVm vm, GuestMemory memory) => Task.Run(() =>
    {
        for (int i = 0; i < memory.Regions.Count; i++)
        {
            var r = memory.Regions[i];
            vm.SetUserMemoryRegion((uint)i, r.GuestAddress, r.Size, r.HostAddress);
        }
    });

    private void LoadGuest(MachineConfig config)
    {
        var kernel = KernelLoader.Load(config.KernelPath, _memory);
        (ulong Address, ulong Size) initrd = config.InitrdPath is { } path ? InitrdLoader.Load(path, kernel, _memory) : (0, 0);

        bool pvm = config.Pvm switch { PvmMode.On => true, PvmMode.Off => false, _ => HostPlatform.IsPvmHost() };
        var cmdline = GuestCmdline(pvm, config.ExtraCmdline, vsock: config.VsockSocketPath is not null, p9: config.HasP9, nics: config.NetDevices.Count);
        byte[] cmdlineBytes = cmdline.ToBytes(kernel.CmdlineMax);
        Cmdline = cmdline.ToString();
        _memory.Write(MemoryLayout.CmdlineStart, cmdlineBytes);

        _memory.Write(MemoryLayout.SetupDataStart, SetupData.RngSeedNode());
        var zeroPage = ZeroPage.Build(new ZeroPageParameters
        {
            SetupHeader = kernel.SetupHeader,
            CmdlineAddress = MemoryLayout.CmdlineStart,
            CmdlineSize = (uint)(cmdlineBytes.Length - 1),
            InitrdAddress = initrd.Address,
            InitrdSize = initrd.Size,
            E820 = E820Map.For(_memory),
            SetupData = MemoryLayout.SetupDataStart,
        });
        _memory.Write(MemoryLayout.ZeroPageStart, zeroPage);
        _memory.Write(MemoryLayout.EbdaStart, MpTable.Build(config.Cpus));
        Gdt.Write(_memory);
        PageTables.Write(_memory);
        _log.Debug("Loaded {Format} kernel: entry 0x{Entry:X}, end 0x{End:X}; initrd at 0x{InitrdAddress:X} ({InitrdSize} bytes); PVM host options {Pvm}; cmdline \"{Cmdline}\"",
            kernel.Format, kernel.Entry, kernel.End, initrd.Address, initrd.Size, pvm, Cmdline);
        _bootEntry = kernel.Entry;
    }

    private ulong _bootEntry;

    /// <summary>Creates the vCPUs with their CPUID; a cold boot gets the boot state, a restore the snapshot's.</summary>
    private void CreateVcpus(int count, IReadOnlyList<KvmVcpuState>? restored = null)
    {
        var supportedCpuid = _kvm.GetSupportedCpuid();
        for (int id = 0; id < count; id++)
        {
            var vcpu = _vm.CreateVcpu(id);
            _vcpus.Add(vcpu);
            vcpu.SetCpuid(CpuSetup.CpuidFor(supportedCpuid, id, count));
            if (restored is not null)
            {
                restored[id].Apply(vcpu);
                continue;
            }
            var msrs = CpuSetup.BootMsrs();
            int accepted = vcpu.SetMsrs(msrs);
            if (accepted != msrs.Length)
                _log.Debug("vCPU {Vcpu}: KVM accepted {Accepted} of {Count} boot MSRs (first refused: 0x{Msr:X})", id, accepted, msrs.Length, msrs[accepted].Index);
            vcpu.SetFpu(CpuSetup.BootFpu());
            var lapic = vcpu.GetLapic();
            CpuSetup.WireLocalInterrupts(ref lapic);
            vcpu.SetLapic(lapic);
            if (id == 0)
            {
                // Only the boot CPU starts in long mode; the others wait for INIT/SIPI from the guest.
                vcpu.SetSregs(CpuSetup.LongModeSregs(vcpu.GetSregs()));
                vcpu.SetRegs(CpuSetup.BootRegs(_bootEntry));
            }
        }
    }

    private void AttachDevices(MachineConfig config, IReadOnlyList<Stream> consoleTargets)
    {
        _console = new GuestConsoleOutput(consoleTargets, _panicDetector.OnLine);
        var serialIrq = new KvmInterruptLine(_vm, Serial8250.Com1Irq);
        _serial = new Serial8250(_console, serialIrq);
        _portBus.Register(Serial8250.Com1Port, Serial8250.RegisterCount, _serial);
        // 0x61 (between the i8042's two ports) is KVM's PIT speaker port, so the controller is registered twice.
        var i8042 = new I8042(OnGuestReset);
        _portBus.Register(I8042.DataPort, 1, i8042);
        _portBus.Register(I8042.CommandPort, 1, new OffsetDevice(i8042, I8042.CommandPort - I8042.DataPort));
        _portBus.Register(CmosRtc.IndexPort, CmosRtc.PortSpan, new CmosRtc());
        _mmioBus.Register(MemoryLayout.BootTimerAddress, BootTimer.Size, new BootTimer(OnBootMarker));

        var signalling = (Ioeventfd: config.UseIoeventfd && _kvm.SupportsIoeventfd, Irqfd: config.UseIrqfd && _kvm.SupportsIrqfd);
        VirtioSignalling = $"notifies by {(signalling.Ioeventfd ? "ioeventfd" : "MMIO exit")}, interrupts by {(signalling.Irqfd ? "irqfd" : "KVM_IRQ_LINE")}";
        AttachVirtio(RngSlot, new VirtioRng(_memory, _log), signalling);
        if (config.VsockSocketPath is { } vsockPath)
        {
            _vsock = new VsockDevice(_memory, config.GuestCid, vsockPath, _deviceLoop, _log);
            _deviceResources.Add(_vsock);
            AttachVirtio(VsockSlot, _vsock, signalling);
        }
        if (config.HasP9)
        {
            var server = new P9Server(_log);
            bool keepThroughDrop = config.User is not null;
            _p9 = new Virtio9pDevice(_memory, server, _deviceLoop, _log, onWorkerStart: config.Jail || keepThroughDrop
                ? () =>
                {
                    // With --user the worker must still be able to take part in the drop (glibc has
                    // every thread change its ids, and aborts if one cannot): it keeps SETUID and
                    // SETGID until Run lowers it to file passthrough's after the drop.
                    if (keepThroughDrop) Host.Confinement.UserDrop.KeepCapabilitiesThroughTheDrop();
                    Host.Confinement.ThreadCapabilities.KeepOnlyOnThisThread(keepThroughDrop
                        ? Host.Confinement.ThreadCapabilities.FilePassthrough | Host.Confinement.ThreadCapabilities.ChangeIds
                        : Host.Confinement.ThreadCapabilities.FilePassthrough);
                }
                : null);
            _deviceResources.Add(_p9);
            foreach (var e in config.P9Exports) server.AddExport(e.Name, e.Path, e.ReadOnly);
            AttachVirtio(P9Slot, _p9, signalling);
        }
        for (int i = 0; i < config.NetDevices.Count; i++) AttachNic(i, config.NetDevices[i], signalling);
        if (config.OwnerPid is { } owner)
        {
            var gone = new VmExitResult(VmExitStatus.OwnerGone, $"its owner, process {owner}, exited; the VM goes with it");
            if (OwnerWatch.Start(owner, _deviceLoop, () => RequestExit(gone)) is { } watch) _deviceResources.Add(watch);
            else RequestExit(gone);
        }
        _deviceResources.Add(new StopSignals(reason => RequestExit(new VmExitResult(VmExitStatus.GuestShutdown, reason)), _log));
        if (config.OwnerPidfd is { } ownerFd)
        {
            var gone = new VmExitResult(VmExitStatus.OwnerGone, "its owner (--owner-pidfd) exited; the VM goes with it");
            _deviceResources.Add(OwnerWatch.Adopt(ownerFd, _deviceLoop, () => RequestExit(gone)));
        }
        if (config.ControlSocketPath is { } controlPath)
        {
            var inputs = new SnapshotInputs(config.KernelPath, config.InitrdPath);
            _deviceResources.Add(inputs);
            _snapshotInputs = inputs;
            var commands = new ControlCommands(_p9?.Server, _sinceStart,
                () => RequestExit(new VmExitResult(VmExitStatus.GuestShutdown, "stopped through the control socket")), Snapshot);
            // Disposed before the 9p device (resources go in order): no control request runs against a closed server.
            _deviceResources.Insert(0, new ControlSocket(controlPath, _deviceLoop, commands, _log));
        }
    }

    private void OpenTaps(IReadOnlyList<NetDeviceSpec> nics)
    {
        for (int i = 0; i < nics.Count; i++)
        {
            var spec = nics[i];
            // In the jail this process has an empty network namespace: a tap named without netns= is the host's, as without it.
            _taps.Add(spec.Tap is { } name ? TapDevice.Open(name, spec.Netns ?? Host.Confinement.VmmJail.HostNetworkNamespace)
                : spec.Fd is { } fd ? TapDevice.Adopt(fd)
                : TapDevice.OpenIsolated($"tap{i}"));
        }
    }

    private void AttachNic(int index, NetDeviceSpec spec, (bool Ioeventfd, bool Irqfd) signalling)
    {
        var tap = _taps[index]!;
        byte[] mac = spec.Mac is { } text ? NetDeviceSpec.ParseMac(text)! : VirtioNetDevice.RandomMac();
        var nic = new VirtioNetDevice(_memory, tap, mac, spec.Mtu, _deviceLoop, _log);
        _taps[index] = null;
        _deviceResources.Add(nic);
        _nics.Add(nic);
        AttachVirtio(NetSlot(index), nic, signalling);
        _log.Debug("NIC {Index}: virtio-net on tap {Tap}{Netns}, MAC {Mac}", index, tap.Name, spec.Netns is null ? "" : $" in {spec.Netns}", NetDeviceSpec.FormatMac(nic.Mac));
    }

    /// <summary>
    /// Puts a virtio device behind an MMIO window. With KVM's eventfds, queue notifies never exit
    /// to a vCPU thread (ioeventfd wakes the device thread directly) and interrupts need no ioctl
    /// (irqfd); without them, the transport forwards notifies itself and drives the IRQ line.
    /// </summary>
    private void AttachVirtio(int slot, IVirtioDevice device, (bool Ioeventfd, bool Irqfd) signalling)
    {
        var (address, irq) = VirtioSlot(slot);
        IInterruptLine line = new KvmInterruptLine(_vm, irq);
        if (signalling.Irqfd)
        {
            var irqEvent = new EventFd();
            _deviceResources.Add(irqEvent);
            _vm.AssignIrqfd(irqEvent, (uint)irq);
            line = new IrqfdInterruptLine(irqEvent);
        }
        var transport = new MmioTransport(device, _memory, line, _deviceLoop, _log);
        _transports.Add(slot, transport);
        _mmioBus.Register(address, MmioTransport.WindowSize, transport);
        if (!signalling.Ioeventfd) return;
        for (int queue = 0; queue < transport.QueueCount; queue++)
        {
            var notify = new EventFd();
            _deviceResources.Add(notify);
            _vm.AssignIoeventfd(notify, address + MmioTransport.QueueNotifyOffset, (uint)queue);
            int q = queue;
            _deviceLoop.Add(notify.Handle, Tmds.Linux.LibC.EPOLLIN, _ =>
            {
                notify.Drain();
                transport.ProcessNotify(q);
            });
        }
    }

    /// <summary>Boots the VM and blocks until it ends. Runs once.</summary>
    public VmExitResult Run()
    {
        VcpuKick.Install();
        var runners = _runners = _vcpus.Select(v => new VcpuRunner(v, _portBus, _mmioBus, RequestExit, () => _exited.IsSet, _log)
        {
            BeforeFirstEntry = v.Id == 0 ? () => _log.Debug("First vCPU entry {SinceStartMs:F1} ms after VMM start (unix {UnixMicros} µs)",
                _sinceStart.Elapsed.TotalMilliseconds, (DateTime.UtcNow - DateTime.UnixEpoch).Ticks / 10) : null,
        }).ToList();
        _deviceLoop.Start();
        _log.Debug("virtio signalling: {Signalling}", VirtioSignalling);
        if (_config?.Jail == true)
        {
            // Everything is open: leave the host's filesystem, and take the capabilities of the
            // threads that parse guest input (the 9p workers keep theirs; ThreadCapabilities).
            Host.Confinement.LockDown.LoadLazyLibraries();
            Host.Confinement.VmmJail.PivotToEmptyRoot(new[] { _config.VsockSocketPath, _config.ControlSocketPath }
                .OfType<string>().Select(p => Path.GetDirectoryName(Path.GetFullPath(p))!));
        }
        if (_config?.User is { } user)
        {
            // After the pivot (it needs CAP_SYS_ADMIN), before any thread lowers its capabilities
            // for good (every thread takes part in the drop), and before the filter (which forbids set*id).
            Host.Confinement.UserDrop.Become(user);
            _p9?.RunOnEveryWorker(() => Host.Confinement.ThreadCapabilities.KeepOnlyOnThisThread(Host.Confinement.ThreadCapabilities.FilePassthrough));
            _log.Debug("now uid {Uid} gid {Gid}, no supplementary groups; only the 9p workers keep capabilities", user.Uid, user.Gid);
        }
        if (_config?.Jail == true)
        {
            _deviceLoop.Invoke(Host.Confinement.ThreadCapabilities.DropAllOnThisThread);
            _log.Debug("jailed: own mount, UTS, IPC and network namespaces, empty root, no capabilities on vCPU and device threads");
        }
        if (_config?.LockDown is { } action)
        {
            // Everything is open and every host thread but the vCPUs' runs: from here on the guest
            // drives the VMM, so the filter goes on now, on all threads at once (TSYNC).
            Host.Confinement.LockDown.Apply(action);
            // Then each thread that handles guest input narrows its own calls (vCPU threads do as they start).
            _deviceLoop.Invoke(() => Host.Confinement.LockDown.ApplyToThisThread(Host.Confinement.VmmThreadClass.Devices, action));
            _p9?.RunOnEveryWorker(() => Host.Confinement.LockDown.ApplyToThisThread(Host.Confinement.VmmThreadClass.NinePWorker, action));
            _log.Debug("locked down: seccomp {Action} (and a filter per thread class), no_new_privs, not dumpable, no core dumps", action);
            if (action == SeccompAction.Off) _log.Warning("--seccomp=off: the VMM runs without its system call filter (for debugging only)");
        }
        // This thread only waits for the VM's end from here on.
        if (_config?.Jail == true) Host.Confinement.ThreadCapabilities.DropAllOnThisThread();
        foreach (var runner in runners)
        {
            bool dropCapabilities = _config?.Jail == true;
            var lockDown = _config?.LockDown;
            var testFault = runner == runners[0] ? _config?.TestFault ?? VmmTestFault.None : VmmTestFault.None;
            var thread = new Thread(() =>
            {
                if (dropCapabilities) Host.Confinement.ThreadCapabilities.DropAllOnThisThread();
                if (lockDown is { } action) Host.Confinement.LockDown.ApplyToThisThread(Host.Confinement.VmmThreadClass.Vcpu, action);
                if (testFault != VmmTestFault.None) Host.Confinement.LockDown.MakeForbiddenCall(testFault, _log);
                runner.Run();
            }) { IsBackground = true, Name = "vcpu" };
            thread.Start();
        }
        // Wake up periodically to push out console text that has no newline yet (prompts).
        while (!_exited.Wait(100)) _console!.Flush();
        _console!.Flush();
        // The guest is gone: close its host endpoints now (vsock sockets and their files), since
        // the process may exit without disposing us while vCPU threads still sit in KVM_RUN.
        ReleaseDevices();
        var exits = Enumerable.Range(0, runners[0].ExitCounts.Length).Select(i => (Reason: (KvmExitReason)i, Count: runners.Sum(r => r.ExitCounts[i]))).Where(e => e.Count > 0);
        _log.Debug("VM ended after {Ms:F0} ms; exits to the VMM: {Exits}; emulated int3 {Int3} and fwait {Fwait} times; {Unclaimed} unclaimed port accesses",
            _sinceStart.Elapsed.TotalMilliseconds, string.Join(", ", exits.Select(e => $"{e.Reason} {e.Count}")),
            runners.Sum(r => r.Int3Emulations), runners.Sum(r => r.FwaitEmulations), _portBus.UnclaimedAccesses);
        foreach (var nic in _nics)
            _log.Debug("NIC {Tap}: rx {RxPackets} packets ({RxDropped} dropped), tx {TxPackets} packets ({TxDropped} dropped), {Malformed} malformed chains",
                nic.TapName, nic.RxPackets, nic.RxDropped, nic.TxPackets, nic.TxDropped, nic.MalformedChains);
        return _result!;
    }

    /// <summary>Puts the UART and every virtio transport back where the snapshot left them (before any vCPU runs).</summary>
    private void RestoreDevices(MachineState state)
    {
        _serial!.RestoreState(state.Serial);
        var missing = state.Transports.Keys.Except(_transports.Keys).Concat(_transports.Keys.Except(state.Transports.Keys)).ToList();
        if (missing.Count > 0) throw new SnapshotException($"The snapshot's virtio devices (slots {string.Join(",", state.Transports.Keys)}) are not this VM's (slots {string.Join(",", _transports.Keys)}).");
        foreach (var (slot, transport) in _transports)
        {
            try { transport.RestoreState(state.Transports[slot]); }
            catch (InvalidDataException e) { throw new SnapshotException($"The snapshot's virtio slot {slot} cannot be restored: {e.Message}"); }
        }
    }

    /// <summary>
    /// Writes a snapshot of the running VM to <paramref name="path"/> and lets it continue: every
    /// vCPU is paused at a clean point, the devices are asked on their thread whether they can be
    /// saved (nothing in flight), then KVM's state, the devices' and RAM go to one file.
    /// Runs on the device thread (the control socket's), so device state cannot change under it.
    /// </summary>
    public SnapshotHeader Snapshot(string path) => Snapshot(path, into: null);

    /// <summary>The same, written into <paramref name="into"/> (an empty file the control socket's client passed) when given; <paramref name="path"/> then only names it.</summary>
    public SnapshotHeader Snapshot(string path, SafeFileHandle? into)
    {
        var runners = _runners ?? throw new SnapshotException("The VM is not running yet.");
        var clock = Stopwatch.StartNew();
        lock (_snapshotLock)
        {
            foreach (var r in runners) r.RequestPause();
            try
            {
                foreach (var r in runners)
                    if (!r.WaitPaused(TimeSpan.FromSeconds(5))) throw new SnapshotException($"vCPU {r.Vcpu.Id} did not pause within 5 s.");
                if (_exited.IsSet) throw new SnapshotException("The VM ended.");
                double pausedMs = clock.Elapsed.TotalMilliseconds;
                List<KvmVcpuState> vcpus;
                KvmVmState vm;
                try
                {
                    var caps = KvmVcpuState.Capabilities.Probe(_kvm);
                    vcpus = runners.Select(r => KvmVcpuState.Capture(r.Vcpu, caps)).ToList();
                    vm = KvmVmState.Capture(_vm);
                }
                catch (KvmException e)
                {
                    throw new SnapshotException($"KVM did not give the VM's state: {e.Message}", e);
                }
                MachineState? state = null;
                string? blocker = null;
                _deviceLoop.Invoke(() =>
                {
                    blocker = _transports.Select(t => t.Value.SnapshotBlocker is { } why ? $"virtio slot {t.Key}: {why}" : null).FirstOrDefault(b => b is not null);
                    if (blocker is null) state = new MachineState(vcpus, vm, _serial!.SaveState(), _transports.ToDictionary(t => t.Key, t => t.Value.SaveState()));
                });
                if (blocker is not null) throw new SnapshotException($"The VM cannot be snapshotted now: {blocker}.");
                var config = _config!;
                var header = new SnapshotHeader
                {
                    FormatVersion = SnapshotFile.FormatVersion,
                    VmmBuild = _snapshotInputs?.VmmBuild ?? SnapshotFile.VmmBuild(),
                    CreatedUtc = DateTime.UtcNow,
                    Kernel = _snapshotInputs?.Kernel ?? SnapshotFile.Describe(config.KernelPath),
                    Initrd = _snapshotInputs is { } inputs ? inputs.Initrd : config.InitrdPath is { } initrd ? SnapshotFile.Describe(initrd) : null,
                    MemoryMiB = config.MemoryMiB,
                    Cpus = config.Cpus,
                    Cmdline = Cmdline,
                    Vsock = config.VsockSocketPath is not null,
                    GuestCid = config.GuestCid,
                    P9 = config.HasP9,
                    Nics = config.NetDevices.Count,
                    StateLength = 0,
                    Regions = [],
                    MemoryBytesWritten = 0,
                };
                header = into is null ? SnapshotFile.Write(path, header, state!, _memory) : SnapshotFile.WriteInto(into, header, state!, _memory);
                _log.Information("Snapshot {Path}: {Written} MiB of {Memory} MiB RAM, {Msrs} MSRs per vCPU; paused {PausedMs:F0} ms, written in {TotalMs:F0} ms",
                    path, header.MemoryBytesWritten >> 20, config.MemoryMiB, vcpus[0].Msrs.Length, pausedMs, clock.Elapsed.TotalMilliseconds);
                return header;
            }
            finally
            {
                foreach (var r in runners) r.Resume();
            }
        }
    }

    private void RequestExit(VmExitResult result)
    {
        lock (_exited)
        {
            if (_exited.IsSet) return;
            _result = result;
            _exited.Set();
        }
    }

    private void OnGuestReset()
    {
        _console?.Flush();
        RequestExit(_panicDetector.PanicLine is { } panic
            ? new VmExitResult(VmExitStatus.GuestPanic, panic)
            : new VmExitResult(VmExitStatus.GuestShutdown, "the guest reset the machine"));
    }

    private void OnBootMarker()
    {
        _log.Information("Boot timer: guest reached init {WallMs:F0} ms after VMM start ({CpuMs:F0} ms VMM CPU)",
            _sinceStart.Elapsed.TotalMilliseconds, Environment.CpuUsage.TotalTime.TotalMilliseconds);
    }

    /// <summary>Stops the device thread first (nothing may touch guest memory or device fds after that), then closes device resources.</summary>
    private void ReleaseDevices()
    {
        _deviceLoop.Stop();
        foreach (var r in _deviceResources) r.Dispose();
        _deviceResources.Clear();
    }

    public void Dispose()
    {
        ReleaseDevices();
        foreach (var tap in _taps) tap?.Dispose();
        _deviceLoop.Dispose();
        foreach (var v in _vcpus) v.Dispose();
        _console?.Dispose();
        _memory.Dispose();
        _vm.Dispose();
        _kvm.Dispose();
    }

    /// <summary>Routes a device's interrupt level to a GSI of the in-kernel PIC/IOAPIC.</summary>
    private sealed class KvmInterruptLine(KvmVm vm, int gsi) : IInterruptLine
    {
        public void SetLevel(bool asserted) => vm.SetIrqLine((uint)gsi, asserted);
    }

    /// <summary>
    /// An interrupt injected through irqfd: KVM pulses the GSI when the eventfd is signalled, so
    /// only the rising edge matters (the virtio-mmio interrupt is edge-triggered on the ISA IRQs
    /// it uses; the guest reads and acknowledges InterruptStatus, which the transport tracks).
    /// </summary>
    private sealed class IrqfdInterruptLine(EventFd eventFd) : IInterruptLine
    {
        public void SetLevel(bool asserted)
        {
            if (asserted) eventFd.Signal();
        }
    }

    /// <summary>Presents a device at a second, non-contiguous address with its offsets shifted.</summary>
    private sealed class OffsetDevice(IBusDevice inner, ulong offset) : IBusDevice
    {
        public void Read(ulong o, Span<byte> data) => inner.Read(o + offset, data);
        public void Write(ulong o, ReadOnlySpan<byte> data) => inner.Write(o + offset, data);
    }
}
