using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SecureVmm.Policy.Policy;

// Network rules: names, labels, backends and the host resources they hold, MAC and IP
// addresses, NIC filter rules (docs/policy.md, "Networks").
public sealed partial class PolicyValidator
{
    private NetworkPolicy? CheckNetwork(NetworkDocument? doc, string path, HashSet<string> names,
        Dictionary<string, SecurityLabel> labels, Dictionary<ulong, string> macOwners, HostResources resources)
    {
        if (doc is null)
        {
            return null;
        }
        int before = _problems.Count;
        CheckUniqueName(doc.Name, path + ".name", names, "network");
        var label = CheckLabel(doc.Label, path + ".label");
        if (label is { } known && doc.Name is not null)
        {
            labels.TryAdd(doc.Name, known);
        }
        var backend = CheckBackend(doc.Backend, path + ".backend", resources);

        ulong mac = 0;
        if (doc.Mac is null)
        {
            Add(PolicyRule.MissingField, path + ".mac", "missing field 'mac'; expected the VM's MAC address, e.g. \"02:00:00:00:00:01\"");
        }
        else if (!TryParseMac(doc.Mac, out mac))
        {
            Add(PolicyRule.BadMacAddress, path + ".mac", $"\"{doc.Mac}\" is not a MAC address; expected six hex pairs separated by ':'");
        }
        else if ((mac & 0x0100_0000_0000UL) != 0)
        {
            // IEEE 802-2014 clause 8.2: the I/G bit (least significant bit of the first octet) marks group addresses.
            Add(PolicyRule.BadMacAddress, path + ".mac", $"{doc.Mac} is a multicast (group) address; a NIC needs a unicast address");
        }
        else if (mac == 0)
        {
            Add(PolicyRule.BadMacAddress, path + ".mac", "00:00:00:00:00:00 is not a usable MAC address");
        }
        else if (!macOwners.TryAdd(mac, path))
        {
            Add(PolicyRule.DuplicateMacAddress, path + ".mac", $"MAC {PolicyNames.Mac(mac)} is already used by {macOwners[mac]}; each NIC needs its own");
        }

        var addresses = new List<InterfaceAddress>();
        var addressList = doc.Addresses ?? [];
        if (addressList.Count > MaxAddresses)
        {
            Add(PolicyRule.BadValue, path + ".addresses", $"{addressList.Count} addresses; at most {MaxAddresses} are allowed");
        }
        for (int j = 0; j < addressList.Count; j++)
        {
            if (CheckInterfaceAddress(addressList[j], $"{path}.addresses[{j}]") is { } a)
            {
                addresses.Add(a);
            }
        }
        var filter = CheckFilter(doc.Filter, path + ".filter");

        if (_problems.Count != before || label is null || backend is null || filter is null)
        {
            return null;
        }
        return new NetworkPolicy(doc.Name!, label.Value, backend, mac, [.. addresses], filter);
    }

    private static bool TryParseMac(string text, out ulong mac)
    {
        mac = 0;
        if (text.Length != 17)
        {
            return false;
        }
        for (int i = 0; i < 6; i++)
        {
            if (i > 0 && text[(i * 3) - 1] != ':')
            {
                return false;
            }
            if (!byte.TryParse(text.AsSpan(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                return false;
            }
            mac = (mac << 8) | b;
        }
        return true;
    }

    /// <summary>Strict address parsing: IPv4 only as four decimal octets (IPAddress.TryParse also takes "10.1" and "0x0a.1").</summary>
    internal static bool TryParseAddress(string text, out IPAddress address)
    {
        address = IPAddress.None;
        if (!IPAddress.TryParse(text, out var parsed))
        {
            return false;
        }
        if (parsed.AddressFamily == AddressFamily.InterNetwork && parsed.ToString() != text)
        {
            return false;
        }
        if (parsed.AddressFamily == AddressFamily.InterNetworkV6 && (text.Contains('%', StringComparison.Ordinal) || parsed.IsIPv4MappedToIPv6))
        {
            return false;
        }
        address = parsed;
        return true;
    }

    private InterfaceAddress? CheckInterfaceAddress(string? text, string path)
    {
        int slash = text?.IndexOf('/', StringComparison.Ordinal) ?? -1;
        if (text is null || slash < 0 || !TryParseAddress(text[..slash], out var address)
            || !int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix)
            || prefix > (address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128))
        {
            Add(PolicyRule.BadIpAddress, path, $"\"{text}\" is not an address with prefix length; expected e.g. \"10.1.0.2/24\" or \"fd00::2/64\"");
            return null;
        }
        if (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.Broadcast)
            || IsMulticast(address) || IPAddress.IsLoopback(address))
        {
            Add(PolicyRule.BadIpAddress, path, $"{address} cannot be a NIC's address (unspecified, broadcast, multicast or loopback)");
            return null;
        }
        return new InterfaceAddress(address, prefix);
    }

    private static bool IsMulticast(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetwork
            ? (address.GetAddressBytes()[0] & 0xF0) == 0xE0
            : address.IsIPv6Multicast;

    private NetworkBackend? CheckBackend(BackendDocument? doc, string path, HostResources resources)
    {
        if (doc is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field 'backend'; expected an object with 'type' {PolicyNames.OneOf(PolicyNames.BackendTypes)}");
            return null;
        }
        int before = _problems.Count;
        // Which fields each backend type takes; any other field set is an error, not silently ignored.
        (string Field, string? Value)[] fields =
            [("tap", doc.Tap), ("bridge", doc.Bridge), ("netns", doc.Netns), ("remote", doc.Remote), ("local", doc.Local), ("file", doc.File)];
        string[] allowed = doc.Type switch
        {
            "tap" => ["tap", "bridge", "netns"],
            "udp" => ["remote", "local"],
            "pcap" => ["file"],
            "none" => [],
            _ => [],
        };
        if (doc.Type is null)
        {
            Add(PolicyRule.MissingField, path + ".type", $"missing field 'type'; expected {PolicyNames.OneOf(PolicyNames.BackendTypes)}");
            return null;
        }
        if (!PolicyNames.BackendTypes.Contains(doc.Type))
        {
            Add(PolicyRule.BadBackend, path + ".type", $"\"{doc.Type}\" is not a backend type; expected {PolicyNames.OneOf(PolicyNames.BackendTypes)}");
            return null;
        }
        foreach (var (field, value) in fields)
        {
            if (value is not null && !allowed.Contains(field))
            {
                Add(PolicyRule.BadBackend, $"{path}.{field}", $"field '{field}' does not apply to a {doc.Type} backend" +
                    (allowed.Length == 0 ? "; it takes no parameters" : $"; it takes {string.Join(", ", allowed)}"));
            }
        }
        switch (doc.Type)
        {
            case "tap":
                if (doc.Tap is null)
                {
                    Add(PolicyRule.MissingField, path + ".tap", "missing field 'tap'; expected the TAP device's name");
                }
                else if (!InterfacePattern().IsMatch(doc.Tap))
                {
                    Add(PolicyRule.BadBackend, path + ".tap", $"\"{doc.Tap}\" is not a Linux interface name (1 to 15 of A-Z a-z 0-9 _ . -)");
                }
                else
                {
                    resources.Claim("tap device " + doc.Tap, path + ".tap");
                }
                if (doc.Bridge is not null)
                {
                    if (!InterfacePattern().IsMatch(doc.Bridge))
                    {
                        Add(PolicyRule.BadBackend, path + ".bridge", $"\"{doc.Bridge}\" is not a Linux interface name (1 to 15 of A-Z a-z 0-9 _ . -)");
                    }
                    else
                    {
                        // Two TAPs on one bridge would be one Ethernet segment: exactly the crossing the appliance exists to prevent.
                        resources.Claim("bridge " + doc.Bridge, path + ".bridge");
                    }
                }
                if (doc.Netns is not null)
                {
                    if (!NetnsPattern().IsMatch(doc.Netns) || doc.Netns is "." or "..")
                    {
                        Add(PolicyRule.BadBackend, path + ".netns", $"\"{doc.Netns}\" is not a network namespace name (1 to 64 of A-Z a-z 0-9 _ . -)");
                    }
                    else
                    {
                        resources.Claim("network namespace " + doc.Netns, path + ".netns");
                    }
                }
                return _problems.Count == before ? new TapBackend(doc.Tap!, doc.Bridge, doc.Netns) : null;
            case "udp":
                var remote = CheckEndpoint(doc.Remote, path + ".remote", "remote");
                var local = CheckEndpoint(doc.Local, path + ".local", "local");
                if (remote is not null && local is not null)
                {
                    // Conservative: every UDP port number belongs to one network, whatever the address,
                    // so wildcard and specific bindings can never meet on the same port.
                    resources.Claim("UDP port " + local.Port.ToString(CultureInfo.InvariantCulture), path + ".local");
                    if (remote.Port != local.Port)
                    {
                        resources.Claim("UDP port " + remote.Port.ToString(CultureInfo.InvariantCulture), path + ".remote");
                    }
                }
                return _problems.Count == before && remote is not null && local is not null ? new UdpBackend(remote, local) : null;
            case "pcap":
                if (doc.File is null)
                {
                    Add(PolicyRule.MissingField, path + ".file", "missing field 'file'; expected the pcap file to write");
                    return null;
                }
                string? file = ResolvePath(doc.File, path + ".file");
                if (file is not null)
                {
                    resources.ClaimWritable(file, path + ".file", "a pcap file");
                }
                return _problems.Count == before && file is not null ? new PcapBackend(file) : null;
            default:
                return _problems.Count == before ? new NoBackend() : null;
        }
    }

    private IPEndPoint? CheckEndpoint(string? text, string path, string field)
    {
        if (text is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field '{field}'; expected \"ADDRESS:PORT\" (IPv6 as \"[ADDRESS]:PORT\")");
            return null;
        }
        int colon = text.LastIndexOf(':');
        string host = colon > 0 ? text[..colon] : "";
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        else if (host.Contains(':', StringComparison.Ordinal))
        {
            host = ""; // IPv6 without brackets is ambiguous.
        }
        if (colon <= 0 || !TryParseAddress(host, out var address)
            || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port)
            || port is < 1 or > 65535)
        {
            Add(PolicyRule.BadBackend, path, $"\"{text}\" is not \"ADDRESS:PORT\" with a port in 1..65535 (IPv6 as \"[ADDRESS]:PORT\")");
            return null;
        }
        if (field == "remote" && (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)))
        {
            Add(PolicyRule.BadBackend, path, "the remote address cannot be the unspecified address");
            return null;
        }
        return new IPEndPoint(address, port);
    }

    private FilterPolicy? CheckFilter(FilterDocument? doc, string path)
    {
        if (doc is null)
        {
            return new FilterPolicy(FilterAction.Deny, DefaultMaxFrameSize, true, []);
        }
        int before = _problems.Count;
        var defaultAction = doc.DefaultAction is null ? FilterAction.Deny
            : Lookup(PolicyNames.Actions, doc.DefaultAction, path + ".defaultAction", "defaultAction", "filter action", PolicyRule.BadFilterRule);
        int maxFrame = doc.MaxFrameSize ?? DefaultMaxFrameSize;
        if (maxFrame is < MinFrameSize or > MaxFrameSizeLimit)
        {
            Add(PolicyRule.BadFilterRule, path + ".maxFrameSize", $"{maxFrame} is outside {MinFrameSize}..{MaxFrameSizeLimit} bytes (an Ethernet frame without FCS)");
        }
        var rules = new List<FilterRulePolicy>();
        var ruleDocs = doc.Rules ?? [];
        if (ruleDocs.Count > MaxFilterRules)
        {
            Add(PolicyRule.BadFilterRule, path + ".rules", $"{ruleDocs.Count} rules; at most {MaxFilterRules} are allowed");
        }
        for (int k = 0; k < ruleDocs.Count; k++)
        {
            if (ruleDocs[k] is not { } ruleDoc)
            {
                Add(PolicyRule.WrongType, $"{path}.rules[{k}]", "expected an object, found null");
            }
            else if (CheckRule(ruleDoc, $"{path}.rules[{k}]") is { } rule)
            {
                rules.Add(rule);
            }
        }
        return _problems.Count == before && defaultAction is not null
            ? new FilterPolicy(defaultAction.Value, maxFrame, doc.AntiSpoofing ?? true, [.. rules])
            : null;
    }

    private FilterRulePolicy? CheckRule(FilterRuleDocument doc, string path)
    {
        int before = _problems.Count;
        var direction = Lookup(PolicyNames.Directions, doc.Direction, path + ".direction", "direction", "direction", PolicyRule.BadFilterRule);
        var action = Lookup(PolicyNames.Actions, doc.Action, path + ".action", "action", "filter action", PolicyRule.BadFilterRule);

        ushort? etherType = null;
        if (doc.Ethertype is not null)
        {
            if (PolicyNames.EtherTypes.TryGetValue(doc.Ethertype, out ushort named))
            {
                etherType = named;
            }
            else if (doc.Ethertype.Length == 6 && doc.Ethertype.StartsWith("0x", StringComparison.Ordinal)
                && ushort.TryParse(doc.Ethertype.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ushort value)
                && value >= 0x0600)
            {
                // IEEE 802.3 clause 3.2.6: values of 1536 (0x0600) and above are EtherTypes; below, a length.
                etherType = value;
            }
            else
            {
                Add(PolicyRule.BadFilterRule, path + ".ethertype",
                    $"\"{doc.Ethertype}\" is not an EtherType; expected {PolicyNames.OneOf(PolicyNames.EtherTypes)} or \"0xNNNN\" from 0x0600 up");
            }
        }
        bool isIpv4 = etherType == 0x0800;
        bool isIpv6 = etherType == 0x86DD;

        IpProtocol? protocol = null;
        if (doc.Protocol is not null)
        {
            protocol = Lookup(PolicyNames.Protocols, doc.Protocol, path + ".protocol", "protocol", "protocol", PolicyRule.BadFilterRule);
            if (protocol is not null && !isIpv4 && !isIpv6)
            {
                Add(PolicyRule.BadFilterRule, path + ".protocol", "a protocol needs \"ethertype\": \"ipv4\" or \"ipv6\"");
            }
            else if ((protocol == IpProtocol.Icmp && !isIpv4) || (protocol == IpProtocol.IcmpV6 && !isIpv6))
            {
                Add(PolicyRule.BadFilterRule, path + ".protocol", $"protocol \"{doc.Protocol}\" does not go with ethertype \"{doc.Ethertype}\"");
            }
        }

        IPNetwork? cidr = null;
        if (doc.Cidr is not null)
        {
            if (!doc.Cidr.Contains('/', StringComparison.Ordinal) || !TryParseAddress(doc.Cidr.Split('/')[0], out var baseAddress)
                || !IPNetwork.TryParse(doc.Cidr, out var network) || !network.BaseAddress.Equals(baseAddress))
            {
                Add(PolicyRule.BadFilterRule, path + ".cidr", $"\"{doc.Cidr}\" is not a CIDR block with the host bits zero, e.g. \"10.1.0.0/24\"");
            }
            else if (!isIpv4 && !isIpv6)
            {
                Add(PolicyRule.BadFilterRule, path + ".cidr", "a CIDR needs \"ethertype\": \"ipv4\" or \"ipv6\"");
            }
            else if ((network.BaseAddress.AddressFamily == AddressFamily.InterNetwork) != isIpv4)
            {
                Add(PolicyRule.BadFilterRule, path + ".cidr", $"\"{doc.Cidr}\" is not an {(isIpv4 ? "IPv4" : "IPv6")} block, but the rule's ethertype is \"{doc.Ethertype}\"");
            }
            else
            {
                cidr = network;
            }
        }

        PortRange? ports = null;
        if (doc.Ports is not null)
        {
            var match = PortsPattern().Match(doc.Ports);
            int first = match.Success ? int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
            int last = match.Success && match.Groups[3].Success ? int.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture) : first;
            if (!match.Success || first < 1 || last > 65535 || first > last)
            {
                Add(PolicyRule.BadFilterRule, path + ".ports", $"\"{doc.Ports}\" is not a port or range; expected \"N\" or \"N-M\" with 1 <= N <= M <= 65535");
            }
            else if (protocol is not (IpProtocol.Tcp or IpProtocol.Udp))
            {
                Add(PolicyRule.BadFilterRule, path + ".ports", "ports need \"protocol\": \"tcp\" or \"udp\"");
            }
            else
            {
                ports = new PortRange((ushort)first, (ushort)last);
            }
        }

        RateLimit? rate = null;
        if (doc.RateLimit is { } r)
        {
            if (r.PacketsPerSecond is not { } pps || pps < 1 || pps > MaxRate)
            {
                Add(PolicyRule.BadFilterRule, path + ".rateLimit.packetsPerSecond", $"expected packetsPerSecond in 1..{MaxRate}");
            }
            else if (r.Burst is not { } burst || burst < 1 || burst > MaxRate)
            {
                Add(PolicyRule.BadFilterRule, path + ".rateLimit.burst", $"expected burst (packets) in 1..{MaxRate}");
            }
            else
            {
                rate = new RateLimit(pps, burst);
            }
        }
        return _problems.Count == before && direction is not null && action is not null
            ? new FilterRulePolicy(direction.Value, action.Value, etherType, protocol, cidr, ports, rate)
            : null;
    }
}
