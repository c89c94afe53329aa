using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Pods;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary>
/// <c>run IMAGE [app flags] [-- ARGS ---] …</c> and <c>app sandbox</c>: prepare the pod, lock it,
/// move it to <c>run/</c> and run the stage1 run entrypoint with the lock, as rkt does. The exit
/// status is stage1's: the pod's result.
/// </summary>
public sealed class RunCommand(bool sandbox) : Command(sandbox ? "sandbox" : "run",
    sandbox ? "Start an empty, mutable pod (add apps with `app add`)" : "Run images in a new pod",
    sandbox ? "app sandbox [--hostname=H] [--net=default|none|all|NAME[:ARGS],…] [--dns=IP|host|none] [--dns-search=D] [--dns-opt=O] [--dns-domain=D] [--hosts-entry=IP=HOST|host] [--volume=…] [--no-overlay] [--uuid-file-save=FILE] [--stage1-{path,url,name,hash,from-dir}=…]"
        : "run IMAGE [--exec=CMD] [--name=NAME] [--mount=volume=V,target=/P] [--memory=Q] [--cpu=Q] [--user=U] [--group=G] [--environment=K=V] [--stdin=MODE] [--stdout=MODE] [--stderr=MODE] [-- ARGS… ---] … [--volume=V,kind=host,source=/P] [--set-env=K=V] [--hostname=H] [--net=default|none|all|NAME[:ARGS],…] [--dns=IP|host|none] [--dns-search=D] [--dns-opt=O] [--dns-domain=D] [--hosts-entry=IP=HOST|host] [--interactive] [--no-overlay] [--uuid-file-save=FILE] [--stage1-{path,url,name,hash,from-dir}=…]")
{
    public override bool RawArguments => true;

    public override int Run(CommandContext context, GoFlags args)
    {
        var request = RunRequest.Parse(args.Positional, allowApps: !sandbox);
        request.Mutable = sandbox;
        if (!sandbox && request.Apps.Count == 0) throw new UsageException($"usage: rkt-kvm {Usage}");
        // Refuse here too, before anything is prepared: nothing is left behind for a bad request.
        var stage1Args = new List<string> { $"--net={request.Net}", $"--local-config={context.LocalConfig}" };
        if (request.Dns.ConfMode is { } dnsMode) stage1Args.Add($"--dns-conf-mode={dnsMode}");
        if (args.Bool("debug")) stage1Args.Add("--debug");
        if (request.Interactive) stage1Args.Add("--interactive");
        if (request.Hostname is not null) stage1Args.Add($"--hostname={request.Hostname}");
        if (sandbox) stage1Args.Add("--mutable");
        Stage1.Entrypoints.RunArguments.Validate(stage1Args);

        var pods = new PodStore(context.DataDir);
        var preparer = new PodPreparer(context.Store, pods, image => RegistryImages.Find(context, image, request.Insecure, request.PullPolicy));
        var (pod, podLock) = preparer.Prepare(request);
        try
        {
            pod = pods.Move(pod, PodPhase.Run); // prepare/ to run/ with the lock held, as rkt's run does
            preparer.MountForRun(pod, PodManifest.Load(pod.Directory.Manifest));
            request.Dns.WriteStage0Files(pod.Directory.Stage1Rootfs);
            if (request.UuidFileSave is not null) File.WriteAllText(request.UuidFileSave, pod.Uuid);
        }
        catch
        {
            PodPreparer.Discard(pod);
            podLock.Dispose();
            throw;
        }
        using (podLock)
        {
            int rc = Stage1Invoker.RunPod(pod.Directory, [.. stage1Args, pod.Uuid], podLock);
            if (rc != 0 && pod.Directory.ReadPid() is null)
            {
                // stage1 failed (or was killed) before the pod started: collect it now, stage1 gc first,
                // so a VMM it had started, its sockets and the mounts go before the directory does. If
                // anything will not go, the pod stays in garbage/ for the next gc to finish.
                var quiet = new CommandContext(context.DataDir, TextWriter.Null, context.Err, context.StderrIsTerminal, context.LocalConfig);
                bool removed = GcCommand.Collect(quiet, pods, pod) == 0;
                context.Err.WriteLine($"rkt-kvm: pod {pod.Uuid} did not start (stage1 run exited {rc}); " +
                    (removed ? "removed it" : "left it for `rkt-kvm gc`"));
            }
            return rc;
        }
    }
}
