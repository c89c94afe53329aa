using System.Text;
using static Rkt.Kvm.Vmm.Devices.Virtio9p.NineP.P9Checks;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Extended attributes, read-only: Txattrwalk makes a fid that holds one value (or the name list),
/// which Tread then returns; only user.* and security.* reach the guest. Txattrcreate is refused.
/// </summary>
internal sealed class P9Xattrs(P9Session session)
{
    private const int MaxXattrSize = 64 * 1024;

    private P9FidTable Fids => session.Fids;

    public Rxattrwalk Xattrwalk(Txattrwalk m)
    {
        var fid = Fids.Get(m.Fid);
        if (m.NewFid != m.Fid && Fids.Contains(m.NewFid)) throw new P9Error(HostFs.EEXIST, $"fid {m.NewFid} is in use");
        using var scope = fid.Export.Enter();
        bool list = m.Name.Length == 0;
        if (!list && !IsServed(m.Name)) throw new P9Error(HostFs.ENODATA);
        byte[] value;
        if (fid.FileType is not (HostFs.S_IFREG or HostFs.S_IFDIR)) value = list ? [] : throw new P9Error(HostFs.ENODATA);
        else
        {
            var buffer = new byte[MaxXattrSize];
            int n = HostFs.GetXattr(fid.Path, list ? null : m.Name, buffer);
            value = list ? FilterList(buffer.AsSpan(0, n)) : buffer[..n];
        }
        Fids.Put(m.NewFid, new P9Fid(fid.Export, null, fid.Components, 0, fid.Uid) { Xattr = value }, replace: m.NewFid == m.Fid);
        return new Rxattrwalk((ulong)value.Length);
    }

    public Rxattrcreate Xattrcreate(Txattrcreate m)
    {
        Writable(Fids.Get(m.Fid));
        throw new P9Error(HostFs.EOPNOTSUPP, "setting xattrs is not supported");
    }

    /// <summary>Only user.* and security.* reach the guest: trusted.* and system.* describe the host, not the files.</summary>
    private static bool IsServed(string name) => name.StartsWith("user.", StringComparison.Ordinal) || name.StartsWith("security.", StringComparison.Ordinal);

    private static byte[] FilterList(ReadOnlySpan<byte> names)
    {
        var kept = new List<byte>();
        foreach (var range in names.Split((byte)0))
        {
            var name = names[range];
            if (name.IsEmpty || !IsServed(Encoding.UTF8.GetString(name))) continue;
            kept.AddRange(name);
            kept.Add(0);
        }
        return [.. kept];
    }
}
