namespace Rkt.Kvm.Stage1.Sizing;

/// <summary>
/// How big a pod's VM is, from its isolators. Policy:
/// <list type="bullet">
/// <item>Memory = <see cref="BaseMiB"/> for the guest kernel and agent + each app's memory limit,
/// or <see cref="UnlimitedAppMiB"/> for an app without one; at least <see cref="MinimumMiB"/>;
/// rounded up to a MiB. Guest RAM is only touched when used, so a generous size costs host
/// memory only when apps really use it.</item>
/// <item>vCPUs = the sum of the apps' CPU limits rounded up, at least 1, at most the host's
/// CPUs; with no CPU limit anywhere, <see cref="DefaultVcpus"/> (capped by the host). More
/// vCPUs than needed cost boot time and idle ticks on nested hosts.</item>
/// <item>A pod-level limit (the pod manifest's own isolators) caps the sums.</item>
/// </list>
/// </summary>
public sealed record VmSize(int MemoryMiB, int Vcpus)
{
    public const int BaseMiB = 128, UnlimitedAppMiB = 128, MinimumMiB = 256, DefaultVcpus = 1, MaximumVcpus = 8;

    public static VmSize For(Manifests.PodManifest pod, int hostCpus)
    {
        // In decimal, and each CPU term capped at what the sum is clamped to anyway: no manifest overflows these sums.
        decimal memoryBytes = (long)BaseMiB << 20;
        decimal cpus = 0;
        bool anyCpu = false;
        foreach (var app in pod.Apps)
        {
            var isolators = app.App?.Isolators ?? Manifests.Isolators.None;
            memoryBytes += isolators.MemoryLimitBytes ?? (long)UnlimitedAppMiB << 20;
            if (isolators.CpuLimit is { } cpu) { cpus += Math.Min(cpu, MaximumVcpus); anyCpu = true; }
        }
        if (pod.Isolators.MemoryLimitBytes is { } podMemory) memoryBytes = Math.Min(memoryBytes, podMemory + (decimal)((long)BaseMiB << 20));
        if (pod.Isolators.CpuLimit is { } podCpu) { cpus = anyCpu ? Math.Min(cpus, podCpu) : podCpu; anyCpu = true; }

        decimal mib = Math.Ceiling(memoryBytes / (1 << 20));
        if (mib > int.MaxValue) throw new Stage1Exception($"the pod's memory limits add up to {mib} MiB, more than a VM can have");
        int memoryMiB = (int)Math.Max(MinimumMiB, mib);
        int cap = Math.Clamp(hostCpus, 1, MaximumVcpus);
        int vcpus = anyCpu ? (int)Math.Clamp(Math.Ceiling(cpus), 1, cap) : Math.Min(DefaultVcpus, cap);
        return new VmSize(memoryMiB, vcpus);
    }
}
