using System.Buffers.Binary;
using System.Security.Cryptography;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Policy.Images;

/// <summary>A signature in an image's signature block: the signer's key id and the Ed25519 signature.</summary>
public sealed record ImageSignature(string KeyId, byte[] Signature);

/// <summary>
/// The single-file image bundle (docs/image-format.md). Little-endian throughout:
/// <code>
/// offset 0        "SVMMIMG1"              8-byte magic
///        8        u32 manifest length M   at most 64 KiB
///        12       u32 reserved            zero
///        16       manifest                M bytes of canonical JSON
///        16+M     payloads                concatenated in manifest order, sizes from the manifest
///        T        "SVMMSIG1"              signature block magic, T = 16 + M + sum of payload sizes
///        T+8      u32 count N             at most 16
///        T+12     u32 reserved            zero
///        T+16     N x (8-byte key id, 64-byte Ed25519 signature)
///        T+16+72N end of file             nothing may follow
/// </code>
/// The signatures cover the domain tag "SecureVmm image manifest v1", a NUL byte and the
/// manifest bytes; the manifest covers every payload by size and SHA-256. One file makes
/// "read once, verify, use" natural: the loader reads each byte once from one open handle.
/// </summary>
public static class ImageBundle
{
    public const int HeaderSize = 16;
    public const int SignatureBlockHeaderSize = 16;
    public const int KeyIdSize = 8;
    public const int SignatureEntrySize = KeyIdSize + Ed25519SecretKey.SignatureSize;
    public const int MaxSignatures = 16;
    public static ReadOnlySpan<byte> Magic => "SVMMIMG1"u8;
    public static ReadOnlySpan<byte> SignatureMagic => "SVMMSIG1"u8;
    private static readonly byte[] DomainTag = "SecureVmm image manifest v1\0"u8.ToArray();

    /// <summary>Chunk size for streaming payloads: large enough to amortise calls, small enough to stay in cache while hashed.</summary>
    internal const int ChunkSize = 1 << 20;

    /// <summary>The Ed25519 message for a manifest (domain-separated from policy signatures).</summary>
    public static byte[] SignedMessage(ReadOnlySpan<byte> manifest)
    {
        byte[] message = new byte[DomainTag.Length + manifest.Length];
        DomainTag.CopyTo(message, 0);
        manifest.CopyTo(message.AsSpan(DomainTag.Length));
        return message;
    }

    /// <summary>The header and manifest of an open bundle; the stream is left just after the manifest.</summary>
    internal static (byte[] ManifestBytes, ImageManifest Manifest) ReadHead(Stream stream, string file)
    {
        long length = stream.Length;
        Span<byte> header = stackalloc byte[HeaderSize];
        if (length < HeaderSize)
        {
            throw new ImageException(ImageErrorCode.NotAnImage, $"{file}: {length} bytes is too short for an image header ({HeaderSize} bytes)");
        }
        stream.ReadExactly(header);
        if (!header[..8].SequenceEqual(Magic))
        {
            throw new ImageException(ImageErrorCode.NotAnImage, $"{file}: offset 0: not a SecureVmm image (expected magic \"SVMMIMG1\")");
        }
        uint manifestLength = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header[12..]) != 0)
        {
            throw new ImageException(ImageErrorCode.MalformedField, $"{file}: offset 12: reserved header field must be zero");
        }
        if (manifestLength > ManifestRules.MaxManifestBytes)
        {
            throw new ImageException(ImageErrorCode.OversizedField,
                $"{file}: offset 8: manifest length {manifestLength} exceeds the limit of {ManifestRules.MaxManifestBytes} bytes");
        }
        if (HeaderSize + manifestLength > length)
        {
            throw new ImageException(ImageErrorCode.TruncatedPayload,
                $"{file}: the manifest needs bytes {HeaderSize}..{HeaderSize + manifestLength} but the file is {length} bytes (truncated)");
        }
        byte[] manifestBytes = new byte[manifestLength];
        stream.ReadExactly(manifestBytes);
        return (manifestBytes, ManifestRules.Parse(manifestBytes, file + " (manifest)"));
    }

    /// <summary>Offset of the signature block, from the manifest's payload sizes.</summary>
    internal static long SignatureBlockOffset(int manifestLength, ImageManifest manifest) =>
        HeaderSize + manifestLength + manifest.TotalPayloadBytes;

    /// <summary>Reads and checks the signature block at <paramref name="offset"/>, which must end the file exactly.</summary>
    internal static List<ImageSignature> ReadSignatures(Stream stream, long offset, string file)
    {
        long length = stream.Length;
        if (length < offset + SignatureBlockHeaderSize)
        {
            throw new ImageException(ImageErrorCode.TruncatedPayload,
                $"{file}: the manifest's payloads and signature block need at least {offset + SignatureBlockHeaderSize} bytes but the file is {length} (truncated payload)");
        }
        stream.Position = offset;
        Span<byte> head = stackalloc byte[SignatureBlockHeaderSize];
        stream.ReadExactly(head);
        if (!head[..8].SequenceEqual(SignatureMagic))
        {
            throw new ImageException(ImageErrorCode.MalformedField,
                $"{file}: offset {offset}: expected the signature block (\"SVMMSIG1\"); the payload sizes in the manifest do not match the file");
        }
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(head[8..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(head[12..]) != 0)
        {
            throw new ImageException(ImageErrorCode.MalformedField, $"{file}: offset {offset + 12}: reserved signature block field must be zero");
        }
        if (count > MaxSignatures)
        {
            throw new ImageException(ImageErrorCode.OversizedField, $"{file}: offset {offset + 8}: {count} signatures; at most {MaxSignatures} are allowed");
        }
        long end = offset + SignatureBlockHeaderSize + (count * (long)SignatureEntrySize);
        if (length < end)
        {
            throw new ImageException(ImageErrorCode.TruncatedPayload, $"{file}: the signature block needs {end} bytes but the file is {length} (truncated)");
        }
        if (length > end)
        {
            throw new ImageException(ImageErrorCode.TrailingData, $"{file}: offset {end}: {length - end} unexpected bytes after the signature block");
        }
        var signatures = new List<ImageSignature>((int)count);
        byte[] entry = new byte[SignatureEntrySize];
        for (int i = 0; i < count; i++)
        {
            stream.ReadExactly(entry);
            signatures.Add(new ImageSignature(Convert.ToHexStringLower(entry.AsSpan(0, KeyIdSize)), entry[KeyIdSize..]));
        }
        return signatures;
    }

    private static void WriteSignatures(Stream stream, IReadOnlyList<ImageSignature> signatures)
    {
        Span<byte> head = stackalloc byte[SignatureBlockHeaderSize];
        SignatureMagic.CopyTo(head);
        BinaryPrimitives.WriteUInt32LittleEndian(head[8..], (uint)signatures.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(head[12..], 0);
        stream.Write(head);
        foreach (var s in signatures)
        {
            stream.Write(Convert.FromHexString(s.KeyId));
            stream.Write(s.Signature);
        }
    }

    /// <summary>A file to put in an image, with the role it plays.</summary>
    public sealed record PackInput(PayloadRole Role, string Path);

    /// <summary>
    /// Writes an unsigned image to <paramref name="outPath"/> (atomically: a temporary file then
    /// a rename). Each input is hashed, then copied while hashed again, so a file that changes
    /// during packing is caught instead of packed with a stale digest.
    /// </summary>
    public static ImageManifest Pack(string outPath, string name, ulong version, ImageKind kind, bool isSealed, string commandLine,
        uint? loadAddress, uint? entry, IReadOnlyList<PackInput> inputs, DateTimeOffset created)
    {
        var payloads = new List<PayloadEntry>();
        foreach (var input in inputs)
        {
            using var source = OpenInput(input.Path);
            var (size, digest) = HashStream(source, input.Path);
            payloads.Add(new PayloadEntry(input.Role, Path.GetFileName(input.Path), size, digest));
        }
        var manifest = new ImageManifest(name, version, new DateTimeOffset(created.UtcDateTime.Ticks / TimeSpan.TicksPerSecond * TimeSpan.TicksPerSecond, TimeSpan.Zero),
            kind, isSealed, commandLine, loadAddress, entry, [.. payloads]);
        byte[] manifestBytes = ManifestRules.Serialize(ManifestRules.ToDocument(manifest));
        ManifestRules.Parse(manifestBytes, outPath + " (new manifest)"); // the same rules the loader applies

        string temporary = outPath + ".tmp";
        try
        {
            using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                Span<byte> header = stackalloc byte[HeaderSize];
                Magic.CopyTo(header);
                BinaryPrimitives.WriteUInt32LittleEndian(header[8..], (uint)manifestBytes.Length);
                BinaryPrimitives.WriteUInt32LittleEndian(header[12..], 0);
                output.Write(header);
                output.Write(manifestBytes);
                for (int i = 0; i < inputs.Count; i++)
                {
                    using var source = OpenInput(inputs[i].Path);
                    var (size, digest) = HashStream(source, inputs[i].Path, output);
                    if (size != payloads[i].Size || digest != payloads[i].Sha256)
                    {
                        throw new ImageException(ImageErrorCode.HashMismatch, $"{inputs[i].Path}: the file changed while it was being packed");
                    }
                }
                WriteSignatures(output, []);
                output.Flush(true);
            }
            File.Move(temporary, outPath, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
        return manifest;
    }

    /// <summary>
    /// Adds (or replaces) <paramref name="key"/>'s signature on the image at <paramref name="path"/>.
    /// Refuses to sign an image whose payloads do not match its manifest: a signature vouches for them.
    /// </summary>
    public static ImageManifest Sign(string path, Ed25519SecretKey key)
    {
        using var stream = OpenExisting(path, FileAccess.ReadWrite);
        var (manifestBytes, manifest) = ReadHead(stream, path);
        long signatureOffset = SignatureBlockOffset(manifestBytes.Length, manifest);
        var signatures = ReadSignatures(stream, signatureOffset, path);
        stream.Position = HeaderSize + manifestBytes.Length;
        foreach (var payload in manifest.Payloads)
        {
            var (_, digest) = HashStream(stream, path, null, payload.Size);
            if (digest != payload.Sha256)
            {
                throw new ImageException(ImageErrorCode.HashMismatch,
                    $"{path}: payload '{payload.Name}' has SHA-256 {digest} but the manifest says {payload.Sha256}; not signing");
            }
        }
        signatures.RemoveAll(s => s.KeyId == key.Id);
        if (signatures.Count >= MaxSignatures)
        {
            throw new ImageException(ImageErrorCode.OversizedField, $"{path}: already {MaxSignatures} signatures, the most an image may carry");
        }
        signatures.Add(new ImageSignature(key.Id, key.Sign(SignedMessage(manifestBytes))));
        stream.Position = signatureOffset;
        WriteSignatures(stream, signatures);
        stream.SetLength(stream.Position);
        stream.Flush(true);
        return manifest;
    }

    /// <summary>SHA-256 of a stream (or of its next <paramref name="limit"/> bytes), optionally copying what it reads.</summary>
    internal static (long Size, string Sha256) HashStream(Stream source, string file, Stream? copyTo = null, long limit = long.MaxValue)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[ChunkSize];
        long total = 0;
        while (total < limit)
        {
            int read = source.Read(buffer, 0, (int)Math.Min(buffer.Length, limit - total));
            if (read == 0)
            {
                if (limit != long.MaxValue)
                {
                    throw new ImageException(ImageErrorCode.TruncatedPayload, $"{file}: payload ends after {total} of {limit} bytes (truncated)");
                }
                break;
            }
            hash.AppendData(buffer, 0, read);
            copyTo?.Write(buffer, 0, read);
            total += read;
        }
        return (total, Convert.ToHexStringLower(hash.GetHashAndReset()));
    }

    private static FileStream OpenInput(string path)
    {
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ImageException(ImageErrorCode.MissingFile, $"{path}: no such file");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(ImageErrorCode.Unreadable, $"{path}: cannot read: {e.Message}");
        }
    }

    internal static FileStream OpenExisting(string path, FileAccess access)
    {
        try
        {
            // Buffer size 1: payload reads go straight into their destination arrays.
            return new FileStream(path, FileMode.Open, access, FileShare.Read, 1, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ImageException(ImageErrorCode.MissingFile, $"{path}: no such image file");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(ImageErrorCode.Unreadable, $"{path}: cannot open: {e.Message}");
        }
    }
}
