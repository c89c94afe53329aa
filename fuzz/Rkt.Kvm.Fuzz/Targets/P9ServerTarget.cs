using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio;
using Rkt.Kvm.Vmm.Devices.Virtio9p;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// A hostile guest against the 9p server over a real directory of traps (symlinks to "/", "../.."
/// and a secret next to the export, a hard link, a FIFO), exported read-write ("rw") and read-only
/// ("ro"). The input is a list of records, each a control byte then one 9P message (its size field
/// says where it ends): the message goes into guest RAM as a descriptor chain the way Linux's
/// driver lays it out, is taken off a split queue and served as <see cref="Virtio9pDevice"/>'s
/// workers serve a chain (the request copied out, file data moved by <see cref="ChainTransfer"/>
/// straight between the host file and the chain's buffers, the reply written back), all on this
/// thread so that every run covers the same edges. Control byte: bits 0-1 the reply space (64 KiB,
/// 512 KiB, (bits 5-7)*4 bytes, 11 + 4096 in two buffers), bit 2 the request split after its
/// 7-byte header, bit 4 after 23 bytes (Twrite's data in its own buffer), bit 3 the chain through an
/// indirect table; 0xFF resets the session. After every input: no error logged, every reply well
/// framed and inside its buffers, no host fd left open under the tree once the session is reset,
/// nothing outside the export touched, no set-uid or set-gid file, device node or new FIFO in it.
/// (The device's own threading, Tflush and reset are covered by the VMM's Virtio9pFuzzTests.)
/// </summary>
public sealed class P9ServerTarget : IFuzzTarget
{
    private const ushort QueueSize = 128;
    private const ulong Desc = 0x1000, Avail = 0x2000, Used = 0x3000;
    private const ulong RequestArea = 0x100000, ReplyArea = 0x200000;
    private const int MaxRecords = 64, MaxMessage = 0x100000 - 128;
    private const string Secret = "TOP SECRET";

    private readonly Lazy<State> _state = new(() => new State());

    public string Name => "9p-server";
    public string Covers => "P9Server (every request) and ChainTransfer over a directory of traps, chains served as the virtio-9p device serves them";

    private sealed class State
    {
        public readonly string Root = FuzzTargets.ScratchDirectory("9p-server");
        public string Export => Path.Join(Root, "export");
        public string SecretPath => Path.Join(Root, "secret.txt");
        public readonly ErrorTrap Trap = new();
        public readonly GuestMemory Memory = GuestMemory.Allocate([(0, ReplyArea + P9.MaxMsize + 0x10000)]);
        public readonly P9Server Server;
        public readonly ChainTransfer Transfer;
        // As the device's workers have them: the request copied out of the chain, the reply built here.
        public readonly byte[] Request = new byte[P9.MaxMsize], Reply = new byte[P9.MaxMsize];
        public readonly List<DescriptorBuffer> Buffers = [];
        public readonly Posix.Stat SecretStat;
        public SplitQueue Queue = null!;
        public ushort AvailIdx;

        public State()
        {
            File.WriteAllText(SecretPath, Secret);
            SecretStat = Posix.LStat(SecretPath)!.Value;
            Server = new P9Server(Trap.Logger, maxFids: 64);
            Transfer = new ChainTransfer(Memory);
        }

        /// <summary>A fresh request queue, as after the driver (re)initialized the device.</summary>
        public void NewQueue()
        {
            Memory.GetSpan(Desc, 0x3000).Clear();
            AvailIdx = 0;
            Queue = new SplitQueue(Memory, QueueSize, Desc, Avail, Used, indirectAllowed: true);
        }
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        var s = _state.Value;
        s.Trap.Clear();
        MakeTree(s);
        s.Server.AddExport("rw", s.Export, readOnly: false);
        s.Server.AddExport("ro", s.Export, readOnly: true);
        try
        {
            s.NewQueue();
            var r = new InputReader(input);
            for (int records = 0; records < MaxRecords && !r.AtEnd; records++)
            {
                byte control = r.U8();
                if (control == 0xFF)
                {
                    s.Server.ResetSession();
                    s.NewQueue();
                    continue;
                }
                var message = NextMessage(ref r);
                long capacity = Submit(s, message, control);
                var chain = s.Queue.PopValid(why => throw new FuzzFindingException($"the queue refused a well-formed chain: {why}"))
                    ?? throw new FuzzFindingException("the queue has no chain after one was made available");
                uint used = Serve(s, chain);
                s.Queue.PushUsed(chain.Head, used);
                CheckReply(s, message, capacity, used);
            }
        }
        finally
        {
            // The session's fids are closed by a reset; removing the exports closes their roots.
            s.Server.ResetSession();
            s.Server.RemoveExport("rw");
            s.Server.RemoveExport("ro");
        }
        s.Trap.ThrowIfAny("the 9p server");
        CheckHost(s);
    }

    /// <summary>One message: as long as its size field says when that fits what is left, else the rest.</summary>
    private static byte[] NextMessage(ref InputReader r)
    {
        var peek = r.Bytes(4).ToArray();
        uint size = peek.Length == 4 ? BinaryPrimitives.ReadUInt32LittleEndian(peek) : 0;
        int take = size >= 4 && size - 4 <= (uint)r.Remaining ? (int)size - 4 : r.Remaining;
        var message = new byte[Math.Min(peek.Length + take, MaxMessage)];
        peek.CopyTo(message, 0);
        r.Bytes(take)[..(message.Length - peek.Length)].CopyTo(message.AsSpan(peek.Length));
        return message;
    }

    /// <summary>Lays the request and the reply space out as descriptors (head 0) and makes the chain available; returns the reply space.</summary>
    private static long Submit(State s, byte[] request, byte control)
    {
        s.Memory.Write(RequestArea, request);
        var buffers = new List<(ulong Address, uint Length, bool Writable)>();
        var splits = new SortedSet<int> { request.Length };
        if ((control & 4) != 0 && request.Length > P9.HeaderSize) splits.Add(P9.HeaderSize);
        if ((control & 16) != 0 && request.Length > P9.WriteRequestHeader) splits.Add(P9.WriteRequestHeader);
        int from = 0;
        foreach (int to in splits)
        {
            buffers.Add((RequestArea + (ulong)from, (uint)(to - from), false));
            from = to;
        }
        switch (control & 3)
        {
            case 0: buffers.Add((ReplyArea, 64 * 1024, true)); break;
            case 1: buffers.Add((ReplyArea, P9.MaxMsize, true)); break;
            case 2 when control >> 5 != 0: buffers.Add((ReplyArea, (uint)(control >> 5) * 4, true)); break; // too small for most replies
            case 3:
                buffers.Add((ReplyArea, P9.ReadReplyHeader, true));
                buffers.Add((ReplyArea + P9.ReadReplyHeader, 4096, true));
                break;
        }
        ushort Flags(int i) => (ushort)((buffers[i].Writable ? 2 : 0) | (i + 1 < buffers.Count ? 1 : 0));
        if ((control & 8) != 0)
        {
            // An indirect table after the request (16-byte aligned), one descriptor naming it.
            ulong table = (RequestArea + (ulong)request.Length + 15) & ~15UL;
            for (int i = 0; i < buffers.Count; i++) Descriptor(s.Memory, table, i, buffers[i].Address, buffers[i].Length, Flags(i), (ushort)(i + 1));
            Descriptor(s.Memory, Desc, 0, table, (uint)(16 * buffers.Count), 4, 0);
        }
        else
        {
            for (int i = 0; i < buffers.Count; i++) Descriptor(s.Memory, Desc, i, buffers[i].Address, buffers[i].Length, Flags(i), (ushort)(i + 1));
        }
        s.Memory.WriteU16(Avail + 4 + 2UL * (ushort)(s.AvailIdx % QueueSize), 0);
        s.AvailIdx++;
        s.Memory.WriteU16(Avail + 2, s.AvailIdx);
        return buffers.Where(b => b.Writable).Sum(b => (long)b.Length);
    }

    private static void Descriptor(GuestMemory memory, ulong table, int index, ulong address, uint length, ushort flags, ushort next)
    {
        var d = memory.GetSpan(table + (ulong)index * 16, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    /// <summary>
    /// One chain served as <c>Virtio9pDevice.Serve</c> does (kept in step with it): the request's
    /// header, then its body (all of it but Twrite's data) copied out; the reply written back.
    /// Returns the used length.
    /// </summary>
    private static uint Serve(State s, DescriptorChain chain)
    {
        long readable = chain.ReadableLength, writable = chain.WritableLength;
        int n = chain.ReadFrom(s.Memory, 0, s.Request.AsSpan(0, (int)Math.Min(readable, P9.HeaderSize)));
        if (n >= P9.HeaderSize)
        {
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(s.Request);
            long want = s.Request[4] == P9.Twrite ? P9.WriteRequestHeader : size;
            int total = (int)Math.Min(Math.Min(want, readable), s.Request.Length);
            if (total > n) n += chain.ReadFrom(s.Memory, n, s.Request.AsSpan(n, total - n));
        }
        s.Transfer.Use(chain, writable);
        var reply = s.Reply.AsSpan(0, (int)Math.Min(writable, s.Reply.Length));
        var result = s.Server.Process(s.Request.AsSpan(0, n), readable, reply, s.Transfer);
        if (result.Length == 0) return 0;
        chain.WriteTo(s.Memory, 0, reply[..result.Length]);
        return (uint)result.Used;
    }

    private static void CheckReply(State s, byte[] request, long capacity, uint length)
    {
        if (length > capacity) throw new FuzzFindingException($"a {length}-byte reply in {capacity} bytes of buffers");
        if (capacity < 11) return; // not even Rlerror fits: the chain comes back empty
        if (length < P9.HeaderSize) throw new FuzzFindingException($"a {length}-byte reply with {capacity} bytes of room");
        var header = s.Memory.GetSpan(ReplyArea, P9.HeaderSize);
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(header);
        byte type = header[4];
        ushort tag = BinaryPrimitives.ReadUInt16LittleEndian(header[5..]);
        if (size != length) throw new FuzzFindingException($"a reply whose size field says {size} used {length} bytes");
        FuzzLog.Note($"9p-server: type {(request.Length > 4 ? request[4] : -1)} -> type {type}, {length} bytes" +
            (type == P9.Rlerror ? $", errno {BinaryPrimitives.ReadUInt32LittleEndian(s.Memory.GetSpan(ReplyArea + P9.HeaderSize, 4))}" : ""));
        if (request.Length >= P9.HeaderSize)
        {
            byte requestType = request[4];
            ushort requestTag = BinaryPrimitives.ReadUInt16LittleEndian(request.AsSpan(5));
            if (tag != requestTag) throw new FuzzFindingException($"a reply to tag {requestTag} carries tag {tag}");
            if (type != P9.Rlerror && type != requestType + 1) throw new FuzzFindingException($"type {requestType} answered with type {type}");
        }
        else if (type != P9.Rlerror) throw new FuzzFindingException($"a {request.Length}-byte request answered with type {type}");
    }

    /// <summary>The export, rebuilt for every input (as <c>TrapTree</c> in the 9p tests lays it out).</summary>
    private static void MakeTree(State s)
    {
        if (Directory.Exists(s.Export)) Directory.Delete(s.Export, recursive: true);
        Directory.CreateDirectory(Path.Join(s.Export, "sub"));
        File.WriteAllText(Path.Join(s.Export, "file.txt"), "hello");
        File.WriteAllText(Path.Join(s.Export, "sub", "inner.txt"), "inner");
        File.CreateSymbolicLink(Path.Join(s.Export, "link_root"), "/");
        File.CreateSymbolicLink(Path.Join(s.Export, "link_up"), "../..");
        File.CreateSymbolicLink(Path.Join(s.Export, "link_secret"), s.SecretPath);
        Directory.CreateSymbolicLink(Path.Join(s.Export, "link_sub"), "sub");
        Posix.Link(Path.Join(s.Export, "file.txt"), Path.Join(s.Export, "hard.txt"));
        Posix.MkFifo(Path.Join(s.Export, "fifo"));
    }

    private static void CheckHost(State s)
    {
        var open = Posix.OpenFilesUnder(s.Root);
        if (open.Count > 0) throw new FuzzFindingException($"host fds still open after the session and exports are gone: {string.Join(", ", open)}");
        var entries = Directory.GetFileSystemEntries(s.Root).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        if (!entries.SequenceEqual(["export", "secret.txt"], StringComparer.Ordinal))
            throw new FuzzFindingException($"the directory around the export now holds: {string.Join(", ", entries)}");
        var secret = Posix.LStat(s.SecretPath);
        if (secret != s.SecretStat || File.ReadAllText(s.SecretPath) != Secret)
            throw new FuzzFindingException($"the file next to the export changed: {secret} (was {s.SecretStat})");
        CheckExport(s.Export, "");
    }

    /// <summary>What a guest may leave in an export: files, directories, symlinks, never a set-id file, device or FIFO of its own.</summary>
    private static void CheckExport(string dir, string rel)
    {
        foreach (var path in Directory.GetFileSystemEntries(dir))
        {
            var name = rel.Length == 0 ? Path.GetFileName(path) : $"{rel}/{Path.GetFileName(path)}";
            if (Posix.LStat(path) is not { } st) continue;
            if ((st.Mode & Posix.S_ISUID) != 0) throw new FuzzFindingException($"the guest left a set-uid file {name} (mode {Convert.ToString(st.Mode, 8)})");
            if ((st.Mode & Posix.S_ISGID) != 0 && st.Type != Posix.S_IFDIR) throw new FuzzFindingException($"the guest left a set-gid file {name}");
            switch (st.Type)
            {
                case Posix.S_IFDIR: CheckExport(path, name); break;
                case Posix.S_IFREG or Posix.S_IFLNK: break;
                case Posix.S_IFIFO when name == "fifo": break;
                default: throw new FuzzFindingException($"the guest made {name} of type {Convert.ToString(st.Type, 8)} in the export");
            }
        }
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        const uint Root = 0, A = 1, B = 2, Dir = 3;
        byte[] Session(params (byte Control, byte[] Message)[] requests) =>
        [
            0, .. Encode(new Tversion(65536, P9.Version)),
            0, .. Encode(new Tattach(Root, P9.NoFid, "root", "rw", 0)),
            .. requests.SelectMany(r => (byte[])[r.Control, .. r.Message]),
        ];
        yield return ("read-file", Session(
            (0, Encode(new Twalk(Root, A, ["sub", "inner.txt"]))),
            (0, Encode(new Tlopen(A, 0))),
            (3, Encode(new Tread(A, 0, 4096))),
            (0, Encode(new Tgetattr(A, P9.StatsBasic))),
            (0, Encode(new Tclunk(A)))));
        yield return ("write-new", Session(
            (0, Encode(new Twalk(Root, Dir, []))),
            (4, Encode(new Tlcreate(Dir, "new.txt", 2, 0x1a4, 0))),
            (16, Encode(new Twrite(Dir, 0, 5), "hello"u8)),
            (0, Encode(new Tsetattr(Dir, P9.AttrSize | P9.AttrMode, 0x9ed, 0, 0, 3, 0, 0, 0, 0))),
            (0, Encode(new Tfsync(Dir, 0))),
            (0, Encode(new Tlock(Dir, P9.LockWrite, 0, 0, 10, 1, "c")))));
        yield return ("dirs", Session(
            (0, Encode(new Tmkdir(Root, "d", 0x5ed, 0))),
            (8, Encode(new Tsymlink(Root, "s", "../../secret.txt", 0))),
            (0, Encode(new Twalk(Root, A, ["link_up"]))),
            (0, Encode(new Treadlink(A))),
            (0, Encode(new Twalk(Root, B, ["."]))),
            (0, Encode(new Tlopen(B, 0))),
            (0, Encode(new Treaddir(B, 0, 300))),
            (0, Encode(new Trenameat(Root, "d", Root, "e"))),
            (0, Encode(new Tunlinkat(Root, "e", 0x200))),
            (0, Encode(new Tlink(Root, B, "x")))));
        yield return ("flush-listing", [
            0, .. Encode(new Tversion(8192, P9.Version)),
            0, .. Encode(new Tattach(Root, P9.NoFid, "root", "", 0)),
            0, .. Encode(new Twalk(Root, A, ["ro", "sub"])),
            0, .. Encode(new Txattrwalk(A, B, "")),
            0, .. Encode(new Twalk(Root, Dir, ["rw", "file.txt"]), tag: 9),
            0, .. Encode(new Tflush(9)),
            0, .. Encode(new Tremove(Dir)),
            0xFF,
            2 | 3 << 5, .. Encode(new Tversion(8192, P9.Version))]);
    }

    private static byte[] Encode<T>(T message, ReadOnlySpan<byte> data = default, ushort tag = 1) where T : IP9Message<T>
    {
        var buffer = new byte[8192];
        int n = P9Messages.Encode(buffer, tag, message);
        data.CopyTo(buffer.AsSpan(n));
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)(n + data.Length));
        return buffer[..(n + data.Length)];
    }
}
