using System.Buffers.Binary;
using System.Text;
using Rkt.Kvm.Vmm.Memory;
using Rkt.Kvm.Vmm.Snapshot;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Rkt.Kvm.Vmm.Tests.Snapshots;

/// <summary>The snapshot file: header, state and sparse RAM written atomically, mapped back copy-on-write, and every kind of damage refused.</summary>
public sealed unsafe class SnapshotFileTests : IDisposable
{
    private const ulong RegionSize = 4 << 20, HighBase = 0x1_0000_0000;
    private const int Page = 4096;
    private readonly TempDir _dir = new();
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, RegionSize), (HighBase, RegionSize)]);
    private readonly MachineState _state = SnapshotSamples.Full();
    private readonly string _path;

    /// <summary>Non-zero pages: a run across the 2 MiB write chunks, the regions' last and first pages, a page with one byte set at its end.</summary>
    private static readonly ulong[] TouchedPages = [0, 0x3000, 0x1FF000, 0x200000, RegionSize - Page, HighBase + 0x10000, HighBase + RegionSize - Page];

    public SnapshotFileTests()
    {
        _path = _dir.File("vm.snapshot");
        foreach (ulong page in TouchedPages)
        {
            var span = _memory.GetSpan(page, Page);
            if (page == HighBase + 0x10000) span[^1] = 0x77;
            else for (int i = 0; i < Page; i++) span[i] = (byte)(page / Page + (ulong)i * 7 + 1);
        }
    }

    public void Dispose()
    {
        _memory.Dispose();
        _dir.Dispose();
    }

    private static SnapshotHeader Header(string cmdline = "console=ttyS0 quiet") => new()
    {
        FormatVersion = 0,
        VmmBuild = "vmm-build-sha",
        CreatedUtc = new DateTime(2026, 12, 3, 14, 36, 49, DateTimeKind.Utc),
        Kernel = new SnapshotInput("/boot/vmlinux", 12_345_678, new string('a', 64)),
        Initrd = new SnapshotInput("/boot/initrd", 2_000_000, new string('b', 64)),
        MemoryMiB = 8,
        Cpus = 2,
        Cmdline = cmdline,
        Vsock = true,
        GuestCid = 7,
        P9 = true,
        Nics = 1,
        StateLength = 0,
        Regions = [],
        MemoryBytesWritten = 0,
    };

    private SnapshotHeader Write() => SnapshotFile.Write(_path, Header(), _state, _memory);

    private static long AllocatedBytes(string path)
    {
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        stat st;
        fixed (byte* p = bytes)
        {
            if (lstat(p, &st) < 0) throw new IOException($"lstat {path} failed");
        }
        return (long)st.st_blocks * 512;
    }

    private void Patch(long offset, ReadOnlySpan<byte> bytes)
    {
        using var f = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite);
        RandomAccess.Write(f, bytes, offset);
    }

    private void FlipByte(long offset)
    {
        using var f = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[1];
        RandomAccess.Read(f, b, offset);
        b[0] ^= 0x01;
        RandomAccess.Write(f, b, offset);
    }

    private SnapshotException Refused()
    {
        var e = Assert.Throws<SnapshotException>(() => SnapshotFile.Open(_path));
        Assert.Contains(_path, e.Message);
        return e;
    }

    [Fact]
    public void Header_and_state_come_back_as_written()
    {
        var written = Write();
        var (header, state, file) = SnapshotFile.Open(_path);
        using (file)
        {
            Assert.Equal(SnapshotFile.FormatVersion, written.FormatVersion);
            Assert.Equal(_state.ToBytes().Length, written.StateLength);
            Assert.Equal(written, header with { Regions = written.Regions });
            Assert.Equal(written.Regions, header.Regions);
            Assert.Equal(Header() with { FormatVersion = written.FormatVersion, StateLength = written.StateLength, Regions = written.Regions, MemoryBytesWritten = written.MemoryBytesWritten }, written);
            SnapshotSamples.AssertEqual(_state, state);
        }
    }

    [Fact]
    public void Regions_follow_guest_ram_at_aligned_offsets_and_only_non_zero_pages_count()
    {
        var header = Write();
        Assert.Equal(_memory.Regions.Select(r => (r.GuestAddress, r.Size)), header.Regions.Select(r => (r.GuestAddress, r.Size)));
        long previousEnd = (64 << 10) + header.StateLength; // the state starts at 64 KiB
        foreach (var r in header.Regions)
        {
            Assert.Equal(0, r.FileOffset % (2 << 20));
            Assert.True(r.FileOffset >= previousEnd, $"the region at file offset {r.FileOffset} overlaps what precedes it (ending at {previousEnd})");
            previousEnd = r.FileOffset + (long)r.Size;
        }
        Assert.Equal(TouchedPages.Length * (long)Page, header.MemoryBytesWritten);
        Assert.True(new FileInfo(_path).Length >= previousEnd);
    }

    [Fact]
    public void Zero_pages_are_holes()
    {
        Write();
        long length = new FileInfo(_path).Length;
        long allocated = AllocatedBytes(_path);
        Assert.True(length >= 2 * (long)RegionSize, $"length {length}");
        // Touched pages plus the preamble, header and state, rounded up to file system blocks: far below the length.
        Assert.True(allocated < 512 << 10, $"{allocated} bytes allocated for a {length}-byte file");
    }

    [Fact]
    public void An_empty_guest_writes_no_ram()
    {
        using var empty = GuestMemory.Allocate([(0, RegionSize)]);
        var header = SnapshotFile.Write(_path, Header(), _state, empty);
        Assert.Equal(0, header.MemoryBytesWritten);
        Assert.True(AllocatedBytes(_path) < 256 << 10);
    }

    [Fact]
    public void Ram_mapped_from_the_file_is_the_guest_ram_and_writes_stay_private()
    {
        Write();
        var (header, _, file) = SnapshotFile.Open(_path);
        using (file)
        {
            using var mapped = GuestMemory.MapFile(file, header.Regions.Select(r => (r.GuestAddress, r.Size, r.FileOffset)));
            Assert.Equal(_memory.Size, mapped.Size);
            foreach (var r in _memory.Regions)
                Assert.True(mapped.GetSpan(r.GuestAddress, (int)r.Size).SequenceEqual(_memory.GetSpan(r.GuestAddress, (int)r.Size)), $"RAM at 0x{r.GuestAddress:X} differs");

            var before = _memory.GetSpan(0, Page).ToArray();
            mapped.GetSpan(0, Page).Fill(0xEE);
            mapped.GetSpan(HighBase + 0x20000, Page).Fill(0xEE); // a hole
            var onDisk = new byte[Page];
            RandomAccess.Read(file, onDisk, header.Regions[0].FileOffset);
            Assert.Equal(before, onDisk);
            RandomAccess.Read(file, onDisk, header.Regions[1].FileOffset + 0x20000);
            Assert.All(onDisk, b => Assert.Equal(0, b));
        }
        // A second restore from the same file sees the snapshot, not the first VM's writes.
        var (again, _, file2) = SnapshotFile.Open(_path);
        using (file2)
        {
            using var mapped = GuestMemory.MapFile(file2, again.Regions.Select(r => (r.GuestAddress, r.Size, r.FileOffset)));
            Assert.True(mapped.GetSpan(0, Page).SequenceEqual(_memory.GetSpan(0, Page)));
        }
    }

    [Fact]
    public void A_missing_file_is_refused()
    {
        var e = Refused();
        Assert.Contains("Cannot open the snapshot", e.Message);
    }

    [Fact]
    public void A_file_that_is_no_snapshot_is_refused()
    {
        Write();
        Patch(0, "XKVMSNAP"u8);
        Assert.Contains("not a snapshot", Refused().Message);
    }

    [Fact]
    public void A_short_file_is_refused()
    {
        File.WriteAllBytes(_path, [.. "RKVMSNAP"u8, 1, 0, 0, 0]);
        Assert.Contains("not a snapshot", Refused().Message);
    }

    [Fact]
    public void Another_format_version_is_refused()
    {
        Write();
        var version = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(version, SnapshotFile.FormatVersion + 1);
        Patch(8, version);
        Assert.Contains($"format {SnapshotFile.FormatVersion + 1}; this VMM reads format {SnapshotFile.FormatVersion}", Refused().Message);
    }

    [Theory]
    [InlineData(64 + 20)]          // inside the JSON header
    [InlineData((64 << 10) + 100)] // inside the machine state
    [InlineData(24)]               // the checksum itself
    public void One_flipped_byte_in_header_or_state_is_corruption(long offset)
    {
        Write();
        FlipByte(offset);
        Assert.Contains("corrupt", Refused().Message);
    }

    [Fact]
    public void A_file_truncated_inside_ram_is_refused()
    {
        var header = Write();
        using (var f = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.SetLength(f, header.Regions[1].FileOffset + Page);
        Assert.Contains("truncated", Refused().Message);
    }

    [Fact]
    public void A_file_truncated_inside_the_state_is_refused()
    {
        var header = Write();
        using (var f = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.SetLength(f, (64 << 10) + header.StateLength / 2);
        Assert.Contains("truncated", Refused().Message);
    }

    [Fact]
    public void A_successful_write_leaves_only_the_snapshot_and_replaces_an_old_one()
    {
        File.WriteAllText(_path, "an older snapshot");
        Write();
        Assert.Equal([_path], Directory.GetFileSystemEntries(_dir.Path));
        var (_, state, file) = SnapshotFile.Open(_path);
        file.Dispose();
        SnapshotSamples.AssertEqual(_state, state);
    }

    [Fact]
    public void A_failed_write_leaves_no_temporary_file()
    {
        // The target is a directory: everything is written, then the rename fails.
        Directory.CreateDirectory(_path);
        Assert.ThrowsAny<Exception>(() => Write());
        Assert.Equal([_path], Directory.GetFileSystemEntries(_dir.Path));
        Assert.Empty(Directory.GetFileSystemEntries(_path));
    }

    [Fact]
    public void An_oversized_header_is_refused_and_leaves_nothing()
    {
        var e = Assert.Throws<SnapshotException>(() => SnapshotFile.Write(_path, Header(cmdline: new string('x', 70_000)), _state, _memory));
        Assert.Contains("header", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(_dir.Path));
    }

    [Fact]
    public void Describe_names_a_file_by_content()
    {
        string a = _dir.File("a"), b = _dir.File("b");
        File.WriteAllBytes(a, "kernel"u8.ToArray());
        File.WriteAllBytes(b, "kernel"u8.ToArray());
        var da = SnapshotFile.Describe(a);
        Assert.Equal((a, 6L), (da.Path, da.Size));
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData("kernel"u8)), da.Sha256);
        Assert.Equal(da.Sha256, SnapshotFile.Describe(b).Sha256);
        File.WriteAllBytes(b, "kernel2"u8.ToArray());
        Assert.NotEqual(da.Sha256, SnapshotFile.Describe(b).Sha256);
    }
}
