using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Rkt.Kvm.Vmm.Memory;

namespace Rkt.Kvm.Vmm.Snapshot;

/// <summary>
/// The snapshot file: a 64-byte preamble (magic, format version, lengths, SHA-256 of header and
/// state), the JSON header at 64, the machine state at 64 KiB, then guest RAM region by region at
/// 2 MiB-aligned offsets. Zero pages are holes, so the file costs what the guest touched. RAM is
/// not checksummed: a restore maps it lazily and must not read it all (the header and state are).
/// </summary>
public static class SnapshotFile
{
    public const int FormatVersion = 1;
    private static ReadOnlySpan<byte> Magic => "RKVMSNAP"u8;
    private const int PreambleSize = 64, StateOffset = 64 << 10, MaxHeaderLength = StateOffset - PreambleSize;
    private const long RegionAlignment = 2 << 20;
    private const int PageSize = 4096;
    private const int MaxStateLength = 64 << 20;

    /// <summary>
    /// Writes the snapshot to <paramref name="path"/> atomically (a temporary file, fsync, rename):
    /// a reader sees the old file, the complete new one, or none. Returns the header written.
    /// </summary>
    public static SnapshotHeader Write(string path, SnapshotHeader header, MachineState state, GuestMemory memory)
    {
        // Not named by our pid alone: in its own PID namespace every VMM is pid 1.
        string temp = $"{path}.tmp-{Environment.ProcessId}-{Convert.ToHexString(Rkt.Kvm.Posix.Entropy.GetBytes(4))}";
        try
        {
            using (var file = File.OpenHandle(temp, FileMode.Create, FileAccess.ReadWrite, FileShare.None, FileOptions.None, preallocationSize: 0))
                header = WriteInto(file, header, state, memory);
            File.Move(temp, path, overwrite: true);
            return header;
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>
    /// Writes the snapshot into <paramref name="file"/>, an empty file opened for writing (the control
    /// socket's client passes one: it makes it the snapshot by name once this returns), and syncs it.
    /// </summary>
    public static SnapshotHeader WriteInto(SafeFileHandle file, SnapshotHeader header, MachineState state, GuestMemory memory)
    {
        byte[] stateBytes = state.ToBytes();
        long offset = AlignUp(StateOffset + stateBytes.Length, RegionAlignment);
        var regions = new List<SnapshotRegion>();
        foreach (var r in memory.Regions)
        {
            regions.Add(new SnapshotRegion(r.GuestAddress, r.Size, offset));
            offset = AlignUp(offset + (long)r.Size, RegionAlignment);
        }
        long written = 0;
        RandomAccess.SetLength(file, offset);
        for (int i = 0; i < regions.Count; i++) written += WriteRegion(file, memory, regions[i]);
        header = header with { FormatVersion = FormatVersion, StateLength = stateBytes.Length, Regions = regions, MemoryBytesWritten = written };
        byte[] headerBytes = JsonSerializer.SerializeToUtf8Bytes(header, SnapshotJsonContext.Default.SnapshotHeader);
        if (headerBytes.Length > MaxHeaderLength) throw new SnapshotException($"The snapshot header is {headerBytes.Length} bytes, more than {MaxHeaderLength}.");
        var preamble = new byte[PreambleSize];
        Magic.CopyTo(preamble);
        BinaryPrimitives.WriteInt32LittleEndian(preamble.AsSpan(8), FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(preamble.AsSpan(12), headerBytes.Length);
        BinaryPrimitives.WriteInt64LittleEndian(preamble.AsSpan(16), stateBytes.Length);
        Checksum(headerBytes, stateBytes).CopyTo(preamble.AsSpan(24));
        RandomAccess.Write(file, preamble, 0);
        RandomAccess.Write(file, headerBytes, PreambleSize);
        RandomAccess.Write(file, stateBytes, StateOffset);
        RandomAccess.FlushToDisk(file);
        return header;
    }

    /// <summary>Writes the region's non-zero pages; returns how many bytes that was.</summary>
    private static long WriteRegion(SafeFileHandle file, GuestMemory memory, SnapshotRegion region)
    {
        long written = 0;
        const int Chunk = 2 << 20;
        for (ulong done = 0; done < region.Size; done += Chunk)
        {
            int length = (int)Math.Min(Chunk, region.Size - done);
            var chunk = memory.GetSpan(region.GuestAddress + done, length);
            int page = 0;
            while (page < length)
            {
                // Find a run of non-zero pages and write it in one call.
                while (page < length && IsZero(chunk.Slice(page, Math.Min(PageSize, length - page)))) page += PageSize;
                int start = page;
                while (page < length && !IsZero(chunk.Slice(page, Math.Min(PageSize, length - page)))) page += PageSize;
                if (page > start)
                {
                    int runLength = Math.Min(page, length) - start;
                    RandomAccess.Write(file, chunk.Slice(start, runLength), region.FileOffset + (long)done + start);
                    written += runLength;
                }
            }
        }
        return written;
    }

    private static bool IsZero(ReadOnlySpan<byte> page) => !page.ContainsAnyExcept((byte)0);

    /// <summary>
    /// Opens a snapshot and checks everything but RAM's content: preamble, checksum, header, state,
    /// and that the file holds every region (a truncated file is refused). The caller owns the
    /// returned handle (RAM is mapped from it).
    /// </summary>
    public static (SnapshotHeader Header, MachineState State, SafeFileHandle File) Open(string path)
    {
        SafeFileHandle file;
        try
        {
            file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException($"Cannot open the snapshot {path}: {e.Message}");
        }
        try
        {
            long length = RandomAccess.GetLength(file);
            var preamble = new byte[PreambleSize];
            if (length < StateOffset || RandomAccess.Read(file, preamble, 0) != PreambleSize || !preamble.AsSpan(0, 8).SequenceEqual(Magic))
                throw new SnapshotException($"{path} is not a snapshot of this VMM (no RKVMSNAP preamble).");
            int version = BinaryPrimitives.ReadInt32LittleEndian(preamble.AsSpan(8));
            if (version != FormatVersion) throw new SnapshotException($"{path} is snapshot format {version}; this VMM reads format {FormatVersion}.");
            int headerLength = BinaryPrimitives.ReadInt32LittleEndian(preamble.AsSpan(12));
            long stateLength = BinaryPrimitives.ReadInt64LittleEndian(preamble.AsSpan(16));
            if (headerLength <= 0 || headerLength > MaxHeaderLength || stateLength <= 0 || stateLength > MaxStateLength || StateOffset + stateLength > length)
                throw new SnapshotException($"{path} is truncated or corrupt (header {headerLength} bytes, state {stateLength} bytes, file {length} bytes).");
            var headerBytes = ReadExactly(file, PreambleSize, headerLength);
            var stateBytes = ReadExactly(file, StateOffset, (int)stateLength);
            if (!Checksum(headerBytes, stateBytes).AsSpan().SequenceEqual(preamble.AsSpan(24, 32)))
                throw new SnapshotException($"{path} is corrupt: the checksum of its header and machine state does not match.");
            SnapshotHeader header;
            MachineState state;
            try
            {
                header = JsonSerializer.Deserialize(headerBytes, SnapshotJsonContext.Default.SnapshotHeader) ?? throw new InvalidDataException("empty header");
                state = MachineState.FromBytes(stateBytes);
            }
            catch (Exception e) when (e is JsonException or InvalidDataException)
            {
                throw new SnapshotException($"{path} has a malformed header or machine state: {e.Message}");
            }
            foreach (var r in header.Regions)
            {
                if (r.FileOffset % PageSize != 0 || r.FileOffset < StateOffset + stateLength || r.Size % PageSize != 0 || r.FileOffset + (long)r.Size > length)
                    throw new SnapshotException($"{path} is truncated: RAM at guest 0x{r.GuestAddress:X} (+{r.Size >> 20} MiB) is not inside the file's {length} bytes.");
            }
            return (header, state, file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static byte[] ReadExactly(SafeFileHandle file, long offset, int length)
    {
        var bytes = new byte[length];
        int done = 0;
        while (done < length)
        {
            int n = RandomAccess.Read(file, bytes.AsSpan(done), offset + done);
            if (n == 0) throw new SnapshotException("The snapshot ends early.");
            done += n;
        }
        return bytes;
    }

    private static byte[] Checksum(byte[] header, byte[] state)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(header);
        sha.AppendData(state);
        return sha.GetHashAndReset();
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    /// <summary>Names a file by content (SHA-256, hex) for the header.</summary>
    public static SnapshotInput Describe(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        return Describe(file, path);
    }

    /// <summary>The same, from a file opened earlier (a jailed VMM cannot open <paramref name="path"/> any more).</summary>
    public static SnapshotInput Describe(SafeFileHandle file, string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        long offset = 0;
        for (int n; (n = RandomAccess.Read(file, buffer, offset)) > 0; offset += n) sha.AppendData(buffer, 0, n);
        return new SnapshotInput(Path.GetFullPath(path), offset, Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    /// <summary>The running VMM's build: SHA-256 of its executable.</summary>
    public static string VmmBuild() => Describe(Environment.ProcessPath ?? "/proc/self/exe").Sha256;
}
