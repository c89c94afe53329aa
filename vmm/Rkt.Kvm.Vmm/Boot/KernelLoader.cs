using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Boot;

public enum KernelFormat
{
    ElfVmlinux,
    BzImage,
}

/// <summary>What loading the kernel produced: where to enter it and what the rest of the boot must respect.</summary>
public sealed record LoadedKernel
{
    public required KernelFormat Format { get; init; }
    /// <summary>Guest-physical address of the 64-bit entry point.</summary>
    public required ulong Entry { get; init; }
    /// <summary>First guest-physical address above everything the kernel occupies (or will decompress into).</summary>
    public required ulong End { get; init; }
    /// <summary>The bzImage's setup header to seed the zero page with; null for vmlinux.</summary>
    public byte[]? SetupHeader { get; init; }
    /// <summary>Longest command line the kernel accepts, without the NUL.</summary>
    public required uint CmdlineMax { get; init; }
    /// <summary>Highest address the initrd may occupy.</summary>
    public required ulong InitrdAddressMax { get; init; }
}

/// <summary>Detects the kernel format from its content and loads it into guest memory.</summary>
public static class KernelLoader
{
    /// <summary>COMMAND_LINE_SIZE on x86 is 2048 including the NUL.</summary>
    public const uint DefaultCmdlineMax = 2047;
    /// <summary>For kernels that do not say: keep the initrd below 2 GiB, which every 64-bit kernel accepts.</summary>
    public const ulong DefaultInitrdAddressMax = 0x7FFF_FFFF;

    public static KernelFormat DetectFormat(ReadOnlySpan<byte> head, string path)
    {
        if (head.Length >= 4 && head[0] == 0x7F && head[1] == (byte)'E' && head[2] == (byte)'L' && head[3] == (byte)'F')
            return KernelFormat.ElfVmlinux;
        if (BzImageLoader.LooksLikeBzImage(head)) return KernelFormat.BzImage;
        throw new BootException($"Kernel {path} is neither an ELF vmlinux nor a bzImage.");
    }

    public static LoadedKernel Load(string path, GuestMemory memory)
    {
        using (var file = BootFile.Open(path, "kernel"))
        {
            long length = RandomAccess.GetLength(file);
            var head = new byte[(int)Math.Min(length, 0x4000)];
            RandomAccess.Read(file, head, 0);
            return DetectFormat(head, path) switch
            {
                KernelFormat.ElfVmlinux => ElfLoader.Load(file, length, head, path, memory),
                _ => BzImageLoader.Load(file, length, head, path, memory),
            };
        }
    }
}
