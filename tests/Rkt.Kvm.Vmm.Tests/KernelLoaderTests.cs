using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Boot;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>Hostile and broken kernel files, each refused with a clear message before anything runs.</summary>
public sealed class KernelLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rkt-kvm-loader-").FullName;
    private readonly GuestMemory _memory = GuestMemory.Allocate(MemoryLayout.RamRanges(64UL << 20));

    public void Dispose()
    {
        _memory.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A minimal valid x86-64 ELF with one PT_LOAD segment.</summary>
    internal static byte[] Elf(ulong paddr = 0x1000000, ulong filesz = 16, ulong memsz = 32, ulong entry = 0x1000000, ushort machine = 62, ulong? fileOffset = null)
    {
        var file = new byte[0x1000 + (int)Math.Min(filesz, 1 << 20)];
        "\x7F"u8.CopyTo(file); "ELF"u8.CopyTo(file.AsSpan(1));
        file[4] = 2; file[5] = 1; file[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(16), 2);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(18), machine);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(24), entry);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(32), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(54), 56);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(56), 1);
        var ph = file.AsSpan(64);
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], fileOffset ?? 0x1000);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], paddr);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], filesz);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], memsz);
        for (int i = 0x1000; i < file.Length; i++) file[i] = 0xAB;
        return file;
    }

    private string Write(byte[] content)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        File.WriteAllBytes(path, content);
        return path;
    }

    [Fact]
    public void Valid_elf_is_loaded_at_its_physical_address_with_bss_zeroed()
    {
        _memory.GetSpan(0x1000000, 32).Fill(0xCD);
        var kernel = KernelLoader.Load(Write(Elf()), _memory);
        Assert.Equal(KernelFormat.ElfVmlinux, kernel.Format);
        Assert.Equal(0x1000000ul, kernel.Entry);
        Assert.Equal(0x1000020ul, kernel.End);
        Assert.All(_memory.GetSpan(0x1000000, 16).ToArray(), b => Assert.Equal(0xAB, b));
        Assert.All(_memory.GetSpan(0x1000010, 16).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void File_that_is_neither_elf_nor_bzimage_is_refused()
    {
        var e = Assert.Throws<BootException>(() => KernelLoader.Load(Write("just some text, not a kernel"u8.ToArray()), _memory));
        Assert.Contains("neither an ELF vmlinux nor a bzImage", e.Message);
    }

    [Fact]
    public void Truncated_elf_header_is_refused() =>
        Assert.Contains("truncated", Assert.Throws<BootException>(() => KernelLoader.Load(Write(Elf()[..40]), _memory)).Message);

    [Fact]
    public void Truncated_elf_segment_is_refused()
    {
        var elf = Elf(filesz: 4096, memsz: 4096);
        Assert.Contains("truncated", Assert.Throws<BootException>(() => KernelLoader.Load(Write(elf[..0x1800]), _memory)).Message);
    }

    [Theory]
    [InlineData(0x8000000ul)] // past the end of 64 MiB
    [InlineData(0x3FFFFF0ul)] // straddles the end
    [InlineData(0x1000ul)]    // inside the boot structures below 1 MiB
    [InlineData(0xFFFFFFFFFFFFF000ul)] // wraps around
    public void Segment_outside_guest_ram_is_refused(ulong paddr)
    {
        var e = Assert.Throws<BootException>(() => KernelLoader.Load(Write(Elf(paddr: paddr, entry: paddr)), _memory));
        Assert.Contains("outside guest RAM", e.Message);
    }

    [Fact]
    public void Elf_for_another_machine_is_refused() =>
        Assert.Contains("not x86-64", Assert.Throws<BootException>(() => KernelLoader.Load(Write(Elf(machine: 183)), _memory)).Message);

    [Fact]
    public void Entry_point_outside_the_segments_is_refused() =>
        Assert.Contains("entry point", Assert.Throws<BootException>(() => KernelLoader.Load(Write(Elf(entry: 0x2000000)), _memory)).Message);

    [Fact]
    public void File_size_larger_than_memory_size_is_refused() =>
        Assert.Throws<BootException>(() => KernelLoader.Load(Write(Elf(filesz: 64, memsz: 32)), _memory));

    [Fact]
    public void Missing_kernel_file_is_a_boot_error() =>
        Assert.Contains("Cannot open kernel", Assert.Throws<BootException>(() => KernelLoader.Load(Path.Combine(_dir, "absent"), _memory)).Message);

    /// <summary>A bzImage-shaped file: boot sector magic, "HdrS", protocol 2.15, 64-bit entry flag.</summary>
    private static byte[] BzImage(ushort version = 0x020F, ushort xloadflags = 1, uint initSize = 0x100000)
    {
        var file = new byte[5 * 512 + 4096];
        file[0x1F1] = 4;
        file[0x201] = 0x6A;
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(0x1FE), 0xAA55);
        "HdrS"u8.CopyTo(file.AsSpan(0x202));
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(0x206), version);
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(0x236), xloadflags);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x238), 2047);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(0x258), 0x1000000);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(0x260), initSize);
        file.AsSpan(5 * 512).Fill(0x5A);
        return file;
    }

    [Fact]
    public void BzImage_protected_mode_code_goes_to_1_MiB_and_entry_is_startup_64()
    {
        var kernel = KernelLoader.Load(Write(BzImage()), _memory);
        Assert.Equal(KernelFormat.BzImage, kernel.Format);
        Assert.Equal(0x100200ul, kernel.Entry);
        Assert.Equal(0x1100000ul, kernel.End);
        Assert.Equal(2047u, kernel.CmdlineMax);
        Assert.NotNull(kernel.SetupHeader);
        Assert.All(_memory.GetSpan(0x100000, 4096).ToArray(), b => Assert.Equal(0x5A, b));
    }

    [Fact]
    public void BzImage_without_64_bit_entry_or_with_old_protocol_is_refused()
    {
        Assert.Throws<BootException>(() => KernelLoader.Load(Write(BzImage(xloadflags: 0)), _memory));
        Assert.Throws<BootException>(() => KernelLoader.Load(Write(BzImage(version: 0x0206)), _memory));
    }

    [Fact]
    public void BzImage_needing_more_ram_than_the_vm_has_is_refused() =>
        Assert.Contains("needs guest RAM", Assert.Throws<BootException>(() => KernelLoader.Load(Write(BzImage(initSize: 0x8000000)), _memory)).Message);

    [Fact]
    public void Initrd_goes_to_the_top_of_low_ram_page_aligned()
    {
        var kernel = KernelLoader.Load(Write(Elf()), _memory);
        ulong address = InitrdLoader.Place(10_000, kernel, _memory);
        Assert.Equal(0ul, address % 4096);
        Assert.True(address + 10_000 <= 64UL << 20);
        Assert.True(address >= (64UL << 20) - 4096 * 4);
    }

    [Fact]
    public void Initrd_that_would_overlap_the_kernel_is_refused()
    {
        var kernel = KernelLoader.Load(Write(Elf()), _memory);
        var e = Assert.Throws<BootException>(() => InitrdLoader.Place(60UL << 20, kernel, _memory));
        Assert.Contains("too small", e.Message);
    }

    [Fact]
    public void Command_line_over_the_kernel_limit_is_refused()
    {
        var cmdline = new KernelCommandLine().Add(new string('x', 2047));
        Assert.Equal(2048, cmdline.ToBytes(2047).Length);
        cmdline.Add("y");
        Assert.Contains("at most 2047", Assert.Throws<BootException>(() => cmdline.ToBytes(2047)).Message);
    }

    [Fact]
    public void Command_line_keeps_order_and_rejects_control_characters()
    {
        Assert.Equal("console=ttyS0 quiet", new KernelCommandLine().Add("console=ttyS0").Add(null).Add("  quiet ").ToString());
        Assert.Throws<BootException>(() => new KernelCommandLine().Add("a\nb"));
        Assert.Throws<BootException>(() => new KernelCommandLine().Add("caf\u00e9").ToBytes(100));
    }
}

public class GuestCmdlineTests
{
    [Fact]
    public void Pvm_options_are_added_only_on_a_pvm_host_and_user_text_comes_last()
    {
        string onPvm = Machine.GuestCmdline(pvmHost: true, "quiet").ToString();
        string elsewhere = Machine.GuestCmdline(pvmHost: false, "quiet").ToString();
        Assert.Equal($"{Machine.BaseCmdline} virtio_mmio.device=4K@0xc0001000:5 {HostPlatform.PvmGuestOptions} quiet", onPvm);
        Assert.Equal($"{Machine.BaseCmdline} virtio_mmio.device=4K@0xc0001000:5 quiet", elsewhere);
        Assert.Contains("noxsave", onPvm);
        Assert.DoesNotContain("clearcpuid", elsewhere);
        Assert.Contains("reboot=k", elsewhere);
        Assert.Contains("panic=-1", elsewhere);
    }
}
