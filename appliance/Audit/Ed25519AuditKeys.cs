using SecureVmm.Policy.Keys;
using SecureVmm.Tcb.Audit;

namespace SecureVmm.Appliance.Audit;

/// <summary>Signs audit checkpoints with the appliance's Ed25519 audit key (RFC 8032).</summary>
public sealed class Ed25519AuditSigner(Ed25519SecretKey key) : IAuditSigner
{
    public string KeyId => key.Id;

    public byte[] Sign(ReadOnlySpan<byte> message) => key.Sign(message);
}

/// <summary>Checks audit checkpoint signatures against one trusted Ed25519 public key.</summary>
public sealed class Ed25519AuditVerifier(Ed25519PublicKey key) : IAuditSignatureVerifier
{
    public string KeyId => key.Id;

    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature) => key.Verify(message, signature);
}
