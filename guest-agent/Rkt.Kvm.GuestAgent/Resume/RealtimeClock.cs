using System.Runtime.InteropServices;

namespace Rkt.Kvm.GuestAgent.Resume;

/// <summary>
/// The guest's wall clock (CLOCK_REALTIME). A VM restored from a template snapshot wakes with the time the
/// template was snapshotted, stale by the template's age; the host's time, sent in the request, replaces it.
/// CLOCK_MONOTONIC and CLOCK_BOOTTIME are left alone: timeouts and the agent's own figures keep running.
/// </summary>
internal static class RealtimeClock
{
    public static long NowNs()
    {
        Libc.clock_gettime(Libc.CLOCK_REALTIME, out Libc.Timespec now);
        return now.Seconds * 1_000_000_000 + now.Nanoseconds;
    }

    public static Libc.Timespec ToTimespec(long unixTimeNs) =>
        new() { Seconds = unixTimeNs / 1_000_000_000, Nanoseconds = unixTimeNs % 1_000_000_000 };

    /// <summary>How far a clock reading <paramref name="oldNs"/> moved to reach <paramref name="newNs"/>, in whole
    /// milliseconds (toward zero; positive: forward).</summary>
    public static long StepMs(long oldNs, long newNs) => (newNs - oldNs) / 1_000_000;

    /// <summary>Steps CLOCK_REALTIME to <paramref name="unixTimeNs"/> (non-negative); returns the step in ms.
    /// Throws <see cref="IOException"/> with the errno.</summary>
    public static long Set(long unixTimeNs)
    {
        long before = NowNs();
        if (Libc.clock_settime(Libc.CLOCK_REALTIME, ToTimespec(unixTimeNs)) != 0)
            throw new IOException($"clock_settime CLOCK_REALTIME: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        return StepMs(before, unixTimeNs);
    }
}
