using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage0.Pods;
using Rkt.Kvm.Stage1;

namespace Rkt.Kvm.Stage0.Commands.Pods;

/// <summary><c>console [--follow] UUID</c>: the pod VM's serial console (kernel and agent messages), for
/// diagnosing the sandbox itself; with <c>--follow</c> it keeps printing while the pod runs.</summary>
public sealed class ConsoleCommand() : Command("console", "Print a pod VM's serial console (kernel and agent messages)", "console [--follow] UUID")
{
    public override IReadOnlyList<FlagSpec> Flags => [new("follow", "keep printing until the pod stops", IsBool: true)];

    public override int Run(CommandContext context, GoFlags args)
    {
        var store = new PodStore(context.DataDir);
        var pod = store.Find(args.Expect(1, $"usage: rkt-kvm {Usage}")[0]);
        var path = pod.Directory.ConsoleLog;
        if (!File.Exists(path)) throw new Stage1Exception($"pod \"{pod.Uuid}\" has no console log (its VM never started)");
        using var log = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var stdout = Console.OpenStandardOutput();
        while (true)
        {
            log.CopyTo(stdout);
            stdout.Flush();
            if (!args.Bool("follow") || !Running(store, pod.Uuid)) return 0;
            Thread.Sleep(200);
        }
    }

    private static bool Running(PodStore store, string uuid)
    {
        try { return PodInfo.Read(store.Find(uuid)).Running; }
        catch (Exception e) when (e is Stage1Exception or IOException) { return false; } // gone, or moved on to garbage
    }
}
