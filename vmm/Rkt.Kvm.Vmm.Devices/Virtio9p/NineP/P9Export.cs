using System.Text.RegularExpressions;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// One exported host directory. Requests enter and leave it (<see cref="TryEnter"/>/<see cref="Exit"/>);
/// removal first stops new entries, then waits for the requests inside to finish, so the fds it
/// closes afterwards are never in use (no use-after-close, no fd number reused under a request).
/// </summary>
public sealed partial class P9Export
{
    public const int MaxNameLength = 64;

    private readonly object _gate = new();
    private int _inFlight;
    private bool _removed;

    public string Name { get; }
    public string HostPath { get; }
    public bool ReadOnly { get; }
    /// <summary>O_PATH fd of the export's root directory: every walk starts here.</summary>
    internal FileDescriptor Root { get; }

    private P9Export(string name, string hostPath, bool readOnly, FileDescriptor root)
    {
        Name = name;
        HostPath = hostPath;
        ReadOnly = readOnly;
        Root = root;
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex NamePattern();

    /// <summary>Export names are what the guest passes as aname: short, plain, no separators.</summary>
    public static void ValidateName(string name)
    {
        if (name.Length == 0 || name.Length > MaxNameLength || !NamePattern().IsMatch(name))
            throw new ArgumentException($"Export name '{name}' must be 1-{MaxNameLength} letters, digits, '.', '_' or '-', starting with a letter or digit.");
    }

    private static void ValidateNameAndPath(string name, string hostPath)
    {
        ValidateName(name);
        if (!Path.IsPathFullyQualified(hostPath)) throw new ArgumentException($"Export path '{hostPath}' must be absolute.");
    }

    /// <summary>Opens the export root (the operator's path, symlinks allowed there); throws <see cref="ArgumentException"/> with a one-line reason.</summary>
    public static P9Export Open(string name, string hostPath, bool readOnly)
    {
        ValidateNameAndPath(name, hostPath);
        try
        {
            var root = HostFs.OpenHostPath(hostPath, HostFs.O_PATH | HostFs.O_DIRECTORY);
            return new P9Export(name, hostPath, readOnly, root);
        }
        catch (P9Error e)
        {
            throw new ArgumentException($"Export path '{hostPath}' cannot be opened as a directory: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(e.Errno)}.");
        }
    }

    /// <summary>An export of a directory opened elsewhere (passed over the control socket); <paramref name="hostPath"/> only names it.</summary>
    public static P9Export FromDirectory(string name, string hostPath, bool readOnly, FileDescriptor root)
    {
        ValidateNameAndPath(name, hostPath);
        HostStat st;
        try { st = HostFs.Stat(root); }
        catch (P9Error e) { throw new ArgumentException($"The directory passed for export '{name}' cannot be examined: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(e.Errno)}."); }
        if (!st.IsDirectory) throw new ArgumentException($"What was passed for export '{name}' ({hostPath}) is not a directory.");
        return new P9Export(name, hostPath, readOnly, root);
    }

    /// <summary>
    /// The export-listing root a guest attaches with aname "" or "/": Linux gives each virtio-9p
    /// device one mount at a time, so a guest that needs several exports mounts this root once and
    /// walks (or bind-mounts) into <c>&lt;export&gt;/</c>. It is read-only and backed by an empty
    /// directory that was deleted once opened, so nothing on the host can ever be found through it:
    /// only the server's own listing of the exports is.
    /// </summary>
    internal static P9Export ExportListingRoot()
    {
        var dir = Directory.CreateTempSubdirectory("rkt-kvm-9p-root-").FullName;
        try
        {
            var fd = HostFs.OpenHostPath(dir, HostFs.O_PATH | HostFs.O_DIRECTORY);
            return new P9Export("/", dir, readOnly: true, fd) { IsExportListing = true };
        }
        finally
        {
            Directory.Delete(dir);
        }
    }

    /// <summary>True for <see cref="ExportListingRoot"/>.</summary>
    public bool IsExportListing { get; private init; }

    /// <summary>False once the export is being removed: the request must fail (EIO).</summary>
    public bool TryEnter()
    {
        lock (_gate)
        {
            if (_removed) return false;
            _inFlight++;
            return true;
        }
    }

    public void Exit()
    {
        lock (_gate)
        {
            if (--_inFlight == 0 && _removed) Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Holds the export open for one request (<c>using var scope = export.Enter();</c>); EIO once it is being removed.</summary>
    internal Scope Enter() => TryEnter() ? new Scope(this) : throw new P9Error(HostFs.EIO, $"export {Name} was removed");

    /// <summary>One request inside an export: removal waits until it is disposed.</summary>
    internal readonly ref struct Scope(P9Export export)
    {
        public void Dispose() => export.Exit();
    }

    public bool Removed { get { lock (_gate) return _removed; } }

    /// <summary>Refuses new requests, then waits for those inside to leave. Afterwards nothing uses the export's fds.</summary>
    internal void CloseGate()
    {
        lock (_gate)
        {
            _removed = true;
            while (_inFlight > 0) Monitor.Wait(_gate);
        }
    }
}
