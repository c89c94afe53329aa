using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Stage1.Runtime;

/// <summary>
/// What a template VM is: the stage1 image it came from (its tree store ID, which names the VMM,
/// kernel and agent initrd by content: rkt's <c>stage1TreeStoreID</c> of the pod), its RAM, vCPUs
/// and NIC count. Pods with equal specs restore the same template; the key names its directory.
/// </summary>
public sealed record VmTemplateSpec(string Stage1TreeId, int MemoryMiB, int Vcpus, int Nics)
{
    public JsonObject ToJson() => new()
    {
        ["stage1TreeId"] = Stage1TreeId,
        ["memoryMiB"] = MemoryMiB,
        ["vcpus"] = Vcpus,
        ["nics"] = Nics,
    };

    /// <summary>The spec <see cref="ToJson"/> wrote, or null for anything else (the file is input).</summary>
    public static VmTemplateSpec? FromJson(JsonNode? node)
    {
        try
        {
            if (node is not JsonObject o) return null;
            return o["stage1TreeId"] is JsonValue id && id.TryGetValue(out string? tree) && tree.Length > 0
                && Int(o, "memoryMiB") is { } memory && Int(o, "vcpus") is { } vcpus && Int(o, "nics") is { } nics
                ? new VmTemplateSpec(tree, memory, vcpus, nics) : null;
        }
        // System.Text.Json reports a duplicate member when it is first read, as ArgumentException.
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException) { return null; }
    }

    private static int? Int(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out int n) ? n : null;

    /// <summary>16 hex digits of SHA-256 over the spec: the template's directory name.</summary>
    public string Key => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToJson().ToJsonString())))[..16];
}

/// <summary>
/// The templates of one data directory: <c>&lt;data dir&gt;/stage1-kvm/templates/&lt;key&gt;/</c> with
/// <c>vm.snapshot</c> (the VMM's) and <c>template.json</c> (the spec, written last: a directory
/// without it is unfinished). Root-only (0700): a snapshot holds a guest's memory.
/// </summary>
public sealed class VmTemplateStore(string root)
{
    public const string SnapshotFileName = "vm.snapshot", SpecFileName = "template.json", LockFileName = ".lock";
    /// <summary>A file of this name beside the store (<c>&lt;data dir&gt;/stage1-kvm/</c>) turns warm starts off for the data directory: every pod boots cold.</summary>
    public const string DisabledFileName = "no-templates";

    public string Root { get; } = root;

    /// <summary>The administrator's switch <see cref="DisabledFileName"/>, when it is set; null otherwise.</summary>
    public string? DisabledBy => Path.Join(Path.GetDirectoryName(Root)!, DisabledFileName) is var marker && File.Exists(marker) ? marker : null;

    /// <summary>The store of the data directory whose pods live under <paramref name="podsRoot"/>.</summary>
    public static VmTemplateStore ForPodsRoot(string podsRoot) =>
        new(Path.Join(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(podsRoot))!, "stage1-kvm", "templates"));

    /// <summary>
    /// The MAC a template gives NIC <paramref name="nic"/> (locally administered, "rkt"): a
    /// restored guest still has it, and the agent moves the link to the pod's MAC (link_mac).
    /// </summary>
    public static string TemplateMac(int nic) => nic is >= 0 and <= 255 ? $"02:72:6b:74:00:{nic:x2}" : throw new ArgumentOutOfRangeException(nameof(nic));

    public string DirectoryOf(VmTemplateSpec spec) => Path.Join(Root, spec.Key);
    public string SnapshotOf(VmTemplateSpec spec) => Path.Join(DirectoryOf(spec), SnapshotFileName);

    /// <summary>The snapshot of a finished template for <paramref name="spec"/>, or null.</summary>
    public string? Find(VmTemplateSpec spec)
    {
        string dir = DirectoryOf(spec);
        return File.Exists(Path.Join(dir, SpecFileName)) && File.Exists(Path.Join(dir, SnapshotFileName)) ? Path.Join(dir, SnapshotFileName) : null;
    }

    /// <summary>Creates the (root-only) directory a new template for <paramref name="spec"/> is written into.</summary>
    public string Prepare(VmTemplateSpec spec)
    {
        Directory.CreateDirectory(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return Directory.CreateDirectory(DirectoryOf(spec), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute).FullName;
    }

    /// <summary>Marks the template finished: its snapshot is complete (the VMM renames it into place).</summary>
    public void Commit(VmTemplateSpec spec) =>
        AtomicFile.Write(Path.Join(DirectoryOf(spec), SpecFileName), Encoding.UTF8.GetBytes(spec.ToJson().ToJsonString() + "\n"), durable: true,
            mode: UnixFileMode.UserRead | UnixFileMode.UserWrite);

    /// <summary>
    /// Holds the store's lock: one template is made at a time, and gc does not remove one being
    /// made. Polls, since a template takes a cold boot to make; null after <paramref name="timeout"/>.
    /// </summary>
    public FileStream? Lock(TimeSpan timeout)
    {
        Directory.CreateDirectory(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (true)
        {
            // FileShare.None takes an exclusive flock on Linux.
            try { return new FileStream(Path.Join(Root, LockFileName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException) when (Environment.TickCount64 < deadline) { Thread.Sleep(250); }
            catch (IOException) { return null; }
        }
    }

    /// <summary>
    /// Removes templates no pod can use any more: unfinished ones (their maker died: the lock is
    /// free), unreadable ones, and those whose stage1 image is no longer in the tree store
    /// (<paramref name="stage1TreeExists"/>). Returns their keys. Nothing else in the store is touched.
    /// </summary>
    public IReadOnlyList<string> RemoveStale(Func<string, bool> stage1TreeExists)
    {
        if (!Directory.Exists(Root)) return [];
        using var held = Lock(TimeSpan.Zero);
        if (held is null) return []; // a template is being made: next gc
        var removed = new List<string>();
        foreach (string dir in Directory.EnumerateDirectories(Root))
        {
            VmTemplateSpec? spec;
            try { spec = VmTemplateSpec.FromJson(JsonNode.Parse(File.ReadAllText(Path.Join(dir, SpecFileName)))); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException) { spec = null; }
            if (spec is not null && spec.Key == Path.GetFileName(dir) && stage1TreeExists(spec.Stage1TreeId)) continue;
            Directory.Delete(dir, recursive: true);
            removed.Add(Path.GetFileName(dir));
        }
        return removed;
    }
}
