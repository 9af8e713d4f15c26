using System.Buffers.Binary;

namespace SecureVmm.NetFilter.Parsing;

/// <summary>
/// Parses Ethernet II / 802.1Q, ARP, IPv4, IPv6 (with extension headers), ICMP, ICMPv6 (with
/// Neighbour Discovery options), UDP and TCP headers out of a frame. Every read is preceded by
/// an explicit length check against the span it reads from, so no input can make it read past
/// the frame; a malformed frame yields a <see cref="DropReason"/>, never an exception.
/// </summary>
public static class FrameParser
{
    /// <summary>
    /// Bound on IPv6 extension headers walked before giving up (RFC 8200 section 4.1 recommends
    /// each appear at most once, Destination Options at most twice; eight leaves room for that and AH).
    /// </summary>
    public const int MaxIpv6ExtensionHeaders = 8;

    private const int EthernetHeader = 14;
    private const int VlanTag = 4;

    /// <summary>Fills <paramref name="info"/> from <paramref name="frame"/>; returns <see cref="DropReason.None"/> when well formed.</summary>
    public static DropReason Parse(ReadOnlySpan<byte> frame, out FrameInfo info)
    {
        info = default;
        info.Length = frame.Length;
        if (frame.Length < EthernetHeader)
        {
            return DropReason.FrameTooSmall;
        }
        info.Destination = MacAddress.Read(frame);
        info.Source = MacAddress.Read(frame[6..]);
        ushort etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        int offset = EthernetHeader;
        if (etherType is EtherTypes.Vlan or EtherTypes.QinQ)
        {
            // IEEE 802.1Q section 9.6: TPID, then TCI whose low 12 bits are the VLAN id.
            if (frame.Length < EthernetHeader + VlanTag)
            {
                return DropReason.MalformedVlan;
            }
            info.VlanTagged = true;
            info.VlanId = (ushort)(BinaryPrimitives.ReadUInt16BigEndian(frame[14..]) & 0x0FFF);
            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[16..]);
            offset += VlanTag;
            if (etherType is EtherTypes.Vlan or EtherTypes.QinQ)
            {
                // Stacked tags (QinQ) are not something a VM's NIC should emit or receive here.
                return DropReason.MalformedVlan;
            }
        }
        info.EtherType = etherType;
        var payload = frame[offset..];
        return etherType switch
        {
            EtherTypes.Arp => ParseArp(payload, ref info),
            EtherTypes.Ipv4 => ParseIpv4(payload, ref info),
            EtherTypes.Ipv6 => ParseIpv6(payload, ref info),
            _ => DropReason.None,
        };
    }

    /// <summary>RFC 826 ARP for Ethernet (htype 1) and IPv4 (ptype 0x0800) only: 28 bytes.</summary>
    private static DropReason ParseArp(ReadOnlySpan<byte> arp, ref FrameInfo info)
    {
        info.Network = NetworkLayer.Arp;
        if (arp.Length < 28
            || BinaryPrimitives.ReadUInt16BigEndian(arp) != 1
            || BinaryPrimitives.ReadUInt16BigEndian(arp[2..]) != EtherTypes.Ipv4
            || arp[4] != 6
            || arp[5] != 4)
        {
            return DropReason.MalformedArp;
        }
        info.ArpOperation = BinaryPrimitives.ReadUInt16BigEndian(arp[6..]);
        info.ArpSenderMac = MacAddress.Read(arp[8..]);
        info.ArpSenderIp = BinaryPrimitives.ReadUInt32BigEndian(arp[14..]);
        info.ArpTargetMac = MacAddress.Read(arp[18..]);
        info.ArpTargetIp = BinaryPrimitives.ReadUInt32BigEndian(arp[24..]);
        return info.ArpOperation is 1 or 2 ? DropReason.None : DropReason.MalformedArp;
    }

    /// <summary>
    /// RFC 791 section 3.1. Options are skipped by IHL (not interpreted). Only the first fragment
    /// (offset 0) carries the transport header; later fragments match only rules without ports or
    /// ICMP type. A TCP fragment at offset 1 is dropped (RFC 1858 section 3.2, overlapping
    /// fragment attack), as is a first fragment too short to hold its transport header (RFC 1858 3.1).
    /// </summary>
    private static DropReason ParseIpv4(ReadOnlySpan<byte> ip, ref FrameInfo info)
    {
        info.Network = NetworkLayer.Ipv4;
        info.IpFamily = IpFamily.V4;
        if (ip.Length < 20)
        {
            return DropReason.TruncatedIpv4Header;
        }
        if (ip[0] >> 4 != 4)
        {
            return DropReason.BadIpVersion;
        }
        int headerLength = (ip[0] & 0x0F) * 4;
        if (headerLength < 20)
        {
            return DropReason.BadIpv4HeaderLength;
        }
        if (headerLength > ip.Length)
        {
            return DropReason.TruncatedIpv4Header;
        }
        int totalLength = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        // Bytes after total length are Ethernet padding (frames are at least 60 bytes); fewer is truncation.
        if (totalLength < headerLength || totalLength > ip.Length)
        {
            return DropReason.BadIpv4TotalLength;
        }
        ushort flagsAndOffset = BinaryPrimitives.ReadUInt16BigEndian(ip[6..]);
        int fragmentOffset = flagsAndOffset & 0x1FFF;
        bool moreFragments = (flagsAndOffset & 0x2000) != 0;
        info.IpProtocol = ip[9];
        info.SourceIp = BinaryPrimitives.ReadUInt32BigEndian(ip[12..]);
        info.DestinationIp = BinaryPrimitives.ReadUInt32BigEndian(ip[16..]);
        info.IsFragment = moreFragments || fragmentOffset != 0;
        if (fragmentOffset != 0)
        {
            info.IsNonFirstFragment = true;
            return fragmentOffset == 1 && info.IpProtocol == IpProtocols.Tcp ? DropReason.TinyFragment : DropReason.None;
        }
        return ParseTransport(ip[headerLength..totalLength], ref info);
    }

    /// <summary>
    /// RFC 8200 sections 3-4: the fixed header, then extension headers walked up to
    /// <see cref="MaxIpv6ExtensionHeaders"/>. A first fragment must hold the whole header chain
    /// (RFC 7112), so a truncated transport header there is a drop, not a pass.
    /// </summary>
    private static DropReason ParseIpv6(ReadOnlySpan<byte> ip, ref FrameInfo info)
    {
        info.Network = NetworkLayer.Ipv6;
        info.IpFamily = IpFamily.V6;
        if (ip.Length < 40)
        {
            return DropReason.TruncatedIpv6Header;
        }
        if (ip[0] >> 4 != 6)
        {
            return DropReason.BadIpVersion;
        }
        int payloadLength = BinaryPrimitives.ReadUInt16BigEndian(ip[4..]);
        if (40 + payloadLength > ip.Length)
        {
            return DropReason.BadIpv6PayloadLength;
        }
        info.SourceIp = BinaryPrimitives.ReadUInt128BigEndian(ip[8..]);
        info.DestinationIp = BinaryPrimitives.ReadUInt128BigEndian(ip[24..]);
        byte next = ip[6];
        var rest = ip.Slice(40, payloadLength);
        for (int count = 0; ; count++)
        {
            int headerLength;
            switch (next)
            {
                case IpProtocols.HopByHop:
                case IpProtocols.Ipv6Routing:
                case IpProtocols.Ipv6DestinationOptions:
                    // Hop-by-Hop must come first (RFC 8200 section 4.1).
                    if (next == IpProtocols.HopByHop && count != 0)
                    {
                        return DropReason.BadIpv6ExtensionHeader;
                    }
                    if (rest.Length < 2)
                    {
                        return DropReason.BadIpv6ExtensionHeader;
                    }
                    headerLength = (rest[1] + 1) * 8;
                    break;
                case IpProtocols.AuthenticationHeader:
                    // RFC 4302 section 2.2: length in 4-octet units, minus 2.
                    if (rest.Length < 2)
                    {
                        return DropReason.BadIpv6ExtensionHeader;
                    }
                    headerLength = (rest[1] + 2) * 4;
                    break;
                case IpProtocols.Ipv6Fragment:
                    // RFC 8200 section 4.5: 8 bytes; offset in 8-octet units in the top 13 bits.
                    if (rest.Length < 8)
                    {
                        return DropReason.BadIpv6ExtensionHeader;
                    }
                    info.IsFragment = true;
                    if ((BinaryPrimitives.ReadUInt16BigEndian(rest[2..]) >> 3) != 0)
                    {
                        info.IsNonFirstFragment = true;
                        info.IpProtocol = rest[0];
                        return DropReason.None;
                    }
                    headerLength = 8;
                    break;
                default:
                    // Upper layer, ESP (opaque) or No Next Header.
                    info.IpProtocol = next;
                    return ParseTransport(rest, ref info);
            }
            if (count >= MaxIpv6ExtensionHeaders)
            {
                return DropReason.TooManyIpv6ExtensionHeaders;
            }
            if (headerLength > rest.Length)
            {
                return DropReason.BadIpv6ExtensionHeader;
            }
            next = rest[0];
            rest = rest[headerLength..];
        }
    }

    private static DropReason ParseTransport(ReadOnlySpan<byte> l4, ref FrameInfo info)
    {
        switch (info.IpProtocol)
        {
            case IpProtocols.Udp:
                // RFC 768: 8-byte header.
                if (l4.Length < 8)
                {
                    return DropReason.TruncatedTransportHeader;
                }
                info.HasPorts = true;
                info.SourcePort = BinaryPrimitives.ReadUInt16BigEndian(l4);
                info.DestinationPort = BinaryPrimitives.ReadUInt16BigEndian(l4[2..]);
                return DropReason.None;
            case IpProtocols.Tcp:
                // RFC 9293 section 3.1: 20-byte header; data offset counts 32-bit words, at least 5.
                if (l4.Length < 20)
                {
                    return DropReason.TruncatedTransportHeader;
                }
                int dataOffset = (l4[12] >> 4) * 4;
                if (dataOffset < 20 || dataOffset > l4.Length)
                {
                    return DropReason.TruncatedTransportHeader;
                }
                info.HasPorts = true;
                info.SourcePort = BinaryPrimitives.ReadUInt16BigEndian(l4);
                info.DestinationPort = BinaryPrimitives.ReadUInt16BigEndian(l4[2..]);
                return DropReason.None;
            case IpProtocols.Icmp when info.IpFamily == IpFamily.V4:
                // RFC 792: every message starts with type, code, checksum and 4 more bytes.
                if (l4.Length < 8)
                {
                    return DropReason.TruncatedTransportHeader;
                }
                info.HasIcmp = true;
                info.IcmpType = l4[0];
                info.IcmpCode = l4[1];
                return DropReason.None;
            case IpProtocols.Icmpv6 when info.IpFamily == IpFamily.V6:
                // RFC 4443 section 2.1: type, code, checksum, then the message body.
                if (l4.Length < 4)
                {
                    return DropReason.TruncatedTransportHeader;
                }
                info.HasIcmp = true;
                info.IcmpType = l4[0];
                info.IcmpCode = l4[1];
                return ParseNdp(l4, ref info);
            default:
                return DropReason.None;
        }
    }

    /// <summary>
    /// RFC 4861 section 4: fixed part per message type, then options of (type, length in 8-octet
    /// units). A zero-length option is invalid (section 4.6). Several link-layer options that
    /// disagree are treated as malformed, so anti-spoofing sees the one address the kernel would use.
    /// </summary>
    private static DropReason ParseNdp(ReadOnlySpan<byte> icmp, ref FrameInfo info)
    {
        int fixedLength;
        byte wantedOption;
        switch (info.IcmpType)
        {
            case Icmpv6Types.RouterSolicitation:
                fixedLength = 8;
                wantedOption = 1;
                break;
            case Icmpv6Types.RouterAdvertisement:
                fixedLength = 16;
                wantedOption = 1;
                break;
            case Icmpv6Types.NeighborSolicitation:
                fixedLength = 24;
                wantedOption = 1;
                break;
            case Icmpv6Types.NeighborAdvertisement:
                fixedLength = 24;
                wantedOption = 2;
                break;
            case Icmpv6Types.Redirect:
                fixedLength = 40;
                wantedOption = 2;
                break;
            default:
                return DropReason.None;
        }
        if (icmp.Length < fixedLength)
        {
            return DropReason.MalformedNdp;
        }
        if (info.IcmpType is Icmpv6Types.NeighborSolicitation or Icmpv6Types.NeighborAdvertisement or Icmpv6Types.Redirect)
        {
            info.NdpTarget = BinaryPrimitives.ReadUInt128BigEndian(icmp[8..]);
        }
        var options = icmp[fixedLength..];
        while (options.Length > 0)
        {
            if (options.Length < 2)
            {
                return DropReason.MalformedNdp;
            }
            int optionLength = options[1] * 8;
            if (optionLength == 0 || optionLength > options.Length)
            {
                return DropReason.MalformedNdp;
            }
            if (options[0] is 1 or 2)
            {
                // Link-layer address options (section 4.6.1); for Ethernet one 8-octet unit.
                if (optionLength != 8)
                {
                    return DropReason.MalformedNdp;
                }
                if (options[0] == wantedOption)
                {
                    var lla = MacAddress.Read(options[2..]);
                    if (info.HasNdpLinkLayerOption && lla != info.NdpLinkLayerAddress)
                    {
                        return DropReason.MalformedNdp;
                    }
                    info.HasNdpLinkLayerOption = true;
                    info.NdpLinkLayerAddress = lla;
                }
            }
            options = options[optionLength..];
        }
        return DropReason.None;
    }
}
