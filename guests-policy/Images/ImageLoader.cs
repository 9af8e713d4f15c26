using System.Collections.Immutable;
using System.Security.Cryptography;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;

namespace SecureVmm.Policy.Images;

/// <summary>
/// Loads an image for booting: read once, verify, then use. Order matters: the small parts
/// (header, manifest, signatures) are checked first, so an untrusted file never makes the
/// appliance allocate or hash gigabytes; then each payload is read straight into its own
/// buffer and hashed as it arrives, and that buffer is what the VM boots.
/// </summary>
public static class ImageLoader
{
    /// <summary>Loads the image a VM's policy names, with the policy's signers, name, sealing and rollback rules.</summary>
    public static VerifiedImage LoadVerified(VmPolicy vm, RollbackState? rollbackState) =>
        LoadVerified(vm.Image.Path, vm.Image.SignerKeys, vm.Name, rollbackState, vm.Image.Name, vm.Image.AllowRollback, vm.Image.Sealed);

    /// <summary>
    /// Verifies the image at <paramref name="imagePath"/>: a signature by one of
    /// <paramref name="trustedKeys"/>, every payload's size and SHA-256, the expected name and
    /// sealing (when given) and, when <paramref name="rollbackState"/> is given, that the version
    /// is not older than what <paramref name="vmName"/> has booted. Throws ImageException.
    /// </summary>
    public static VerifiedImage LoadVerified(string imagePath, IReadOnlyCollection<Ed25519PublicKey> trustedKeys, string? vmName,
        RollbackState? rollbackState, string? expectedName = null, bool allowRollback = false, bool? expectSealed = null)
    {
        using var stream = ImageBundle.OpenExisting(imagePath, FileAccess.Read);
        try
        {
            return Load(stream, imagePath, trustedKeys, vmName, rollbackState, expectedName, allowRollback, expectSealed);
        }
        catch (EndOfStreamException)
        {
            throw new ImageException(ImageErrorCode.TruncatedPayload, $"{imagePath}: the file ended early (truncated, or changed while being read)");
        }
        catch (IOException e)
        {
            throw new ImageException(ImageErrorCode.Unreadable, $"{imagePath}: read error: {e.Message}");
        }
    }

    private static VerifiedImage Load(FileStream stream, string imagePath, IReadOnlyCollection<Ed25519PublicKey> trustedKeys, string? vmName,
        RollbackState? rollbackState, string? expectedName, bool allowRollback, bool? expectSealed)
    {
        var (manifestBytes, manifest) = ImageBundle.ReadHead(stream, imagePath);
        long signatureOffset = ImageBundle.SignatureBlockOffset(manifestBytes.Length, manifest);
        var signatures = ImageBundle.ReadSignatures(stream, signatureOffset, imagePath);
        string signer = CheckSignatures(imagePath, manifestBytes, signatures, trustedKeys, vmName);

        if (expectedName is not null && manifest.Name != expectedName)
        {
            throw new ImageException(ImageErrorCode.NameMismatch,
                $"{imagePath}: the image is '{manifest.Name}' but the policy expects '{expectedName}'{(vmName is null ? "" : $" for VM '{vmName}'")}");
        }
        if (expectSealed is { } sealedExpected && manifest.Sealed != sealedExpected)
        {
            throw new ImageException(ImageErrorCode.SealedMismatch, manifest.Sealed
                ? $"{imagePath}: the image is sealed but the policy does not declare image.sealed: true, so its storage was not checked for sealing"
                : $"{imagePath}: the policy requires a sealed image but '{manifest.Name}' is not sealed");
        }
        if (rollbackState is not null && vmName is not null)
        {
            rollbackState.Check(vmName, manifest.Name, manifest.Version, allowRollback);
        }

        stream.Position = ImageBundle.HeaderSize + manifestBytes.Length;
        var payloads = ImmutableArray.CreateBuilder<VerifiedPayload>(manifest.Payloads.Length);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> digest = stackalloc byte[32];
        foreach (var entry in manifest.Payloads)
        {
            // Uninitialised: every byte is overwritten by the read below, and zeroing a gigabyte costs a tenth of a second.
            byte[] bytes = GC.AllocateUninitializedArray<byte>(checked((int)entry.Size));
            for (int offset = 0; offset < bytes.Length;)
            {
                int chunk = Math.Min(ImageBundle.ChunkSize, bytes.Length - offset);
                stream.ReadExactly(bytes, offset, chunk);
                hash.AppendData(bytes, offset, chunk);
                offset += chunk;
            }
            hash.GetHashAndReset(digest);
            string actual = Convert.ToHexStringLower(digest);
            if (actual != entry.Sha256)
            {
                throw new ImageException(ImageErrorCode.HashMismatch,
                    $"{imagePath}: payload '{entry.Name}' has SHA-256 {actual} but the signed manifest says {entry.Sha256}");
            }
            payloads.Add(new VerifiedPayload(entry.Role, entry.Name, actual, bytes));
        }
        return new VerifiedImage(imagePath, manifest, Convert.ToHexStringLower(SHA256.HashData(manifestBytes)), signer, payloads.MoveToImmutable());
    }

    private static string CheckSignatures(string imagePath, byte[] manifestBytes, List<ImageSignature> signatures,
        IReadOnlyCollection<Ed25519PublicKey> trustedKeys, string? vmName)
    {
        if (signatures.Count == 0)
        {
            throw new ImageException(ImageErrorCode.Unsigned, $"{imagePath}: the image is not signed; sign it with 'securevmm image sign'");
        }
        // Signatures by keys this VM does not trust are ignored (an image may carry a vendor's and a
        // site's signature); every signature by a trusted key must verify, because a bad one is
        // evidence of tampering even when another trusted signature is good.
        byte[] message = ImageBundle.SignedMessage(manifestBytes);
        string? signer = null;
        foreach (var signature in signatures)
        {
            var key = trustedKeys.FirstOrDefault(k => k.Id == signature.KeyId);
            if (key is null)
            {
                continue;
            }
            if (!key.Verify(message, signature.Signature))
            {
                throw new ImageException(ImageErrorCode.BadSignature,
                    $"{imagePath}: the signature by key {key.Id} does not verify: the manifest or the signature has been altered");
            }
            signer ??= key.Id;
        }
        if (signer is not null)
        {
            return signer;
        }
        string trusted = trustedKeys.Count == 0 ? "none" : string.Join(", ", trustedKeys.Select(k => k.Id));
        throw new ImageException(ImageErrorCode.WrongKey,
            $"{imagePath}: signed by key{(signatures.Count == 1 ? "" : "s")} {string.Join(", ", signatures.Select(s => s.KeyId))}, " +
            $"none of which is trusted{(vmName is null ? "" : $" for VM '{vmName}'")} (trusted: {trusted})");
    }
}
