using System.Globalization;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>
/// cgroup v2 for the pod: /sys/fs/cgroup/pod (cpu, memory, pids enabled) with one child per app.
/// The agent stays in the root cgroup, so an app's fork bomb or memory hog cannot starve it.
/// </summary>
internal static class Cgroup
{
    public const string Mount = "/sys/fs/cgroup";
    public const string PodPath = Mount + "/pod";
    public const uint DefaultPidsLimit = 1024;
    private const string Controllers = "+cpu +memory +pids";

    /// <summary>runc's CPU shares (cgroup v1, 2–262144) to cgroup v2 cpu.weight (1–10000) conversion; 0 = unset.</summary>
    public static ulong SharesToWeight(ulong shares)
    {
        if (shares == 0) return 0;
        shares = Math.Clamp(shares, 2, 262144);
        return 1 + (shares - 2) * 9999 / 262142;
    }

    public static string AppPath(string app) => $"{PodPath}/{app}";

    /// <summary>Creates the pod cgroup once and enables the controllers for it and its children.</summary>
    public static void EnsurePod()
    {
        if (Directory.Exists(PodPath)) return;
        Write(Mount + "/cgroup.subtree_control", Controllers);
        Directory.CreateDirectory(PodPath);
        Write(PodPath + "/cgroup.subtree_control", Controllers);
    }

    /// <summary>Creates an app's cgroup with its limits.</summary>
    public static void CreateApp(string app, ulong memoryMax, ulong cpuShares, uint pidsMax)
    {
        EnsurePod();
        string dir = AppPath(app);
        Directory.CreateDirectory(dir);
        if (memoryMax > 0)
        {
            Write(dir + "/memory.max", memoryMax.ToString(CultureInfo.InvariantCulture));
            TryWrite(dir + "/memory.swap.max", "0"); // absent when the kernel has no swap
        }
        Write(dir + "/memory.oom.group", "1");
        if (SharesToWeight(cpuShares) is var weight and > 0) Write(dir + "/cpu.weight", weight.ToString(CultureInfo.InvariantCulture));
        Write(dir + "/pids.max", (pidsMax == 0 ? DefaultPidsLimit : pidsMax).ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>SIGKILLs every process in the app's cgroup (cgroup.kill).</summary>
    public static void Kill(string app) => TryWrite(AppPath(app) + "/cgroup.kill", "1");

    public static bool IsEmpty(string app)
    {
        try { return File.ReadAllText(AppPath(app) + "/cgroup.procs").Trim().Length == 0; }
        catch (IOException) { return true; }
    }

    /// <summary>Kills what is left in the app's cgroup and removes it; waits up to 2 s for the processes to go.</summary>
    public static async Task RemoveAppAsync(string app)
    {
        string dir = AppPath(app);
        if (!Directory.Exists(dir)) return;
        Kill(app);
        for (int i = 0; i < 100; i++)
        {
            if (Libc.rmdir(dir) == 0 || !Directory.Exists(dir)) return;
            await Task.Delay(20).ConfigureAwait(false);
        }
        throw new IOException($"The cgroup {dir} still has processes after 2 s.");
    }

    private static void Write(string path, string value) => File.WriteAllText(path, value);

    private static bool TryWrite(string path, string value)
    {
        try { File.WriteAllText(path, value); return true; }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }
}
