using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Boot;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>The zero page, byte by byte, against Documentation/arch/x86/zero-page.rst and boot.rst.</summary>
public class ZeroPageTests
{
    private static readonly E820Entry[] TwoEntries =
    [
        new(0, 0x9FC00, E820Type.Ram),
        new(0x100000, 0x7F00000, E820Type.Ram),
    ];

    private static byte[] Build(byte[]? header = null) => ZeroPage.Build(new ZeroPageParameters
    {
        SetupHeader = header,
        CmdlineAddress = 0x20000,
        CmdlineSize = 42,
        InitrdAddress = 0x7E1B000,
        InitrdSize = 0x1E5014,
        E820 = TwoEntries,
        SetupData = 0x6000,
    });

    [Fact]
    public void Vmlinux_header_has_magic_version_loader_and_flags()
    {
        var page = Build();
        Assert.Equal(4096, page.Length);
        Assert.Equal(0xAA55, BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(0x1FE)));
        Assert.Equal("HdrS"u8.ToArray(), page.AsSpan(0x202, 4).ToArray());
        Assert.Equal(0x020F, BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(0x206)));
        Assert.Equal(0xFF, page[0x210]);
        Assert.Equal(0x01 | 0x40 | 0x80, page[0x211]);
        Assert.Equal(0x1000000u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x230)));
    }

    [Fact]
    public void Cmdline_initrd_and_setup_data_pointers_are_at_their_offsets()
    {
        var page = Build();
        Assert.Equal(0x20000u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x228)));
        Assert.Equal(42u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x238)));
        Assert.Equal(0x7E1B000u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x218)));
        Assert.Equal(0x1E5014u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x21C)));
        Assert.Equal(0x6000ul, BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(0x250)));
        // High halves (ext_*) are zero for addresses below 4 GiB.
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x0C0)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x0C8)));
    }

    [Fact]
    public void E820_table_holds_count_and_20_byte_entries()
    {
        var page = Build();
        Assert.Equal(2, page[0x1E8]);
        var e1 = page.AsSpan(0x2D0 + 20, 20);
        Assert.Equal(0x100000ul, BinaryPrimitives.ReadUInt64LittleEndian(e1));
        Assert.Equal(0x7F00000ul, BinaryPrimitives.ReadUInt64LittleEndian(e1[8..]));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(e1[16..]));
        Assert.All(page.AsSpan(0x2D0 + 40, 20).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void BzImage_setup_header_is_kept_and_loader_fields_overridden()
    {
        var header = new byte[0x202 + 0x6A - 0x1F1];
        header[0x206 - 0x1F1] = 0x0F; header[0x207 - 0x1F1] = 0x02; // version 2.15
        header[0x210 - 0x1F1] = 0x00; // type_of_loader, must be overridden
        header[0x234 - 0x1F1] = 1; // relocatable_kernel, must survive
        var page = Build(header);
        Assert.Equal(0x020F, BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(0x206)));
        Assert.Equal(0xFF, page[0x210]);
        Assert.Equal(1, page[0x234]);
        Assert.Equal(0x20000u, BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(0x228)));
    }

    [Fact]
    public void Too_many_e820_entries_are_refused()
    {
        var entries = Enumerable.Range(0, 129).Select(i => new E820Entry((ulong)i << 20, 1 << 20, E820Type.Ram)).ToArray();
        Assert.Throws<BootException>(() => ZeroPage.Build(new ZeroPageParameters { CmdlineAddress = 0, CmdlineSize = 0, E820 = entries }));
    }

    [Fact]
    public void Rng_seed_setup_data_node_has_type_9_and_32_bytes()
    {
        var node = SetupData.RngSeedNode();
        Assert.Equal(16 + 32, node.Length);
        Assert.Equal(0ul, BinaryPrimitives.ReadUInt64LittleEndian(node));
        Assert.Equal(9u, BinaryPrimitives.ReadUInt32LittleEndian(node.AsSpan(8)));
        Assert.Equal(32u, BinaryPrimitives.ReadUInt32LittleEndian(node.AsSpan(12)));
        Assert.NotEqual(SetupData.RngSeedNode().AsSpan(16).ToArray(), node.AsSpan(16).ToArray());
    }
}
