using Microsoft.Win32.SafeHandles;

namespace Rkt.Kvm.Vmm.Snapshot;

/// <summary>
/// The files a snapshot names by content (kernel, initrd, the VMM's own executable), opened when the
/// VM is made and hashed only when a snapshot is taken: by then a jailed VMM lives in an empty root
/// where their paths lead nowhere.
/// </summary>
public sealed class SnapshotInputs : IDisposable
{
    private readonly (SafeFileHandle File, string Path) _kernel;
    private readonly (SafeFileHandle File, string Path)? _initrd;
    private readonly (SafeFileHandle File, string Path) _vmm;

    public SnapshotInputs(string kernelPath, string? initrdPath)
    {
        _kernel = Open(kernelPath);
        _initrd = initrdPath is null ? null : Open(initrdPath);
        _vmm = Open(Environment.ProcessPath ?? "/proc/self/exe");
    }

    private static (SafeFileHandle, string) Open(string path) => (File.OpenHandle(path, FileMode.Open, FileAccess.Read), path);

    public SnapshotInput Kernel => SnapshotFile.Describe(_kernel.File, _kernel.Path);
    public SnapshotInput? Initrd => _initrd is { } i ? SnapshotFile.Describe(i.File, i.Path) : null;
    /// <summary>SHA-256 of the running VMM's executable (<see cref="SnapshotFile.VmmBuild"/>).</summary>
    public string VmmBuild => SnapshotFile.Describe(_vmm.File, _vmm.Path).Sha256;

    public void Dispose()
    {
        _kernel.File.Dispose();
        _initrd?.File.Dispose();
        _vmm.File.Dispose();
    }
}
