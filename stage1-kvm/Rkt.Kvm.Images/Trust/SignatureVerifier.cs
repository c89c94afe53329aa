using Org.BouncyCastle.Bcpg.OpenPgp;

namespace Rkt.Kvm.Images.Trust;

/// <summary>
/// Checks an OpenPGP detached signature (armored or binary, as rkt accepts both) over an image
/// against the keys trusted for the image's name, with BouncyCastle: no gpg process. The signer
/// must be a trusted key (a primary key or one of its subkeys), the signature must match every
/// byte of the image, and neither key nor signature may be revoked or expired. Anything else is
/// a <see cref="SignatureException"/> saying which.
/// </summary>
public static class SignatureVerifier
{
    private const int BufferSize = 1 << 16;

    /// <param name="name">the image's name, which picks the trusted keys and goes in messages.</param>
    /// <param name="what">the image (a URL or file), for messages.</param>
    /// <returns>the trusted key that signed the image.</returns>
    public static PublicKeyFile Verify(string name, IReadOnlyList<PublicKeyFile> trusted, Stream signed, byte[] signature, string what, DateTimeOffset now)
    {
        var signatures = Parse(signature, what);
        if (trusted.Count == 0)
            throw new SignatureException(SignatureFailure.NoTrustedKey,
                $"no key is trusted for image {name}: trust its signer with `rkt-kvm trust --prefix {name}` (or skip the check with --insecure-options=image)");
        var (sig, file, key) = FindSigner(signatures, trusted) ?? throw new SignatureException(SignatureFailure.UntrustedKey,
            $"{what} is signed by key {string.Join(", ", signatures.Select(s => s.KeyId.ToString("X16")))}, which is not trusted for {name} " +
            $"(if its signing key changed: rkt-kvm trust --prefix {name})");
        if (sig.SignatureType is not (PgpSignature.BinaryDocument or PgpSignature.CanonicalTextDocument))
            throw new SignatureException(SignatureFailure.BadSignature, $"the signature of {what} is not a document signature (type {sig.SignatureType})");

        sig.InitVerify(key);
        var buffer = new byte[BufferSize];
        int n;
        while ((n = signed.Read(buffer, 0, buffer.Length)) > 0) sig.Update(buffer, 0, n);
        if (!sig.Verify())
            throw new SignatureException(SignatureFailure.BadSignature, $"the signature of {what} does not match it: the image or its signature was altered");

        var primary = file.Ring.GetPublicKey();
        if (IsRevoked(primary, primary) || (!key.IsMasterKey && IsRevoked(key, primary)))
            throw new SignatureException(SignatureFailure.Revoked, $"{what} is signed by key {file.DisplayFingerprint}, which has been revoked");
        foreach (var k in key.IsMasterKey ? [primary] : new[] { primary, key })
            if (ExpiresAt(k) is { } expiry && expiry <= now)
                throw new SignatureException(SignatureFailure.Expired, $"{what} is signed by key {file.DisplayFingerprint}, which expired on {expiry:yyyy-MM-dd HH:mm} UTC");
        if (sig.GetHashedSubPackets()?.GetSignatureExpirationTime() is > 0 and var seconds && new DateTimeOffset(sig.CreationTime).AddSeconds(seconds) <= now)
            throw new SignatureException(SignatureFailure.Expired, $"the signature of {what} expired on {new DateTimeOffset(sig.CreationTime).AddSeconds(seconds):yyyy-MM-dd HH:mm} UTC");
        return file;
    }

    private static List<PgpSignature> Parse(byte[] signature, string what)
    {
        try
        {
            using var decoded = PgpUtilities.GetDecoderStream(new MemoryStream(signature, writable: false));
            var factory = new PgpObjectFactory(decoded);
            var next = factory.NextPgpObject();
            while (next is PgpMarker) next = factory.NextPgpObject();
            if (next is PgpSignatureList list && list.Count > 0) return [.. Enumerable.Range(0, list.Count).Select(i => list[i])];
        }
        catch (Exception e) when (e is PgpException or IOException or ArgumentException or InvalidOperationException)
        {
            throw new SignatureException(SignatureFailure.NotASignature, $"the signature of {what} is not an OpenPGP signature ({e.Message})");
        }
        throw new SignatureException(SignatureFailure.NotASignature, $"the signature of {what} holds no OpenPGP signature");
    }

    private static (PgpSignature, PublicKeyFile, PgpPublicKey)? FindSigner(List<PgpSignature> signatures, IReadOnlyList<PublicKeyFile> trusted)
    {
        foreach (var sig in signatures)
            foreach (var file in trusted)
                if (file.Ring.GetPublicKey(sig.KeyId) is { } key) return (sig, file, key);
        return null;
    }

    /// <summary>A revocation counts only when the primary key made it: anyone can append a packet to a key file.</summary>
    private static bool IsRevoked(PgpPublicKey key, PgpPublicKey primary)
    {
        var type = key.IsMasterKey ? PgpSignature.KeyRevocation : PgpSignature.SubkeyRevocation;
        foreach (var revocation in key.GetSignaturesOfType(type))
        {
            try
            {
                revocation.InitVerify(primary);
                if (key.IsMasterKey ? revocation.VerifyCertification(key) : revocation.VerifyCertification(primary, key)) return true;
            }
            catch (PgpException) { } // a malformed revocation revokes nothing
        }
        return false;
    }

    private static DateTimeOffset? ExpiresAt(PgpPublicKey key) =>
        key.GetValidSeconds() is > 0 and var seconds ? new DateTimeOffset(key.CreationTime).AddSeconds(seconds) : null;
}
