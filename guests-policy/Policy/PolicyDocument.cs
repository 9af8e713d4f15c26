using System.Text.Json.Serialization;

namespace SecureVmm.Policy.Policy;

// The policy file as written (docs/policy.md). Every field is nullable so that a missing field
// is reported by the validator with the others, rather than stopping the parse at the first one.
// These types carry no meaning on their own: only PolicyValidator turns them into a ValidatedPolicy.

public sealed class PolicyDocument
{
    public int? FormatVersion { get; set; }
    public string? Appliance { get; set; }
    public HostDocument? Host { get; set; }
    public string? RollbackStateFile { get; set; }
    public List<TrustAnchorDocument?>? TrustAnchors { get; set; }
    public List<NetworkDocument?>? Networks { get; set; }
    public List<VmDocument?>? Vms { get; set; }
}

public sealed class HostDocument
{
    public int? MemoryBudgetMiB { get; set; }
}

public sealed class TrustAnchorDocument
{
    public string? Id { get; set; }
    public string? Description { get; set; }
    public string? PublicKey { get; set; }
    public string? KeyId { get; set; }
    public List<string?>? MaySignFor { get; set; }
}

public sealed class LabelDocument
{
    public string? Level { get; set; }
    public string? Colour { get; set; }
}

public sealed class NetworkDocument
{
    public string? Name { get; set; }
    public string? Description { get; set; }
    public LabelDocument? Label { get; set; }
    public BackendDocument? Backend { get; set; }
    public string? Mac { get; set; }
    public List<string?>? Addresses { get; set; }
    public FilterDocument? Filter { get; set; }
}

public sealed class BackendDocument
{
    public string? Type { get; set; }
    public string? Tap { get; set; }
    public string? Bridge { get; set; }
    public string? Netns { get; set; }
    public string? Remote { get; set; }
    public string? Local { get; set; }
    public string? File { get; set; }
}

public sealed class FilterDocument
{
    public string? DefaultAction { get; set; }
    public int? MaxFrameSize { get; set; }
    public bool? AntiSpoofing { get; set; }
    public List<FilterRuleDocument?>? Rules { get; set; }
}

public sealed class FilterRuleDocument
{
    public string? Direction { get; set; }
    public string? Action { get; set; }
    public string? Ethertype { get; set; }
    public string? Protocol { get; set; }
    public string? Cidr { get; set; }
    public string? Ports { get; set; }
    public RateLimitDocument? RateLimit { get; set; }
}

public sealed class RateLimitDocument
{
    public int? PacketsPerSecond { get; set; }
    public int? Burst { get; set; }
}

public sealed class VmDocument
{
    public string? Name { get; set; }
    public string? Description { get; set; }
    public LabelDocument? Label { get; set; }
    public int? MemoryMiB { get; set; }
    public ImageReferenceDocument? Image { get; set; }
    public string? Network { get; set; }
    public List<string?>? Devices { get; set; }
    public string? Console { get; set; }
    public string? Clock { get; set; }
    public AuditDocument? Audit { get; set; }
    public List<StorageDocument?>? Storage { get; set; }
}

public sealed class ImageReferenceDocument
{
    public string? Path { get; set; }
    public string? Name { get; set; }
    public List<string?>? Signers { get; set; }
    public bool? Sealed { get; set; }
    public bool? AllowRollback { get; set; }
}

public sealed class AuditDocument
{
    public string? Path { get; set; }
    public bool? RecordData { get; set; }
}

public sealed class StorageDocument
{
    public string? Name { get; set; }
    public string? Kind { get; set; }
    public string? Path { get; set; }
    public int? SizeMiB { get; set; }
}

/// <summary>
/// Source-generated serializer metadata for the policy. Strict: exact camelCase names,
/// unknown members and duplicate properties rejected, no comments or trailing commas.
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    AllowDuplicateProperties = false,
    AllowTrailingCommas = false,
    ReadCommentHandling = System.Text.Json.JsonCommentHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    MaxDepth = 32,
    WriteIndented = true)]
[JsonSerializable(typeof(PolicyDocument))]
public sealed partial class PolicyJsonContext : JsonSerializerContext;
