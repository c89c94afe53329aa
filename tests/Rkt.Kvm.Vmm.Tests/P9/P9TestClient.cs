using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;
using Rkt.Kvm.Posix;
using Rkt.Kvm.Vmm.Kvm;
using Serilog;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>Feeds <see cref="P9Server.Process"/> whole messages, as the device does, with Twrite/Rread data in arrays.</summary>
public sealed class P9TestClient
{
    private ushort _tag;
    public P9Server Server { get; }

    public P9TestClient(P9Server server) => Server = server;

    public static ILogger Log { get; } = new LoggerConfiguration().WriteTo.Sink(new StderrSink()).CreateLogger();

    /// <summary>A raw request stream: returns the reply bytes (header, inline body, then any transferred data).</summary>
    public byte[] Raw(byte[] request, long? total = null, int replyCapacity = 1 << 20, int requestBytes = -1)
    {
        var transfer = new ArrayTransfer(request, replyCapacity);
        var reply = new byte[Math.Min(replyCapacity, (int)P9.MaxMsize)];
        var span = requestBytes < 0 ? request : request.AsSpan(0, Math.Min(request.Length, requestBytes)).ToArray();
        var r = Server.Process(span, total ?? request.Length, reply, transfer);
        var result = new byte[r.Used];
        reply.AsSpan(0, r.Length).CopyTo(result);
        transfer.Data.AsSpan(0, r.DataLength).CopyTo(result.AsSpan(r.Length));
        return result;
    }

    public static byte[] Encode<T>(T message, ushort tag = 1, byte[]? data = null) where T : IP9Message<T>
    {
        var buffer = new byte[P9.MaxMsize];
        int n = P9Messages.Encode(buffer, tag, message);
        if (data is null) return buffer[..n];
        var whole = new byte[n + data.Length];
        buffer.AsSpan(0, n).CopyTo(whole);
        data.CopyTo(whole, n);
        BinaryPrimitives.WriteUInt32LittleEndian(whole, (uint)whole.Length);
        return whole;
    }

    /// <summary>Sends <paramref name="request"/>; returns the decoded reply, or throws <see cref="P9Error"/> for Rlerror.</summary>
    public TReply Rpc<TRequest, TReply>(TRequest request, byte[]? data = null) where TRequest : IP9Message<TRequest> where TReply : IP9Message<TReply>
    {
        var reply = Raw(Encode(request, ++_tag, data));
        if (reply[4] == P9.Rlerror) throw new P9Error((int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7)));
        Assert.Equal(_tag, BinaryPrimitives.ReadUInt16LittleEndian(reply.AsSpan(5)));
        return P9Messages.Decode<TReply>(reply, out _);
    }

    /// <summary>The errno the request fails with (the test fails if it succeeds).</summary>
    public int Errno<TRequest>(TRequest request, byte[]? data = null) where TRequest : IP9Message<TRequest>
    {
        var reply = Raw(Encode(request, ++_tag, data));
        Assert.True(reply[4] == P9.Rlerror, $"{typeof(TRequest).Name} succeeded (reply type {reply[4]})");
        return (int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7));
    }

    public static int ErrnoOf(byte[] reply)
    {
        Assert.True(reply.Length == 11 && reply[4] == P9.Rlerror, $"expected Rlerror, got type {(reply.Length > 4 ? reply[4] : -1)}");
        return (int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7));
    }

    public void Version(uint msize = 512 * 1024) => Rpc<Tversion, Rversion>(new Tversion(msize, P9.Version));
    public P9.Qid Attach(uint fid, string aname) => Rpc<Tattach, Rattach>(new Tattach(fid, P9.NoFid, "root", aname, 0)).Qid;
    public P9.Qid[] Walk(uint fid, uint newFid, params string[] names) => Rpc<Twalk, Rwalk>(new Twalk(fid, newFid, names)).Qids;
    public void Open(uint fid, uint flags) => Rpc<Tlopen, Rlopen>(new Tlopen(fid, flags));
    public void Clunk(uint fid) => Rpc<Tclunk, Rclunk>(new Tclunk(fid));
    public Rgetattr Stat(uint fid) => Rpc<Tgetattr, Rgetattr>(new Tgetattr(fid, P9.StatsBasic));

    public byte[] Read(uint fid, ulong offset, uint count)
    {
        var reply = Raw(Encode(new Tread(fid, offset, count), ++_tag));
        if (reply[4] == P9.Rlerror) throw new P9Error((int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7)));
        Assert.Equal(P9.Rread, reply[4]);
        Assert.Equal((uint)reply.Length, BinaryPrimitives.ReadUInt32LittleEndian(reply));
        int n = (int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7));
        return reply.AsSpan(11, n).ToArray();
    }

    public uint Write(uint fid, ulong offset, byte[] data) => Rpc<Twrite, Rwrite>(new Twrite(fid, offset, (uint)data.Length), data).Count;

    /// <summary>Names in a directory fid (opened here), through Treaddir with small counts so the offsets are exercised.</summary>
    public List<string> ReadDir(uint fid, uint count = 200)
    {
        var names = new List<string>();
        ulong offset = 0;
        while (true)
        {
            var reply = Raw(Encode(new Treaddir(fid, offset, count), ++_tag));
            if (reply[4] == P9.Rlerror) throw new P9Error((int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7)));
            int n = (int)BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(7));
            if (n == 0) return names;
            var r = new P9Reader(reply.AsSpan(11, n));
            while (r.Remaining > 0)
            {
                r.Qid();
                offset = r.U64();
                r.U8();
                names.Add(r.Str());
            }
        }
    }

    /// <summary>Request bytes after the Twrite header, reply data after the Rread header: both in arrays.</summary>
    private sealed unsafe class ArrayTransfer(byte[] request, long capacity) : IP9Transfer
    {
        public byte[] Data { get; } = new byte[P9.MaxMsize];
        public long ReplyCapacity => capacity;

        public int ReadFile(FileDescriptor fd, long offset, int count)
        {
            fixed (byte* p = Data)
            {
                var iov = new IoVec { Base = p, Length = (nuint)count };
                return HostFs.ReadVector(fd, &iov, 1, offset);
            }
        }

        public int WriteFile(FileDescriptor fd, long offset, int count)
        {
            fixed (byte* p = request)
            {
                var iov = new IoVec { Base = p + P9.WriteRequestHeader, Length = (nuint)count };
                return HostFs.WriteVector(fd, &iov, 1, offset);
            }
        }
    }
}
