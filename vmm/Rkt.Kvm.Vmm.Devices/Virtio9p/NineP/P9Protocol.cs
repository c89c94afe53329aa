using Rkt.Kvm.Posix;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>9P2000.L message types (T = request, R = reply = T + 1), the wire constants and limits.</summary>
public static class P9
{
    public const string Version = "9P2000.L";
    /// <summary>size[4] type[1] tag[2].</summary>
    public const int HeaderSize = 7;
    /// <summary>The largest msize we accept: 512 KiB of payload plus room for the largest header.
    /// Linux 6.1's virtio transport caps msize itself at PAGE_SIZE * (128 - 3) = 512000.</summary>
    public const uint MaxMsize = 512 * 1024 + 4096;
    /// <summary>msize before Tversion (and the smallest we agree to): enough for any non-data message.</summary>
    public const uint MinMsize = 4096;
    /// <summary>Rread/Rreaddir header: size[4] type[1] tag[2] count[4].</summary>
    public const int ReadReplyHeader = 11;
    /// <summary>Rlerror: size[4] type[1] tag[2] ecode[4].</summary>
    public const int ErrorReplySize = 11;
    /// <summary>Twrite header: size[4] type[1] tag[2] fid[4] offset[8] count[4].</summary>
    public const int WriteRequestHeader = 23;
    public const uint NoFid = uint.MaxValue;
    /// <summary>Tattach's n_uname when the client names no user (P9_NONUNAME).</summary>
    public const uint NoUid = uint.MaxValue;
    public const ushort NoTag = ushort.MaxValue;
    public const int MaxWalkNames = 16;
    public const int MaxNameBytes = 255;
    public const int MaxSymlinkTarget = 4095;
    public const int QidSize = 13;

    public const byte Tlerror = 6, Rlerror = 7, Tstatfs = 8, Rstatfs = 9, Tlopen = 12, Rlopen = 13, Tlcreate = 14, Rlcreate = 15,
        Tsymlink = 16, Rsymlink = 17, Tmknod = 18, Rmknod = 19, Trename = 20, Rrename = 21, Treadlink = 22, Rreadlink = 23,
        Tgetattr = 24, Rgetattr = 25, Tsetattr = 26, Rsetattr = 27, Txattrwalk = 30, Rxattrwalk = 31, Txattrcreate = 32, Rxattrcreate = 33,
        Treaddir = 40, Rreaddir = 41, Tfsync = 50, Rfsync = 51, Tlock = 52, Rlock = 53, Tgetlock = 54, Rgetlock = 55,
        Tlink = 70, Rlink = 71, Tmkdir = 72, Rmkdir = 73, Trenameat = 74, Rrenameat = 75, Tunlinkat = 76, Runlinkat = 77,
        Tversion = 100, Rversion = 101, Tauth = 102, Rauth = 103, Tattach = 104, Rattach = 105, Tflush = 108, Rflush = 109,
        Twalk = 110, Rwalk = 111, Tread = 116, Rread = 117, Twrite = 118, Rwrite = 119, Tclunk = 120, Rclunk = 121, Tremove = 122, Rremove = 123;

    public const byte QidDir = 0x80, QidSymlink = 0x02, QidFile = 0;

    // Tgetattr / Rgetattr masks (P9_STATS_*).
    public const ulong StatsBasic = 0x7ff;

    // Tsetattr valid bits (P9_ATTR_*).
    public const uint AttrMode = 1, AttrUid = 2, AttrGid = 4, AttrSize = 8, AttrAtime = 16, AttrMtime = 32, AttrCtime = 64, AttrAtimeSet = 128, AttrMtimeSet = 256;

    // Lock types and statuses (P9_LOCK_*): the types equal Linux's F_RDLCK/F_WRLCK/F_UNLCK.
    public const byte LockRead = 0, LockWrite = 1, LockUnlock = 2;
    public const byte LockSuccess = 0, LockBlocked = 1, LockError = 2;

    /// <summary>A 9P qid: what the guest uses to tell files apart.</summary>
    public readonly record struct Qid(byte Type, uint Version, ulong Path)
    {
        public static Qid From(in HostStat st) => new(
            st.IsDirectory ? QidDir : st.IsSymlink ? QidSymlink : QidFile,
            unchecked((uint)st.MtimeSec ^ (uint)st.MtimeNsec), st.Ino);

        /// <summary>The qid of the file behind <paramref name="fd"/> (a symlink's own, never its target's).</summary>
        internal static Qid Of(FileDescriptor fd) => From(HostFs.Stat(fd));
    }

    /// <summary>A guest-supplied file name must be one component: not empty, no '/', no NUL, not too long. ".." and "." are walk-only.</summary>
    public static bool IsValidName(string name, bool allowDots = false) =>
        name.Length > 0 && name.Length <= MaxNameBytes && System.Text.Encoding.UTF8.GetByteCount(name) <= MaxNameBytes
        && !name.Contains('/') && !name.Contains('\0') && (allowDots || (name != "." && name != ".."));
}
