using Org.BouncyCastle.Bcpg.OpenPgp;

namespace Rkt.Kvm.Images.Trust;

/// <summary>
/// One OpenPGP public key as rkt keeps it: the file's bytes as given (armored, as rkt writes
/// them), the key ring parsed from them, and the fingerprint that names the file in the store.
/// A file must hold exactly one primary key: rkt names a file after its first key only, so a
/// second key in it would be trusted under a name that is not its own.
/// </summary>
public sealed class PublicKeyFile
{
    private PublicKeyFile(byte[] bytes, PgpPublicKeyRing ring)
    {
        Bytes = bytes;
        Ring = ring;
        Fingerprint = Convert.ToHexStringLower(ring.GetPublicKey().GetFingerprint());
    }

    public byte[] Bytes { get; }
    internal PgpPublicKeyRing Ring { get; }
    /// <summary>Lowercase hex, rkt's file name for the key.</summary>
    public string Fingerprint { get; }

    /// <summary>rkt's way of showing a fingerprint for review: "D8C1 F39A … 2EE8  2DB6 …".</summary>
    public string DisplayFingerprint => Display(Ring.GetPublicKey().GetFingerprint());

    public IEnumerable<string> SubkeyFingerprints =>
        Ring.GetPublicKeys().Where(k => !k.IsMasterKey).Select(k => Display(k.GetFingerprint()));

    public IEnumerable<string> UserIds => Ring.GetPublicKey().GetUserIds();

    /// <param name="what">the key's origin (a file or URL), for messages.</param>
    public static PublicKeyFile Parse(byte[] bytes, string what)
    {
        List<PgpPublicKeyRing> rings;
        try
        {
            using var decoded = PgpUtilities.GetDecoderStream(new MemoryStream(bytes, writable: false));
            rings = new PgpPublicKeyRingBundle(decoded).GetKeyRings().ToList();
        }
        catch (Exception e) when (e is PgpException or IOException or ArgumentException or InvalidOperationException)
        {
            throw new ImageException($"{what} is not an OpenPGP public key: {e.Message}", e);
        }
        return rings.Count switch
        {
            1 => new PublicKeyFile(bytes, rings[0]),
            0 => throw new ImageException($"{what} holds no OpenPGP public key"),
            _ => throw new ImageException($"{what} holds {rings.Count} public keys; give each its own file"),
        };
    }

    private static string Display(byte[] fingerprint)
    {
        var text = new System.Text.StringBuilder();
        for (int i = 0; i < fingerprint.Length; i++)
        {
            if (i > 0 && i % 2 == 0) text.Append(i == fingerprint.Length / 2 ? "  " : " ");
            text.Append(fingerprint[i].ToString("X2"));
        }
        return text.ToString();
    }
}
