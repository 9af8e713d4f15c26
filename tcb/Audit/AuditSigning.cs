namespace SecureVmm.Tcb.Audit;

/// <summary>
/// Signs audit checkpoints with the appliance's audit key. The TCB knows only this interface; the
/// appliance implements it over its Ed25519 keys (DESIGN.md: tcb depends on the base library only).
/// </summary>
public interface IAuditSigner
{
    /// <summary>The signing key's id (16 hex digits, as in the key files); recorded in every checkpoint.</summary>
    string KeyId { get; }

    /// <summary>The signature of <paramref name="message"/> (64 bytes for Ed25519, RFC 8032).</summary>
    byte[] Sign(ReadOnlySpan<byte> message);
}

/// <summary>Checks checkpoint signatures against one trusted public key.</summary>
public interface IAuditSignatureVerifier
{
    /// <summary>The trusted key's id; a checkpoint naming another key is reported as signed by an unknown key.</summary>
    string KeyId { get; }

    bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature);
}
