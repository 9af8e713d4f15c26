using System.Net;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.Policy.Policy;
using PolicyModel = SecureVmm.Policy.Policy;
using NetRateLimit = SecureVmm.NetFilter.RateLimit;

namespace SecureVmm.Appliance.Runtime;

/// <summary>
/// Turns a validated policy's network into what netfilter enforces: its filter configuration and
/// its backend. The translation is one to one (docs/policy.md): rules in order, first match wins;
/// a rule's CIDR and ports name the remote side (destination going out, source coming in); every
/// rule applies to unicast, broadcast and multicast destinations alike; defaultAction allow
/// becomes a last allow-everything rule (still behind anti-spoofing).
/// </summary>
public static class PolicyNetworks
{
    public static FilterConfig FilterFor(NetworkPolicy network)
    {
        ArgumentNullException.ThrowIfNull(network);
        var rules = new List<AllowRule>();
        for (int i = 0; i < network.Filter.Rules.Length; i++)
        {
            rules.Add(Translate(i, network.Filter.Rules[i]));
        }
        if (network.Filter.DefaultAction == FilterAction.Allow)
        {
            rules.Add(new AllowRule { Name = "default allow", LinkDestinations = LinkDestinations.Any });
        }
        return new FilterConfig
        {
            Mac = new MacAddress(network.MacAddress),
            Addresses = [.. network.Addresses.Select(a => a.Address)],
            AntiSpoofing = network.Filter.AntiSpoofing,
            MaxFrameBytes = network.Filter.MaxFrameSize,
            Rules = rules,
        };
    }

    private static AllowRule Translate(int index, FilterRulePolicy rule)
    {
        bool outbound = rule.Direction == FilterDirection.Out;
        IpPrefix? remote = rule.Cidr is { } cidr ? ToPrefix(cidr) : null;
        NumberRange? ports = rule.Ports is { } p ? new NumberRange(p.First, p.Last) : null;
        return new AllowRule
        {
            Name = $"rule {index}: {(outbound ? "out" : "in")} {(rule.Action == FilterAction.Allow ? "allow" : "deny")}" + Describe(rule),
            Direction = outbound ? TrafficDirection.Outbound : TrafficDirection.Inbound,
            Action = rule.Action == FilterAction.Allow ? RuleAction.Allow : RuleAction.Deny,
            LinkDestinations = LinkDestinations.Any,
            EtherType = rule.EtherType,
            IpProtocol = rule.Protocol is { } protocol ? (byte)protocol : null,
            Destination = outbound ? remote : null,
            Source = outbound ? null : remote,
            DestinationPorts = outbound ? ports : null,
            SourcePorts = outbound ? null : ports,
            Rate = rule.RateLimit is { } rate ? new NetRateLimit(rate.PacketsPerSecond, 0, BurstFrames: rate.Burst) : null,
        };
    }

    private static string Describe(FilterRulePolicy rule) =>
        (rule.EtherType is { } e ? $" 0x{e:x4}" : "") +
        (rule.Protocol is { } p ? " " + p.ToString().ToLowerInvariant() : "") +
        (rule.Cidr is { } c ? " " + c : "") +
        (rule.Ports is { } r ? (r.First == r.Last ? $" port {r.First}" : $" ports {r.First}-{r.Last}") : "");

    private static IpPrefix ToPrefix(IPNetwork network)
    {
        var (family, value) = IpAddressBits.FromIpAddress(network.BaseAddress);
        return new IpPrefix(family, value, network.PrefixLength);
    }

    /// <summary>Opens the network's backend on the host. Throws <see cref="NetworkBackendException"/> with the reason.</summary>
    public static INetworkBackend OpenBackend(NetworkPolicy network)
    {
        ArgumentNullException.ThrowIfNull(network);
        return network.Backend switch
        {
            PolicyModel.TapBackend tap => SecureVmm.NetFilter.Backends.TapBackend.Create(new TapOptions(tap.TapName, tap.Bridge, tap.NetworkNamespace)),
            PolicyModel.UdpBackend udp => new SecureVmm.NetFilter.Backends.UdpBackend(udp.Local, udp.Remote),
            PolicyModel.PcapBackend pcap => OpenPcap(pcap.FilePath),
            NoBackend => new NoneBackend(),
            _ => throw new NetworkBackendException($"network {network.Name}: backend type '{network.Backend.Type}' is not supported"),
        };
    }

    private static SecureVmm.NetFilter.Backends.PcapBackend OpenPcap(string path)
    {
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        return new SecureVmm.NetFilter.Backends.PcapBackend(path);
    }
}
