using System.Buffers.Binary;
using System.Text;

namespace Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

/// <summary>
/// Reads a 9P message body. Every read is bounds-checked: running off the end (a truncated or
/// lying message) throws <see cref="P9Error"/> EPROTO, as does a string that is not UTF-8 or
/// longer than the message. Little-endian, strings are len[2] + bytes.
/// </summary>
public ref struct P9Reader(ReadOnlySpan<byte> data)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _pos;

    public readonly int Position => _pos;
    public readonly int Remaining => _data.Length - _pos;

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || n > _data.Length - _pos) throw new P9Error(HostFs.EPROTO, "the message is truncated");
        var s = _data.Slice(_pos, n);
        _pos += n;
        return s;
    }

    public byte U8() => Take(1)[0];
    public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
    public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
    public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));
    public ReadOnlySpan<byte> Bytes(int n) => Take(n);

    private static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    public string Str()
    {
        var bytes = Take(U16());
        try { return StrictUtf8.GetString(bytes); }
        catch (ArgumentException) { throw new P9Error(HostFs.EINVAL, "a string is not valid UTF-8"); }
    }

    public P9.Qid Qid() => new(U8(), U32(), U64());

    /// <summary>A message must have no bytes left over: extra bytes mean the guest and we disagree on the layout.</summary>
    public readonly void End()
    {
        if (_pos != _data.Length) throw new P9Error(HostFs.EPROTO, "the message has trailing bytes");
    }
}

/// <summary>Writes a 9P message into a fixed buffer; running out of room throws <see cref="P9Error"/> EMSGSIZE.</summary>
public ref struct P9Writer(Span<byte> buffer)
{
    private readonly Span<byte> _buffer = buffer;
    private int _pos;

    public readonly int Position => _pos;
    public readonly int Remaining => _buffer.Length - _pos;

    public Span<byte> Take(int n)
    {
        if (n > _buffer.Length - _pos) throw new P9Error(HostFs.EMSGSIZE, "the reply does not fit the guest's buffer");
        var s = _buffer.Slice(_pos, n);
        _pos += n;
        return s;
    }

    public void U8(byte v) => Take(1)[0] = v;
    public void U16(ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(Take(2), v);
    public void U32(uint v) => BinaryPrimitives.WriteUInt32LittleEndian(Take(4), v);
    public void U64(ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(Take(8), v);
    public void Bytes(ReadOnlySpan<byte> v) => v.CopyTo(Take(v.Length));

    public void Str(string s)
    {
        int n = Encoding.UTF8.GetByteCount(s);
        if (n > ushort.MaxValue) throw new P9Error(HostFs.ENAMETOOLONG);
        U16((ushort)n);
        Encoding.UTF8.GetBytes(s, Take(n));
    }

    public void Qid(P9.Qid q) { U8(q.Type); U32(q.Version); U64(q.Path); }

    /// <summary>Starts a message: size is patched by <see cref="Finish"/>.</summary>
    public void Header(byte type, ushort tag) { U32(0); U8(type); U16(tag); }

    /// <summary>Patches the size field; returns the message length.</summary>
    public readonly int Finish()
    {
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer, (uint)_pos);
        return _pos;
    }

    public readonly ReadOnlySpan<byte> Written => _buffer[.._pos];
}
