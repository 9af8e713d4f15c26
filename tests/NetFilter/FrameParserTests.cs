using SecureVmm.TestSupport;
using System.Net;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Parsing;
using Xunit;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

public class FrameParserTests
{
    private static readonly IPAddress A = IPAddress.Parse("10.1.2.3");
    private static readonly IPAddress B = IPAddress.Parse("10.4.5.6");

    private static byte[] Tcp4(int optionWords = 0) =>
        FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(A, B, IpProtocols.Tcp, FrameBuilder.Tcp(1234, 80), optionWords: optionWords));

    [Fact]
    public void ParsesTcpOverIpv4()
    {
        Assert.Equal(DropReason.None, FrameParser.Parse(Tcp4(), out var f));
        Assert.Equal(PeerMac, f.Destination);
        Assert.Equal(VmMac, f.Source);
        Assert.Equal(NetworkLayer.Ipv4, f.Network);
        Assert.Equal(IpFamily.V4, f.IpFamily);
        Assert.Equal((UInt128)0x0A010203, f.SourceIp);
        Assert.Equal((UInt128)0x0A040506, f.DestinationIp);
        Assert.Equal(IpProtocols.Tcp, f.IpProtocol);
        Assert.True(f.HasPorts);
        Assert.Equal(1234, f.SourcePort);
        Assert.Equal(80, f.DestinationPort);
        Assert.False(f.IsFragment);
    }

    [Fact]
    public void Ipv4OptionsAreSkippedByIhl()
    {
        Assert.Equal(DropReason.None, FrameParser.Parse(Tcp4(optionWords: 3), out var f));
        Assert.Equal(1234, f.SourcePort);
        Assert.Equal(80, f.DestinationPort);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void EveryTruncationOfAnIpv4FrameIsADrop(int optionWords)
    {
        var frame = Tcp4(optionWords);
        for (int length = 0; length < frame.Length; length++)
        {
            var reason = FrameParser.Parse(frame.AsSpan(0, length), out _);
            Assert.NotEqual(DropReason.None, reason);
        }
    }

    [Fact]
    public void EveryTruncationOfUdpIcmpArpAndIpv6FramesIsADrop()
    {
        var frames = new[]
        {
            Out4(IpProtocols.Udp, FrameBuilder.Udp(68, 67)),
            Out4(IpProtocols.Icmp, FrameBuilder.EchoRequest(1, 1, 0)),
            FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, FrameBuilder.Arp(1, VmMac, VmIp, default, PeerIp)),
            Out6(IpProtocols.Tcp, FrameBuilder.Tcp(1, 2)),
            Out6(IpProtocols.Icmpv6, FrameBuilder.Ndp(Icmpv6Types.NeighborSolicitation, PeerIp6, VmMac)),
            FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, FrameBuilder.Udp(1, 2),
                FrameBuilder.Options8(IpProtocols.HopByHop), FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions))),
        };
        foreach (var frame in frames)
        {
            Assert.Equal(DropReason.None, FrameParser.Parse(frame, out _));
            for (int length = 0; length < frame.Length; length++)
            {
                Assert.NotEqual(DropReason.None, FrameParser.Parse(frame.AsSpan(0, length), out _));
            }
        }
    }

    [Fact]
    public void EthernetPaddingAfterIpv4TotalLengthIsIgnored()
    {
        var frame = Tcp4().Concat(new byte[10]).ToArray();
        Assert.Equal(DropReason.None, FrameParser.Parse(frame, out var f));
        Assert.Equal(80, f.DestinationPort);
    }

    [Theory]
    [InlineData(0x45, DropReason.None)]
    [InlineData(0x44, DropReason.BadIpv4HeaderLength)]
    [InlineData(0x40, DropReason.BadIpv4HeaderLength)]
    [InlineData(0x4F, DropReason.TruncatedIpv4Header)]
    [InlineData(0x65, DropReason.BadIpVersion)]
    public void Ipv4VersionAndIhlAreChecked(byte versionIhl, DropReason expected)
    {
        var frame = Tcp4();
        frame[14] = versionIhl;
        Assert.Equal(expected, FrameParser.Parse(frame, out _));
    }

    [Fact]
    public void Ipv4TotalLengthShorterThanHeaderIsADrop()
    {
        var frame = Tcp4();
        frame[16] = 0;
        frame[17] = 19;
        Assert.Equal(DropReason.BadIpv4TotalLength, FrameParser.Parse(frame, out _));
    }

    [Fact]
    public void TcpDataOffsetBelowFiveOrPastTheSegmentIsADrop()
    {
        var frame = Tcp4();
        frame[14 + 20 + 12] = 4 << 4;
        Assert.Equal(DropReason.TruncatedTransportHeader, FrameParser.Parse(frame, out _));
        frame[14 + 20 + 12] = 6 << 4;
        Assert.Equal(DropReason.TruncatedTransportHeader, FrameParser.Parse(frame, out _));
    }

    [Fact]
    public void VlanTagIsParsedAndStackedTagsAreDropped()
    {
        var tagged = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(A, B, IpProtocols.Udp, FrameBuilder.Udp(5, 6)), vlan: 0x2064);
        Assert.Equal(DropReason.None, FrameParser.Parse(tagged, out var f));
        Assert.True(f.VlanTagged);
        Assert.Equal(0x064, f.VlanId); // PCP bits (0x2000) are not part of the id
        Assert.Equal(EtherTypes.Ipv4, f.EtherType);
        Assert.Equal(6, f.DestinationPort);

        var stacked = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Vlan, new byte[40], vlan: 5);
        Assert.Equal(DropReason.MalformedVlan, FrameParser.Parse(stacked, out _));
        Assert.Equal(DropReason.MalformedVlan, FrameParser.Parse(tagged.AsSpan(0, 16), out _));
    }

    [Fact]
    public void Ipv4FragmentsOnlyTheFirstCarriesPorts()
    {
        var first = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(A, B, IpProtocols.Udp, FrameBuilder.Udp(7, 9, new byte[16]), moreFragments: true));
        Assert.Equal(DropReason.None, FrameParser.Parse(first, out var f));
        Assert.True(f.IsFragment);
        Assert.False(f.IsNonFirstFragment);
        Assert.True(f.HasPorts);

        var later = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(A, B, IpProtocols.Udp, new byte[16], fragmentOffset: 3));
        Assert.Equal(DropReason.None, FrameParser.Parse(later, out f));
        Assert.True(f.IsNonFirstFragment);
        Assert.False(f.HasPorts);

        // RFC 1858: a first fragment too short for the TCP header, and TCP at offset 8 bytes.
        var tinyFirst = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(A, B, IpProtocols.Tcp, new byte[8], moreFragments: true));
        Assert.Equal(DropReason.TruncatedTransportHeader, FrameParser.Parse(tinyFirst, out _));
        var overlap = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(A, B, IpProtocols.Tcp, new byte[16], fragmentOffset: 1));
        Assert.Equal(DropReason.TinyFragment, FrameParser.Parse(overlap, out _));
    }

    [Fact]
    public void Ipv6ExtensionHeadersAreWalked()
    {
        var frame = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Tcp, FrameBuilder.Tcp(40000, 443),
            FrameBuilder.Options8(IpProtocols.HopByHop), FrameBuilder.Options8(IpProtocols.Ipv6Routing), FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions)));
        Assert.Equal(DropReason.None, FrameParser.Parse(frame, out var f));
        Assert.Equal(IpProtocols.Tcp, f.IpProtocol);
        Assert.Equal(40000, f.SourcePort);
        Assert.Equal(443, f.DestinationPort);
    }

    [Fact]
    public void Ipv6ExtensionHeaderChainIsBounded()
    {
        var eight = Enumerable.Repeat(FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions), FrameParser.MaxIpv6ExtensionHeaders).ToArray();
        var ok = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, FrameBuilder.Udp(1, 2), eight));
        Assert.Equal(DropReason.None, FrameParser.Parse(ok, out _));
        var nine = eight.Append(FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions)).ToArray();
        var tooMany = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, FrameBuilder.Udp(1, 2), nine));
        Assert.Equal(DropReason.TooManyIpv6ExtensionHeaders, FrameParser.Parse(tooMany, out _));
    }

    [Fact]
    public void HopByHopMustComeFirst()
    {
        var frame = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, FrameBuilder.Udp(1, 2),
            FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions), FrameBuilder.Options8(IpProtocols.HopByHop)));
        Assert.Equal(DropReason.BadIpv6ExtensionHeader, FrameParser.Parse(frame, out _));
    }

    [Fact]
    public void Ipv6ExtensionHeaderLengthPastPayloadIsADrop()
    {
        var frame = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, FrameBuilder.Udp(1, 2),
            FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions)));
        frame[14 + 40 + 1] = 200; // header claims 1608 bytes
        Assert.Equal(DropReason.BadIpv6ExtensionHeader, FrameParser.Parse(frame, out _));
    }

    [Fact]
    public void Ipv6FragmentHeader()
    {
        var first = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, FrameBuilder.Udp(53, 53, new byte[8]),
            FrameBuilder.Fragment6(0, more: true)));
        Assert.Equal(DropReason.None, FrameParser.Parse(first, out var f));
        Assert.True(f.IsFragment);
        Assert.True(f.HasPorts);
        var later = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Udp, new byte[16],
            FrameBuilder.Fragment6(2, more: false)));
        Assert.Equal(DropReason.None, FrameParser.Parse(later, out f));
        Assert.True(f.IsNonFirstFragment);
        Assert.Equal(IpProtocols.Udp, f.IpProtocol);
        Assert.False(f.HasPorts);
    }

    [Fact]
    public void Ipv6PayloadLengthBeyondTheFrameIsADrop()
    {
        var frame = Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2));
        frame[14 + 5] += 1;
        Assert.Equal(DropReason.BadIpv6PayloadLength, FrameParser.Parse(frame, out _));
    }

    [Fact]
    public void NdpTargetAndLinkLayerOptionAreParsed()
    {
        var na = Out6(IpProtocols.Icmpv6, FrameBuilder.Ndp(Icmpv6Types.NeighborAdvertisement, VmIp6, VmMac));
        Assert.Equal(DropReason.None, FrameParser.Parse(na, out var f));
        Assert.True(f.HasIcmp);
        Assert.Equal(Icmpv6Types.NeighborAdvertisement, f.IcmpType);
        Assert.Equal(IpAddressBits.FromIpAddress(VmIp6).Value, f.NdpTarget);
        Assert.True(f.HasNdpLinkLayerOption);
        Assert.Equal(VmMac, f.NdpLinkLayerAddress);
    }

    [Fact]
    public void NdpZeroLengthOptionAndConflictingLinkLayerOptionsAreMalformed()
    {
        var ns = FrameBuilder.Ndp(Icmpv6Types.NeighborSolicitation, PeerIp6, VmMac);
        ns[25] = 0;
        Assert.Equal(DropReason.MalformedNdp, FrameParser.Parse(Out6(IpProtocols.Icmpv6, ns), out _));

        var twice = FrameBuilder.Ndp(Icmpv6Types.NeighborSolicitation, PeerIp6, VmMac).Concat(new byte[8]).ToArray();
        twice[32] = 1;
        twice[33] = 1;
        OtherMac.Write(twice.AsSpan(34));
        Assert.Equal(DropReason.MalformedNdp, FrameParser.Parse(Out6(IpProtocols.Icmpv6, twice), out _));

        var shortNs = FrameBuilder.Icmp(Icmpv6Types.NeighborSolicitation, 0);
        Assert.Equal(DropReason.MalformedNdp, FrameParser.Parse(Out6(IpProtocols.Icmpv6, shortNs), out _));
    }

    [Fact]
    public void ArpMustBeEthernetIpv4()
    {
        var arp = FrameBuilder.Arp(1, VmMac, VmIp, default, PeerIp);
        Assert.Equal(DropReason.None, FrameParser.Parse(FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, arp), out var f));
        Assert.Equal(NetworkLayer.Arp, f.Network);
        Assert.Equal(VmMac, f.ArpSenderMac);
        Assert.Equal(0xC000020Au, f.ArpSenderIp);
        Assert.Equal(0xC0000201u, f.ArpTargetIp);
        arp[5] = 16;
        Assert.Equal(DropReason.MalformedArp, FrameParser.Parse(FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, arp), out _));
        arp[5] = 4;
        arp[7] = 9; // operation 9
        Assert.Equal(DropReason.MalformedArp, FrameParser.Parse(FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, arp), out _));
    }

    [Fact]
    public void OtherEtherTypesAndLengthFramesParseAsOther()
    {
        Assert.Equal(DropReason.None, FrameParser.Parse(FrameBuilder.Ethernet(PeerMac, VmMac, 0x88CC, new byte[46]), out var f));
        Assert.Equal(NetworkLayer.Other, f.Network);
        Assert.Equal(0x88CC, f.EtherType);
        Assert.Equal(DropReason.None, FrameParser.Parse(FrameBuilder.Ethernet(PeerMac, VmMac, 46, new byte[46]), out f));
        Assert.Equal(NetworkLayer.Other, f.Network);
        Assert.Equal(DropReason.FrameTooSmall, FrameParser.Parse(new byte[13], out _));
    }
}
