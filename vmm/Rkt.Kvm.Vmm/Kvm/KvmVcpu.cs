using Tmds.Linux;
using static Tmds.Linux.LibC;

using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Kvm;

/// <summary>One virtual CPU: its register state and the shared kvm_run page it exits through.</summary>
public sealed unsafe class KvmVcpu : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly int _runSize;
    private KvmRun* _run;

    public int Id { get; }

    internal KvmVcpu(int id, FileDescriptor fd, int runSize)
    {
        Id = id;
        _fd = fd;
        _runSize = runSize;
        bool added = false;
        fd.DangerousAddRef(ref added);
        void* p = mmap(null, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.Number, 0);
        int err = errno;
        if (added) fd.DangerousRelease();
        if (p == MAP_FAILED)
        {
            fd.Dispose();
            throw new KvmException($"mmap of vCPU {id}'s kvm_run page", err);
        }
        _run = (KvmRun*)p;
    }

    /// <summary>The shared kvm_run page; valid until <see cref="Dispose"/>.</summary>
    public KvmRun* RunState => _run;

    /// <summary>Runs the vCPU until its next exit. Returns false when a signal interrupted KVM_RUN (EINTR).</summary>
    public bool Run()
    {
        bool added = false;
        _fd.DangerousAddRef(ref added);
        try
        {
            int rc = ioctl(_fd.Number, unchecked((int)KvmIoctl.Run), (void*)0);
            if (rc == 0) return true;
            int err = errno;
            if (err == EINTR || err == EAGAIN) return false;
            throw new KvmException($"KVM_RUN on vCPU {Id}", err);
        }
        finally
        {
            if (added) _fd.DangerousRelease();
        }
    }

    public KvmRegs GetRegs() { KvmRegs r; Syscall.Ioctl(_fd, KvmIoctl.GetRegs, &r); return r; }
    public void SetRegs(in KvmRegs regs) { fixed (KvmRegs* p = &regs) Syscall.Ioctl(_fd, KvmIoctl.SetRegs, p); }
    public KvmSregs GetSregs() { KvmSregs s; Syscall.Ioctl(_fd, KvmIoctl.GetSregs, &s); return s; }
    public void SetSregs(in KvmSregs sregs) { fixed (KvmSregs* p = &sregs) Syscall.Ioctl(_fd, KvmIoctl.SetSregs, p); }
    public void SetFpu(in KvmFpu fpu) { fixed (KvmFpu* p = &fpu) Syscall.Ioctl(_fd, KvmIoctl.SetFpu, p); }
    public KvmLapicState GetLapic() { KvmLapicState l; Syscall.Ioctl(_fd, KvmIoctl.GetLapic, &l); return l; }
    public void SetLapic(in KvmLapicState lapic) { fixed (KvmLapicState* p = &lapic) Syscall.Ioctl(_fd, KvmIoctl.SetLapic, p); }
    public KvmVcpuEvents GetEvents() { KvmVcpuEvents e; Syscall.Ioctl(_fd, KvmIoctl.GetVcpuEvents, &e); return e; }
    public void SetEvents(in KvmVcpuEvents events) { fixed (KvmVcpuEvents* p = &events) Syscall.Ioctl(_fd, KvmIoctl.SetVcpuEvents, p); }

    /// <summary>Reads a state structure of <paramref name="size"/> bytes with a KVM_GET_* ioctl (snapshots keep them as opaque bytes).</summary>
    public byte[] GetState(uint request, int size)
    {
        var bytes = new byte[size];
        fixed (byte* p = bytes) Syscall.Ioctl(_fd, request, p);
        return bytes;
    }

    /// <summary>Writes a state structure read by <see cref="GetState"/> back with the matching KVM_SET_* ioctl.</summary>
    public void SetState(uint request, byte[] bytes)
    {
        fixed (byte* p = bytes) Syscall.Ioctl(_fd, request, p);
    }

    /// <summary>Reads MSRs; returns how many KVM read (it stops at the first one it cannot), their values in <paramref name="entries"/>.</summary>
    public int GetMsrs(Span<KvmMsrEntry> entries)
    {
        var buffer = new byte[8 + entries.Length * sizeof(KvmMsrEntry)];
        fixed (byte* p = buffer)
        {
            *(uint*)p = (uint)entries.Length;
            entries.CopyTo(new Span<KvmMsrEntry>(p + 8, entries.Length));
            int read = Syscall.Ioctl(_fd, KvmIoctl.GetMsrs, p);
            new Span<KvmMsrEntry>(p + 8, entries.Length).CopyTo(entries);
            return read;
        }
    }

    public void SetCpuid(ReadOnlySpan<KvmCpuidEntry2> entries)
    {
        var buffer = new byte[8 + entries.Length * sizeof(KvmCpuidEntry2)];
        fixed (byte* p = buffer)
        {
            *(uint*)p = (uint)entries.Length;
            entries.CopyTo(new Span<KvmCpuidEntry2>(p + 8, entries.Length));
            Syscall.Ioctl(_fd, KvmIoctl.SetCpuid2, p);
        }
    }

    /// <summary>Sets MSRs; returns how many KVM accepted (it stops at the first one it refuses).</summary>
    public int SetMsrs(ReadOnlySpan<KvmMsrEntry> entries)
    {
        var buffer = new byte[8 + entries.Length * sizeof(KvmMsrEntry)];
        fixed (byte* p = buffer)
        {
            *(uint*)p = (uint)entries.Length;
            entries.CopyTo(new Span<KvmMsrEntry>(p + 8, entries.Length));
            return Syscall.Ioctl(_fd, KvmIoctl.SetMsrs, p);
        }
    }

    public void Dispose()
    {
        if (_run != null)
        {
            munmap(_run, _runSize);
            _run = null;
        }
        _fd.Dispose();
    }
}
