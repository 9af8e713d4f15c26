using System.Collections.Immutable;

namespace SecureVmm.Policy.Images;

/// <summary>A payload as verified: its bytes are the very bytes that were hashed, exposed read-only.</summary>
public sealed record VerifiedPayload(PayloadRole Role, string Name, string Sha256, ReadOnlyMemory<byte> Bytes);

/// <summary>
/// An image whose signature, payload hashes, name, sealing and version all checked out. The
/// payloads live in memory and are never re-read from disk: the bytes verified are the bytes
/// booted. For a sealed image the loader must copy payloads into guest RAM (never map them
/// writable); any writable space the guest gets is an ephemeral overlay discarded at stop.
/// </summary>
public sealed class VerifiedImage
{
    internal VerifiedImage(string sourcePath, ImageManifest manifest, string manifestSha256, string signerKeyId, ImmutableArray<VerifiedPayload> payloads)
    {
        SourcePath = sourcePath;
        Manifest = manifest;
        ManifestSha256 = manifestSha256;
        SignerKeyId = signerKeyId;
        Payloads = payloads;
    }

    public string SourcePath { get; }
    public ImageManifest Manifest { get; }
    /// <summary>SHA-256 of the manifest bytes: with <see cref="SignerKeyId"/>, what the audit log records.</summary>
    public string ManifestSha256 { get; }
    /// <summary>Id of the trusted key whose signature verified.</summary>
    public string SignerKeyId { get; }
    public ImmutableArray<VerifiedPayload> Payloads { get; }

    public string Name => Manifest.Name;
    public ulong Version => Manifest.Version;
    public bool Sealed => Manifest.Sealed;
    public ReadOnlyMemory<byte> Kernel => Payloads.First(p => p.Role == PayloadRole.Kernel).Bytes;
    public ReadOnlyMemory<byte>? Initrd => Payloads.FirstOrDefault(p => p.Role == PayloadRole.Initrd)?.Bytes;
}
