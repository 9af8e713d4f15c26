namespace SecureVmm.Policy.Policy;

/// <summary>Which rule a policy problem breaks (docs/policy.md, "Rules"). Tests match on these.</summary>
public enum PolicyRule
{
    MalformedJson,
    UnknownField,
    DuplicateProperty,
    WrongType,
    MissingField,
    BadValue,
    DuplicateName,
    UnknownReference,
    NetworkSharedByVms,
    LabelMismatch,
    SharedHostResource,
    MemoryBudget,
    MemoryOutOfRange,
    UnsupportedDevice,
    SignerNotAllowed,
    SealedPersistentStorage,
    BadMacAddress,
    DuplicateMacAddress,
    BadIpAddress,
    BadFilterRule,
    BadBackend,
    BadTrustAnchor,
}

/// <summary>One problem in a policy: file, JSON path, 1-based line and column, the rule, and what was expected.</summary>
public sealed record PolicyProblem(PolicyRule Rule, string File, string JsonPath, int Line, int Column, string Message)
{
    public override string ToString() => $"{File}:{Line}:{Column}: {JsonPath}: {Message}";
}

/// <summary>Why a policy was refused, as a category; the CLI maps every one of them to exit status 2.</summary>
public enum PolicyErrorCode
{
    MissingFile,
    Unreadable,
    TooLarge,
    Invalid,
    MissingSignature,
    MalformedSignature,
    WrongKey,
    BadSignature,
    DigestMismatch,
}

/// <summary>A refused policy. <see cref="Problems"/> holds every problem found (at least one when Code is Invalid).</summary>
public sealed class PolicyException : Exception
{
    public PolicyException(PolicyErrorCode code, string message, IReadOnlyList<PolicyProblem>? problems = null)
        : base(message)
    {
        Code = code;
        Problems = problems ?? [];
    }

    public PolicyErrorCode Code { get; }
    public IReadOnlyList<PolicyProblem> Problems { get; }
}
