using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Bench;

/// <summary>What every benchmark that measures against QEMU needs: finding it, the microvm machine
/// that boots our kernel on nested PVM hosts (see shared PLATFORM.md), the exact guest command line
/// our VMM would use (so both guests get the same), medians and the RESULT line format.
/// Compiled into each bench project (bench/*/…csproj: Compile Include="../Common/*.cs").</summary>
public static class BenchSupport
{
    public static string FindQemu()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            string path = Path.Combine(dir, "qemu-system-x86_64");
            if (File.Exists(path)) return path;
        }
        throw new InvalidOperationException("qemu-system-x86_64 is not installed (Debian package qemu-system-x86; `make bench` installs it).");
    }

    public static string QemuVersion(string qemu)
    {
        var psi = new ProcessStartInfo(qemu, "--version") { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string first = p.StandardOutput.ReadLine() ?? "?";
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return first.Trim();
    }

    /// <summary>QEMU microvm booting <paramref name="kernel"/> like our VMM does: 1 vCPU, serial on
    /// stdio, no firmware. <c>+xsaveerptr</c> and <c>-cx16</c> are what the guest needs on PVM hosts.
    /// <c>acpi=off</c> makes QEMU name its virtio-mmio devices on the kernel command line, as we do:
    /// our kernel has no ACPI, and with ACPI QEMU describes them only in its DSDT.</summary>
    public static List<string> MicrovmArgs(string kernel, string initrd, int memoryMiB, string cmdline) =>
    [
        "-enable-kvm", "-M", "microvm,acpi=off,x-option-roms=off,pit=on,pic=on,rtc=off,isa-serial=on",
        "-cpu", "qemu64,-cx16,+xsaveerptr", "-m", memoryMiB.ToString(CultureInfo.InvariantCulture), "-smp", "1",
        "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
    ];

    /// <summary>The kernel command line our VMM gives the guest (its own options + <paramref name="extra"/>).
    /// A zero-vCPU-time probe: the VMM logs its final command line at --debug before booting; it is
    /// stopped right after. <paramref name="vmmArgs"/> are the other VMM options of the run.</summary>
    public static string ProbeCmdline(string vmm, IEnumerable<string> vmmArgs, string extra)
    {
        var psi = new ProcessStartInfo(vmm) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in vmmArgs.Concat(["--cmdline", extra, "--debug", "--console", "none"])) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string? line;
        while ((line = p.StandardError.ReadLine()) is not null)
        {
            var m = Regex.Match(line, "cmdline \"(.*)\"");
            if (m.Success)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                return m.Groups[1].Value;
            }
        }
        throw new InvalidOperationException("The VMM did not report its kernel command line.");
    }

    /// <summary>The command line without our virtio-mmio device entries: QEMU microvm adds its own.</summary>
    public static string WithoutVirtioMmioDevices(string cmdline) =>
        string.Join(' ', cmdline.Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(a => !a.StartsWith("virtio_mmio.device=", StringComparison.Ordinal)));

    public static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        if (v.Length == 0) return double.NaN;
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    /// <summary><c>RESULT name ours=…unit [ref=…unit ratio=ours/ref]</c>, the line every benchmark ends with.</summary>
    public static string Result(string name, double ours, string unit, double? reference, string format = "F1") =>
        reference is { } r
            ? string.Create(CultureInfo.InvariantCulture, $"RESULT {name} ours={ours.ToString(format, CultureInfo.InvariantCulture)}{unit} ref={r.ToString(format, CultureInfo.InvariantCulture)}{unit} ratio={ours / r:F3}")
            : string.Create(CultureInfo.InvariantCulture, $"RESULT {name} ours={ours.ToString(format, CultureInfo.InvariantCulture)}{unit}");
}
