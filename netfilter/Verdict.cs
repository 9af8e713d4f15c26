namespace SecureVmm.NetFilter;

/// <summary>The way a frame is travelling through a filter.</summary>
public enum FrameDirection : byte
{
    /// <summary>Guest to network.</summary>
    Outbound = 0,

    /// <summary>Network to guest.</summary>
    Inbound = 1,
}

/// <summary>
/// Why a frame was dropped. Values are stable (they appear in audit records and counters);
/// add new ones at the end.
/// </summary>
public enum DropReason : byte
{
    /// <summary>Not dropped.</summary>
    None = 0,

    // Size and parsing: the frame is malformed or truncated.
    FrameTooSmall,
    FrameTooLarge,
    MalformedVlan,
    MalformedArp,
    TruncatedIpv4Header,
    BadIpVersion,
    BadIpv4HeaderLength,
    BadIpv4TotalLength,
    TinyFragment,
    TruncatedIpv6Header,
    BadIpv6PayloadLength,
    BadIpv6ExtensionHeader,
    TooManyIpv6ExtensionHeaders,
    TruncatedTransportHeader,
    MalformedNdp,

    // Anti-spoofing (outbound) and addressing (inbound).
    SpoofedSourceMac,
    SpoofedArp,
    SpoofedSourceIp,
    SpoofedNdp,
    NotForThisVm,
    ArpNotForThisVm,

    // Policy.
    VlanNotAllowed,
    NoMatchingRule,
    RateLimited,

    /// <summary>A deny rule of the policy matched first.</summary>
    DeniedByRule,
}

/// <summary>
/// A filter's decision about one frame: allowed (by a rule, or by the built-in DHCP allowance) or
/// dropped with a reason. A small value type; producing one never allocates.
/// </summary>
public readonly record struct Verdict(DropReason Reason, int RuleIndex)
{
    /// <summary>Rule index when no rule is involved (most drops).</summary>
    public const int NoRule = -1;

    /// <summary>Rule index of the built-in DHCP client allowance (<see cref="FilterConfig.AllowDhcp"/>).</summary>
    public const int DhcpRule = -2;

    public bool IsAllowed => Reason == DropReason.None;

    public static Verdict Allow(int ruleIndex) => new(DropReason.None, ruleIndex);

    public static Verdict Drop(DropReason reason, int ruleIndex = NoRule) => new(reason, ruleIndex);

    public override string ToString() => IsAllowed
        ? RuleIndex == DhcpRule ? "allow dhcp" : $"allow rule {RuleIndex}"
        : RuleIndex == NoRule ? $"drop {Reason}" : $"drop {Reason} rule {RuleIndex}";
}
