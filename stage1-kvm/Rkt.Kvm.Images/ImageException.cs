namespace Rkt.Kvm.Images;

/// <summary>
/// Everything this library refuses — a hostile or corrupt archive, a digest mismatch, an unknown
/// image — is an ImageException whose message reads as one sentence for the CLI's error line.
/// </summary>
public class ImageException : Exception
{
    public ImageException(string message) : base(message) { }
    public ImageException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>An archive entry that was refused; <see cref="Entry"/> names it as the archive does.</summary>
public sealed class UnsafeEntryException : ImageException
{
    public UnsafeEntryException(string entry, string reason)
        : base($"refusing archive entry \"{Printable(entry)}\": {reason}") => Entry = entry;

    private UnsafeEntryException(string entry, string message, bool _) : base(message) => Entry = entry;

    /// <summary>The same refusal, rebuilt from its entry and message (a confined extraction reports it so).</summary>
    internal static UnsafeEntryException Rebuilt(string entry, string message) => new(entry, message, true);

    public string Entry { get; }

    /// <summary>NULs and control characters would garble the error line; show them escaped.</summary>
    /// Over-long names are shortened to keep the line readable.
    private static string Printable(string s)
    {
        var text = string.Concat(s.Select(c => char.IsControl(c) ? $"\\x{(int)c:x2}" : c.ToString()));
        return text.Length <= 160 ? text : $"{text[..80]}…{text[^60..]} ({s.Length} chars)";
    }
}
