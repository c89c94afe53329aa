using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>attach [--app=NAME] [--mode=MODE] UUID</c>: joins a running app's terminal or streams
/// through stage1's attach entrypoint (rkt attach). MODE is <c>auto</c> (default), <c>list</c>, or a
/// comma list of <c>stdin stdout stderr tty tty-in tty-out</c>.</summary>
public sealed class AttachCommand() : Command("attach", "Attach to an app's terminal or streams in a running pod", "attach [--app=NAME] [--mode=auto|list|stdin,stdout,stderr|tty|tty-in|tty-out] UUID")
{
    public override IReadOnlyList<FlagSpec> Flags =>
    [
        new("app", "the app to attach to (default: the pod's only app)"),
        new("mode", "auto, list, or a comma list of endpoints", Default: "auto"),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        var uuid = args.Expect(1, $"usage: rkt-kvm {Usage}")[0];
        var stage1Flags = AttachMode.ToStage1Flags(args.Get("mode") ?? "auto");
        var pod = PodInfo.Read(new PodStore(context.DataDir).Find(uuid));
        if (!pod.Running) throw new Stage1Exception($"pod \"{pod.Pod.Uuid}\" isn't currently running");
        var app = pod.ChooseApp(args.Get("app"));
        var dir = pod.Pod.Directory;
        return Stage1Invoker.RunCrossingAttached(dir, "attach", [.. stage1Flags, $"--app={app}", $"--debug={(args.Bool("debug") ? "true" : "false")}"]);
    }
}

/// <summary>rkt attach's <c>--mode</c> turned into the stage1 attach entrypoint's flags, as rkt's stage0 does.</summary>
public static class AttachMode
{
    public static IReadOnlyList<string> ToStage1Flags(string mode)
    {
        if (mode == "list") return ["--action=list"];
        if (mode is "auto" or "") return ["--action=auto-attach"];
        bool ttyIn = false, ttyOut = false, stdin = false, stdout = false, stderr = false;
        foreach (var endpoint in mode.Split(','))
        {
            switch (endpoint)
            {
                case "stdin": stdin = true; break;
                case "stdout": stdout = true; break;
                case "stderr": stderr = true; break;
                case "tty": ttyIn = ttyOut = true; break;
                case "tty-in": ttyIn = true; break;
                case "tty-out": ttyOut = true; break;
                default: throw new UsageException($"--mode: unknown endpoint \"{endpoint}\" (stdin, stdout, stderr, tty, tty-in, tty-out)");
            }
        }
        if ((ttyIn || ttyOut) && (stdin || stdout || stderr))
            throw new UsageException($"--mode={mode}: a terminal and streams cannot be attached at once");
        static string B(bool v) => v ? "true" : "false";
        return ["--action=custom-attach", $"--tty-in={B(ttyIn)}", $"--tty-out={B(ttyOut)}", $"--stdin={B(stdin)}", $"--stdout={B(stdout)}", $"--stderr={B(stderr)}"];
    }
}
