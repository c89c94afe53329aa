using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Fuzz.Targets;

/// <summary>
/// The 9P2000.L codec: one whole message (size[4] type[1] tag[2] body) decoded as the record its
/// type byte names, T or R. Only <see cref="P9Error"/> may escape a decode, and a message that
/// decodes must encode back to exactly its own bytes (each record reads what it writes).
/// </summary>
public sealed class P9DecodeTarget : IFuzzTarget
{
    private delegate void Decoder(ReadOnlySpan<byte> message);

    private static readonly Dictionary<byte, Decoder> Decoders = new()
    {
        [P9.Tversion] = RoundTrip<Tversion>, [P9.Rversion] = RoundTrip<Rversion>,
        [P9.Tauth] = RoundTrip<Tauth>, [P9.Rauth] = RoundTrip<Rauth>,
        [P9.Tattach] = RoundTrip<Tattach>, [P9.Rattach] = RoundTrip<Rattach>,
        [P9.Rlerror] = RoundTrip<Rlerror>,
        [P9.Tflush] = RoundTrip<Tflush>, [P9.Rflush] = RoundTrip<Rflush>,
        [P9.Twalk] = RoundTrip<Twalk>, [P9.Rwalk] = RoundTrip<Rwalk>,
        [P9.Tgetattr] = RoundTrip<Tgetattr>, [P9.Rgetattr] = RoundTrip<Rgetattr>,
        [P9.Tsetattr] = RoundTrip<Tsetattr>, [P9.Rsetattr] = RoundTrip<Rsetattr>,
        [P9.Tlopen] = RoundTrip<Tlopen>, [P9.Rlopen] = RoundTrip<Rlopen>,
        [P9.Tlcreate] = RoundTrip<Tlcreate>, [P9.Rlcreate] = RoundTrip<Rlcreate>,
        [P9.Tread] = RoundTrip<Tread>, [P9.Rread] = RoundTrip<Rread>,
        [P9.Twrite] = RoundTrip<Twrite>, [P9.Rwrite] = RoundTrip<Rwrite>,
        [P9.Treaddir] = RoundTrip<Treaddir>, [P9.Rreaddir] = RoundTrip<Rreaddir>,
        [P9.Tmkdir] = RoundTrip<Tmkdir>, [P9.Rmkdir] = RoundTrip<Rmkdir>,
        [P9.Tsymlink] = RoundTrip<Tsymlink>, [P9.Rsymlink] = RoundTrip<Rsymlink>,
        [P9.Tlink] = RoundTrip<Tlink>, [P9.Rlink] = RoundTrip<Rlink>,
        [P9.Trenameat] = RoundTrip<Trenameat>, [P9.Rrenameat] = RoundTrip<Rrenameat>,
        [P9.Trename] = RoundTrip<Trename>, [P9.Rrename] = RoundTrip<Rrename>,
        [P9.Tunlinkat] = RoundTrip<Tunlinkat>, [P9.Runlinkat] = RoundTrip<Runlinkat>,
        [P9.Treadlink] = RoundTrip<Treadlink>, [P9.Rreadlink] = RoundTrip<Rreadlink>,
        [P9.Tstatfs] = RoundTrip<Tstatfs>, [P9.Rstatfs] = RoundTrip<Rstatfs>,
        [P9.Tfsync] = RoundTrip<Tfsync>, [P9.Rfsync] = RoundTrip<Rfsync>,
        [P9.Txattrwalk] = RoundTrip<Txattrwalk>, [P9.Rxattrwalk] = RoundTrip<Rxattrwalk>,
        [P9.Txattrcreate] = RoundTrip<Txattrcreate>, [P9.Rxattrcreate] = RoundTrip<Rxattrcreate>,
        [P9.Tlock] = RoundTrip<Tlock>, [P9.Rlock] = RoundTrip<Rlock>,
        [P9.Tgetlock] = RoundTrip<Tgetlock>, [P9.Rgetlock] = RoundTrip<Rgetlock>,
        [P9.Tmknod] = RoundTrip<Tmknod>, [P9.Rmknod] = RoundTrip<Rmknod>,
        [P9.Tclunk] = RoundTrip<Tclunk>, [P9.Rclunk] = RoundTrip<Rclunk>,
        [P9.Tremove] = RoundTrip<Tremove>, [P9.Rremove] = RoundTrip<Rremove>,
    };

    public string Name => "9p-decode";
    public string Covers => "P9Reader/P9Writer and every 9P2000.L message record (decode, then encode back byte for byte)";

    public void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length < 5 || !Decoders.TryGetValue(input[4], out var decode))
        {
            // Unknown types still go through the header reads.
            try { P9Messages.Decode<Rflush>(input, out _); }
            catch (P9Error) { }
            return;
        }
        decode(input);
    }

    private static void RoundTrip<T>(ReadOnlySpan<byte> message) where T : IP9Message<T>
    {
        T decoded;
        ushort tag;
        try
        {
            decoded = P9Messages.Decode<T>(message, out tag);
        }
        catch (P9Error e)
        {
            FuzzLog.Note($"9p-decode: {typeof(T).Name} refused: {e.Message}");
            return;
        }
        FuzzLog.Note($"9p-decode: {decoded}");
        var buffer = new byte[message.Length + 64];
        int n;
        try
        {
            n = P9Messages.Encode(buffer, tag, decoded);
        }
        catch (P9Error e)
        {
            throw new FuzzFindingException($"{typeof(T).Name} decoded from {message.Length} bytes but does not encode again", e);
        }
        if (!buffer.AsSpan(0, n).SequenceEqual(message))
            throw new FuzzFindingException($"{typeof(T).Name} encodes to {n} bytes that differ from the {message.Length} it was decoded from");
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        var qid = new P9.Qid(P9.QidDir, 7, 0x1234);
        yield return ("tversion", Encode(new Tversion(8192, P9.Version)));
        yield return ("tattach", Encode(new Tattach(0, P9.NoFid, "root", "rw", 0)));
        yield return ("twalk", Encode(new Twalk(0, 1, ["sub", "..", "file.txt"])));
        yield return ("rwalk", Encode(new Rwalk([qid, qid])));
        yield return ("tlcreate", Encode(new Tlcreate(1, "new", 0x42, 0x1a4, 0)));
        yield return ("twrite", Encode(new Twrite(1, 0, 0)));
        yield return ("tsetattr", Encode(new Tsetattr(1, P9.AttrMode | P9.AttrSize, 0x1ed, 0, 0, 5, 0, 0, 0, 0)));
        yield return ("rgetattr", Encode(new Rgetattr(P9.StatsBasic, qid, 0x41ed, 0, 0, 2, 0, 4096, 4096, 8, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0)));
        yield return ("tlock", Encode(new Tlock(1, P9.LockWrite, 0, 0, 10, 42, "client")));
        yield return ("trenameat", Encode(new Trenameat(0, "a", 0, "b")));
        yield return ("rreadlink", Encode(new Rreadlink("../target")));
        yield return ("rstatfs", Encode(new Rstatfs(0x01021997, 4096, 100, 50, 50, 1000, 500, 1, 255)));
    }

    private static byte[] Encode<T>(T message) where T : IP9Message<T>
    {
        var buffer = new byte[8192];
        return buffer[..P9Messages.Encode(buffer, 1, message)];
    }
}
