using Rkt.Kvm.Cli.Cli;
using Rkt.Kvm.Cli.Pods;
using Rkt.Kvm.Images.Trees;
using Rkt.Kvm.Stage1;

namespace Rkt.Kvm.Cli.Commands.Pods;

/// <summary><c>enter [--app=NAME] UUID [CMD [ARGS…]]</c> and <c>app exec</c>: runs a command in a
/// running app through stage1's enter entrypoint; its exit code is ours.</summary>
public sealed class EnterCommand(string name, string summary) : Command(name, summary, $"{(name == "exec" ? "app exec" : "enter")} [--app=NAME] UUID [CMD [ARGS...]]")
{
    public override bool RawArguments => true;

    public override int Run(CommandContext context, Arguments args)
    {
        var rest = args.Positional.ToList();
        string? app = null;
        while (rest.Count > 0 && rest[0].StartsWith("--app", StringComparison.Ordinal))
        {
            if (rest[0].StartsWith("--app=", StringComparison.Ordinal)) app = rest[0]["--app=".Length..];
            else if (rest[0] == "--app" && rest.Count > 1) { app = rest[1]; rest.RemoveAt(0); }
            else throw new UsageException($"usage: rkt-kvm {Usage}");
            rest.RemoveAt(0);
        }
        if (rest.Count == 0) throw new UsageException($"usage: rkt-kvm {Usage}");
        var pod = PodInfo.Read(new PodStore(context.DataDir).Find(rest[0]));
        var command = rest.Skip(1).SkipWhile((a, i) => i == 0 && a == "--").ToList();
        if (!pod.Running) throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" is not running");
        if (app is null)
        {
            if (pod.Apps.Count != 1)
                throw new UsageException($"pod \"{pod.Pod.Uuid}\" has {pod.Apps.Count} apps: choose one with --app ({string.Join(", ", pod.Apps.Select(a => a.Name))})");
            app = pod.Apps[0].Name;
        }
        if (pod.Apps.All(a => a.Name != app)) throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" has no app \"{app}\"");
        var pid = pod.Pid ?? throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" has no pid file yet");
        // As rkt's enter: the entrypoint runs from the stage1 image's tree in the store (cwd the pod).
        var dir = pod.Pod.Directory;
        string? treeRootfs = File.Exists(dir.Stage1TreeStoreId)
            ? Path.Join(new TreeStore(context.Store).TreePath(File.ReadAllText(dir.Stage1TreeStoreId).Trim()), "rootfs") : null;
        if (treeRootfs is not null && !Directory.Exists(treeRootfs)) treeRootfs = null; // the tree is gone: the pod's own copy will do
        return Stage1Invoker.Run(dir, "enter", [$"--pid={pid}", $"--appname={app}", "--", .. command.Count > 0 ? command : ["/bin/sh"]], treeRootfs);
    }
}
