using Rkt.Kvm.Images.Archive;
using Rkt.Kvm.Images.Compression;
using Rkt.Kvm.Images.IO;
using Rkt.Kvm.Images.Trees;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>
/// Carries out an <see cref="ExtractionPlan"/>: every archive through one <see cref="TarApplier"/>
/// onto a <see cref="DiskTreeWriter"/>. The same code runs in-process and in the confined child.
/// </summary>
public static class PlannedExtraction
{
    /// <summary>
    /// Extracts <paramref name="archives"/> (paths, in plan order) into <paramref name="destination"/>:
    /// in the confined child when there is a <paramref name="sandbox"/>, else in this process.
    /// </summary>
    public static void Run(ExtractionSandbox? sandbox, ExtractionPlan plan, string destination, IReadOnlyList<string> archives,
        Action<int>? progress = null)
    {
        if (sandbox is not null)
        {
            sandbox.Run(plan, destination, archives, progress);
            return;
        }
        Apply(plan, destination, Native.Libc.IsRoot,
            i => new FileStream(archives[i], FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16), progress);
    }

    /// <param name="open">opens archive i of the plan (a path in-process, an inherited fd in the child).</param>
    /// <param name="progress">raw (compressed) bytes read, for progress bars.</param>
    internal static void Apply(ExtractionPlan plan, string root, bool applyOwners, Func<int, Stream> open, Action<int>? progress)
    {
        var applier = new TarApplier(new DiskTreeWriter(root, applyOwners), plan.Policy);
        var filters = plan.AciLayers is { } layers ? new AciEntryFilters(layers) : null;
        long budget = plan.MaxBytes;
        for (int i = 0; i < plan.Archives.Count; i++)
        {
            var archive = plan.Archives[i];
            applier.Include = archive.AciImage is { } image
                ? (filters ?? throw new ArgumentException("the plan names an ACI image but has no ACI layers")).Filter(image)
                : null;
            using var raw = open(i);
            using var counted = new InspectingStream(raw, archive.What, progress: progress);
            using var plain = new InspectingStream(new ReadAheadStream(Decompression.Open(counted, archive.What, out _)), archive.What,
                limit: plan.LimitBytes ? budget : long.MaxValue);
            applier.Apply(plain, archive.Layout, archive.Layer, archive.What);
            plain.Drain();
            budget -= plain.BytesRead;
        }
        applier.Complete();
    }
}
