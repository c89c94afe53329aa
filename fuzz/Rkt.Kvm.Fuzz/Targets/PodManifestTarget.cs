using System.Text;
using Rkt.Kvm.Stage1;
using Rkt.Kvm.Stage1.Manifests;
using Rkt.Kvm.Stage1.Sizing;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// The appc pod manifest as stage1 and rkt-kvm read it from a pod directory: parsed, then what is
/// done with it (the VM sized from its isolators, its ports resolved, its apps looked up, the kept
/// JSON written back and read again, as `app add` does). Only <see cref="Stage1Exception"/> may
/// escape (rkt-kvm list and gc catch exactly that for a pod whose manifest is broken), and what
/// parses must satisfy the checks the parser promises: ACName app and volume names, unique,
/// absolute paths without "..", mounts naming a volume, a VM of sane size.
/// </summary>
public sealed class PodManifestTarget : IFuzzTarget
{
    public string Name => "pod-manifest";
    public string Covers => "PodManifest.Parse (apps, volumes, mounts, isolators, ports, annotations), Quantity, VmSize.For, ForwardedPorts";

    public void Run(ReadOnlySpan<byte> input)
    {
        PodManifest pod;
        try
        {
            pod = PodManifest.Parse(input);
        }
        catch (Stage1Exception e)
        {
            FuzzLog.Note($"pod-manifest: refused: {e.Message}");
            return;
        }
        FuzzLog.Note($"pod-manifest: {pod.Apps.Count} apps, {pod.Volumes.Count} volumes");
        Check(pod);

        // What stage1 does with a good manifest: size the VM, resolve the ports, write it back.
        var size = Sized(pod, 2);
        if (size is { } vm)
        {
            if (vm.MemoryMiB < VmSize.MinimumMiB || vm.Vcpus is < 1 or > 2)
                throw new FuzzFindingException($"a VM of {vm.MemoryMiB} MiB and {vm.Vcpus} vCPUs (at least {VmSize.MinimumMiB} MiB, 1-2 vCPUs on a 2-CPU host)");
            // The VM holds at least its biggest app's memory limit, unless the pod's own limit is lower.
            decimal biggest = pod.Apps.Max(a => (decimal?)a.App?.Isolators.MemoryLimitBytes) ?? 0;
            decimal needed = Math.Min(biggest, (decimal?)pod.Isolators.MemoryLimitBytes ?? decimal.MaxValue);
            if ((decimal)vm.MemoryMiB * (1 << 20) < needed)
                throw new FuzzFindingException($"a VM of {vm.MemoryMiB} MiB for an app limited to {biggest} bytes (pod limit {pod.Isolators.MemoryLimitBytes})");
        }
        try { pod.ForwardedPorts(); }
        catch (Stage1Exception) { }
        _ = pod.Mutable;
        foreach (var app in pod.Apps)
            if (pod.App(app.Name) != app) throw new FuzzFindingException($"App(\"{app.Name}\") does not find that app");

        PodManifest again;
        var written = Encoding.UTF8.GetBytes(pod.Json.ToJsonString());
        try
        {
            again = PodManifest.Parse(written, "the rewritten pod manifest");
        }
        catch (Stage1Exception e)
        {
            throw new FuzzFindingException("a manifest that parsed does not parse once written back", e);
        }
        if (!again.Apps.Select(a => a.Name).SequenceEqual(pod.Apps.Select(a => a.Name)) || again.Volumes.Count != pod.Volumes.Count)
            throw new FuzzFindingException("the manifest written back reads differently");
    }

    private static VmSize? Sized(PodManifest pod, int hostCpus)
    {
        try { return VmSize.For(pod, hostCpus); }
        catch (Stage1Exception) { return null; }
    }

    private static void Check(PodManifest pod)
    {
        if (pod.Apps.Select(a => a.Name).Distinct().Count() != pod.Apps.Count) throw new FuzzFindingException("duplicate app names");
        if (pod.Volumes.Select(v => v.Name).Distinct().Count() != pod.Volumes.Count) throw new FuzzFindingException("duplicate volume names");
        foreach (var v in pod.Volumes)
        {
            if (!AcName.IsValidName(v.Name)) throw new FuzzFindingException($"volume name \"{v.Name}\"");
            if (v.IsHost) SafePath(v.Source!, $"volume {v.Name} source");
        }
        foreach (var app in pod.Apps)
        {
            if (!AcName.IsValidName(app.Name)) throw new FuzzFindingException($"app name \"{app.Name}\"");
            foreach (var m in app.Mounts) SafePath(m.Path, $"app {app.Name} mount");
            if (app.App is { } spec)
            {
                foreach (var mp in spec.MountPoints) SafePath(mp.Path, $"app {app.Name} mount point");
                if (spec.WorkingDirectory is { } wd) SafePath(wd, $"app {app.Name} working directory");
                if (spec.Isolators.MemoryLimitBytes is <= 0) throw new FuzzFindingException($"app {app.Name} memory limit {spec.Isolators.MemoryLimitBytes}");
                if (spec.Isolators.CpuLimit is <= 0) throw new FuzzFindingException($"app {app.Name} CPU limit {spec.Isolators.CpuLimit}");
                foreach (var p in spec.Ports)
                    if (p.Port is < 1 or > 65535 || !AcName.IsValidName(p.Name)) throw new FuzzFindingException($"app {app.Name} port {p}");
            }
        }
        foreach (var p in pod.Ports)
            if (p.HostPort is < 1 or > 65535) throw new FuzzFindingException($"exposed port {p}");
    }

    private static void SafePath(string path, string what)
    {
        if (!path.StartsWith('/') || path.Contains('\0') || path.Split('/').Contains(".."))
            throw new FuzzFindingException($"{what} \"{path}\" is not an absolute path without \"..\"");
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        const string Id = "sha512-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        yield return ("two-apps", Encoding.UTF8.GetBytes($$$"""
            {"acKind":"PodManifest","acVersion":"1.30.0","apps":[
             {"name":"web","image":{"name":"example.com/web","id":"{{{Id}}}","labels":[{"name":"arch","value":"amd64"}]},
              "app":{"exec":["/bin/httpd","-f"],"user":"0","group":"0","supplementaryGIDs":[10,20],"workingDirectory":"/srv",
               "environment":[{"name":"A","value":"1"},{"name":"A","value":"2"}],
               "mountPoints":[{"name":"data","path":"/data","readOnly":true}],
               "isolators":[{"name":"resource/memory","value":{"limit":"256Mi"}},{"name":"resource/cpu","value":{"limit":"500m"}},
                {"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_NET_BIND_SERVICE"]}},{"name":"os/linux/no-new-privileges","value":true}],
               "ports":[{"name":"http","protocol":"tcp","port":80}]},
              "mounts":[{"volume":"data","path":"/data"}],"readOnlyRootFS":true,"annotations":[{"name":"a","value":"b"}]},
             {"name":"side","image":{"id":"{{{Id}}}"},"app":{"exec":["/bin/sh"],"user":"1000","group":"1000"}}],
             "volumes":[{"name":"data","kind":"host","source":"/srv/data","readOnly":false,"recursive":true},
              {"name":"scratch","kind":"empty","mode":"0700","uid":1000,"gid":1000}],
             "isolators":[{"name":"resource/memory","value":{"limit":"1G"}},{"name":"resource/cpu","value":{"limit":2}}],
             "annotations":[{"name":"coreos.com/rkt/stage1/mutable","value":"false"}],
             "ports":[{"name":"http","hostPort":8080,"hostIP":"127.0.0.1"}]}
            """));
        yield return ("sandbox", Encoding.UTF8.GetBytes("""
            {"acKind":"PodManifest","acVersion":"1.30.0","apps":null,"volumes":null,"isolators":null,
             "annotations":[{"name":"coreos.com/rkt/stage1/mutable","value":"true"}],"ports":null}
            """));
        yield return ("app-volume", Encoding.UTF8.GetBytes($$$"""
            {"acKind":"PodManifest","acVersion":"1.30.0","apps":[{"name":"a","image":{"id":"{{{Id}}}"},
             "mounts":[{"volume":"v","path":"/v","appVolume":{"name":"v","kind":"empty"}}],
             "app":{"exec":["/x"],"user":"0","group":"0","isolators":[{"name":"resource/memory","value":{"limit":"1e9"}}]}}]}
            """));
    }
}
