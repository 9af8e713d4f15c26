using System.Security.Cryptography;
using System.Text;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Policy.Policy;

/// <summary>
/// The detached administrator signature of a policy: a small text file next to it
/// (POLICY.sig, e.g. policy.json.sig), documented in docs/policy.md:
/// <code>
/// SecureVmm policy signature v1
/// key: 0123456789abcdef
/// sha256: HEX(SHA-256 of the policy file bytes)
/// signature: BASE64(Ed25519 signature, 64 bytes)
/// </code>
/// The Ed25519 message (RFC 8032 section 5.1) is the domain tag "SecureVmm policy v1" and a
/// NUL byte followed by the exact policy file bytes, so a signature made for an image
/// manifest can never pass as a policy signature, even under the same key.
/// </summary>
public static class PolicySignature
{
    public const string Header = "SecureVmm policy signature v1";
    public const string Suffix = ".sig";
    private static readonly byte[] DomainTag = "SecureVmm policy v1\0"u8.ToArray();

    public static string DefaultPath(string policyPath) => policyPath + Suffix;

    public static string Sha256Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    private static byte[] Message(ReadOnlySpan<byte> policy)
    {
        byte[] message = new byte[DomainTag.Length + policy.Length];
        DomainTag.CopyTo(message, 0);
        policy.CopyTo(message.AsSpan(DomainTag.Length));
        return message;
    }

    /// <summary>The signature file's text for <paramref name="policy"/> signed by <paramref name="key"/>.</summary>
    public static string Create(ReadOnlySpan<byte> policy, Ed25519SecretKey key) =>
        $"{Header}\nkey: {key.Id}\nsha256: {Sha256Hex(policy)}\nsignature: {Convert.ToBase64String(key.Sign(Message(policy)))}\n";

    /// <summary>
    /// Checks <paramref name="signatureText"/> (read from <paramref name="signatureName"/>) over
    /// <paramref name="policy"/> against <paramref name="adminKey"/>; throws a PolicyException saying which check failed.
    /// </summary>
    public static void Verify(ReadOnlySpan<byte> policy, string policyName, string signatureText, string signatureName, Ed25519PublicKey adminKey) =>
        Verify(policy, policyName, signatureText, signatureName, [adminKey]);

    /// <summary>As above, accepting any of <paramref name="adminKeys"/>; returns the key that signed.</summary>
    public static Ed25519PublicKey Verify(ReadOnlySpan<byte> policy, string policyName, string signatureText, string signatureName,
        IReadOnlyCollection<Ed25519PublicKey> adminKeys)
    {
        string? keyId = null, digest = null;
        byte[]? signature = null;
        string[] lines = signatureText.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        if (lines[0].Trim() != Header)
        {
            throw new PolicyException(PolicyErrorCode.MalformedSignature, $"{signatureName}: line 1: expected \"{Header}\"");
        }
        for (int i = 1; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (line.Length == 0)
            {
                continue;
            }
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            string field = colon < 0 ? line : line[..colon].Trim();
            string value = colon < 0 ? "" : line[(colon + 1)..].Trim();
            switch (field)
            {
                case "key" when keyId is null:
                    keyId = value;
                    break;
                case "sha256" when digest is null:
                    digest = value;
                    break;
                case "signature" when signature is null:
                    try
                    {
                        signature = Convert.FromBase64String(value);
                    }
                    catch (FormatException)
                    {
                        throw new PolicyException(PolicyErrorCode.MalformedSignature, $"{signatureName}: line {i + 1}: field 'signature' is not base64");
                    }
                    if (signature.Length != Ed25519SecretKey.SignatureSize)
                    {
                        throw new PolicyException(PolicyErrorCode.MalformedSignature,
                            $"{signatureName}: line {i + 1}: field 'signature' must be {Ed25519SecretKey.SignatureSize} bytes, got {signature.Length}");
                    }
                    break;
                default:
                    throw new PolicyException(PolicyErrorCode.MalformedSignature,
                        $"{signatureName}: line {i + 1}: unexpected \"{field}\"; expected each of key, sha256, signature once");
            }
        }
        if (keyId is null || digest is null || signature is null)
        {
            string missing = keyId is null ? "key" : digest is null ? "sha256" : "signature";
            throw new PolicyException(PolicyErrorCode.MalformedSignature, $"{signatureName}: missing field '{missing}'");
        }
        var adminKey = adminKeys.FirstOrDefault(k => k.Id == keyId) ?? throw new PolicyException(PolicyErrorCode.WrongKey,
            $"{signatureName}: the policy is signed by key {keyId}, but the administrator key{(adminKeys.Count == 1 ? "" : "s")} given " +
            $"{(adminKeys.Count == 1 ? "is" : "are")} {string.Join(", ", adminKeys.Select(k => k.Id))}");
        string actual = Sha256Hex(policy);
        if (!string.Equals(digest, actual, StringComparison.Ordinal))
        {
            throw new PolicyException(PolicyErrorCode.DigestMismatch,
                $"{policyName}: the file has changed since it was signed (sha256 {actual}, {signatureName} says {digest})");
        }
        if (!adminKey.Verify(Message(policy), signature))
        {
            throw new PolicyException(PolicyErrorCode.BadSignature,
                $"{signatureName}: the Ed25519 signature does not verify against administrator key {adminKey.Id}");
        }
        return adminKey;
    }
}
