using System.Text.RegularExpressions;
using Rkt.Kvm.Stage1.Flags;

namespace Rkt.Kvm.Stage1.Entrypoints;

/// <summary>The pod UUID stage0 passes: the canonical 8-4-4-4-12 lowercase hex form.</summary>
public static partial class PodUuid
{
    [GeneratedRegex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    private static partial Regex Pattern();

    public static bool IsValid(string? s) => s is not null && Pattern().IsMatch(s);

    public static string Require(string? s, string entrypoint) =>
        IsValid(s) ? s! : throw new Stage1Exception($"{entrypoint}: expected a pod UUID as the last argument, got \"{s}\"");
}

/// <summary>
/// <c>run [--debug] --net=… [--interactive] [--private-users=…] [--hostname=…] [--local-config=…]
/// [--dns-conf-mode=…] [--mutable] … UUID</c>. What a VM cannot do is refused here, with the reason:
/// the host network, user namespaces mapped to the host, the host's IPC namespace.
/// </summary>
public sealed record RunArguments(string Uuid, bool Debug, Networking.NetworkList Networks, bool Interactive, bool Mutable,
    string? Hostname, string? DnsConfMode, string? LocalConfig)
{
    public static RunArguments Parse(IReadOnlyList<string> argv)
    {
        var f = GoFlags.Parse(argv, GoFlagDialect.Stage1);
        return FromFlags(f, PodUuid.Require(f.Positional.LastOrDefault(), "run"));
    }

    /// <summary>
    /// Refuses run's <paramref name="flags"/> (no UUID) exactly as <see cref="Parse"/> would: stage0 asks before
    /// it prepares a pod, so a command line stage1 would refuse leaves nothing behind.
    /// </summary>
    public static void Validate(IReadOnlyList<string> flags)
    {
        var f = GoFlags.Parse(flags, GoFlagDialect.Stage1);
        // Go's flag stops at the first argument: any flag after one would go unchecked here.
        if (f.Positional.Count > 0) throw new ArgumentException($"flags only, but \"{f.Positional[0]}\" is not a flag", nameof(flags));
        FromFlags(f, uuid: "");
    }

    private static RunArguments FromFlags(GoFlags f, string uuid)
    {
        var networks = Networking.NetworkList.Parse(f.Get("net"));
        if (f.Has("private-users"))
            throw new Stage1Exception("--private-users is not supported by stage1-kvm: the pod's virtual machine already isolates user ids from the host");
        var ipc = f.Get("ipc");
        if (ipc == "parent")
            throw new Stage1Exception("--ipc=parent is not supported by stage1-kvm: a virtual machine cannot share the host's IPC namespace");
        if (ipc is not (null or "auto" or "private"))
            throw new Stage1Exception($"--ipc={ipc}: expected auto, private or parent");
        return new RunArguments(uuid, f.Bool("debug"), networks, f.Bool("interactive"), f.Bool("mutable"),
            string.IsNullOrEmpty(f.Get("hostname")) ? null : f.Get("hostname"), f.Get("dns-conf-mode"), f.Get("local-config"));
    }

    /// <summary>A part of <c>--dns-conf-mode=resolv=…,hosts=…</c>: <c>host</c>, <c>stage0</c>, <c>none</c> or <c>default</c> (also when absent).</summary>
    public string DnsMode(string key)
    {
        foreach (var part in (DnsConfMode ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = part.Split('=', 2);
            if (kv.Length == 2 && kv[0] == key) return kv[1];
        }
        return "default";
    }
}

/// <summary><c>enter --pid=PID --appname=APP -- CMD [ARGS…]</c>; no command means a shell.</summary>
public sealed record EnterArguments(int Pid, string App, IReadOnlyList<string> Command, bool? Tty = null, bool? Stdin = null)
{
    /// <summary>rkt's <c>--pid --appname -- CMD</c>, and ours on top (rkt never passes them): <c>--tty=BOOL</c>
    /// and <c>--stdin=BOOL</c>, for app exec's -t and -i; without them stage1 decides from its stdio.</summary>
    public static EnterArguments Parse(IReadOnlyList<string> argv)
    {
        var f = GoFlags.Parse(argv, GoFlagDialect.Stage1);
        if (!int.TryParse(f.Get("pid"), out int pid) || pid <= 0) throw new Stage1Exception($"enter: --pid must be a process id, got \"{f.Get("pid")}\"");
        var app = f.Get("appname");
        if (!Manifests.AcName.IsValidName(app)) throw new Stage1Exception($"enter: --appname must name an app, got \"{app}\"");
        bool? Optional(string name) => f.Get(name) is null ? null : f.Bool(name);
        return new EnterArguments(pid, app!, f.Positional.Count > 0 ? f.Positional : ["/bin/sh"], Optional("tty"), Optional("stdin"));
    }
}

/// <summary><c>stop [--force] UUID</c>.</summary>
public sealed record StopArguments(string Uuid, bool Force)
{
    public static StopArguments Parse(IReadOnlyList<string> argv)
    {
        var f = GoFlags.Parse(argv, GoFlagDialect.Stage1);
        return new StopArguments(PodUuid.Require(f.Positional.LastOrDefault(), "stop"), f.Bool("force"));
    }
}

/// <summary><c>gc [--debug] [--local-config DIR] UUID</c> (stage0 passes local-config as two arguments).</summary>
public sealed record GcArguments(string Uuid, bool Debug, string? LocalConfig)
{
    public static GcArguments Parse(IReadOnlyList<string> argv)
    {
        // The one flag rkt's stage0 writes as two arguments, so the one stage1 declares: an undeclared flag
        // never takes the next argument (it could be the UUID).
        var f = GoFlags.Parse(argv, GoFlagDialect.Stage1, new FlagSpec("local-config"));
        return new GcArguments(PodUuid.Require(f.Positional.LastOrDefault(), "gc"), f.Bool("debug"), f.Get("local-config"));
    }
}

/// <summary><c>app/add|app/start|app/stop|app/rm --debug=BOOL [--uuid=UUID] --app=NAME</c>.</summary>
public sealed record AppArguments(string App, string? Uuid, bool Debug)
{
    public static AppArguments Parse(IReadOnlyList<string> argv, string entrypoint)
    {
        var f = GoFlags.Parse(argv, GoFlagDialect.Stage1);
        var app = f.Get("app");
        if (!Manifests.AcName.IsValidName(app)) throw new Stage1Exception($"{entrypoint}: --app must name an app, got \"{app}\"");
        var uuid = f.Get("uuid");
        if (uuid is not null) PodUuid.Require(uuid, entrypoint);
        return new AppArguments(app!, uuid, f.Bool("debug"));
    }
}

/// <summary>
/// <c>attach --action=list|auto-attach|custom-attach --app=NAME --debug=BOOL [--tty-in=BOOL --tty-out=BOOL
/// --stdin=BOOL --stdout=BOOL --stderr=BOOL]</c>, as rkt's stage0 passes them (the custom endpoints only with custom-attach).
/// </summary>
public sealed record AttachArguments(string Action, string App, bool TtyIn, bool TtyOut, bool Stdin, bool Stdout, bool Stderr)
{
    public static AttachArguments Parse(IReadOnlyList<string> argv)
    {
        var f = GoFlags.Parse(argv, GoFlagDialect.Stage1);
        var action = f.Get("action") ?? "auto-attach";
        if (action is not ("list" or "auto-attach" or "custom-attach"))
            throw new Stage1Exception($"attach: --action must be list, auto-attach or custom-attach, got \"{action}\"");
        var app = f.Get("app");
        if (!Manifests.AcName.IsValidName(app)) throw new Stage1Exception($"attach: --app must name an app, got \"{app}\"");
        var args = new AttachArguments(action, app!, f.Bool("tty-in"), f.Bool("tty-out"), f.Bool("stdin"), f.Bool("stdout"), f.Bool("stderr"));
        if (action == "custom-attach")
        {
            if (!(args.TtyIn || args.TtyOut || args.Stdin || args.Stdout || args.Stderr)) throw new Stage1Exception("attach: custom-attach needs at least one endpoint");
            if ((args.TtyIn || args.TtyOut) && (args.Stdin || args.Stdout || args.Stderr)) throw new Stage1Exception("attach: a terminal and streams cannot be attached at once");
        }
        return args;
    }
}

