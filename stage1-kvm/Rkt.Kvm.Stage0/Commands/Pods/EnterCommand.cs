using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Images.Trees;
using Rkt.Kvm.Stage1;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>enter [--app=NAME] [-i] [-t] UUID [CMD [ARGS…]]</c> and <c>app exec</c>: runs a command in a
/// running app through stage1's enter entrypoint; its exit code is ours. By default the command gets a
/// terminal when our stdin and stdout are one (as rkt enter); <c>-t</c> asks for one (stdin must be a
/// terminal), <c>-i</c> forwards stdin. Without a command: <c>/bin/sh</c>.</summary>
public sealed class EnterCommand(string name, string summary) : Command(name, summary, $"{(name == "exec" ? "app exec" : "enter")} [--app=NAME] [-i|--interactive] [-t|--tty] UUID [CMD [ARGS...]]")
{
    public override bool RawArguments => true;

    public override int Run(CommandContext context, GoFlags args)
    {
        var rest = args.Positional.ToList();
        string? app = null;
        bool? tty = null, stdin = null;
        while (rest.Count > 0 && rest[0].StartsWith('-') && rest[0] != "--")
        {
            var flag = rest[0];
            if (flag.StartsWith("--app=", StringComparison.Ordinal)) app = flag["--app=".Length..];
            else if (flag == "--app" && rest.Count > 1) { app = rest[1]; rest.RemoveAt(0); }
            else if (flag is "-i" or "--interactive") stdin = true;
            else if (flag is "-t" or "--tty") tty = true;
            else if (flag is "-it" or "-ti") stdin = tty = true;
            else throw new UsageException($"unknown flag {flag}; usage: rkt-kvm {Usage}");
            rest.RemoveAt(0);
        }
        if (tty == true && Console.IsInputRedirected) throw new Stage1Exception("-t needs a terminal: stdin is not one");
        if (rest.Count == 0) throw new UsageException($"usage: rkt-kvm {Usage}");
        var pod = PodInfo.Read(new PodStore(context.DataDir).Find(rest[0]));
        var command = rest.Skip(1).SkipWhile((a, i) => i == 0 && a == "--").ToList();
        if (!pod.Running) throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" is not running");
        app = pod.ChooseApp(app);
        var pid = pod.Pid ?? throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" has no pid file yet");
        // As rkt's enter: the entrypoint runs from the stage1 image's tree in the store (cwd the pod).
        var dir = pod.Pod.Directory;
        string? treeRootfs = File.Exists(dir.Stage1TreeStoreId)
            ? Path.Join(new TreeStore(context.Store).TreePath(File.ReadAllText(dir.Stage1TreeStoreId).Trim()), "rootfs") : null;
        if (treeRootfs is not null && !Directory.Exists(treeRootfs)) treeRootfs = null; // the tree is gone: the pod's own copy will do
        // Our own flags, only when asked for: a stage1 from rkt's tree knows only --pid and --appname.
        var choices = new List<string>();
        if (tty is { } t) choices.Add($"--tty={(t ? "true" : "false")}");
        if (stdin is { } i) choices.Add($"--stdin={(i ? "true" : "false")}");
        return Stage1Invoker.Run(dir, "enter", [$"--pid={pid}", $"--appname={app}", .. choices, "--", .. command.Count > 0 ? command : ["/bin/sh"]], treeRootfs);
    }
}
