namespace SecureVmm.Policy.Images;

/// <summary>Why an image (or the rollback state) was refused. Each has its own message; the CLI exits 2 for all.</summary>
public enum ImageErrorCode
{
    MissingFile,
    Unreadable,
    NotAnImage,
    MalformedJson,
    MalformedField,
    OversizedField,
    TruncatedPayload,
    TrailingData,
    Unsigned,
    WrongKey,
    BadSignature,
    HashMismatch,
    NameMismatch,
    SealedMismatch,
    Rollback,
    MalformedRollbackState,
}

public sealed class ImageException(ImageErrorCode code, string message) : Exception(message)
{
    public ImageErrorCode Code { get; } = code;
}
