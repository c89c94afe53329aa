using Rkt.Kvm.Agent.Client;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Stage1.Runtime;
using Tmds.Linux;

namespace Rkt.Kvm.Stage1.Entrypoints.Supervision;

/// <summary>
/// A stage1 process that is done with root before it talks to the guest's agent (the pod
/// supervisor, enter, attach, app/start, app/stop, app/add after its exports, app/rm after connecting to the VMM's control socket): it opens the pod's
/// runtime directory, and any other directory it will still write to, while it may, then confines
/// itself as the pod's supervisor user (<see cref="SupervisorLockDown"/>). From then on it reaches
/// those directories only through the open fds (<c>/proc/self/fd/N/…</c>): the paths above them may
/// be root's alone. When the process is not root (a test host), it has nothing to give up.
/// </summary>
internal sealed class PodUserSession
{
    /// <summary>The directories' fds, held until the process exits: gRPC dials through the runtime
    /// directory's whenever it opens a connection, long after the session object itself is gone.</summary>
    private static readonly List<FileDescriptor> s_held = [];

    /// <summary>The agent's socket through the runtime directory's fd, named before the drop
    /// (<see cref="Stage1Files.AgentSocket"/> reads the pod directory's record, which the pod's user may not reach).</summary>
    private readonly string _agentSocket;
    private readonly Dictionary<string, int> _directories = [];

    private PodUserSession(Stage1Files files, IEnumerable<string> directories)
    {
        _agentSocket = Path.Join(FdPath(OpenDirectory(files.RuntimeDir)), Path.GetFileName(files.AgentSocket));
        foreach (var dir in directories) _directories[dir] = OpenDirectory(dir);
        if (LibC.geteuid() == 0) SupervisorLockDown.Apply(PodSupervisorUser.For(files.Uuid));
    }

    /// <summary>Opens the runtime directory and <paramref name="directories"/>, then gives up root.</summary>
    public static PodUserSession Enter(Stage1Files files, params string[] directories) => new(files, directories);

    /// <summary>A client of the pod's agent, through the runtime directory's fd (run made its socket the supervisor user's).</summary>
    public AgentClient Agent() => AgentClient.ForVm(_agentSocket, Stage1Files.AgentOptions);

    /// <summary><paramref name="name"/> inside <paramref name="directory"/>, one of those opened before the drop.</summary>
    public string PathIn(string directory, string name) => Path.Join(FdPath(_directories[directory]), name);

    private static int OpenDirectory(string path)
    {
        FileDescriptor fd;
        try { fd = FileDescriptor.OpenDirectoryPath(path); }
        catch (ErrnoException e) when (e.Errno == LibC.ENOENT) { throw new Stage1Exception($"{path} does not exist (the pod's VM is not running)"); }
        lock (s_held) s_held.Add(fd);
        return fd.Number;
    }

    private static string FdPath(int fd) => $"/proc/self/fd/{fd}";
}
