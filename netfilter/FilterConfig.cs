using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SecureVmm.NetFilter;

/// <summary>Which way a rule applies: guest to network (outbound), network to guest (inbound), or both.</summary>
[Flags]
public enum TrafficDirection
{
    Outbound = 1,
    Inbound = 2,
    Both = Outbound | Inbound,
}

/// <summary>
/// Kinds of Ethernet destination a rule accepts (IEEE 802-2014 section 8.2: the group bit of the
/// first octet marks multicast; all-ones is broadcast). Broadcast and multicast reach every host
/// on a segment, so a rule has to name them explicitly; the default is unicast only.
/// </summary>
[Flags]
public enum LinkDestinations
{
    Unicast = 1,
    Broadcast = 2,
    Multicast = 4,
    Any = Unicast | Broadcast | Multicast,
}

/// <summary>What a matching rule does with a frame.</summary>
public enum RuleAction
{
    Allow,
    Deny,
}

/// <summary>An inclusive range of small non-negative integers (ports, VLAN ids).</summary>
public readonly record struct NumberRange(int Low, int High)
{
    public static NumberRange Single(int value) => new(value, value);

    public bool Contains(int value) => value >= Low && value <= High;

    public override string ToString() => Low == High
        ? Low.ToString(CultureInfo.InvariantCulture)
        : string.Create(CultureInfo.InvariantCulture, $"{Low}-{High}");
}

/// <summary>
/// One rule: by default it allows, and <see cref="Action"/> can make it deny (the policy's
/// first-match allow/deny lists). A frame matches when every field that is set matches; unset fields match
/// anything. Fields above the link layer only match frames that carry that layer (a rule with
/// ports never matches ARP, nor a non-first IP fragment, which has no transport header).
/// </summary>
public sealed record AllowRule
{
    /// <summary>A short name shown by `status` next to the rule's counters.</summary>
    public string? Name { get; init; }

    public TrafficDirection Direction { get; init; } = TrafficDirection.Both;

    /// <summary>Allow (the default) or deny what matches; rules are tried in order, the first match decides.</summary>
    public RuleAction Action { get; init; } = RuleAction.Allow;

    /// <summary>This rule's own token bucket: frames it allows beyond the rate are dropped as RateLimited.</summary>
    public RateLimit? Rate { get; init; }

    /// <summary>EtherType after any 802.1Q tag (IEEE 802.3 clause 3.2.6: values >= 0x0600).</summary>
    public ushort? EtherType { get; init; }

    /// <summary>
    /// 802.1Q VLAN ids this rule accepts. Null: untagged frames only. Tagged frames are dropped
    /// unless some rule names their VLAN id.
    /// </summary>
    public NumberRange? Vlans { get; init; }

    public LinkDestinations LinkDestinations { get; init; } = LinkDestinations.Unicast;

    /// <summary>IPv4 protocol / IPv6 upper-layer next header (IANA protocol numbers).</summary>
    public byte? IpProtocol { get; init; }

    public IpPrefix? Source { get; init; }
    public IpPrefix? Destination { get; init; }
    public NumberRange? SourcePorts { get; init; }
    public NumberRange? DestinationPorts { get; init; }

    /// <summary>ICMP (protocol 1) or ICMPv6 (protocol 58) message type.</summary>
    public byte? IcmpType { get; init; }
    public byte? IcmpCode { get; init; }

    /// <summary>ARP in the given direction, for broadcast requests and unicast replies.</summary>
    public static AllowRule Arp(TrafficDirection direction = TrafficDirection.Both) => new()
    {
        Name = "arp",
        Direction = direction,
        EtherType = EtherTypes.Arp,
        LinkDestinations = LinkDestinations.Unicast | LinkDestinations.Broadcast,
    };
}

/// <summary>
/// A token bucket (frames and bytes per second, with bursts). Zero in a rate means that
/// dimension is unlimited; a burst of zero means one second's worth of the rate.
/// </summary>
public sealed record RateLimit(long FramesPerSecond, long BytesPerSecond, long BurstFrames = 0, long BurstBytes = 0);

/// <summary>
/// Everything a <see cref="Filter"/> needs for one VM's network interface. Built by the policy
/// layer; checked by <see cref="Validate"/>; a Filter copies it into its own compiled tables,
/// so later changes to lists passed in here have no effect on a running filter.
/// </summary>
public sealed record FilterConfig
{
    /// <summary>Default maximum: a 1500-byte payload plus Ethernet header and an 802.1Q tag, no FCS.</summary>
    public const int DefaultMaxFrameBytes = 1518;

    /// <summary>The smallest frame anything can parse: destination, source, EtherType.</summary>
    public const int MinFrameBytes = 14;

    /// <summary>Largest frame a backend or the NIC will ever hand over (64 KiB, TAP's limit).</summary>
    public const int AbsoluteMaxFrameBytes = 65535;

    public required MacAddress Mac { get; init; }

    /// <summary>The VM's own IPv4 and IPv6 addresses (its only legitimate source addresses).</summary>
    public IReadOnlyList<IPAddress> Addresses { get; init; } = [];

    /// <summary>Also accept the IPv6 link-local address derived from <see cref="Mac"/> (RFC 4291 appendix A).</summary>
    public bool AllowIpv6LinkLocalFromMac { get; init; } = true;

    /// <summary>
    /// Enforce the no-mac/arp/ip/ndp-spoofing checks on outbound frames (default). A policy may
    /// turn them off only for a network that needs it (a router VM); inbound addressing checks stay.
    /// </summary>
    public bool AntiSpoofing { get; init; } = true;

    /// <summary>Allow DHCPv4 client traffic (RFC 2131): from 0.0.0.0:68 to port 67 out, port 67 to 68 in.</summary>
    public bool AllowDhcp { get; init; }

    public IReadOnlyList<AllowRule> Rules { get; init; } = [];

    public int MaxFrameBytes { get; init; } = DefaultMaxFrameBytes;

    public RateLimit? OutboundRate { get; init; }
    public RateLimit? InboundRate { get; init; }

    /// <summary>Checks every field; each problem names the field. Empty when the config is usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Mac.Value > 0xFFFF_FFFF_FFFFUL)
        {
            errors.Add("Mac: more than 48 bits");
        }
        else if (Mac.IsMulticast)
        {
            errors.Add($"Mac: {Mac} is a group (multicast) address; a VM's MAC must be unicast");
        }
        else if (Mac.Value == 0)
        {
            errors.Add("Mac: 00:00:00:00:00:00 is not a usable address");
        }
        if (Addresses is null)
        {
            errors.Add("Addresses: missing");
        }
        else
        {
            for (int i = 0; i < Addresses.Count; i++)
            {
                var a = Addresses[i];
                if (a is null || a.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
                {
                    errors.Add($"Addresses[{i}]: not an IPv4 or IPv6 address");
                    continue;
                }
                var (family, value) = IpAddressBits.FromIpAddress(a);
                bool unusable = family == IpFamily.V4
                    ? value == 0 || value == 0xFFFF_FFFF || (value >> 28) == 0xE
                    : value == 0 || (value >> 120) == 0xFF;
                if (unusable)
                {
                    errors.Add($"Addresses[{i}]: {a} is unspecified, broadcast or multicast; a VM's address must be unicast");
                }
            }
        }
        if (MaxFrameBytes < 60 || MaxFrameBytes > AbsoluteMaxFrameBytes)
        {
            errors.Add($"MaxFrameBytes: {MaxFrameBytes} is outside 60..{AbsoluteMaxFrameBytes}");
        }
        ValidateRate(errors, nameof(OutboundRate), OutboundRate, MaxFrameBytes);
        ValidateRate(errors, nameof(InboundRate), InboundRate, MaxFrameBytes);
        if (Rules is null)
        {
            errors.Add("Rules: missing");
        }
        else
        {
            for (int i = 0; i < Rules.Count; i++)
            {
                ValidateRule(errors, $"Rules[{i}]", Rules[i]);
                ValidateRate(errors, $"Rules[{i}].Rate", Rules[i]?.Rate, MaxFrameBytes);
            }
        }
        return errors;
    }

    private static void ValidateRate(List<string> errors, string field, RateLimit? rate, int maxFrameBytes)
    {
        if (rate is null)
        {
            return;
        }
        if (rate.FramesPerSecond < 0 || rate.BytesPerSecond < 0 || rate.BurstFrames < 0 || rate.BurstBytes < 0)
        {
            errors.Add($"{field}: rates and bursts must not be negative");
        }
        // Bounds keep the token arithmetic (tokens x clock frequency) inside 64 bits.
        const long MaxRate = 100_000_000_000L;
        if (rate.FramesPerSecond > MaxRate || rate.BytesPerSecond > MaxRate || rate.BurstFrames > MaxRate || rate.BurstBytes > MaxRate)
        {
            errors.Add($"{field}: rates and bursts must be at most {MaxRate}");
        }
        long burstBytes = rate.BurstBytes > 0 ? rate.BurstBytes : rate.BytesPerSecond;
        if (rate.BytesPerSecond > 0 && burstBytes < maxFrameBytes)
        {
            errors.Add($"{field}: the byte burst ({burstBytes}) is below MaxFrameBytes ({maxFrameBytes}); the largest frames could never pass");
        }
    }

    private static void ValidateRule(List<string> errors, string field, AllowRule? rule)
    {
        if (rule is null)
        {
            errors.Add($"{field}: missing");
            return;
        }
        if (rule.Action is not (RuleAction.Allow or RuleAction.Deny))
        {
            errors.Add($"{field}.Action: must be Allow or Deny");
        }
        if (rule.Rate is not null && rule.Action == RuleAction.Deny)
        {
            errors.Add($"{field}.Rate: a deny rule has nothing to rate-limit");
        }
        if (rule.Direction is not (TrafficDirection.Inbound or TrafficDirection.Outbound or TrafficDirection.Both))
        {
            errors.Add($"{field}.Direction: must be Inbound, Outbound or Both");
        }
        if ((rule.LinkDestinations & LinkDestinations.Any) == 0 || (rule.LinkDestinations & ~LinkDestinations.Any) != 0)
        {
            errors.Add($"{field}.LinkDestinations: must be a combination of Unicast, Broadcast, Multicast");
        }
        if (rule.EtherType is < 0x0600)
        {
            errors.Add($"{field}.EtherType: 0x{rule.EtherType.Value:x4} is a length field, not an EtherType (needs >= 0x0600)");
        }
        if (rule.EtherType is EtherTypes.Vlan or EtherTypes.QinQ)
        {
            errors.Add($"{field}.EtherType: name VLAN tags with Vlans, and the inner EtherType here");
        }
        if (rule.Vlans is { } v && (v.Low < 0 || v.High > 4095 || v.Low > v.High))
        {
            errors.Add($"{field}.Vlans: {v.Low}-{v.High} is not a range inside 0..4095");
        }
        IpFamily? etherFamily = rule.EtherType switch
        {
            null => null,
            EtherTypes.Ipv4 => IpFamily.V4,
            EtherTypes.Ipv6 => IpFamily.V6,
            _ => IpFamily.None,
        };
        bool needsIp = rule.IpProtocol is not null || rule.Source is not null || rule.Destination is not null;
        if (needsIp && etherFamily == IpFamily.None)
        {
            errors.Add($"{field}.EtherType: 0x{rule.EtherType!.Value:x4} carries no IP, but the rule names IP fields");
        }
        if (rule.Source is { } s && rule.Destination is { } d && s.Family != d.Family)
        {
            errors.Add($"{field}.Destination: family IPv{(int)d.Family} differs from Source's IPv{(int)s.Family}");
        }
        foreach (var (name, prefix) in new[] { ("Source", rule.Source), ("Destination", rule.Destination) })
        {
            if (prefix is { } p)
            {
                if (p.Family is not (IpFamily.V4 or IpFamily.V6))
                {
                    errors.Add($"{field}.{name}: not an IPv4 or IPv6 prefix");
                }
                else if (etherFamily is IpFamily.V4 or IpFamily.V6 && etherFamily != p.Family)
                {
                    errors.Add($"{field}.{name}: an IPv{(int)p.Family} prefix in a rule for EtherType 0x{rule.EtherType!.Value:x4}");
                }
            }
        }
        bool hasPorts = rule.SourcePorts is not null || rule.DestinationPorts is not null;
        if (hasPorts && rule.IpProtocol is not (IpProtocols.Tcp or IpProtocols.Udp))
        {
            errors.Add($"{field}.IpProtocol: ports need IpProtocol 6 (TCP) or 17 (UDP)");
        }
        foreach (var (name, range) in new[] { ("SourcePorts", rule.SourcePorts), ("DestinationPorts", rule.DestinationPorts) })
        {
            if (range is { } r && (r.Low < 0 || r.High > 65535 || r.Low > r.High))
            {
                errors.Add($"{field}.{name}: {r.Low}-{r.High} is not a range inside 0..65535");
            }
        }
        if ((rule.IcmpType is not null || rule.IcmpCode is not null) && rule.IpProtocol is not (IpProtocols.Icmp or IpProtocols.Icmpv6))
        {
            errors.Add($"{field}.IpProtocol: ICMP type/code need IpProtocol 1 (ICMP) or 58 (ICMPv6)");
        }
        if (rule.IpProtocol == IpProtocols.Icmp && etherFamily == IpFamily.V6 || rule.IpProtocol == IpProtocols.Icmpv6 && etherFamily == IpFamily.V4)
        {
            errors.Add($"{field}.IpProtocol: ICMP version does not match the EtherType");
        }
    }
}

/// <summary>A <see cref="FilterConfig"/> that failed validation; the message lists every problem by field.</summary>
public sealed class FilterConfigException : Exception
{
    public FilterConfigException(IReadOnlyList<string> problems)
        : base("invalid network filter configuration: " + string.Join("; ", problems))
    {
        Problems = problems;
    }

    public FilterConfigException()
        : this(Array.Empty<string>())
    {
    }

    public FilterConfigException(string message)
        : base(message)
    {
        Problems = [message];
    }

    public FilterConfigException(string message, Exception innerException)
        : base(message, innerException)
    {
        Problems = [message];
    }

    public IReadOnlyList<string> Problems { get; }
}
