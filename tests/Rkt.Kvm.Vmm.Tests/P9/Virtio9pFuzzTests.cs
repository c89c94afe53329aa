using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Devices.Virtio9p.NineP;

namespace Rkt.Kvm.Vmm.Tests.NineP;

/// <summary>
/// A hostile guest against the 9p device: 60,000 inputs on the real queue: plausible messages on a
/// small set of fids and names (so walks, opens, creates and writes happen), the same mutated
/// (bytes flipped, cut short, size lied about), pure garbage, hostile descriptor chains, and
/// resets. No error may be logged (the device logs every unexpected exception), every chain comes
/// back, nothing appears outside the export, and after the device is gone no fd on the export is open.
/// </summary>
[Collection(SoloCollection.Name)]
public sealed class Virtio9pFuzzTests : IClassFixture<TrapTree>
{
    private readonly TrapTree _tree;
    public Virtio9pFuzzTests(TrapTree tree) => _tree = tree;

    private static readonly string[] Names = ["a", "b", "sub", "file.txt", "link_up", "link_root", "fifo", "..", ".", "x/y", ""];

    private int ExportFds() => Directory.GetFileSystemEntries("/proc/self/fd").Count(fd =>
    {
        try { return new FileInfo(fd).LinkTarget?.StartsWith(_tree.Root, StringComparison.Ordinal) == true; }
        catch (IOException) { return false; }
    });

    [Fact]
    public void Sixty_thousand_hostile_inputs_leave_no_exception_and_no_leak()
    {
        var outside = Directory.GetFileSystemEntries(_tree.Root).Order().ToList();
        int fdsBefore = ExportFds();
        var random = new Random(20261130);
        var driver = new P9GuestDriver(_tree.Server(maxFids: 64));
        try
        {
            driver.Call(P9TestClient.Encode(new Tversion(64 * 1024, P9.Version)));
            for (int i = 0; i < 60_000; i++)
            {
                switch (random.Next(100))
                {
                    case < 50: driver.Call(Plausible(random), replySizes: [random.Next(4) == 0 ? random.Next(0, 64) : 8192]); break;
                    case < 80: driver.Call(Mutate(Plausible(random), random), requestSplits: Splits(random), replySizes: [11, random.Next(0, 5000)]); break;
                    case < 88: driver.Call(Garbage(random)); break;
                    case < 99: HostileChain(driver, random); break;
                    default: driver.ResetAndReactivate(); break;
                }
            }
            Assert.Equal(0, driver.Errors);
            Assert.True(driver.Device.MalformedChains > 1000, $"only {driver.Device.MalformedChains} chains were refused: the fuzzer is not reaching validation");
        }
        finally
        {
            driver.Dispose();
        }
        Assert.Equal(fdsBefore, ExportFds());
        Assert.Equal(outside, Directory.GetFileSystemEntries(_tree.Root).Order().ToList());
    }

    private static string Name(Random r) => Names[r.Next(Names.Length)];
    private static uint Fid(Random r) => (uint)r.Next(0, 8);

    private static byte[] Plausible(Random r) => r.Next(22) switch
    {
        0 => P9TestClient.Encode(new Tattach(Fid(r), P9.NoFid, "u", r.Next(3) == 0 ? "ro" : "rw", 0)),
        1 or 2 => P9TestClient.Encode(new Twalk(Fid(r), Fid(r), Enumerable.Range(0, r.Next(0, 4)).Select(_ => Name(r)).ToArray())),
        3 => P9TestClient.Encode(new Tlopen(Fid(r), (uint)r.Next(0, 4) | (uint)(r.Next(2) * 0x200))),
        4 => P9TestClient.Encode(new Tlcreate(Fid(r), Name(r), (uint)r.Next(0, 3), (uint)r.Next(0, 0x1000), 0)),
        5 => P9TestClient.Encode(new Tread(Fid(r), (ulong)r.Next(0, 100), (uint)r.Next(0, 100_000))),
        6 => P9TestClient.Encode(new Twrite(Fid(r), (ulong)r.Next(0, 100), 50), data: new byte[50]),
        7 => P9TestClient.Encode(new Treaddir(Fid(r), (ulong)r.Next(0, 3), (uint)r.Next(0, 5000))),
        8 => P9TestClient.Encode(new Tgetattr(Fid(r), P9.StatsBasic)),
        9 => P9TestClient.Encode(new Tsetattr(Fid(r), (uint)r.Next(0, 512), (uint)r.Next(), 0, 0, (ulong)r.Next(0, 100), 0, 0, 0, 0)),
        10 => P9TestClient.Encode(new Tmkdir(Fid(r), Name(r), 0x1ed, 0)),
        11 => P9TestClient.Encode(new Tsymlink(Fid(r), Name(r), "../../etc", 0)),
        12 => P9TestClient.Encode(new Tlink(Fid(r), Fid(r), Name(r))),
        13 => P9TestClient.Encode(new Trenameat(Fid(r), Name(r), Fid(r), Name(r))),
        14 => P9TestClient.Encode(new Tunlinkat(Fid(r), Name(r), (uint)(r.Next(2) * 0x200))),
        15 => P9TestClient.Encode(new Txattrwalk(Fid(r), Fid(r), r.Next(2) == 0 ? "" : "user.x")),
        16 => P9TestClient.Encode(new Tlock(Fid(r), (byte)r.Next(0, 4), 0, (ulong)r.Next(0, 10), (ulong)r.Next(0, 10), 1, "c")),
        17 => P9TestClient.Encode(new Tflush((ushort)r.Next(0, 4))),
        18 => P9TestClient.Encode(new Tmknod(Fid(r), Name(r), (uint)r.Next(0, 0x10000), 1, 3, 0)),
        19 => P9TestClient.Encode(new Trename(Fid(r), Fid(r), Name(r))),
        20 => P9TestClient.Encode(new Tremove(Fid(r))),
        _ => P9TestClient.Encode(new Tclunk(Fid(r))),
    };

    private static byte[] Mutate(byte[] message, Random r)
    {
        var m = (byte[])message.Clone();
        switch (r.Next(4))
        {
            case 0:
                for (int k = r.Next(1, 4); k > 0; k--) m[r.Next(m.Length)] = (byte)r.Next(256);
                return m;
            case 1: return m[..r.Next(0, m.Length)];
            case 2:
                BinaryPrimitives.WriteUInt32LittleEndian(m, (uint)r.Next());
                return m;
            default:
                m[4] = (byte)r.Next(256);
                return m;
        }
    }

    private static byte[] Garbage(Random r)
    {
        var g = new byte[r.Next(1, 200)];
        r.NextBytes(g);
        return g;
    }

    private static int[]? Splits(Random r) => r.Next(3) == 0 ? [1] : null;

    /// <summary>Descriptors with random addresses (some outside RAM), lengths, flags (NEXT, WRITE, INDIRECT) and links, including loops.</summary>
    private static void HostileChain(P9GuestDriver driver, Random r)
    {
        ushort head = driver.NextHead;
        for (int k = 0; k < 4; k++)
        {
            ulong address = r.Next(4) == 0 ? (ulong)r.NextInt64() : P9GuestDriver.Buffers + (ulong)r.Next(0, 1 << 20);
            uint length = r.Next(3) == 0 ? (uint)r.Next() : (uint)r.Next(0, 300);
            driver.WriteDescriptor(P9GuestDriver.Desc, head + k, address, length, (ushort)r.Next(0, 8), (ushort)(head + r.Next(0, 6)));
        }
        driver.Submit(head);
        driver.WaitAllUsed();
    }
}
