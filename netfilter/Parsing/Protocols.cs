namespace SecureVmm.NetFilter;

/// <summary>EtherType values used by the filter (IEEE 802.3 clause 3.2.6; IANA "ieee-802-numbers").</summary>
public static class EtherTypes
{
    public const ushort Ipv4 = 0x0800;
    public const ushort Arp = 0x0806;
    public const ushort Vlan = 0x8100;
    public const ushort Ipv6 = 0x86DD;
    public const ushort QinQ = 0x88A8;
}

/// <summary>IP protocol / IPv6 next-header numbers (IANA "protocol-numbers").</summary>
public static class IpProtocols
{
    public const byte HopByHop = 0;
    public const byte Icmp = 1;
    public const byte Tcp = 6;
    public const byte Udp = 17;
    public const byte Ipv6Routing = 43;
    public const byte Ipv6Fragment = 44;
    public const byte Esp = 50;
    public const byte AuthenticationHeader = 51;
    public const byte Icmpv6 = 58;
    public const byte Ipv6NoNextHeader = 59;
    public const byte Ipv6DestinationOptions = 60;
}

/// <summary>ICMPv6 message types the filter inspects (RFC 4443, RFC 4861 section 4, RFC 3810).</summary>
public static class Icmpv6Types
{
    public const byte EchoRequest = 128;
    public const byte EchoReply = 129;
    public const byte RouterSolicitation = 133;
    public const byte RouterAdvertisement = 134;
    public const byte NeighborSolicitation = 135;
    public const byte NeighborAdvertisement = 136;
    public const byte Redirect = 137;
    public const byte Mldv2Report = 143;
}
