using System.Diagnostics;
using System.Text;
using Rkt.Kvm.Initramfs;

namespace Rkt.Kvm.Vmm.Tests;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class InitramfsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rkt-kvm-cpio-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Newc_entry_layout_matches_the_format()
    {
        var stream = new MemoryStream();
        var cpio = new CpioNewcWriter(stream);
        cpio.WriteEntry("init", CpioNewcWriter.TypeRegular | 0x1ED, "abcde"u8);
        byte[] bytes = stream.ToArray();
        string header = Encoding.ASCII.GetString(bytes, 0, 110);
        Assert.StartsWith("070701", header);
        Assert.Equal("000081ED", header.Substring(6 + 8, 8)); // mode
        Assert.Equal("00000005", header.Substring(6 + 6 * 8, 8)); // filesize
        Assert.Equal("00000005", header.Substring(6 + 11 * 8, 8)); // namesize incl. NUL
        Assert.Equal("init\0", Encoding.ASCII.GetString(bytes, 110, 5));
        Assert.Equal(0, (110 + 5 + 1) % 4); // name padded to 4: data starts at 116
        Assert.Equal("abcde", Encoding.ASCII.GetString(bytes, 116, 5));
        Assert.Equal(124, bytes.Length); // data padded to 4
    }

    [Fact]
    public void Spec_parses_gen_init_cpio_lines_and_rejects_bad_ones()
    {
        var entries = InitramfsSpec.Parse("# c\n\ndir /proc 0755 0 0\nfile /init init.sh 0755 0 0\nslink /bin/sh busybox 0777 0 0\nnod /dev/console 0600 0 0 c 5 1\n", "/base");
        Assert.Equal(new DirectoryEntry("/proc", 0x1ED, 0, 0), entries[0]);
        Assert.Equal(new FileEntry("/init", "/base/init.sh", 0x1ED, 0, 0), entries[1]);
        Assert.Equal(new SymlinkEntry("/bin/sh", "busybox", 0x1FF, 0, 0), entries[2]);
        Assert.Equal(new DeviceEntry("/dev/console", 'c', 5, 1, 0x180, 0, 0), entries[3]);
        Assert.Throws<FormatException>(() => InitramfsSpec.Parse("dir proc 0755 0 0", "/"));
        Assert.Throws<FormatException>(() => InitramfsSpec.Parse("dir /proc 0999 0 0", "/"));
        Assert.Throws<FormatException>(() => InitramfsSpec.Parse("pipe /x 0755 0 0", "/"));
        Assert.Throws<ArgumentException>(() => InitramfsBuilder.Write([new DirectoryEntry("/a/../b", 0x1ED, 0, 0)], new MemoryStream()));
    }

    /// <summary>The real cpio tool (as the kernel would) must list and extract what we write.</summary>
    [Fact]
    public void Gnu_cpio_extracts_the_archive_with_parents_first()
    {
        string source = Path.Combine(_dir, "hello.sh");
        File.WriteAllText(source, "#!/bin/sh\necho hi\n");
        string archive = Path.Combine(_dir, "out.cpio");
        using (var s = File.Create(archive))
        {
            InitramfsBuilder.Write(
            [
                new FileEntry("/usr/bin/hello", source, 0x1ED, 0, 0),
                new SymlinkEntry("/bin/hi", "../usr/bin/hello", 0x1FF, 0, 0),
                new DirectoryEntry("/tmp", 0x3FF, 0, 0),
            ], s);
        }
        string extract = Path.Combine(_dir, "x");
        Directory.CreateDirectory(extract);
        var psi = new ProcessStartInfo("cpio", "-id --quiet") { WorkingDirectory = extract, RedirectStandardInput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        using (var input = File.OpenRead(archive)) input.CopyTo(p.StandardInput.BaseStream);
        p.StandardInput.Close();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, p.StandardError.ReadToEnd());
        Assert.Equal("#!/bin/sh\necho hi\n", File.ReadAllText(Path.Combine(extract, "usr/bin/hello")));
        Assert.Equal("../usr/bin/hello", new FileInfo(Path.Combine(extract, "bin/hi")).LinkTarget);
        Assert.True(Directory.Exists(Path.Combine(extract, "tmp")));
        Assert.Equal(UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(extract, "usr/bin/hello")) & UnixFileMode.UserExecute);
    }
}
