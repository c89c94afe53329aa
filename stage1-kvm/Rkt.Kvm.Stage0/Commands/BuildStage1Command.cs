using System.Text.Json.Nodes;
using Rkt.Kvm.Stage1.Networking;
using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Builders;
using Rkt.Kvm.Stage1.Manifests;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary>
/// <c>image build-stage1</c>: packs the stage1-kvm image (<c>coreos.com/rkt/stage1-kvm</c>,
/// interface-version 6). Its rootfs holds the VM's parts in <c>kvm/</c> (the entrypoint binary,
/// the VMM, the kernel, the agent initramfs) and one small script per entrypoint at the path the
/// manifest names, each exec'ing the binary with its entrypoint's name, so real rkt and rkt-kvm
/// can both run it unchanged.
/// </summary>
public sealed class BuildStage1Command() : Command("build-stage1",
    "Build the stage1-kvm image from the built entrypoint binary, VMM, kernel and agent initramfs",
    "image build-stage1 --entrypoint=BIN --vmm=BIN --kernel=VMLINUX --initrd=CPIO --output=FILE.aci [--version=V]")
{
    public const string ImageName = "coreos.com/rkt/stage1-kvm";

    /// <summary>Directories of the stage1 rootfs that rkt's stage0 expects to exist (stage0/run.go
    /// <c>setupStage1Image</c>, stage0/app_add.go).</summary>
    public static readonly string[] StageZeroDirectories = ["rkt/status", "rkt/env"];

    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("entrypoint", "the rkt-kvm-stage1 binary"),
        new("vmm", "the rkt-kvm-vmm binary"),
        new("kernel", "the guest vmlinux"),
        new("initrd", "the agent initramfs"),
        new("output", "where to write the ACI"),
        new("version", "the image's version label", Default: "0.1.0"),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        args.Expect(0, $"rkt-kvm {Usage}");
        string Required(string name) => args.Get(name) is { } v && File.Exists(v) ? v
            : throw new UsageException($"--{name}: {(args.Get(name) is null ? "required" : $"{args.Get(name)} does not exist")}; usage: rkt-kvm {Usage}");
        var parts = new[] { ("rkt-kvm-stage1", Required("entrypoint")), ("rkt-kvm-vmm", Required("vmm")), ("vmlinux", Required("kernel")), ("agent-initrd.cpio", Required("initrd")) };
        var output = args.Get("output") ?? throw new UsageException($"--output is required; usage: rkt-kvm {Usage}");

        var staging = Path.Join(Path.GetDirectoryName(Path.GetFullPath(output))!, $".stage1-rootfs-{Environment.ProcessId}");
        try
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            Directory.CreateDirectory(Path.Join(staging, "kvm"));
            Directory.CreateDirectory(Path.Join(staging, "app"));
            // rkt's stage0 needs these in every stage1 image: with overlay it touches rkt/status
            // before run (and fails without it); app add writes rkt/env/<app> and
            // rkt/status/<app>-created without creating either directory.
            foreach (var dir in StageZeroDirectories) Directory.CreateDirectory(Path.Join(staging, dir));
            foreach (var (name, source) in parts)
                File.Copy(source, Path.Join(staging, "kvm", name));
            // rkt's two built-in networks, where rkt's stage1 keeps them (a user's net.d may override either).
            Directory.CreateDirectory(Path.Join(staging, Path.GetDirectoryName(NetworkConfig.DefaultPath)!));
            File.WriteAllText(Path.Join(staging, NetworkConfig.DefaultPath), NetworkConfig.DefaultJson + "\n");
            File.WriteAllText(Path.Join(staging, NetworkConfig.DefaultRestrictedPath), NetworkConfig.DefaultRestrictedJson + "\n");
            var annotations = new JsonArray { new JsonObject { ["name"] = Stage1Image.InterfaceVersionAnnotation, ["value"] = Stage1Image.SupportedInterfaceVersion.ToString() } };
            foreach (var entrypoint in Stage1Image.EntrypointNames)
            {
                var script = Path.Join(staging, entrypoint);
                var toKvm = entrypoint.Contains('/') ? "../kvm" : "kvm";
                File.WriteAllText(script, $"#!/bin/sh\n# stage1-kvm {entrypoint} entrypoint (rkt stage1 interface 6)\nexec \"$(dirname \"$0\")/{toKvm}/rkt-kvm-stage1\" {entrypoint} \"$@\"\n");
                File.SetUnixFileMode(script, (UnixFileMode)Convert.ToInt32("755", 8));
                annotations.Add(new JsonObject { ["name"] = Stage1Image.AnnotationPrefix + entrypoint, ["value"] = "/" + entrypoint });
            }
            var manifest = AciWriter.Manifest(ImageName, ["/run"], new Dictionary<string, string> { ["version"] = args.Get("version")! });
            manifest.Remove("app");
            manifest["annotations"] = annotations;
            AciWriter.Write(output, manifest, staging);
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
        context.Out.WriteLine(output);
        return 0;
    }
}
