using Rkt.Kvm.Vmm.Devices;
using Rkt.Kvm.Vmm.Kvm;
using Serilog;

namespace Rkt.Kvm.Vmm;

/// <summary>
/// The exit loop of one vCPU thread: enter the guest, dispatch port I/O and MMIO to the buses,
/// and turn terminal exits into a <see cref="VmExitResult"/>. Nothing the guest does may throw
/// out of here; every failure becomes a reported VM exit.
/// </summary>
internal sealed unsafe class VcpuRunner(KvmVcpu vcpu, Bus portBus, Bus mmioBus, Action<VmExitResult> requestExit, Func<bool> stopping, ILogger log)
{
    private const uint InternalErrorEmulation = 1;
    private const byte Int3Opcode = 0xCC;
    private const byte FwaitOpcode = 0x9B;
    private const byte BreakpointVector = 3;
    private const uint SystemEventShutdown = 1, SystemEventReset = 2, SystemEventCrash = 3;

    /// <summary>Called once, just before the first entry into the guest (for start-up timing).</summary>
    public Action? BeforeFirstEntry { get; init; }

    /// <summary>Exits by reason, for the debug summary (indexes beyond the array count as the last slot).</summary>
    public long[] ExitCounts { get; } = new long[32];

    public long Int3Emulations { get; private set; }
    public long FwaitEmulations { get; private set; }

    public KvmVcpu Vcpu => vcpu;

    private volatile bool _pauseRequested;
    private volatile int _threadId;
    private readonly ManualResetEventSlim _paused = new(), _resume = new();

    /// <summary>
    /// Asks the vCPU to stop at a clean point: out of KVM_RUN with the last exit completed, so its
    /// registers say everything. immediate_exit catches a thread about to enter the guest, the
    /// kick one that is inside it.
    /// </summary>
    public void RequestPause()
    {
        _resume.Reset();
        _pauseRequested = true;
        vcpu.RunState->ImmediateExit = 1;
        Host.VcpuKick.Kick(_threadId);
    }

    /// <summary>Waits until the vCPU is paused (or the VM ends); false on time-out.</summary>
    public bool WaitPaused(TimeSpan timeout) => _paused.Wait(timeout);

    public void Resume()
    {
        _pauseRequested = false;
        _resume.Set();
    }

    private void Pause()
    {
        // KVM finishes the instruction of the exit we just handled (an I/O read takes its value
        // now) and returns at once without running guest code.
        vcpu.RunState->ImmediateExit = 1;
        vcpu.Run();
        vcpu.RunState->ImmediateExit = 0;
        _paused.Set();
        while (!_resume.Wait(100) && !stopping()) { }
        _paused.Reset();
    }

    public void Run()
    {
        try
        {
            _threadId = Host.VcpuKick.CurrentThreadId();
            BeforeFirstEntry?.Invoke();
            while (!stopping())
            {
                if (_pauseRequested) { Pause(); continue; }
                if (!vcpu.Run()) continue; // a signal interrupted KVM_RUN: just re-enter
                if (HandleExit() is { } result)
                {
                    requestExit(result);
                    return;
                }
            }
        }
        catch (Exception e)
        {
            requestExit(new VmExitResult(VmExitStatus.VmmError, $"vCPU {vcpu.Id} failed: {e.Message}"));
        }
    }

    private VmExitResult? HandleExit()
    {
        KvmRun* run = vcpu.RunState;
        ExitCounts[Math.Min((int)run->ExitReason, ExitCounts.Length - 1)]++;
        switch (run->ExitReason)
        {
            case KvmExitReason.Io:
                HandlePortIo(run);
                return null;
            case KvmExitReason.Mmio:
                HandleMmio(run);
                return null;
            case KvmExitReason.Intr:
                return null;
            case KvmExitReason.Hlt:
                return new VmExitResult(VmExitStatus.GuestShutdown, $"vCPU {vcpu.Id} halted");
            case KvmExitReason.Shutdown:
                return Crash("the guest triple-faulted (KVM_EXIT_SHUTDOWN)");
            case KvmExitReason.FailEntry:
                return Crash($"KVM could not enter the guest (hardware entry failure reason 0x{run->FailEntryReason:X})");
            case KvmExitReason.SystemEvent:
                return run->SystemEventType switch
                {
                    SystemEventShutdown or SystemEventReset => new VmExitResult(VmExitStatus.GuestShutdown, "the guest requested a system reset"),
                    SystemEventCrash => Crash("the guest reported a crash"),
                    var type => Crash($"unexpected system event {type}"),
                };
            case KvmExitReason.InternalError:
                return HandleInternalError(run);
            default:
                return Crash($"unexpected KVM exit reason {(uint)run->ExitReason}");
        }
    }

    private void HandlePortIo(KvmRun* run)
    {
        byte* data = (byte*)run + run->IoDataOffset;
        int size = run->IoSize;
        for (uint i = 0; i < run->IoCount; i++, data += size)
        {
            var span = new Span<byte>(data, size);
            if (run->IoDirection == 0) portBus.Read(run->IoPort, span);
            else portBus.Write(run->IoPort, span);
        }
    }

    private void HandleMmio(KvmRun* run)
    {
        var span = new Span<byte>(run->MmioData, (int)Math.Min(run->MmioLen, 8u));
        if (run->MmioIsWrite != 0) mmioBus.Write(run->MmioPhysAddr, span);
        else mmioBus.Read(run->MmioPhysAddr, span);
    }

    /// <summary>
    /// KVM's instruction emulator on a PVM host cannot execute two instructions the guest kernel
    /// uses (PLATFORM.md §5), so we complete them as the CPU would:
    /// int3 (boot self-test, text patching): advance RIP past it and deliver #BP;
    /// fwait (fpu__drop on every process exit): with no x87 exception pending it does nothing, and
    /// the kernel ignores a pending one there anyway, so advance RIP past it.
    /// Every other emulation failure is fatal and logged with the registers and instruction bytes.
    /// </summary>
    private VmExitResult? HandleInternalError(KvmRun* run)
    {
        uint suberror = run->InternalSuberror;
        uint ndata = Math.Min(run->InternalNdata, 16u);
        var insn = ReadOnlySpan<byte>.Empty;
        if (suberror == InternalErrorEmulation && ndata >= 2)
        {
            var bytes = new ReadOnlySpan<byte>(&run->InternalData[1], 16);
            int length = Math.Min((int)bytes[0], 15);
            insn = bytes.Slice(1, length);
        }
        if (insn.Length >= 1 && insn[0] == Int3Opcode)
        {
            SkipInstruction(1);
            var events = vcpu.GetEvents();
            events.ExceptionInjected = 1;
            events.ExceptionNr = BreakpointVector;
            events.ExceptionHasErrorCode = 0;
            events.ExceptionErrorCode = 0;
            vcpu.SetEvents(events);
            Int3Emulations++;
            return null;
        }
        if (insn.Length >= 1 && insn[0] == FwaitOpcode)
        {
            SkipInstruction(1);
            FwaitEmulations++;
            return null;
        }
        string state = DescribeState();
        string bytesText = insn.Length > 0 ? Convert.ToHexString(insn) : "unavailable";
        var data = new List<string>();
        for (int i = 0; i < ndata; i++) data.Add($"0x{run->InternalData[i]:X}");
        log.Error("KVM internal error {Suberror} on vCPU {Vcpu}: instruction bytes {Bytes}, data [{Data}], {State}",
            suberror, vcpu.Id, bytesText, string.Join(", ", data), state);
        return Crash($"KVM internal error {suberror} (instruction bytes {bytesText}) at {state}");
    }

    private void SkipInstruction(int length)
    {
        var regs = vcpu.GetRegs();
        regs.Rip += (ulong)length;
        vcpu.SetRegs(regs);
    }

    private VmExitResult Crash(string what)
    {
        log.Error("vCPU {Vcpu}: {What}; {State}", vcpu.Id, what, DescribeState());
        return new VmExitResult(VmExitStatus.GuestCrash, what);
    }

    private string DescribeState()
    {
        try
        {
            var r = vcpu.GetRegs();
            var s = vcpu.GetSregs();
            return $"RIP=0x{r.Rip:X} RSP=0x{r.Rsp:X} RFLAGS=0x{r.Rflags:X} RAX=0x{r.Rax:X} RCX=0x{r.Rcx:X} " +
                   $"CS=0x{s.Cs.Selector:X} CR0=0x{s.Cr0:X} CR3=0x{s.Cr3:X} CR4=0x{s.Cr4:X} EFER=0x{s.Efer:X}";
        }
        catch (KvmException e)
        {
            return $"registers unavailable ({e.Message})";
        }
    }
}
