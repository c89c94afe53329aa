using Rkt.Kvm.Stage0.CommandLine;
using Rkt.Kvm.Images.Builders;

namespace Rkt.Kvm.Stage0.Commands;

/// <summary><c>image build-busybox (--rootfs DIR | --output FILE.aci)</c>: the default image, made
/// offline from the host's static busybox (Debian busybox-static) by our own code, so a first pod
/// needs no registry. An ACI is written for <c>image import</c>; a bare rootfs is what tests export.</summary>
public sealed class BuildBusyboxCommand() : Command("build-busybox",
    "Build the default busybox image from the host's static busybox",
    "image build-busybox [--busybox=PATH] [--name=NAME] (--output=FILE.aci | --rootfs=DIR)")
{
    public const string DefaultName = "rkt-kvm.local/busybox";

    public override IReadOnlyList<FlagSpec> Flags { get; } =
    [
        new("busybox", "the static busybox binary to use", Default: BusyboxRootfs.DefaultBusybox),
        new("name", "image name written into the ACI manifest", Default: DefaultName),
        new("output", "write an ACI here"),
        new("rootfs", "lay the root filesystem out in this (new or empty) directory instead"),
    ];

    public override int Run(CommandContext context, GoFlags args)
    {
        args.Expect(0, $"rkt-kvm {Usage}");
        var output = args.Get("output");
        var rootfs = args.Get("rootfs");
        if ((output is null) == (rootfs is null))
            throw new UsageException($"give exactly one of --output and --rootfs; usage: rkt-kvm {Usage}");
        var busybox = args.Get("busybox")!;
        if (rootfs is not null)
        {
            BusyboxRootfs.Build(rootfs, busybox);
            return 0;
        }
        var staging = Path.Join(Path.GetDirectoryName(Path.GetFullPath(output!))!, $".busybox-rootfs-{Environment.ProcessId}");
        try
        {
            BusyboxRootfs.Build(staging, busybox);
            AciWriter.Write(output!, AciWriter.Manifest(args.Get("name")!, ["/bin/sh"]), staging);
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
        context.Out.WriteLine(output);
        return 0;
    }
}
