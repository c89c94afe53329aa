using System.Collections;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Serilog;
using static Rkt.Kvm.Images.Confinement.ConfinementCalls;

namespace Rkt.Kvm.Images.Confinement;

/// <summary>
/// Runs an extraction (<see cref="ExtractionPlan"/>) in a confined child: <c>rkt-kvm</c> itself,
/// re-executed with the hidden verb of <see cref="ExtractionContract"/>, in a mount namespace of its
/// own (unshared by a short-lived thread that then spawns it, so the child is born there and pays one
/// start), with the destination and the archives as inherited fds. The child confines itself
/// (<see cref="ExtractionJail"/>) and reports; an error comes back as the same exception an
/// in-process extraction throws. One child per extraction, whatever the number of archives.
/// </summary>
public sealed class ExtractionSandbox
{
    // Resolved per use, not cached: the CLI configures Serilog after these types may be loaded.
    private static ILogger Log => Serilog.Log.ForContext<ExtractionSandbox>();

    /// <summary>Set to 0 to extract in-process (debugging; like the VMM's --jail=off).</summary>
    public const string DisableVariable = "RKT_KVM_CONFINE_EXTRACTION";

    private readonly string _executable;
    private readonly IReadOnlyList<string> _prefix;

    /// <param name="executable">rkt-kvm, or the dotnet host with rkt-kvm.dll first in <paramref name="prefix"/>.</param>
    public ExtractionSandbox(string executable, IReadOnlyList<string> prefix)
    {
        _executable = executable;
        _prefix = prefix;
    }

    /// <summary>Tests only: a fault the product never asks for (<see cref="ExtractionContract.TestHook"/>).</summary>
    internal ExtractionContract.TestHook TestHook { get; init; }

    /// <summary>Tests only: sees each <c>hook</c> line with the child's pid, while the child waits under the pause hook.</summary>
    internal Action<string, int>? OnHook { get; init; }

    /// <summary>
    /// The sandbox of this process when it is rkt-kvm and may confine (root with CAP_SYS_ADMIN);
    /// null otherwise, which extracts in-process, said at --debug.
    /// </summary>
    public static ExtractionSandbox? ForThisProcess()
    {
        string? reason = null;
        var entry = Assembly.GetEntryAssembly();
        string? path = Environment.ProcessPath;
        if (Environment.GetEnvironmentVariable(DisableVariable) == "0") reason = $"{DisableVariable}=0";
        else if (entry?.GetName().Name != "rkt-kvm" || path is null) reason = "this process is not rkt-kvm and cannot re-execute itself as it";
        else if (!Native.Libc.IsRoot) reason = "not running as root";
        else if (!Rkt.Kvm.Posix.Privileges.HasEffectiveCapability(Rkt.Kvm.Posix.Privileges.CapSysAdmin)) reason = "no CAP_SYS_ADMIN (needed for the child's mount namespace)";
        if (reason is not null)
        {
            Log.Debug("Image extraction runs in-process, unconfined: {Reason}", reason);
            return null;
        }
        // `dotnet rkt-kvm.dll` (tests, framework-dependent runs without the apphost): the host, then the dll.
        return Path.GetFileNameWithoutExtension(path) == "dotnet"
            ? new ExtractionSandbox(path!, [Path.Join(AppContext.BaseDirectory, "rkt-kvm.dll")])
            : new ExtractionSandbox(path!, []);
    }

    /// <summary>
    /// Extracts <paramref name="archives"/> (paths, in plan order) into <paramref name="destination"/>
    /// (an existing, empty directory) in the confined child; throws what the child refused with.
    /// </summary>
    public void Run(ExtractionPlan plan, string destination, IReadOnlyList<string> archives, Action<int>? progress = null)
    {
        if (archives.Count != plan.Archives.Count) throw new ArgumentException("one path per archive of the plan");
        var started = System.Diagnostics.Stopwatch.StartNew();
        var fds = new List<int>(); // what the child gets, in its fd order
        var ours = new List<int>(); // everything to close here
        int planWrite = -1, reportRead = -1, pid;
        try
        {
            var (planRead, pw) = Pipe();
            planWrite = pw;
            ours.Add(planRead);
            var (rr, reportWrite) = Pipe();
            reportRead = rr;
            ours.Add(reportWrite);
            fds.AddRange([planRead, reportWrite, 2, -1 /* the destination, opened in the child's namespace */]);
            foreach (var archive in archives) fds.Add(OpenFd(archive, O_RDONLY | O_CLOEXEC, ours));
            pid = Spawn(fds, destination, ours);
        }
        catch
        {
            if (planWrite >= 0) close(planWrite);
            if (reportRead >= 0) close(reportRead);
            throw;
        }
        finally
        {
            foreach (int fd in ours) close(fd);
        }
        Exception? error = null;
        bool ok = false;
        try
        {
            using (var planStream = new FileStream(new SafeFileHandle(planWrite, ownsHandle: true), FileAccess.Write, 1))
            {
                planWrite = -1;
                try
                {
                    planStream.Write(Encoding.UTF8.GetBytes(ExtractionContract.PlanLine(plan)));
                    planStream.Flush();
                }
                catch (IOException) { } // it died before reading: its status says why
                if (TestHook != ExtractionContract.TestHook.Pause) planStream.Dispose();
                using var report = new StreamReader(new FileStream(new SafeFileHandle(reportRead, ownsHandle: true), FileAccess.Read, 1 << 12));
                reportRead = -1;
                while (report.ReadLine() is { } line)
                {
                    if (line.StartsWith(ExtractionContract.Progress, StringComparison.Ordinal)) progress?.Invoke(int.Parse(line[ExtractionContract.Progress.Length..]));
                    else if (line.StartsWith(ExtractionContract.Hook, StringComparison.Ordinal))
                    {
                        OnHook?.Invoke(line[ExtractionContract.Hook.Length..], pid);
                        if (line.StartsWith(ExtractionContract.Hook + "paused", StringComparison.Ordinal)) planStream.Dispose();
                    }
                    else if (line == ExtractionContract.Ok) ok = true;
                    else if (line.StartsWith(ExtractionContract.Error, StringComparison.Ordinal)) error = ExtractionContract.ParseError(line);
                    else error ??= new ImageException("the extraction process sent a malformed report: " + line);
                }
            }
        }
        finally
        {
            if (planWrite >= 0) close(planWrite);
            if (reportRead >= 0) close(reportRead);
        }
        int status = Wait(pid);
        Log.Debug("Extraction child {Pid} ended with status {Status:x} after {Ms} ms", pid, status, started.ElapsedMilliseconds);
        if (error is not null) throw error;
        int signal = status & 0x7f;
        if (signal != 0)
            throw new ImageException(signal == 31
                ? "the extraction process was killed by SIGSYS: it made a system call its seccomp filter forbids"
                : $"the extraction process was killed by signal {signal}");
        int exit = (status >> 8) & 0xff;
        if (exit != 0 || !ok) throw new ImageException($"the extraction process exited with status {exit} without a report");
    }

    private static unsafe (int Read, int Write) Pipe()
    {
        int* p = stackalloc int[2];
        Check(pipe2(p, O_CLOEXEC), "pipe2");
        return (p[0], p[1]);
    }

    private static int OpenFd(string path, int flags, List<int> ours)
    {
        int fd = open(path, flags);
        if (fd < 0) throw Failure($"open {path}");
        ours.Add(fd);
        return fd;
    }

    /// <summary>
    /// posix_spawn from a thread that has first unshared its mount namespace: the child is born in
    /// that namespace (clone copies the calling thread's), this process's other threads never leave
    /// the host's, and the thread ends with the spawn. <paramref name="fds"/>[i] becomes fd i; the
    /// destination (fd 3) is opened there, after the unshare: a mount can only be bound from a
    /// path of the namespace that binds it.
    /// </summary>
    private unsafe int Spawn(List<int> fds, string destination, List<int> ours)
    {
        // Above every target first, so no dup2 overwrites a source still to come.
        var high = new int[fds.Count];
        for (int i = 0; i < fds.Count; i++)
        {
            if (fds[i] < 0) continue;
            high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 1024);
            if (high[i] < 0) throw Failure("fcntl(F_DUPFD_CLOEXEC)");
            ours.Add(high[i]);
        }
        var argv = new List<string> { _executable };
        argv.AddRange(_prefix);
        argv.AddRange(ExtractionContract.ToArgs(new(Log.IsEnabled(Serilog.Events.LogEventLevel.Debug), TestHook)));
        var env = new List<string>();
        foreach (DictionaryEntry v in Environment.GetEnvironmentVariables())
            if ((string)v.Key is not ("DOTNET_EnableDiagnostics" or "COMPlus_EnableDiagnostics")) env.Add($"{v.Key}={v.Value}");
        env.Add("DOTNET_EnableDiagnostics=0"); // no diagnostics socket in the host's /tmp, no debugger to attach

        int pid = 0, spawnError = 0;
        IOException? unshareError = null;
        var thread = new Thread(() =>
        {
            if (unshare(CLONE_NEWNS) < 0)
            {
                unshareError = Failure("unshare(CLONE_NEWNS) for the extraction process");
                return;
            }
            int root = open(destination, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (root < 0)
            {
                unshareError = Failure($"open {destination}");
                return;
            }
            high[ExtractionContract.RootFd] = root;
            spawnError = SpawnHere(high, argv, env, out pid);
            close(root);
        }) { Name = "rkt-kvm extraction spawner" };
        thread.Start();
        thread.Join();
        if (unshareError is not null) throw unshareError;
        if (spawnError != 0) throw Failure($"posix_spawn {_executable}", spawnError);
        return pid;
    }

    private static unsafe int SpawnHere(int[] fds, List<string> args, List<string> env, out int pid)
    {
        byte* fileActions = stackalloc byte[256];
        byte* attributes = stackalloc byte[512];
        byte* empty = stackalloc byte[128];
        byte* all = stackalloc byte[128];
        var strings = new List<nint>();
        try
        {
            posix_spawn_file_actions_init(fileActions);
            posix_spawnattr_init(attributes);
            sigemptyset(empty);
            sigfillset(all);
            posix_spawnattr_setsigmask(attributes, empty);
            posix_spawnattr_setsigdefault(attributes, all);
            posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
            for (int i = 0; i < fds.Length; i++) posix_spawn_file_actions_adddup2(fileActions, fds[i], i);
            byte** argv = Strings(args, strings);
            byte** envp = Strings(env, strings);
            int child;
            int rc = posix_spawn(&child, argv[0], fileActions, attributes, argv, envp);
            pid = child;
            return rc;
        }
        finally
        {
            posix_spawn_file_actions_destroy(fileActions);
            posix_spawnattr_destroy(attributes);
            foreach (nint s in strings) Marshal.FreeCoTaskMem(s);
        }
    }

    private static unsafe byte** Strings(List<string> values, List<nint> owned)
    {
        nint array = Marshal.AllocCoTaskMem((values.Count + 1) * sizeof(nint));
        owned.Add(array);
        var p = (byte**)array;
        for (int i = 0; i < values.Count; i++)
        {
            nint s = Marshal.StringToCoTaskMemUTF8(values[i]);
            owned.Add(s);
            p[i] = (byte*)s;
        }
        p[values.Count] = null;
        return p;
    }

    private static unsafe int Wait(int pid)
    {
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (Marshal.GetLastPInvokeError() != EINTR) throw Failure($"waitpid {pid}");
        return status;
    }
}
