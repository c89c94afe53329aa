using System.Text;

namespace Rkt.Kvm.Initramfs;

/// <summary>
/// Writes the SVR4 "newc" cpio format the Linux initramfs unpacker reads: a 110-byte ASCII
/// header of 13 eight-digit hex fields, the NUL-terminated name, and the data, each padded to
/// 4 bytes; a "TRAILER!!!" entry ends the archive.
/// </summary>
public sealed class CpioNewcWriter(Stream output)
{
    public const string Magic = "070701";
    public const string TrailerName = "TRAILER!!!";
    public const int HeaderSize = 110;

    // st_mode file types.
    public const uint TypeDirectory = 0x4000, TypeRegular = 0x8000, TypeSymlink = 0xA000, TypeCharDevice = 0x2000, TypeBlockDevice = 0x6000;

    private uint _nextInode = 1;
    private long _written;

    public void WriteEntry(string name, uint mode, ReadOnlySpan<byte> data, uint uid = 0, uint gid = 0,
        uint nlink = 1, uint rdevMajor = 0, uint rdevMinor = 0, uint mtime = 0)
    {
        if (name.Length == 0 || name.Contains('\0')) throw new ArgumentException($"Invalid cpio entry name '{name}'.");
        byte[] nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        var header = new StringBuilder(HeaderSize);
        header.Append(Magic);
        foreach (uint field in new[] { _nextInode++, mode, uid, gid, nlink, mtime, (uint)data.Length, 0u, 0u, rdevMajor, rdevMinor, (uint)nameBytes.Length, 0u })
            header.Append(field.ToString("X8"));
        Emit(Encoding.ASCII.GetBytes(header.ToString()));
        Emit(nameBytes);
        Pad();
        Emit(data);
        Pad();
    }

    public void WriteTrailer() => WriteEntry(TrailerName, 0, ReadOnlySpan<byte>.Empty, nlink: 1);

    private void Emit(ReadOnlySpan<byte> bytes)
    {
        output.Write(bytes);
        _written += bytes.Length;
    }

    private void Pad()
    {
        int padding = (int)((4 - _written % 4) % 4);
        Span<byte> zeros = stackalloc byte[3];
        zeros.Clear();
        Emit(zeros[..padding]);
    }
}
