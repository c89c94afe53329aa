using Org.BouncyCastle.Bcpg;
using Org.BouncyCastle.Bcpg.OpenPgp;
using Org.BouncyCastle.Crypto.Generators;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Math;
using Org.BouncyCastle.Security;

namespace Rkt.Kvm.Images.Tests.Support;

/// <summary>
/// An OpenPGP signing key made in the test with BouncyCastle (as gpg would make one: an RSA
/// primary key certified for its user ID), to sign ACIs with and to hand to <c>rkt-kvm trust</c>.
/// It can be made already expired, and its public half can carry a revocation.
/// </summary>
public sealed class PgpTestKey
{
    private static readonly SecureRandom Random = new();
    private readonly PgpSecretKey _secret;
    private readonly PgpPrivateKey _private;

    /// <param name="created">when the key was made (the past, for a key already expired).</param>
    /// <param name="validFor">the key's lifetime from <paramref name="created"/>; null: no expiry.</param>
    public PgpTestKey(string userId, DateTime? created = null, TimeSpan? validFor = null)
    {
        var generator = new RsaKeyPairGenerator();
        // 1024 bits: enough to test with, and quick to make on a loaded 2-core machine.
        generator.Init(new RsaKeyGenerationParameters(BigInteger.ValueOf(0x10001), Random, 1024, 12));
        var pair = new PgpKeyPair(PublicKeyAlgorithmTag.RsaGeneral, generator.GenerateKeyPair(), created ?? DateTime.UtcNow.AddMinutes(-1));
        var hashed = new PgpSignatureSubpacketGenerator();
        hashed.SetKeyFlags(false, PgpKeyFlags.CanSign | PgpKeyFlags.CanCertify);
        if (validFor is { } lifetime) hashed.SetKeyExpirationTime(false, (long)lifetime.TotalSeconds);
        var rings = new PgpKeyRingGenerator(PgpSignature.PositiveCertification, pair, userId, SymmetricKeyAlgorithmTag.Aes256,
            Array.Empty<char>(), true, hashed.Generate(), null, Random);
        _secret = rings.GenerateSecretKeyRing().GetSecretKey();
        _private = _secret.ExtractPrivateKey(Array.Empty<char>());
        PublicRing = rings.GeneratePublicKeyRing();
    }

    public PgpPublicKeyRing PublicRing { get; private set; }

    public string Fingerprint => Convert.ToHexStringLower(PublicRing.GetPublicKey().GetFingerprint());

    /// <summary>The public key, ASCII-armored, as <c>gpg --export --armor</c> writes it.</summary>
    public byte[] ArmoredPublic()
    {
        var bytes = new MemoryStream();
        using (var armor = new ArmoredOutputStream(bytes)) PublicRing.Encode(armor);
        return bytes.ToArray();
    }

    /// <summary>An armored detached signature of <paramref name="data"/> (<c>gpg --armor --detach-sign</c>).</summary>
    public byte[] Sign(byte[] data, bool armored = true)
    {
        var generator = new PgpSignatureGenerator(PublicKeyAlgorithmTag.RsaGeneral, HashAlgorithmTag.Sha256);
        generator.InitSign(PgpSignature.BinaryDocument, _private);
        generator.Update(data);
        var bytes = new MemoryStream();
        if (!armored) { generator.Generate().Encode(bytes); return bytes.ToArray(); }
        using (var armor = new ArmoredOutputStream(bytes)) generator.Generate().Encode(armor);
        return bytes.ToArray();
    }

    /// <summary>Adds a revocation of the primary key, signed by itself, to <see cref="PublicRing"/>.</summary>
    public void Revoke()
    {
        var generator = new PgpSignatureGenerator(PublicKeyAlgorithmTag.RsaGeneral, HashAlgorithmTag.Sha256);
        generator.InitSign(PgpSignature.KeyRevocation, _private);
        var primary = PublicRing.GetPublicKey();
        var revoked = PgpPublicKey.AddCertification(primary, generator.GenerateCertification(primary));
        PublicRing = PgpPublicKeyRing.InsertPublicKey(PublicRing, revoked);
    }
}
