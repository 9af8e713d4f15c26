using SecureVmm.TestSupport;
using System.Net;
using SecureVmm.NetFilter;
using Xunit;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

/// <summary>Each clean-traffic style check, with everything else allowed so only that check can drop.</summary>
public class AntiSpoofingTests
{
    private static Filter AllowAllFilter(bool dhcp = false, bool linkLocal = true) =>
        new(Config(AllowAll) with { AllowDhcp = dhcp, AllowIpv6LinkLocalFromMac = linkLocal });

    [Fact]
    public void OutboundSourceMacMustBeTheVms()
    {
        var filter = AllowAllFilter();
        Assert.True(filter.Outbound(Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
        var v = filter.Outbound(Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), sourceMac: OtherMac));
        Assert.Equal(DropReason.SpoofedSourceMac, v.Reason);
        Assert.Equal(1, filter.DropsFor(FrameDirection.Outbound, DropReason.SpoofedSourceMac));
    }

    [Fact]
    public void OutboundNonIpFramesAlsoNeedTheVmsMac()
    {
        var filter = AllowAllFilter();
        Assert.True(filter.Outbound(FrameBuilder.Ethernet(PeerMac, VmMac, 0x88B5, new byte[46])).IsAllowed);
        Assert.Equal(DropReason.SpoofedSourceMac, filter.Outbound(FrameBuilder.Ethernet(PeerMac, OtherMac, 0x88B5, new byte[46])).Reason);
    }

    [Fact]
    public void ArpSenderMacAndIpMustBeTheVms()
    {
        var filter = AllowAllFilter();
        byte[] Arp(MacAddress sha, IPAddress spa, ushort op = 1) =>
            FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, FrameBuilder.Arp(op, sha, spa, default, PeerIp));
        Assert.True(filter.Outbound(Arp(VmMac, VmIp)).IsAllowed);
        Assert.Equal(DropReason.SpoofedArp, filter.Outbound(Arp(OtherMac, VmIp)).Reason);
        Assert.Equal(DropReason.SpoofedArp, filter.Outbound(Arp(VmMac, OtherIp)).Reason);
        // RFC 5227 probe: sender IP 0.0.0.0 in a request is fine, in a reply it is not.
        Assert.True(filter.Outbound(Arp(VmMac, IPAddress.Any)).IsAllowed);
        Assert.Equal(DropReason.SpoofedArp, filter.Outbound(Arp(VmMac, IPAddress.Any, op: 2)).Reason);
    }

    [Fact]
    public void Ipv4SourceMustBeTheVms()
    {
        var filter = AllowAllFilter();
        Assert.True(filter.Outbound(Out4(IpProtocols.Tcp, FrameBuilder.Tcp(1, 2))).IsAllowed);
        Assert.Equal(DropReason.SpoofedSourceIp, filter.Outbound(Out4(IpProtocols.Tcp, FrameBuilder.Tcp(1, 2), source: OtherIp)).Reason);
        Assert.Equal(DropReason.SpoofedSourceIp, filter.Outbound(Out4(IpProtocols.Udp, FrameBuilder.Udp(68, 67), source: IPAddress.Any)).Reason);
    }

    [Fact]
    public void DhcpFromZeroOnlyWhenConfiguredAndOnlyDhcp()
    {
        byte[] Discover(ushort sport = 68, ushort dport = 67) => FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(IPAddress.Any, IPAddress.Broadcast, IpProtocols.Udp, FrameBuilder.Udp(sport, dport, new byte[240])));
        var withDhcp = new Filter(Config() with { AllowDhcp = true });
        var v = withDhcp.Outbound(Discover());
        Assert.True(v.IsAllowed);
        Assert.Equal(Verdict.DhcpRule, v.RuleIndex);
        Assert.Equal(DropReason.SpoofedSourceIp, withDhcp.Outbound(Discover(sport: 69)).Reason);
        Assert.Equal(DropReason.SpoofedSourceIp, withDhcp.Outbound(Discover(dport: 53)).Reason);

        var offer = FrameBuilder.Ethernet(VmMac, PeerMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(PeerIp, IPAddress.Parse("192.0.2.77"), IpProtocols.Udp, FrameBuilder.Udp(67, 68, new byte[240])));
        Assert.True(withDhcp.Inbound(offer).IsAllowed);
        Assert.Equal(2, withDhcp.ReadCounters().DhcpFrames); // the discover and the offer

        var withoutDhcp = new Filter(Config(AllowAll));
        Assert.Equal(DropReason.SpoofedSourceIp, withoutDhcp.Outbound(Discover()).Reason);
        Assert.Equal(DropReason.NotForThisVm, withoutDhcp.Inbound(offer).Reason);
    }

    [Fact]
    public void Ipv6SourceMustBeTheVmsOrItsMacDerivedLinkLocal()
    {
        var filter = AllowAllFilter();
        Assert.True(filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
        Assert.True(filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: VmLinkLocal)).IsAllowed);
        Assert.Equal(DropReason.SpoofedSourceIp, filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: IPAddress.Parse("2001:db8::66"))).Reason);
        Assert.Equal(DropReason.SpoofedSourceIp, filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: IPAddress.Parse("fe80::1"))).Reason);
        Assert.Equal(DropReason.SpoofedSourceIp, filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: IPAddress.IPv6None)).Reason);

        var noLinkLocal = AllowAllFilter(linkLocal: false);
        Assert.Equal(DropReason.SpoofedSourceIp, noLinkLocal.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: VmLinkLocal)).Reason);
    }

    [Fact]
    public void LinkLocalIsModifiedEui64OfTheMac()
    {
        // RFC 4291 appendix A: 52:54:00:aa:00:01 -> fe80::5054:ff:feaa:1
        Assert.Equal(IPAddress.Parse("fe80::5054:ff:feaa:1"), VmLinkLocal);
    }

    [Fact]
    public void NeighbourAdvertisementsMayOnlyClaimTheVmsAddressesAndMac()
    {
        var filter = AllowAllFilter();
        var allNodes = new MacAddress(0x333300000001);
        byte[] Na(IPAddress target, MacAddress? lla) => Out6(IpProtocols.Icmpv6, FrameBuilder.Ndp(Icmpv6Types.NeighborAdvertisement, target, lla), destination: IPAddress.Parse("ff02::1"), destinationMac: allNodes);
        Assert.True(filter.Outbound(Na(VmIp6, VmMac)).IsAllowed);
        Assert.True(filter.Outbound(Na(VmLinkLocal, null)).IsAllowed);
        Assert.Equal(DropReason.SpoofedNdp, filter.Outbound(Na(PeerIp6, VmMac)).Reason);
        Assert.Equal(DropReason.SpoofedNdp, filter.Outbound(Na(VmIp6, OtherMac)).Reason);
    }

    [Fact]
    public void NeighbourSolicitationSourceLinkLayerMustBeTheVms()
    {
        var filter = AllowAllFilter();
        var solicitedNode = new MacAddress(0x3333FF000001);
        byte[] Ns(IPAddress source, MacAddress? lla) => Out6(IpProtocols.Icmpv6, FrameBuilder.Ndp(Icmpv6Types.NeighborSolicitation, PeerIp6, lla),
            source: source, destination: IPAddress.Parse("ff02::1:ff00:1"), destinationMac: solicitedNode);
        Assert.True(filter.Outbound(Ns(VmIp6, VmMac)).IsAllowed);
        Assert.Equal(DropReason.SpoofedNdp, filter.Outbound(Ns(VmIp6, OtherMac)).Reason);
        // Duplicate address detection: from :: and without a source link-layer option (RFC 4861 7.1.1).
        Assert.True(filter.Outbound(Ns(IPAddress.IPv6Any, null)).IsAllowed);
        Assert.Equal(DropReason.SpoofedNdp, filter.Outbound(Ns(IPAddress.IPv6Any, VmMac)).Reason);
        // :: is not a source for anything else.
        Assert.Equal(DropReason.SpoofedSourceIp, filter.Outbound(Out6(IpProtocols.Icmpv6, FrameBuilder.Icmp(Icmpv6Types.EchoRequest, 0), source: IPAddress.IPv6Any)).Reason);
    }

    [Fact]
    public void InboundUnicastOnlyForTheVmsMac()
    {
        var filter = AllowAllFilter();
        Assert.True(filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
        Assert.Equal(DropReason.NotForThisVm, filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destinationMac: OtherMac)).Reason);
    }

    [Fact]
    public void InboundFramesClaimingTheVmsOwnMacAreDropped()
    {
        var filter = AllowAllFilter();
        var frame = FrameBuilder.Ethernet(VmMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(PeerIp, VmIp, IpProtocols.Udp, FrameBuilder.Udp(1, 2)));
        Assert.Equal(DropReason.SpoofedSourceMac, filter.Inbound(frame).Reason);
    }

    [Fact]
    public void InboundIpUnicastOnlyForTheVmsAddresses()
    {
        var filter = AllowAllFilter();
        Assert.Equal(DropReason.NotForThisVm, filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destination: OtherIp)).Reason);
        Assert.True(filter.Inbound(In6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destination: VmLinkLocal)).IsAllowed);
        Assert.Equal(DropReason.NotForThisVm, filter.Inbound(In6(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destination: PeerIp6)).Reason);
    }

    [Fact]
    public void InboundArpOnlyForTheVmsAddresses()
    {
        var filter = AllowAllFilter();
        byte[] Arp(ushort op, MacAddress dst, MacAddress tha, IPAddress tpa) =>
            FrameBuilder.Ethernet(dst, PeerMac, EtherTypes.Arp, FrameBuilder.Arp(op, PeerMac, PeerIp, tha, tpa));
        Assert.True(filter.Inbound(Arp(1, MacAddress.Broadcast, default, VmIp)).IsAllowed);
        Assert.Equal(DropReason.ArpNotForThisVm, filter.Inbound(Arp(1, MacAddress.Broadcast, default, OtherIp)).Reason);
        Assert.True(filter.Inbound(Arp(2, VmMac, VmMac, VmIp)).IsAllowed);
        Assert.Equal(DropReason.ArpNotForThisVm, filter.Inbound(Arp(2, VmMac, OtherMac, VmIp)).Reason);
    }

    [Fact]
    public void InboundBroadcastAndMulticastOnlyWhenARuleSaysSo()
    {
        var unicastOnly = new Filter(Config(new AllowRule { Direction = TrafficDirection.Inbound }));
        var broadcast = In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destination: IPAddress.Broadcast, destinationMac: MacAddress.Broadcast);
        var multicast = In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destination: IPAddress.Parse("224.0.0.251"), destinationMac: new MacAddress(0x01005E0000FB));
        Assert.True(unicastOnly.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, unicastOnly.Inbound(broadcast).Reason);
        Assert.Equal(DropReason.NoMatchingRule, unicastOnly.Inbound(multicast).Reason);

        var withBroadcast = new Filter(Config(new AllowRule { Direction = TrafficDirection.Inbound, LinkDestinations = LinkDestinations.Broadcast }));
        Assert.True(withBroadcast.Inbound(broadcast).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, withBroadcast.Inbound(multicast).Reason);
    }

    [Fact]
    public void DefaultDenyWithNoRules()
    {
        var filter = new Filter(Config());
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).Reason);
        Assert.Equal(DropReason.NoMatchingRule, filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).Reason);
    }
}
