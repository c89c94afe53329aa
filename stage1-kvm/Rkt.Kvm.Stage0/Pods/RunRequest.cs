using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Stage1.Manifests;

namespace Rkt.Kvm.Stage0.Pods;

/// <summary>One app of a pod as the user asked for it: an image and the per-app flags that
/// followed it on the command line.</summary>
public sealed class AppRequest(string image)
{
    public string Image { get; } = image;
    public string? Name { get; set; }
    public string? Exec { get; set; }
    public List<string>? Args { get; set; }
    public List<KeyValuePair<string, string>> Environment { get; } = [];
    public List<AppMount> Mounts { get; } = [];
    public string? Memory { get; set; }
    public string? Cpu { get; set; }
    public string? User { get; set; }
    public string? Group { get; set; }
    /// <summary>rkt's <c>--stdin --stdout --stderr</c> modes (null: rkt's defaults, stdin null and output log).</summary>
    public Dictionary<string, string> StreamModes { get; } = [];
}

/// <summary>A host directory or an empty directory made for the pod: rkt's <c>--volume</c>.</summary>
public sealed record VolumeRequest(string Name, string Kind, string? Source, bool ReadOnly);

/// <summary>
/// <c>rkt-kvm run</c>'s command line, parsed the way rkt parses it: images in order, each
/// followed by its own flags (<c>--exec --name --mount --memory --cpu --user --group
/// --environment</c>) and optionally <c>-- ARGS… ---</c>; pod flags anywhere
/// (<c>--volume --set-env --hostname --net --port --dns… --hosts-entry --interactive --no-overlay --uuid-file-save
/// --insecure-options --pull-policy</c> and
/// rkt's five ways of naming the stage1 image, <c>--stage1-{url,path,name,hash,from-dir}</c>).
/// </summary>
public sealed class RunRequest
{
    public List<AppRequest> Apps { get; } = [];
    public List<VolumeRequest> Volumes { get; } = [];
    public List<KeyValuePair<string, string>> PodEnvironment { get; } = [];
    public string? Hostname { get; set; }
    public string Net { get; set; } = "default";
    public DnsRequest Dns { get; } = new();
    public List<ExposedPort> Ports { get; } = [];
    public bool Interactive { get; set; }
    public string? UuidFileSave { get; set; }
    public Stage1Choice? Stage1 { get; set; }
    public bool NoOverlay { get; set; }
    public bool Mutable { get; set; }
    /// <summary>rkt's <c>--insecure-options</c> given among the run flags (it is also a global flag).</summary>
    public Images.Registry.InsecureOptions Insecure { get; set; }
    /// <summary>rkt's <c>--pull-policy</c> for <c>docker://</c> images; run's default is <c>new</c>, as rkt's.</summary>
    public Images.Registry.PullPolicy PullPolicy { get; set; } = Images.Registry.PullPolicy.New;

    private static readonly HashSet<string> AppFlags = ["exec", "name", "mount", "memory", "cpu", "user", "group", "environment", .. Rkt.Kvm.Stage1.Manifests.StreamModes.Streams];
    private static readonly HashSet<string> PodFlags = ["volume", "set-env", "hostname", "net", "port", "uuid-file-save", "insecure-options", "pull-policy", .. Stage1Choice.Flags, .. DnsRequest.Flags];
    private static readonly HashSet<string> BoolFlags = ["interactive", "no-overlay"];
    private static readonly FlagSpec[] Specs = [.. AppFlags.Concat(PodFlags).Select(name => new FlagSpec(name)), .. BoolFlags.Select(name => new FlagSpec(name, IsBool: true))];

    public static RunRequest Parse(IReadOnlyList<string> argv, bool allowApps = true)
    {
        var request = new RunRequest();
        AppRequest? current = null;
        for (int i = 0; i < argv.Count; i++)
        {
            var arg = argv[i];
            if (arg == "--")
            {
                if (current is null) throw new UsageException("\"--\" (app arguments) must follow an image");
                current.Args = [];
                for (i++; i < argv.Count && argv[i] != "---"; i++) current.Args.Add(argv[i]);
                continue;
            }
            // The flags are read as every other verb's (GoFlags); which image they belong to is run's own grammar.
            var flag = GoFlags.Read(argv, i, Specs, Stage0Flags.Verb);
            if (flag.Kind == FlagTokenKind.Flag)
            {
                i += flag.Width - 1;
                var name = flag.Name;
                if (name is "private-users" or "private-net")
                    throw new UsageException(name == "private-users"
                        ? "--private-users is not supported by stage1-kvm: the pod's virtual machine already isolates user ids from the host"
                        : "--private-net is not supported: use --net=none or --net=default");
                if (flag.Spec is null) throw Stage0Flags.Verb.UnknownFlag(name);
                if (BoolFlags.Contains(name))
                {
                    bool on = Stage0Flags.Verb.ParseBool(flag.Value, name);
                    if (name == "interactive") request.Interactive = on; else request.NoOverlay = on;
                }
                else if (AppFlags.Contains(name))
                {
                    if (current is null) throw new UsageException($"--{name} applies to an app: put it after the image it is for");
                    ApplyAppFlag(current, name, flag.Value!);
                }
                else ApplyPodFlag(request, name, flag.Value!);
                continue;
            }
            if (!allowApps) throw new UsageException($"unexpected argument \"{arg}\"");
            current = new AppRequest(arg);
            request.Apps.Add(current);
        }
        if (request.Interactive)
        {
            // As rkt: the one app's streams are the user's terminal.
            if (request.Apps.Count > 1) throw new UsageException("--interactive supports only one app (image)");
            foreach (var app in request.Apps)
                foreach (var stream in Rkt.Kvm.Stage1.Manifests.StreamModes.Streams) app.StreamModes[stream] = Rkt.Kvm.Stage1.Manifests.StreamModes.Interactive;
        }
        return request;
    }

    private static void ApplyAppFlag(AppRequest app, string name, string value)
    {
        switch (name)
        {
            case "exec": app.Exec = value; break;
            case "name":
                app.Name = AcName.IsValidName(value) ? value : throw new UsageException($"--name={value}: app names are lowercase letters, digits and dashes");
                break;
            case "mount": app.Mounts.Add(ParseMount(value)); break;
            case "memory": app.Memory = Quantity.TryParse(value, out _) ? value : throw new UsageException($"--memory={value}: not a quantity like 256M or 1Gi"); break;
            case "cpu": app.Cpu = Quantity.TryParse(value, out _) ? value : throw new UsageException($"--cpu={value}: not a quantity like 500m or 2"); break;
            case "user": app.User = value; break;
            case "group": app.Group = value; break;
            case "environment": app.Environment.Add(ParseEnv(value, "--environment")); break;
            case "stdin" or "stdout" or "stderr":
                if (!Rkt.Kvm.Stage1.Manifests.StreamModes.IsValid(name, value))
                    throw new UsageException($"--{name}={value}: the mode is one of {string.Join(", ", Rkt.Kvm.Stage1.Manifests.StreamModes.Allowed(name))}");
                app.StreamModes[name] = value;
                break;
        }
    }

    private static void ApplyPodFlag(RunRequest request, string name, string value)
    {
        switch (name)
        {
            case "volume": request.Volumes.Add(ParseVolume(value)); break;
            case "set-env": request.PodEnvironment.Add(ParseEnv(value, "--set-env")); break;
            case "hostname": request.Hostname = value; break;
            case "net": request.Net = value; break;
            case "port":
                try { request.Ports.Add(ExposedPort.ParseFlag(value)); }
                catch (Stage1.Stage1Exception e) { throw new UsageException(e.Message); }
                break;
            case "dns" or "dns-search" or "dns-opt" or "dns-domain" or "hosts-entry": request.Dns.Apply(name, value); break;
            case "uuid-file-save": request.UuidFileSave = value; break;
            case "stage1-url" or "stage1-path" or "stage1-name" or "stage1-hash" or "stage1-from-dir":
                request.Stage1 = Stage1Choice.With(request.Stage1, name, value);
                break;
            case "insecure-options": request.Insecure |= Images.Registry.InsecureOptionsParser.Parse(value); break;
            case "pull-policy": request.PullPolicy = Images.Registry.PullPolicyParser.Parse(value, Images.Registry.PullPolicy.New); break;
        }
    }

    /// <summary><c>NAME=VALUE</c>.</summary>
    public static KeyValuePair<string, string> ParseEnv(string value, string flag)
    {
        int eq = value.IndexOf('=');
        if (eq <= 0) throw new UsageException($"{flag}={value}: expected NAME=VALUE");
        return new(value[..eq], value[(eq + 1)..]);
    }

    /// <summary>rkt's <c>--volume NAME,kind=host,source=/path[,readOnly=true]</c> or <c>NAME,kind=empty</c>.</summary>
    public static VolumeRequest ParseVolume(string value)
    {
        var parts = value.Split(',');
        var name = parts[0];
        if (!AcName.IsValidName(name)) throw new UsageException($"--volume={value}: \"{name}\" is not a valid volume name");
        string kind = "host";
        string? source = null;
        bool readOnly = false;
        foreach (var part in parts.Skip(1))
        {
            var kv = part.Split('=', 2);
            if (kv.Length != 2) throw new UsageException($"--volume={value}: \"{part}\" is not key=value");
            switch (kv[0])
            {
                case "kind": kind = kv[1]; break;
                case "source": source = kv[1]; break;
                case "readOnly": readOnly = kv[1] is "true" or "1"; break;
                default: throw new UsageException($"--volume={value}: unknown key \"{kv[0]}\" (kind, source, readOnly)");
            }
        }
        if (kind is not ("host" or "empty")) throw new UsageException($"--volume={value}: kind must be host or empty");
        if (kind == "host")
        {
            if (source is null || !Path.IsPathFullyQualified(source)) throw new UsageException($"--volume={value}: a host volume needs source=/absolute/path");
            if (!Directory.Exists(source)) throw new UsageException($"--volume={value}: {source} is not a directory");
        }
        return new VolumeRequest(name, kind, source, readOnly);
    }

    /// <summary>rkt's <c>--mount volume=NAME,target=/path</c>.</summary>
    public static AppMount ParseMount(string value)
    {
        string? volume = null, target = null;
        foreach (var part in value.Split(','))
        {
            var kv = part.Split('=', 2);
            if (kv.Length == 2 && kv[0] == "volume") volume = kv[1];
            else if (kv.Length == 2 && kv[0] == "target") target = kv[1];
            else throw new UsageException($"--mount={value}: expected volume=NAME,target=/path");
        }
        if (volume is null || target is null || !target.StartsWith('/'))
            throw new UsageException($"--mount={value}: expected volume=NAME,target=/path");
        return new AppMount(volume, target);
    }
}
