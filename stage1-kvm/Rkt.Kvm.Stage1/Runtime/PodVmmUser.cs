using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Rkt.Kvm.Vmm.Client;

namespace Rkt.Kvm.Stage1.Runtime;

/// <summary>
/// The unprivileged user and group a pod's VMM becomes once set up (<c>--user</c>,
/// docs/THREAT-MODEL.md): one per pod, derived from its UUID, in a range no distribution hands
/// out (systemd's UIDS-GIDS.md leaves 0x70000000-0x7FFFFFFF unused). No passwd entry is needed:
/// nothing resolves it. Two pods sharing one (1 in 16.7 million) would gain nothing from it: each
/// VMM is not dumpable (no ptrace, no /proc/PID/mem), its filter forbids kill, and its jail
/// holds no file of the other's.
/// </summary>
public static class PodVmmUser
{
    public const uint First = 0x7A00_0000;
    public const uint Count = 1 << 24;

    public static VmmUser For(string uuid)
    {
        uint id = Derive(uuid, First);
        return new VmmUser(id, id);
    }

    /// <summary>The pod's id in the <see cref="Count"/> ids from <paramref name="first"/>: the UUID's hash.</summary>
    internal static uint Derive(string uuid, uint first)
    {
        uint hash = BinaryPrimitives.ReadUInt32LittleEndian(SHA256.HashData(Encoding.UTF8.GetBytes(uuid.ToLowerInvariant())));
        return first + hash % Count;
    }
}

/// <summary>
/// The unprivileged user and group of a pod's supervisor, the part of stage1 <c>run</c> that talks
/// to the guest's agent once the VM is up (docs/THREAT-MODEL.md): derived from the UUID like
/// <see cref="PodVmmUser"/>, in the next range of 16.7 million ids, so the pod's VMM and its
/// supervisor never share a user (neither can signal or trace the other).
/// </summary>
public readonly record struct PodSupervisorUser(uint Uid, uint Gid)
{
    public const uint First = PodVmmUser.First + PodVmmUser.Count;

    public static PodSupervisorUser For(string uuid)
    {
        uint id = PodVmmUser.Derive(uuid, First);
        return new PodSupervisorUser(id, id);
    }
}
