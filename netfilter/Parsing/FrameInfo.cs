namespace SecureVmm.NetFilter.Parsing;

/// <summary>What a frame carries above Ethernet, as far as the filter cares.</summary>
public enum NetworkLayer : byte
{
    /// <summary>Any EtherType the parser does not look inside (including 802.3 length frames).</summary>
    Other = 0,
    Arp,
    Ipv4,
    Ipv6,
}

/// <summary>
/// The fields the filter needs from one frame, filled by <see cref="FrameParser.Parse"/>. A plain
/// mutable struct that lives on the caller's stack: parsing allocates nothing. IP addresses are
/// 128-bit values with IPv4 in the low 32 bits (see <see cref="IpPrefix"/>).
/// </summary>
public struct FrameInfo
{
    public int Length;
    public MacAddress Destination;
    public MacAddress Source;
    public bool VlanTagged;
    public ushort VlanId;

    /// <summary>EtherType after any 802.1Q tag (or the 802.3 length value below 0x0600).</summary>
    public ushort EtherType;
    public NetworkLayer Network;

    // ARP (RFC 826), Ethernet/IPv4 form only.
    public ushort ArpOperation;
    public MacAddress ArpSenderMac;
    public uint ArpSenderIp;
    public MacAddress ArpTargetMac;
    public uint ArpTargetIp;

    // IPv4 / IPv6.
    public IpFamily IpFamily;
    public UInt128 SourceIp;
    public UInt128 DestinationIp;

    /// <summary>IPv4 protocol, or the IPv6 upper-layer header after the extension headers.</summary>
    public byte IpProtocol;
    public bool IsFragment;

    /// <summary>A fragment other than the first: it carries no transport header, so no ports or ICMP type.</summary>
    public bool IsNonFirstFragment;

    // Transport.
    public bool HasPorts;
    public ushort SourcePort;
    public ushort DestinationPort;
    public bool HasIcmp;
    public byte IcmpType;
    public byte IcmpCode;

    // Neighbour Discovery (RFC 4861 section 4.3-4.4).
    public UInt128 NdpTarget;
    public bool HasNdpLinkLayerOption;

    /// <summary>Source link-layer address option (RS, RA, NS) or target link-layer option (NA).</summary>
    public MacAddress NdpLinkLayerAddress;
}
