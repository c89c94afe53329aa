namespace Rkt.Kvm.Images.Trust;

/// <summary>Why an image's signature was refused.</summary>
public enum SignatureFailure
{
    /// <summary>The .asc is not an OpenPGP detached signature.</summary>
    NotASignature,
    /// <summary>No key at all is trusted for the image's name.</summary>
    NoTrustedKey,
    /// <summary>Keys are trusted for the name, but the signer is none of them.</summary>
    UntrustedKey,
    /// <summary>The signature does not match the image (either was altered).</summary>
    BadSignature,
    /// <summary>The signing key (or the signature itself) has expired.</summary>
    Expired,
    /// <summary>The signing key was revoked by its owner.</summary>
    Revoked,
}

/// <summary>A refused signature: one sentence naming the reason, which tests and callers can also read.</summary>
public sealed class SignatureException(SignatureFailure failure, string message) : ImageException(message)
{
    public SignatureFailure Failure { get; } = failure;
}
