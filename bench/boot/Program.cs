using System.Diagnostics;
using System.Globalization;
using Rkt.Kvm.Bench;
using System.Text.RegularExpressions;

namespace Rkt.Kvm.Bench.Boot;

/// <summary>
/// Boots the same vmlinux + initrd + RAM + command line with our VMM and with QEMU microvm,
/// alternating, several times each, and reports: time from process start to init's first line,
/// VMM overhead RSS (everything but guest RAM) once init runs, and our VMM's own start-up time
/// (process start to first vCPU entry). Prints RESULT lines at the end.
/// On nested PVM-based KVM hosts stock QEMU cannot boot the product kernel (KVM's emulator lacks
/// int3 and fwait), so run.sh passes the benchmark-only "qemu-reference" kernel variant
/// (kernel-config/build-kernel.sh --variant qemu-reference) to both VMMs.
/// </summary>
public static class Program
{
    private const string InitMarker = "rkt-kvm-guest: kernel";
    private const int MemoryMiB = 128;
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(4);

    public static int Main(string[] args)
    {
        var o = Options.Parse(args);
        string qemu = BenchSupport.FindQemu();
        var probe = KernelProbe.FromVmlinux(o.Kernel);
        // The exact command line our VMM gives the guest (its own options + ours), so QEMU gets the same.
        string extra = "quiet rkt.init=hang";
        string cmdline = BenchSupport.ProbeCmdline(o.Vmm, ["--kernel", o.Kernel, "--initrd", o.Initrd, "--memory", MemoryMiB.ToString()], extra);
        Console.WriteLine($"kernel:  {o.Kernel}\n         {DescribeKernel(o.Kernel)}\ninitrd:  {o.Initrd}\nmemory:  {MemoryMiB} MiB, 1 vCPU\ncmdline: {cmdline}\nqemu:    {BenchSupport.QemuVersion(qemu)}\n");

        var ours = new List<Sample>();
        var theirs = new List<Sample>();
        for (int i = 0; i < o.Runs; i++)
        {
            var a = Boot("rkt-kvm-vmm", o.Vmm, ["--kernel", o.Kernel, "--initrd", o.Initrd, "--memory", MemoryMiB.ToString(), "--cmdline", extra, "--debug", "--console", "stdout"], probe);
            ours.Add(a);
            Console.WriteLine($"run {i + 1}: ours boot {a.BootMs:F0} ms, overhead RSS {a.OverheadRssKiB} KiB, start-up {a.StartupMs:F1} ms");
            var b = Boot("qemu", qemu, BenchSupport.MicrovmArgs(o.Kernel, o.Initrd, MemoryMiB, cmdline), probe);
            theirs.Add(b);
            Console.WriteLine($"run {i + 1}: qemu boot {b.BootMs:F0} ms, overhead RSS {b.OverheadRssKiB} KiB");
        }

        double bootOurs = BenchSupport.Median(ours.Select(s => s.BootMs)), bootRef = BenchSupport.Median(theirs.Select(s => s.BootMs));
        double rssOurs = BenchSupport.Median(ours.Select(s => (double)s.OverheadRssKiB)), rssRef = BenchSupport.Median(theirs.Select(s => (double)s.OverheadRssKiB));
        double startup = BenchSupport.Median(ours.Select(s => s.StartupMs));
        Console.WriteLine();
        Console.WriteLine(BenchSupport.Result("boot_to_init_median", bootOurs, "ms", bootRef));
        Console.WriteLine(BenchSupport.Result("vmm_overhead_rss_median", rssOurs, "KiB", rssRef));
        Console.WriteLine(BenchSupport.Result("vmm_exec_to_first_vcpu_entry_median", startup, "ms", null));
        return 0;
    }

    private sealed record Sample(double BootMs, long OverheadRssKiB, double StartupMs);

    /// <summary>Which kernel this is (from the `version` file build-kernel.sh writes next to vmlinux), and why it is used.</summary>
    private static string DescribeKernel(string kernel)
    {
        string versionFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(kernel))!, "version");
        if (!File.Exists(versionFile))
            return "(no build-kernel.sh version file next to it; not a cached Rkt.Kvm kernel)";
        var info = File.ReadLines(versionFile).Select(l => l.Split('=', 2)).Where(kv => kv.Length == 2).ToDictionary(kv => kv[0], kv => kv[1]);
        string release = info.GetValueOrDefault("kernelrelease", "?");
        return info.GetValueOrDefault("variant") switch
        {
            "qemu-reference" => $"{release}, variant qemu-reference (benchmark-only): the product kernel plus two patches that skip the boot-time int3 self-test\n" +
                                "         and drop the fwait in fpu__drop(); KVM's emulator on nested PVM hosts lacks both, so stock QEMU cannot boot the product\n" +
                                "         kernel here. Both VMMs boot this same kernel.",
            null => $"{release}, product kernel (no variant): stock QEMU dies on it on nested PVM hosts (int3 self-test, fwait); use run.sh",
            string v => $"{release}, variant {v}",
        };
    }

    /// <summary>Starts a VMM, waits for init's first line, samples memory, kills it.</summary>
    private static Sample Boot(string label, string program, IReadOnlyList<string> args, KernelProbe probe)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var marker = new TaskCompletionSource<double>(TaskCreationOptions.RunContinuationsAsynchronously);
        double? firstEntryUnixUs = null;
        var stderr = new List<string>();
        var watch = new Stopwatch();
        watch.Start();
        using var p = Process.Start(psi)!;
        // Process.Start returns once the child has exec'd, so start-up is measured from exec and
        // excludes this benchmark's own fork cost, which any caller pays differently.
        long execUnixUs = UnixMicros();
        p.OutputDataReceived += (_, e) => { if (e.Data?.Contains(InitMarker) == true) marker.TrySetResult(watch.Elapsed.TotalMilliseconds); };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.Add(e.Data);
            var m = Regex.Match(e.Data, @"First vCPU entry .* \(unix (\d+) µs\)");
            if (m.Success) firstEntryUnixUs = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try
        {
            // Fail at once (not after the timeout) when the VMM dies before init, e.g. on a KVM internal error.
            var exited = p.WaitForExitAsync();
            int done = Task.WaitAny([marker.Task, exited], BootTimeout);
            if (done != 0)
            {
                string why = done < 0 ? $"did not reach init within {BootTimeout.TotalMinutes} minutes" : $"exited with status {p.ExitCode} before init";
                string log;
                lock (stderr) log = string.Join('\n', stderr.TakeLast(40));
                throw new InvalidOperationException($"{label} {why}:\n{log}");
            }
            double bootMs = marker.Task.Result;
            long rss = OverheadRssKiB(p.Id, MemoryMiB * 1024L * 1024, probe);
            double startup = firstEntryUnixUs is { } fe ? (fe - execUnixUs) / 1000.0 : double.NaN;
            return new Sample(bootMs, rss, startup);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
    }

    /// <summary>
    /// Resident memory of the process minus exactly its guest RAM: what the VMM itself costs per VM.
    /// Guest RAM is not always one mapping (VMA): the kernel merges it with adjacent anonymous
    /// mappings of the same flags (a malloc arena) and splits it where the VMM advised huge pages
    /// for the kernel image. So its base is found by content: the resident page that holds the
    /// kernel's entry code is guest-physical <c>probe.GuestAddress</c>. Then the resident pages of
    /// exactly [base, base + RAM) are counted from /proc/pid/pagemap.
    /// </summary>
    private static long OverheadRssKiB(int pid, long guestBytes, KernelProbe probe)
    {
        var vmas = Vma.ReadSmaps(pid);
        long total = vmas.Sum(v => v.RssKiB);
        using var mem = File.OpenHandle($"/proc/{pid}/mem");
        ulong pageSize = (ulong)Environment.SystemPageSize;
        var bases = new HashSet<ulong>();
        // Guest RAM pieces are at most the RAM size (plus a merged neighbour); skip huge reservations like the GC's.
        foreach (var v in vmas.Where(v => v.IsPrivateAnonymousRw && v.RssKiB > 0 && v.End - v.Start <= (ulong)guestBytes + (64UL << 20)))
        {
            foreach (ulong page in ResidentPages(pid, v.Start, v.End))
            {
                if (page >= probe.GuestAddress && probe.Matches(mem, page - probe.GuestAddress)) bases.Add(page - probe.GuestAddress);
            }
        }
        if (bases.Count != 1)
            throw new InvalidOperationException($"Found {bases.Count} guest-RAM candidates of {guestBytes >> 20} MiB with the kernel at 0x{probe.GuestAddress:X} in process {pid}, expected 1.");
        ulong start = bases.Single();
        long guestKiB = ResidentPages(pid, start, start + (ulong)guestBytes).Count() * (long)pageSize / 1024;
        return total - guestKiB;
    }

    /// <summary>Addresses of the resident pages in [start, end), from /proc/pid/pagemap (bit 63: page present).</summary>
    private static List<ulong> ResidentPages(int pid, ulong start, ulong end)
    {
        var present = new List<ulong>();
        if (end <= start) return present;
        ulong pageSize = (ulong)Environment.SystemPageSize;
        var entries = new byte[checked((int)((end - start) / pageSize * 8))];
        using var pagemap = File.OpenHandle($"/proc/{pid}/pagemap");
        int read = 0;
        while (read < entries.Length)
        {
            int n = RandomAccess.Read(pagemap, entries.AsSpan(read), (long)(start / pageSize * 8) + read);
            if (n == 0) break;
            read += n;
        }
        for (int i = 0; i + 8 <= read; i += 8)
        {
            if ((BitConverter.ToUInt64(entries, i) & (1UL << 63)) != 0) present.Add(start + (ulong)(i / 8) * pageSize);
        }
        return present;
    }

    /// <summary>One mapping from /proc/pid/smaps.</summary>
    private sealed record Vma(ulong Start, ulong End, string Perms, string Path, long RssKiB)
    {
        public bool IsPrivateAnonymousRw => Path.Length == 0 && Perms.StartsWith("rw", StringComparison.Ordinal) && Perms.EndsWith('p');

        public static List<Vma> ReadSmaps(int pid)
        {
            var result = new List<Vma>();
            Match? header = null;
            foreach (string line in File.ReadLines($"/proc/{pid}/smaps"))
            {
                var m = Regex.Match(line, @"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$");
                if (m.Success) header = m;
                else if (line.StartsWith("Rss:", StringComparison.Ordinal) && header is not null)
                {
                    result.Add(new Vma(ulong.Parse(header.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                        ulong.Parse(header.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                        header.Groups[3].Value, header.Groups[4].Value.Trim(), KiB(line)));
                }
            }
            return result;
        }
    }

    /// <summary>
    /// The first bytes of the kernel's entry code and the guest-physical address both VMMs load them at
    /// (vmlinux is loaded by its PT_LOAD physical addresses, QEMU via PVH, ours directly).
    /// </summary>
    private sealed record KernelProbe(ulong GuestAddress, byte[] Bytes)
    {
        public static KernelProbe FromVmlinux(string path)
        {
            byte[] elf = File.ReadAllBytes(path);
            if (elf.Length < 64 || elf[0] != 0x7F || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2)
                throw new ArgumentException($"{path} is not a 64-bit ELF vmlinux; the benchmark needs the uncompressed kernel.");
            ulong entry = BitConverter.ToUInt64(elf, 0x18);
            long phoff = (long)BitConverter.ToUInt64(elf, 0x20);
            int phentsize = BitConverter.ToUInt16(elf, 0x36), phnum = BitConverter.ToUInt16(elf, 0x38);
            for (int i = 0; i < phnum; i++)
            {
                int ph = checked((int)(phoff + (long)i * phentsize));
                if (BitConverter.ToUInt32(elf, ph) != 1) continue; // PT_LOAD
                ulong offset = BitConverter.ToUInt64(elf, ph + 0x08), paddr = BitConverter.ToUInt64(elf, ph + 0x18), filesz = BitConverter.ToUInt64(elf, ph + 0x20);
                if (entry >= paddr && entry + 64 <= paddr + filesz)
                    return new KernelProbe(entry, elf.AsSpan(checked((int)(offset + (entry - paddr))), 64).ToArray());
            }
            throw new ArgumentException($"{path}: no PT_LOAD segment holds the entry point 0x{entry:X}.");
        }

        public bool Matches(Microsoft.Win32.SafeHandles.SafeFileHandle mem, ulong ramBase)
        {
            var buffer = new byte[Bytes.Length];
            try
            {
                return RandomAccess.Read(mem, buffer, checked((long)(ramBase + GuestAddress))) == buffer.Length && buffer.AsSpan().SequenceEqual(Bytes);
            }
            catch (IOException)
            {
                return false; // Not readable there (e.g. outside the mapping).
            }
        }
    }

    private static long KiB(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    private static long UnixMicros() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks / 10;

    private sealed record Options(string Vmm, string Kernel, string Initrd, int Runs)
    {
        public static Options Parse(string[] args)
        {
            string Get(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"{name} is required");
            int runs = args.Contains("--runs") ? int.Parse(Get("--runs"), CultureInfo.InvariantCulture) : 3;
            return new Options(Get("--vmm"), Get("--kernel"), Get("--initrd"), runs);
        }
    }
}
