using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>What the helper needs to start a process as an app (or inside one).</summary>
internal sealed record ProcessSpec(
    IReadOnlyList<string> Argv, IReadOnlyList<string> Env, string WorkingDir, Credentials Credentials,
    ulong Capabilities, bool NoNewPrivileges, string? Cgroup, bool Tty = false);

/// <summary>
/// Starts /sbin/rkt-kvm-stage2 (guest-agent/stage2/rkt-kvm-stage2.c) with posix_spawn, wiring the
/// process's stdin/stdout/stderr and a status pipe (fd 3), and reads back "PID n" / "ERR step: why".
/// </summary>
internal static class Stage2
{
    public const string HelperPath = "/sbin/rkt-kvm-stage2";
    public const int StatusFd = 3;
    internal static readonly bool Debug = Environment.GetEnvironmentVariable("RKT_KVM_AGENT_DEBUG") is not null;

    public static List<string> PodInitArgs(string hostname) =>
        ["pod-init", "--status-fd", StatusFd.ToString(CultureInfo.InvariantCulture), "--hostname", hostname];

    public static List<string> AppArgs(int podPid, string root, ProcessSpec spec)
    {
        var args = new List<string> { "app", "--status-fd", StatusFd.ToString(CultureInfo.InvariantCulture), "--pod-pid", Num(podPid), "--root", root };
        AddCommon(args, spec);
        return args;
    }

    public static List<string> ExecArgs(int targetPid, ProcessSpec spec)
    {
        var args = new List<string> { "exec", "--status-fd", StatusFd.ToString(CultureInfo.InvariantCulture), "--target-pid", Num(targetPid) };
        AddCommon(args, spec);
        return args;
    }

    private static void AddCommon(List<string> args, ProcessSpec spec)
    {
        if (spec.Cgroup is not null) args.AddRange(["--cgroup", spec.Cgroup]);
        args.AddRange(["--cwd", spec.WorkingDir.Length == 0 ? "/" : spec.WorkingDir]);
        args.AddRange(["--uid", Num(spec.Credentials.Uid), "--gid", Num(spec.Credentials.Gid)]);
        if (spec.Credentials.Groups.Count > 0) args.AddRange(["--groups", string.Join(',', spec.Credentials.Groups.Select(g => Num(g)))]);
        args.AddRange(["--caps", spec.Capabilities.ToString("x", CultureInfo.InvariantCulture)]);
        if (spec.NoNewPrivileges) args.Add("--no-new-privs");
        if (spec.Tty) args.Add("--tty");
        foreach (string e in spec.Env) args.AddRange(["--env", e]);
        args.Add("--");
        args.AddRange(spec.Argv);
    }

    private static string Num(long n) => n.ToString(CultureInfo.InvariantCulture);

    /// <summary>Parses the helper's status output: the pid (0 if none), the error line (null if none) and
    /// whether it said OK (the process's execve succeeded).</summary>
    public static (int Pid, string? Error, bool Ok) ParseStatus(string text)
    {
        int pid = 0;
        string? error = null;
        bool ok = false;
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith("PID ", StringComparison.Ordinal) && int.TryParse(line.AsSpan(4), NumberStyles.None, CultureInfo.InvariantCulture, out int p)) pid = p;
            else if (line.StartsWith("ERR ", StringComparison.Ordinal)) error ??= line[4..];
            else if (line == "OK") ok = true;
        }
        return (pid, error, ok);
    }

    /// <summary>The status is complete at EOF or at the helper's final "OK" line.</summary>
    private static bool EndsWithOk(StringBuilder text) =>
        text.Length >= 3 && text[^1] == '\n' && text[^2] == 'K' && text[^3] == 'O' && (text.Length == 3 || text[^4] == '\n');

    /// <summary>Creates a pipe whose both ends are close-on-exec (the spawn's dup2 clears it on the copies).</summary>
    public static unsafe (int Read, int Write) Pipe()
    {
        int* fds = stackalloc int[2];
        if (Libc.pipe2(fds, Libc.O_CLOEXEC) != 0) throw new IOException("pipe2: " + Libc.LastError());
        return (fds[0], fds[1]);
    }

    /// <summary>
    /// Spawns the helper with fds 0-2 = <paramref name="stdio"/> and fd 3 = a status pipe, reads its
    /// status to its OK (or to EOF, then waits for it to exit) and returns the started process's pid; throws
    /// <see cref="StartException"/> with the helper's sentence when it failed.
    /// </summary>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, int stdin, int stdout, int stderr)
    {
        var (statusRead, statusWrite) = Pipe();
        int helperPid;
        string? fault = FaultPoints.Armed.FireForStage2(args[0]);
        try { helperPid = Spawn(args, [stdin, stdout, stderr, statusWrite], fault); Reaper.ChildStarted(); }
        finally { Libc.close(statusWrite); }
        Task<ExitStatus> helperExit = Reaper.WaitAsync(helperPid);
        if (Debug) Log.Line($"stage2: spawned {helperPid}: {string.Join(' ', args)}");
        string status = await BlockingThreads.Run(() => ReadStatus(statusRead)).ConfigureAwait(false);
        if (Debug) Log.Line($"stage2: {helperPid} status '{status.Trim()}'");
        var (pid, error, ok) = ParseStatus(status);
        if (ok && error is null && pid != 0)
        {
            // The process runs; the helper is exiting (0) and is reaped in the background.
            _ = helperExit.ContinueWith(t => { if (t.Result.Code != 0 || t.Result.Signal != 0) Log.Line($"rkt-kvm-agent: the stage2 helper {helperPid} {t.Result} after OK"); }, TaskScheduler.Default);
            return pid;
        }
        ExitStatus exit = await helperExit.ConfigureAwait(false);
        if (Debug) Log.Line($"stage2: {helperPid} {exit}");
        if (error is not null || pid == 0 || exit.Code != 0 || exit.Signal != 0)
        {
            if (pid != 0)
            {
                // The process may run on: the helper was killed after making it (its execve worked but
                // nobody said OK). It is still our unreaped child, so the pid cannot have been reused.
                Libc.kill(pid, Libc.SIGKILL);
                _ = Reaper.WaitAsync(pid); // collect it; nobody needs the status
            }
            throw new StartException(pid, error ?? (pid == 0
                ? $"the stage2 helper {exit} without reporting a process"
                : $"the stage2 helper {exit} before it confirmed the process {pid} it made (killed too)"));
        }
        return pid;
    }

    private static unsafe string ReadStatus(int fd)
    {
        try
        {
            var text = new StringBuilder();
            byte* buffer = stackalloc byte[512];
            while (true)
            {
                nint n = Libc.read(fd, buffer, 512);
                if (n < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR) continue;
                if (n <= 0) break;
                text.Append(Encoding.UTF8.GetString(buffer, (int)n));
                if (EndsWithOk(text)) break;
            }
            return text.ToString();
        }
        finally { Libc.close(fd); }
    }

    private const short POSIX_SPAWN_SETSIGDEF = 0x04, POSIX_SPAWN_SETSIGMASK = 0x08;

    /// <summary>posix_spawn of the helper; fds[i] becomes fd i in the child. Signal mask cleared and
    /// every signal at its default (the runtime ignores SIGPIPE; apps must not inherit that).</summary>
    private static unsafe int Spawn(IReadOnlyList<string> args, int[] fds, string? faultPoint)
    {
        byte* fileActions = stackalloc byte[256];
        byte* attributes = stackalloc byte[512];
        byte* empty = stackalloc byte[128];
        byte* all = stackalloc byte[128];
        var strings = new List<nint>();
        try
        {
            Libc.posix_spawn_file_actions_init(fileActions);
            Libc.posix_spawnattr_init(attributes);
            Libc.sigemptyset(empty);
            Libc.sigfillset(all);
            Libc.posix_spawnattr_setsigmask(attributes, empty);
            Libc.posix_spawnattr_setsigdefault(attributes, all);
            Libc.posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
            for (int i = 0; i < fds.Length; i++) Libc.posix_spawn_file_actions_adddup2(fileActions, fds[i], i);
            byte** argv = stackalloc byte*[args.Count + 2];
            nint path = Marshal.StringToCoTaskMemUTF8(HelperPath);
            strings.Add(path);
            argv[0] = (byte*)path;
            for (int i = 0; i < args.Count; i++)
            {
                nint s = Marshal.StringToCoTaskMemUTF8(args[i]);
                strings.Add(s);
                argv[i + 1] = (byte*)s;
            }
            argv[args.Count + 1] = null;
            byte** envp = stackalloc byte*[2];
            envp[0] = envp[1] = null;
            if (faultPoint is not null) // the helper's environment is otherwise empty (FaultPoints)
            {
                nint variable = Marshal.StringToCoTaskMemUTF8("RKT_KVM_FAULT=" + faultPoint);
                strings.Add(variable);
                envp[0] = (byte*)variable;
            }
            int pid;
            int rc = Libc.posix_spawn(&pid, (byte*)path, fileActions, attributes, argv, envp);
            if (rc != 0) throw new StartException(0, $"posix_spawn {HelperPath}: {Libc.Describe(rc)}");
            return pid;
        }
        finally
        {
            Libc.posix_spawn_file_actions_destroy(fileActions);
            Libc.posix_spawnattr_destroy(attributes);
            foreach (nint s in strings) Marshal.FreeCoTaskMem(s);
        }
    }
}

/// <summary>The helper could not start the process; the message is its "step: reason".</summary>
internal sealed class StartException(int pid, string message) : Exception(message)
{
    public int Pid { get; } = pid;
}
