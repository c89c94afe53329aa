using Rkt.Kvm.Images.Tests.Support;
using Rkt.Kvm.Images.Trust;

namespace Rkt.Kvm.Images.Tests.Appc;

/// <summary>Detached-signature checks against trusted keys, one case per reason to refuse. Keys are
/// made once per class (RSA key generation is the slow part).</summary>
public sealed class SignatureTests
{
    private static readonly PgpTestKey Signer = new("Signer <signer@example.com>");
    private static readonly PgpTestKey Stranger = new("Stranger <stranger@example.com>");
    private static readonly byte[] Image = System.Text.Encoding.UTF8.GetBytes("an ACI, byte for byte\n" + new string('x', 200_000));
    private static readonly DateTimeOffset Now = DateTimeOffset.UtcNow;

    private static PublicKeyFile Trusted(PgpTestKey key) => PublicKeyFile.Parse(key.ArmoredPublic(), "key");

    private static PublicKeyFile Verify(PublicKeyFile[] trusted, byte[] image, byte[] signature) =>
        SignatureVerifier.Verify("example.com/app", trusted, new MemoryStream(image), signature, "app.aci", Now);

    private static SignatureException Refused(SignatureFailure failure, PublicKeyFile[] trusted, byte[] image, byte[] signature, string text)
    {
        var e = Assert.Throws<SignatureException>(() => Verify(trusted, image, signature));
        Assert.Equal(failure, e.Failure);
        Assert.Contains(text, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void A_signature_by_a_trusted_key_verifies_armored_or_binary()
    {
        Assert.Equal(Signer.Fingerprint, Verify([Trusted(Stranger), Trusted(Signer)], Image, Signer.Sign(Image)).Fingerprint);
        Assert.Equal(Signer.Fingerprint, Verify([Trusted(Signer)], Image, Signer.Sign(Image, armored: false)).Fingerprint);
    }

    [Fact]
    public void No_trusted_key_is_refused() =>
        Refused(SignatureFailure.NoTrustedKey, [], Image, Signer.Sign(Image), "no key is trusted for image example.com/app");

    [Fact]
    public void A_signature_by_another_key_is_refused() =>
        Refused(SignatureFailure.UntrustedKey, [Trusted(Stranger)], Image, Signer.Sign(Image), "which is not trusted for example.com/app");

    [Fact]
    public void A_tampered_image_is_refused()
    {
        var tampered = (byte[])Image.Clone();
        tampered[^7] ^= 1;
        Refused(SignatureFailure.BadSignature, [Trusted(Signer)], tampered, Signer.Sign(Image), "the image or its signature was altered");
    }

    [Fact]
    public void A_tampered_signature_is_refused()
    {
        // A byte of the signature value itself (the end of the binary packet), so the packet still parses.
        var signature = Signer.Sign(Image, armored: false);
        signature[^3] ^= 0x40;
        Refused(SignatureFailure.BadSignature, [Trusted(Signer)], Image, signature, "the image or its signature was altered");
        // A garbled armor is no signature at all.
        var armored = Signer.Sign(Image);
        armored[armored.Length / 2] = (byte)'!';
        Refused(SignatureFailure.NotASignature, [Trusted(Signer)], Image, armored, "is not an OpenPGP signature");
    }

    [Fact]
    public void A_signature_by_an_expired_key_is_refused()
    {
        var expired = new PgpTestKey("Old <old@example.com>", created: DateTime.UtcNow.AddDays(-30), validFor: TimeSpan.FromDays(1));
        Refused(SignatureFailure.Expired, [Trusted(expired)], Image, expired.Sign(Image), "which expired on");
    }

    [Fact]
    public void A_signature_by_a_revoked_key_is_refused()
    {
        var key = new PgpTestKey("Revoked <revoked@example.com>");
        var signature = key.Sign(Image);
        Assert.Equal(key.Fingerprint, Verify([Trusted(key)], Image, signature).Fingerprint);
        key.Revoke();
        Refused(SignatureFailure.Revoked, [Trusted(key)], Image, signature, "which has been revoked");
    }

    [Fact]
    public void Something_else_than_a_signature_is_refused()
    {
        Refused(SignatureFailure.NotASignature, [Trusted(Signer)], Image, "<html>404</html>"u8.ToArray(), "signature");
        Refused(SignatureFailure.NotASignature, [Trusted(Signer)], Image, Signer.ArmoredPublic(), "holds no OpenPGP signature");
    }
}
