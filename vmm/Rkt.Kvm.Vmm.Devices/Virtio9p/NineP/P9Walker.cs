using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Twalk: one validated component at a time with O_PATH|O_NOFOLLOW from the fid's pinned fd, ".."
/// by the fid's path inside the export (never the host's ".."), and from the export-listing root
/// into an export by name. A symlink is never followed on the host. The new fid keeps the attaching
/// user of the fid it was walked from.
/// </summary>
internal sealed class P9Walker(P9Session session, P9Exports exports)
{
    private P9FidTable Fids => session.Fids;

    public Rwalk Walk(Twalk m)
    {
        var fid = Fids.Get(m.Fid);
        if (m.NewFid != m.Fid && Fids.Contains(m.NewFid)) throw new P9Error(HostFs.EEXIST, $"fid {m.NewFid} is in use");
        foreach (var name in m.Names)
            if (!P9.IsValidName(name, allowDots: true)) throw new P9Error(HostFs.EINVAL, "an invalid name in a walk");
        var qids = new P9.Qid[m.Names.Length];
        int walked = 0;
        var export = fid.Export;
        if (export.IsExportListing)
        {
            // In the listing root: "." and ".." stay; a name enters that export at its root.
            var rootQid = exports.ListingQid();
            for (; walked < m.Names.Length && m.Names[walked] is "." or ".."; walked++) qids[walked] = rootQid;
            if (walked == m.Names.Length)
            {
                Fids.Put(m.NewFid, new P9Fid(exports.Listing, HostFs.Dup(fid.Path), [], HostFs.S_IFDIR, fid.Uid), replace: m.NewFid == m.Fid);
                return new Rwalk(qids);
            }
            var entered = exports.Find(m.Names[walked]);
            if (entered is null)
            {
                if (walked == 0) throw new P9Error(HostFs.ENOENT, $"no export named '{m.Names[walked]}'");
                return new Rwalk(qids[..walked]);
            }
            export = entered;
        }
        using var scope = export.Enter();
        var components = export == fid.Export ? new List<string>(fid.Components) : [];
        FileDescriptor current = export == fid.Export ? HostFs.Dup(fid.Path) : HostFs.Dup(export.Root);
        uint type = export == fid.Export ? fid.FileType : HostFs.S_IFDIR;
        if (export != fid.Export) qids[walked++] = P9.Qid.Of(current);
        try
        {
            for (; walked < m.Names.Length; walked++)
            {
                string name = m.Names[walked];
                FileDescriptor next;
                try
                {
                    if (type != HostFs.S_IFDIR) throw new P9Error(HostFs.ENOTDIR);
                    if (name == ".") next = HostFs.Dup(current);
                    else if (name == "..")
                    {
                        // 9P: ".." of the root is the root. Elsewhere, by name from the root: the host's ".." could lead out.
                        if (components.Count > 0) components.RemoveAt(components.Count - 1);
                        next = FromRoot(export, components, components.Count);
                    }
                    else
                    {
                        next = HostFs.OpenAt(current, name, HostFs.O_PATH | HostFs.O_NOFOLLOW);
                        components.Add(name);
                    }
                }
                catch (P9Error) when (walked > 0)
                {
                    break; // a partial walk answers the qids so far and creates no fid
                }
                current.Dispose();
                current = next;
                var st = HostFs.Stat(current);
                qids[walked] = P9.Qid.From(st);
                type = st.FileType;
            }
            if (walked < m.Names.Length)
            {
                current.Dispose();
                return new Rwalk(qids[..walked]);
            }
            Fids.Put(m.NewFid, new P9Fid(export, current, [.. components], type, fid.Uid), replace: m.NewFid == m.Fid);
            return new Rwalk(qids);
        }
        catch
        {
            current.Dispose();
            throw;
        }
    }

    /// <summary>The directory at <paramref name="components"/> inside the export, walked from its root one component at a time, never following a symlink.</summary>
    public static FileDescriptor FromRoot(P9Export export, IReadOnlyList<string> components, int count)
    {
        var cur = HostFs.Dup(export.Root);
        try
        {
            for (int i = 0; i < count; i++)
            {
                var next = HostFs.OpenAt(cur, components[i], HostFs.O_PATH | HostFs.O_NOFOLLOW | HostFs.O_DIRECTORY);
                cur.Dispose();
                cur = next;
            }
            return cur;
        }
        catch
        {
            cur.Dispose(); // a component gone or replaced: close now, not whenever the finalizer runs
            throw;
        }
    }
}
