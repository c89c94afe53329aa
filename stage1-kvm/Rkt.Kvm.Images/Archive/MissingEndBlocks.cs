using Rkt.Kvm.Images.IO;

namespace Rkt.Kvm.Images.Archive;

/// <summary>
/// Supplies the two zero blocks that end a tar when the archive stops cleanly at a block
/// boundary without them, as umoci's layers do (GNU tar accepts that; TarReader throws).
/// A stream that ends inside a block is still truncated and still fails. The zeros are added
/// after all hashing, so digests and image IDs cover only the real bytes.
/// </summary>
internal sealed class MissingEndBlocks(Stream inner) : ReadOnlyStream
{
    private const int Block = 512;
    private long _position;
    private int _padding = -1; // zero bytes left to supply once the real stream has ended

    public override int Read(Span<byte> buffer)
    {
        if (_padding < 0)
        {
            int n = inner.Read(buffer);
            if (n > 0 || buffer.Length == 0) { _position += n; return n; }
            _padding = _position % Block == 0 ? 2 * Block : 0;
        }
        int give = Math.Min(_padding, buffer.Length);
        buffer[..give].Clear();
        _padding -= give;
        return give;
    }
}
