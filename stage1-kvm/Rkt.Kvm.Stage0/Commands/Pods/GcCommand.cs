using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Pods;
using Rkt.Kvm.Images.Trees;
using Rkt.Kvm.Stage1.Runtime;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary>
/// <c>gc [--grace-period=30m] [--expire-prepared=24h]</c>: exited pods go to
/// <c>exited-garbage/</c>; once there longer than the grace period they go to <c>garbage/</c>, stage1
/// gc frees their host resources and the directory is deleted. A pod in <c>prepare/</c> whose lock
/// is free (its preparer died: an aborted prepare) is removed at once, as rkt does; embryos and
/// prepared pods older than --expire-prepared are deleted. Also <c>rm UUID…</c>, which does it now for exited pods.
/// </summary>
public sealed class GcCommand() : Command("gc", "Garbage-collect exited pods", "gc [--grace-period=DURATION] [--expire-prepared=DURATION]")
{
    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("grace-period", "how long an exited pod stays before it is collected", Default: "30m"),
        new("expire-prepared", "how long a prepared but never run pod stays", Default: "24h"),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        args.Expect(0, $"rkt-kvm {Usage}");
        var grace = Durations.Parse(args.Get("grace-period")!, "--grace-period");
        var expirePrepared = Durations.Parse(args.Get("expire-prepared")!, "--expire-prepared");
        var store = new PodStore(context.DataDir);
        var now = DateTime.UtcNow;
        int status = 0;
        foreach (var pod in store.All().ToList())
        {
            switch (pod.Phase)
            {
                case PodPhase.Run when pod.State == "exited":
                    context.Out.WriteLine($"Moving pod \"{pod.Uuid}\" to garbage");
                    var moved = store.Move(pod, PodPhase.ExitedGarbage);
                    Directory.SetLastWriteTimeUtc(moved.Path, now); // the grace period counts from here
                    if (grace == TimeSpan.Zero) status |= Collect(context, store, moved);
                    break;
                case PodPhase.ExitedGarbage when now - Directory.GetLastWriteTimeUtc(pod.Path) >= grace:
                case PodPhase.Garbage:
                    status |= Collect(context, store, pod);
                    break;
                case PodPhase.Prepare when pod.State == PodRef.AbortedPrepare:
                    // Its preparer died (its lock went with it): nothing will finish it. rkt's renameAborted.
                    context.Out.WriteLine($"Moving failed prepare \"{pod.Uuid}\" to garbage");
                    PodPreparer.Discard(store.Move(pod, PodPhase.Garbage));
                    break;
                case PodPhase.Embryo or PodPhase.Prepared when now - Directory.GetLastWriteTimeUtc(pod.Path) >= expirePrepared:
                    context.Out.WriteLine($"Removing expired prepared pod \"{pod.Uuid}\"");
                    PodPreparer.Discard(pod);
                    break;
            }
        }
        // What no pod can reach any more: runtime directories (and their VMMs) whose pod is gone,
        // VMMs whose runtime directory is gone. Found on the host, not in our own records.
        var uuids = store.All().Select(p => p.Uuid).ToHashSet();
        var orphans = PodRuntime.SweepOrphans(store.Root, uuids.Contains);
        foreach (var dir in orphans.RuntimeDirs) context.Out.WriteLine($"Removed the runtime directory {dir} of a pod that no longer exists");
        foreach (var p in orphans.Killed) context.Out.WriteLine($"Killed {p.Program} (pid {p.Pid}) of a pod that no longer exists");
        // VM templates of stage1 images no longer in the tree store: no pod can restore them.
        var trees = new TreeStore(context.Store);
        foreach (var key in VmTemplateStore.ForPodsRoot(store.Root).RemoveStale(id => Directory.Exists(trees.TreePath(id))))
            context.Out.WriteLine($"Removed the stale VM template {key}");
        return status == 0 ? 0 : CommandTable.ExitError;
    }

    /// <summary>garbage/ → stage1 gc (cwd the pod dir, as rkt) → unmount everything in the pod →
    /// delete. An overlay pod whose stage1 is no longer mounted (the host rebooted) gets it mounted
    /// again first, as rkt's <c>mountPodStage1</c> does, so its gc entrypoint can run. Unlike rkt,
    /// which logs a failing stage1 gc and deletes the pod anyway, a failing stage1 gc or a mount
    /// that will not go keeps the pod in garbage/ for the next run: it may still hold host resources.</summary>
    public static int Collect(CommandContext context, PodStore store, PodRef pod)
    {
        if (pod.Phase != PodPhase.Garbage) pod = store.Move(pod, PodPhase.Garbage);
        context.Out.WriteLine($"Garbage collecting pod \"{pod.Uuid}\"");
        var dir = pod.Directory;
        if (File.Exists(dir.Stage1Manifest))
        {
            if (dir.UsesOverlay && !PodMounts.IsMountPoint(dir.Stage1Rootfs) && File.Exists(dir.Stage1TreeStoreId))
            {
                try { new PodPreparer(context.Store, store).MountStage1(dir); }
                catch (Stage1Exception e) { context.Err.WriteLine($"rkt-kvm: pod \"{pod.Uuid}\": {e.Message}; its stage1 gc cannot run"); }
            }
            int rc = File.Exists(Stage1Invoker.Load(dir).EntrypointPath(dir, "gc")) ? Stage1Invoker.Run(dir, "gc", ["--local-config", context.LocalConfig, pod.Uuid]) : -1;
            if (rc != 0)
            {
                context.Err.WriteLine($"rkt-kvm: stage1 gc of pod \"{pod.Uuid}\" {(rc < 0 ? "could not run" : $"exited {rc}")}; it stays in garbage/ for the next gc");
                return 1;
            }
        }
        if (!PodMounts.UnmountAllUnder(pod.Path))
        {
            context.Err.WriteLine($"rkt-kvm: pod \"{pod.Uuid}\" still has mounts ({string.Join(", ", PodMounts.MountsUnder(pod.Path))}); it stays in garbage/ for the next gc");
            return 1;
        }
        Directory.Delete(pod.Path, recursive: true);
        return 0;
    }
}

/// <summary><c>rm UUID…</c>: removes exited pods now (stage1 gc, then the directory).</summary>
public sealed class RmCommand() : Command("rm", "Remove exited pods", "rm UUID...")
{
    public override int Run(CommandContext context, GoFlags args)
    {
        // gc's own "Garbage collecting pod" lines are not rm's output: rm prints the UUID alone.
        var quiet = new CommandContext(context.DataDir, TextWriter.Null, context.Err, context.StderrIsTerminal, context.LocalConfig);
        return EachPod.Run(context, args, Usage, (store, pod) =>
        {
            if (pod.State is "running") return $"pod \"{pod.Uuid}\" is running: stop it first";
            if (GcCommand.Collect(quiet, store, pod) != 0) return $"removing pod \"{pod.Uuid}\" failed";
            context.Out.WriteLine($"\"{pod.Uuid}\"");
            return null;
        });
    }
}
