using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.GuestAgent;

/// <summary>Reads the agent's own figures from procfs with raw open/read/close (few syscalls: each costs ~250 µs in the guest).</summary>
internal static class ProcStats
{
    public static ProcessStats Capture()
    {
        var stats = new ProcessStats();
        Span<byte> buffer = stackalloc byte[2048];

        int n = Libc.ReadSmallFile("/proc/self/stat", buffer);
        if (n > 0 && ParseStat(buffer[..n], out ulong minflt, out ulong majflt, out _))
        {
            stats.MinorFaults = minflt;
            stats.MajorFaults = majflt;
        }
        n = Libc.ReadSmallFile("/proc/self/status", buffer);
        if (n > 0)
        {
            var text = buffer[..n];
            stats.VmRssBytes = StatusField(text, "VmRSS:"u8) * 1024;
            stats.VmHwmBytes = StatusField(text, "VmHWM:"u8) * 1024;
            stats.Threads = (uint)StatusField(text, "Threads:"u8);
            stats.VoluntaryContextSwitches = StatusField(text, "voluntary_ctxt_switches:"u8);
            stats.InvoluntaryContextSwitches = StatusField(text, "nonvoluntary_ctxt_switches:"u8);
        }
        n = Libc.ReadSmallFile("/proc/self/io", buffer);
        if (n > 0)
        {
            stats.ReadSyscalls = StatusField(buffer[..n], "syscr:"u8);
            stats.WriteSyscalls = StatusField(buffer[..n], "syscw:"u8);
        }
        return stats;
    }

    /// <summary>Process start time in ms since boot (field 22 of /proc/self/stat, in USER_HZ = 100 ticks).</summary>
    public static ulong StartTimeMilliseconds()
    {
        Span<byte> buffer = stackalloc byte[1024];
        int n = Libc.ReadSmallFile("/proc/self/stat", buffer);
        return n > 0 && ParseStat(buffer[..n], out _, out _, out ulong start) ? start * 10 : 0;
    }

    /// <summary>Parses /proc/PID/stat: the comm field (2) may hold spaces and parentheses, so fields are counted after the last ')'.</summary>
    public static bool ParseStat(ReadOnlySpan<byte> stat, out ulong minorFaults, out ulong majorFaults, out ulong startTicks)
    {
        minorFaults = majorFaults = startTicks = 0;
        int close = stat.LastIndexOf((byte)')');
        if (close < 0) return false;
        var rest = stat[(close + 1)..];
        // rest starts with " <state> ..." = field 3.
        int field = 2;
        bool ok = false;
        while (!rest.IsEmpty)
        {
            rest = rest.TrimStart((byte)' ');
            int end = rest.IndexOfAny((byte)' ', (byte)'\n');
            var token = end < 0 ? rest : rest[..end];
            rest = end < 0 ? default : rest[end..];
            if (token.IsEmpty) break;
            field++;
            switch (field)
            {
                case 10: minorFaults = ParseUnsigned(token); break;
                case 12: majorFaults = ParseUnsigned(token); break;
                case 22: startTicks = ParseUnsigned(token); ok = true; break;
            }
            if (field == 22) break;
        }
        return ok;
    }

    /// <summary>The number after "<paramref name="key"/>" at the start of a line ("VmRSS:     1234 kB"); 0 when absent.</summary>
    public static ulong StatusField(ReadOnlySpan<byte> text, ReadOnlySpan<byte> key)
    {
        int start = 0;
        while (start < text.Length)
        {
            var line = text[start..];
            int nl = line.IndexOf((byte)'\n');
            if (nl >= 0) line = line[..nl];
            if (line.StartsWith(key))
            {
                var value = line[key.Length..].TrimStart(" \t"u8);
                int end = value.IndexOfAnyExceptInRange((byte)'0', (byte)'9');
                return ParseUnsigned(end < 0 ? value : value[..end]);
            }
            if (nl < 0) break;
            start += nl + 1;
        }
        return 0;
    }

    /// <summary>MemTotal and MemAvailable from /proc/meminfo, in bytes.</summary>
    public static (ulong Total, ulong Available) Memory()
    {
        Span<byte> buffer = stackalloc byte[4096];
        int n = Libc.ReadSmallFile("/proc/meminfo", buffer);
        if (n <= 0) return (0, 0);
        return (StatusField(buffer[..n], "MemTotal:"u8) * 1024, StatusField(buffer[..n], "MemAvailable:"u8) * 1024);
    }

    private static ulong ParseUnsigned(ReadOnlySpan<byte> s)
    {
        ulong v = 0;
        foreach (byte b in s)
        {
            if (b < (byte)'0' || b > (byte)'9') return 0;
            v = v * 10 + (ulong)(b - '0');
        }
        return v;
    }
}
