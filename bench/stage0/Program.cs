using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Rkt.Kvm.Bench;
using Rkt.Kvm.Images.Builders;

namespace Rkt.Kvm.Bench.Stage0;

/// <summary>
/// What laying a pod out costs stage0, as rkt does it (the stage1 and each app mounted as overlays on
/// the tree store) against the same pod laid out without overlay (a hardlink farm of each tree), in
/// the same run. The stage1 is a stand-in whose <c>run</c> writes <c>pid</c> and exits at once, so
/// only stage0 is timed: <c>rkt-kvm run</c> wall time (CLI start, prepare, mounts, stage1 exec),
/// <c>rkt-kvm rm</c> wall time (stage1 gc, unmount, delete), and the disk space and inodes a pod
/// takes. Two app images: Debian's busybox (~400 entries) and a generated one with 5,000 files.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public static class Program
{
    public static int Main(string[] args)
    {
        string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
        string cli = Get("--cli"), busybox = Get("--busybox"), work = Get("--work");
        int runs = args.Contains("--runs") ? int.Parse(Get("--runs"), CultureInfo.InvariantCulture) : 10;
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        Directory.CreateDirectory(work);
        var data = Path.Join(work, "data");
        var env = new Dictionary<string, string> { ["RKT_KVM_STAGE1"] = InstantStage1(work), ["RKT_KVM_RUNTIME_DIR"] = Path.Join(work, "run") };
        Cli(cli, data, env, "image", "import", busybox);
        Cli(cli, data, env, "image", "import", ManyFilesImage(work, 5000));

        foreach (var (image, label) in new[] { ("rkt-kvm.local/busybox", "busybox"), ("bench.local/files-5000", "files5000") })
        {
            var result = new Dictionary<bool, (List<double> Run, List<double> Rm, List<double> Kib, List<double> Inodes)>();
            foreach (bool overlay in new[] { true, false })
            {
                var m = result[overlay] = ([], [], [], []);
                for (int i = -1; i < runs; i++) // run -1 renders the trees and warms the CLI: not counted
                {
                    var uuidFile = Path.Join(work, "uuid");
                    var (freeKib, freeInodes) = Free(work);
                    var watch = Stopwatch.StartNew();
                    Cli(cli, data, env, ["run", image, "--exec=/bin/true", $"--uuid-file-save={uuidFile}", .. overlay ? Array.Empty<string>() : ["--no-overlay"]]);
                    double runMs = watch.Elapsed.TotalMilliseconds;
                    var (afterKib, afterInodes) = Free(work);
                    watch.Restart();
                    Cli(cli, data, env, "rm", File.ReadAllText(uuidFile));
                    double rmMs = watch.Elapsed.TotalMilliseconds;
                    if (i < 0) continue;
                    m.Run.Add(runMs);
                    m.Rm.Add(rmMs);
                    m.Kib.Add(freeKib - afterKib);
                    m.Inodes.Add(freeInodes - afterInodes);
                }
                Console.WriteLine($"{label} {(overlay ? "overlay" : "no-overlay")}: run {BenchSupport.Median(m.Run):F0} ms, rm {BenchSupport.Median(m.Rm):F0} ms, " +
                    $"{BenchSupport.Median(m.Kib):F0} KiB and {BenchSupport.Median(m.Inodes):F0} inodes per pod");
            }
            var (o, h) = (result[true], result[false]);
            Console.WriteLine(BenchSupport.Result($"stage0_run_{label}", BenchSupport.Median(o.Run), "ms", BenchSupport.Median(h.Run), "F0"));
            Console.WriteLine(BenchSupport.Result($"stage0_rm_{label}", BenchSupport.Median(o.Rm), "ms", BenchSupport.Median(h.Rm), "F0"));
            Console.WriteLine(BenchSupport.Result($"pod_disk_{label}", BenchSupport.Median(o.Kib), "KiB", BenchSupport.Median(h.Kib), "F0"));
            Console.WriteLine(BenchSupport.Result($"pod_inodes_{label}", BenchSupport.Median(o.Inodes), "", BenchSupport.Median(h.Inodes), "F0"));
        }
        Console.WriteLine("(ours: overlay, rkt's default; ref: --no-overlay, hardlinks; the same rkt-kvm, images and stand-in stage1)");
        return 0;
    }

    /// <summary>A stage1 image whose run writes <c>pid</c>, marks itself ready and exits 0; the others do nothing.</summary>
    private static string InstantStage1(string work)
    {
        var rootfs = Path.Join(work, "stage1-rootfs");
        foreach (var dir in new[] { "app", "rkt/status", "rkt/env" }) Directory.CreateDirectory(Path.Join(rootfs, dir));
        var annotations = new JsonArray { new JsonObject { ["name"] = "coreos.com/rkt/stage1/interface-version", ["value"] = "6" } };
        foreach (var entry in new[] { "run", "enter", "gc", "stop", "app/add", "app/rm", "app/start", "app/stop" })
        {
            var script = Path.Join(rootfs, entry);
            File.WriteAllText(script, entry == "run" ? "#!/bin/sh\necho $$ > pid\nexit 0\n" : "#!/bin/sh\nexit 0\n");
            File.SetUnixFileMode(script, (UnixFileMode)Convert.ToInt32("755", 8));
            annotations.Add(new JsonObject { ["name"] = "coreos.com/rkt/stage1/" + entry, ["value"] = "/" + entry });
        }
        var manifest = AciWriter.Manifest("bench.local/instant-stage1", ["/run"]);
        manifest.Remove("app");
        manifest["annotations"] = annotations;
        var aci = Path.Join(work, "instant-stage1.aci");
        AciWriter.Write(aci, manifest, rootfs);
        return aci;
    }

    /// <summary>An image of <paramref name="count"/> 1 KiB files in 50 directories.</summary>
    private static string ManyFilesImage(string work, int count)
    {
        var rootfs = Path.Join(work, "files-rootfs");
        var block = new byte[1024];
        for (int i = 0; i < count; i++)
        {
            var dir = Path.Join(rootfs, "d" + (i % 50).ToString(CultureInfo.InvariantCulture));
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Join(dir, "f" + i.ToString(CultureInfo.InvariantCulture)), block);
        }
        var aci = Path.Join(work, "files.aci");
        AciWriter.Write(aci, AciWriter.Manifest("bench.local/files-5000", ["/bin/true"]), rootfs);
        return aci;
    }

    private static (double Kib, double Inodes) Free(string path)
    {
        var psi = new ProcessStartInfo("stat", ["-f", "-c", "%a %S %d", path]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var f = p.StandardOutput.ReadToEnd().Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        p.WaitForExit();
        return (f[0] * f[1] / 1024, f[2]);
    }

    private static void Cli(string cli, string data, IDictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo(cli) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add($"--dir={data}");
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"rkt-kvm {string.Join(' ', args)} exited {p.ExitCode}: {stderr}{stdout.Result}");
    }
}
