using System.Globalization;

namespace Rkt.Kvm.GuestAgent.Apps;

/// <summary>An app's resolved credentials.</summary>
internal sealed record Credentials(uint Uid, uint Gid, IReadOnlyList<uint> Groups, string? UserName);

/// <summary>
/// Users and groups from an app's own /etc/passwd and /etc/group (the static agent has no NSS).
/// Comments (#), blank and malformed lines are skipped. Numeric ids work without the files.
/// </summary>
internal sealed class UserDb
{
    public sealed record User(string Name, uint Uid, uint Gid);
    public sealed record Group(string Name, uint Gid, IReadOnlyList<string> Members);

    public IReadOnlyList<User> Users { get; }
    public IReadOnlyList<Group> Groups { get; }

    public UserDb(string? passwd, string? group)
    {
        Users = Rows(passwd, 4).Select(f => (f, ok: TryId(f[2], out uint uid) & TryId(f[3], out uint gid), uid, gid))
            .Where(r => r.ok && r.f[0].Length > 0).Select(r => new User(r.f[0], r.uid, r.gid)).ToList();
        Groups = Rows(group, 3).Select(f => (f, ok: TryId(f[2], out uint gid), gid))
            .Where(r => r.ok && r.f[0].Length > 0)
            .Select(r => new Group(r.f[0], r.gid, r.f.Length > 3 ? r.f[3].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : []))
            .ToList();
    }

    /// <summary>Reads &lt;root&gt;/etc/passwd and &lt;root&gt;/etc/group; missing files are empty.</summary>
    public static UserDb Load(string root) => new(ReadOrNull(Path.Combine(root, "etc/passwd")), ReadOrNull(Path.Combine(root, "etc/group")));

    private static string? ReadOrNull(string path)
    {
        try { return File.ReadAllText(path); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    private static IEnumerable<string[]> Rows(string? text, int minFields)
    {
        if (text is null) yield break;
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || line.TrimStart().StartsWith('#')) continue;
            string[] f = line.Split(':');
            if (f.Length >= minFields) yield return f;
        }
    }

    private static bool TryId(string s, out uint id) => uint.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out id);

    /// <summary>
    /// Resolves a user (name or number; empty = 0), a group (name or number; empty = the user's
    /// primary group, or 0 for a number not in /etc/passwd) and the supplementary groups: the groups
    /// listing the user by name in /etc/group plus <paramref name="extraGids"/>. Throws
    /// <see cref="ArgumentException"/> with a sentence when a name does not resolve.
    /// </summary>
    public Credentials Resolve(string? user, string? group, IEnumerable<uint> extraGids)
    {
        User? entry;
        uint uid;
        if (string.IsNullOrEmpty(user)) user = "0";
        if (TryId(user, out uid)) entry = Users.FirstOrDefault(u => u.Uid == uid);
        else
        {
            entry = Users.FirstOrDefault(u => u.Name == user)
                ?? throw new ArgumentException($"The user '{user}' is not in the app's /etc/passwd.");
            uid = entry.Uid;
        }
        uint gid;
        if (string.IsNullOrEmpty(group)) gid = entry?.Gid ?? 0;
        else if (!TryId(group, out gid))
            gid = (Groups.FirstOrDefault(g => g.Name == group) ?? throw new ArgumentException($"The group '{group}' is not in the app's /etc/group.")).Gid;
        var groups = new List<uint>();
        if (entry is not null)
            foreach (var g in Groups)
                if (g.Members.Contains(entry.Name) && !groups.Contains(g.Gid)) groups.Add(g.Gid);
        foreach (uint g in extraGids)
            if (!groups.Contains(g)) groups.Add(g);
        return new Credentials(uid, gid, groups, entry?.Name);
    }
}
