using System.Text;
using Rkt.Kvm.Vmm.GuestConsole;

namespace Rkt.Kvm.Vmm.Tests;

public class GuestConsoleTests
{
    [Fact]
    public void Bytes_reach_every_target_unchanged_and_lines_reach_observers()
    {
        var a = new MemoryStream();
        var b = new MemoryStream();
        var lines = new List<string>();
        var console = new GuestConsoleOutput([a, b], lines.Add);
        foreach (byte x in "one\r\ntwo\nthr"u8) console.Write(x);
        console.Flush();
        Assert.Equal("one\r\ntwo\nthr", Encoding.ASCII.GetString(a.ToArray()));
        Assert.Equal(a.ToArray(), b.ToArray());
        Assert.Equal(["one", "two"], lines);
    }

    [Fact]
    public void Panic_detector_keeps_the_first_panic_line()
    {
        var detector = new PanicDetector();
        detector.OnLine("[    1.0] ordinary line");
        Assert.Null(detector.PanicLine);
        detector.OnLine("[    2.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100");
        detector.OnLine("Kernel panic - not syncing: second");
        Assert.Equal("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100", detector.PanicLine);
    }
}
