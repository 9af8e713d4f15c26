using SecureVmm.TestSupport;
using System.Net;
using SecureVmm.NetFilter;
using Xunit;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

/// <summary>Each allow-rule field on its own, rule order, frame size and configuration validation.</summary>
public class FilterRuleTests
{
    private static readonly byte[] UdpOut = Out4(IpProtocols.Udp, FrameBuilder.Udp(5000, 53));
    private static readonly byte[] TcpOut = Out4(IpProtocols.Tcp, FrameBuilder.Tcp(40000, 443));
    private static readonly byte[] UdpIn = In4(IpProtocols.Udp, FrameBuilder.Udp(53, 5000));

    [Fact]
    public void DirectionSelectsWhichWayARuleApplies()
    {
        var outOnly = new Filter(Config(new AllowRule { Direction = TrafficDirection.Outbound }));
        Assert.True(outOnly.Outbound(UdpOut).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, outOnly.Inbound(UdpIn).Reason);
        var inOnly = new Filter(Config(new AllowRule { Direction = TrafficDirection.Inbound }));
        Assert.Equal(DropReason.NoMatchingRule, inOnly.Outbound(UdpOut).Reason);
        Assert.True(inOnly.Inbound(UdpIn).IsAllowed);
        var both = new Filter(Config(new AllowRule()));
        Assert.True(both.Outbound(UdpOut).IsAllowed);
        Assert.True(both.Inbound(UdpIn).IsAllowed);
    }

    [Fact]
    public void EtherTypeMatchesTheInnerType()
    {
        var filter = new Filter(Config(new AllowRule { EtherType = EtherTypes.Ipv6 }));
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(UdpOut).Reason);
        Assert.True(filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
    }

    [Fact]
    public void TaggedFramesNeedARuleNamingTheirVlan()
    {
        var tagged = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(VmIp, PeerIp, IpProtocols.Udp, FrameBuilder.Udp(1, 2)), vlan: 100);
        var untaggedOnly = new Filter(Config(new AllowRule()));
        Assert.Equal(DropReason.VlanNotAllowed, untaggedOnly.Outbound(tagged).Reason);
        var vlan100 = new Filter(Config(new AllowRule { Vlans = new NumberRange(100, 100) }));
        Assert.True(vlan100.Outbound(tagged).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, vlan100.Outbound(UdpOut).Reason); // a VLAN rule does not match untagged frames
        var vlan200 = new Filter(Config(new AllowRule { Vlans = new NumberRange(200, 300) }));
        Assert.Equal(DropReason.VlanNotAllowed, vlan200.Outbound(tagged).Reason);
    }

    [Fact]
    public void IpProtocolMatchesTheTransport()
    {
        var filter = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Tcp }));
        Assert.True(filter.Outbound(TcpOut).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(UdpOut).Reason);
        // The protocol after IPv6 extension headers counts.
        var withExt = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(VmIp6, PeerIp6, IpProtocols.Tcp, FrameBuilder.Tcp(1, 2), FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions)));
        Assert.True(filter.Outbound(withExt).IsAllowed);
        // Non-IP frames never match a rule with IP fields.
        var arp = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Arp, FrameBuilder.Arp(2, VmMac, VmIp, PeerMac, PeerIp));
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(arp).Reason);
    }

    [Theory]
    [InlineData("192.0.2.0/24", true)]
    [InlineData("192.0.2.1/32", true)]
    [InlineData("192.0.3.0/24", false)]
    [InlineData("0.0.0.0/0", true)]
    [InlineData("2001:db8::/32", false)]
    public void DestinationCidr(string prefix, bool allowed)
    {
        var filter = new Filter(Config(new AllowRule { Destination = IpPrefix.Parse(prefix) }));
        Assert.Equal(allowed, filter.Outbound(UdpOut).IsAllowed);
    }

    [Theory]
    [InlineData("2001:db8::/64", true)]
    [InlineData("2001:db8::10/128", true)]
    [InlineData("2001:db9::/32", false)]
    [InlineData("::/0", true)]
    [InlineData("0.0.0.0/0", false)]
    public void SourceCidrV6(string prefix, bool allowed)
    {
        var filter = new Filter(Config(new AllowRule { Source = IpPrefix.Parse(prefix) }));
        Assert.Equal(allowed, filter.Outbound(Out6(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
    }

    [Theory]
    [InlineData(53, 53, true)]
    [InlineData(1, 52, false)]
    [InlineData(50, 60, true)]
    [InlineData(54, 65535, false)]
    public void DestinationPortRange(int low, int high, bool allowed)
    {
        var filter = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Udp, DestinationPorts = new NumberRange(low, high) }));
        Assert.Equal(allowed, filter.Outbound(UdpOut).IsAllowed);
    }

    [Fact]
    public void SourcePortRange()
    {
        var filter = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Tcp, SourcePorts = new NumberRange(32768, 60999) }));
        Assert.True(filter.Outbound(TcpOut).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(Out4(IpProtocols.Tcp, FrameBuilder.Tcp(80, 443))).Reason);
    }

    [Fact]
    public void NonFirstFragmentsMatchOnlyRulesWithoutPorts()
    {
        var later = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(VmIp, PeerIp, IpProtocols.Udp, new byte[24], fragmentOffset: 10));
        var withPorts = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(53) }));
        Assert.Equal(DropReason.NoMatchingRule, withPorts.Outbound(later).Reason);
        var protocolOnly = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Udp }));
        Assert.True(protocolOnly.Outbound(later).IsAllowed);
    }

    [Fact]
    public void IcmpTypeAndCode()
    {
        var echo = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Icmp, IcmpType = 8, IcmpCode = 0 }));
        Assert.True(echo.Outbound(Out4(IpProtocols.Icmp, FrameBuilder.EchoRequest(1, 1))).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, echo.Outbound(Out4(IpProtocols.Icmp, FrameBuilder.Icmp(3, 1))).Reason);
        Assert.Equal(DropReason.NoMatchingRule, echo.Outbound(Out4(IpProtocols.Icmp, FrameBuilder.Icmp(8, 1))).Reason);
        var v6 = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Icmpv6, IcmpType = Icmpv6Types.EchoRequest }));
        Assert.True(v6.Outbound(Out6(IpProtocols.Icmpv6, FrameBuilder.Icmp(Icmpv6Types.EchoRequest, 0))).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, v6.Outbound(Out4(IpProtocols.Icmp, FrameBuilder.Icmp(128, 0))).Reason);
    }

    [Fact]
    public void FirstMatchingRuleWinsAndIsCounted()
    {
        var filter = new Filter(Config(
            new AllowRule { Name = "dns", IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(53) },
            new AllowRule { Name = "any udp", IpProtocol = IpProtocols.Udp },
            new AllowRule { Name = "tcp", IpProtocol = IpProtocols.Tcp }));
        Assert.Equal(0, filter.Outbound(UdpOut).RuleIndex);
        Assert.Equal(1, filter.Outbound(Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 9))).RuleIndex);
        Assert.Equal(2, filter.Outbound(TcpOut).RuleIndex);
        Assert.Equal(2, filter.Outbound(TcpOut).RuleIndex);
        var counters = filter.ReadCounters();
        Assert.Equal([1L, 1L, 2L], counters.Rules.Select(r => r.Frames));
        Assert.Equal("dns", counters.Rules[0].Name);
        Assert.Equal(UdpOut.Length, counters.Rules[0].Bytes);
        Assert.Equal(2 * TcpOut.Length, counters.Rules[2].Bytes);
        Assert.Equal(4, counters.OutboundAllowedFrames);
    }

    [Fact]
    public void ArpHelperAllowsBroadcastRequestsAndUnicastReplies()
    {
        var filter = new Filter(Config(AllowRule.Arp()));
        Assert.True(filter.Outbound(FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, FrameBuilder.Arp(1, VmMac, VmIp, default, PeerIp))).IsAllowed);
        Assert.True(filter.Inbound(FrameBuilder.Ethernet(VmMac, PeerMac, EtherTypes.Arp, FrameBuilder.Arp(2, PeerMac, PeerIp, VmMac, VmIp))).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(UdpOut).Reason);
    }

    [Fact]
    public void MaxFrameSizeIsEnforcedBothWays()
    {
        var filter = new Filter(Config(AllowAll) with { MaxFrameBytes = 100 });
        var big = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2, new byte[100 - 14 - 20 - 8]));
        Assert.Equal(100, big.Length);
        Assert.True(filter.Outbound(big).IsAllowed);
        var tooBig = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2, new byte[101 - 14 - 20 - 8]));
        Assert.Equal(DropReason.FrameTooLarge, filter.Outbound(tooBig).Reason);
        Assert.Equal(DropReason.FrameTooLarge, filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2, new byte[200]))).Reason);
        Assert.Equal(DropReason.FrameTooSmall, filter.Inbound(new byte[10]).Reason);
    }

    [Fact]
    public void InvalidConfigsNameTheirFields()
    {
        static string Problems(FilterConfig c) => Assert.Throws<FilterConfigException>(() => new Filter(c)).Message;

        Assert.Contains("Mac:", Problems(Config() with { Mac = new MacAddress(0x010000000001) }), StringComparison.Ordinal);
        Assert.Contains("Addresses[0]", Problems(Config() with { Addresses = [IPAddress.Parse("224.0.0.1")] }), StringComparison.Ordinal);
        Assert.Contains("MaxFrameBytes", Problems(Config() with { MaxFrameBytes = 20 }), StringComparison.Ordinal);
        Assert.Contains("Rules[1].IpProtocol", Problems(Config(new AllowRule(), new AllowRule { DestinationPorts = NumberRange.Single(80) })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].DestinationPorts", Problems(Config(new AllowRule { IpProtocol = 6, DestinationPorts = new NumberRange(10, 5) })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].Vlans", Problems(Config(new AllowRule { Vlans = new NumberRange(0, 5000) })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].EtherType", Problems(Config(new AllowRule { EtherType = 0x0100 })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].EtherType", Problems(Config(new AllowRule { EtherType = EtherTypes.Arp, IpProtocol = 6 })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].Destination", Problems(Config(new AllowRule { Source = IpPrefix.Parse("10.0.0.0/8"), Destination = IpPrefix.Parse("fd00::/8") })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].Source", Problems(Config(new AllowRule { EtherType = EtherTypes.Ipv6, Source = IpPrefix.Parse("10.0.0.0/8") })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].IpProtocol", Problems(Config(new AllowRule { IpProtocol = 17, IcmpType = 8 })), StringComparison.Ordinal);
        Assert.Contains("Rules[0].LinkDestinations", Problems(Config(new AllowRule { LinkDestinations = 0 })), StringComparison.Ordinal);
        Assert.Contains("OutboundRate", Problems(Config() with { OutboundRate = new RateLimit(-1, 0) }), StringComparison.Ordinal);
        Assert.Contains("InboundRate", Problems(Config() with { InboundRate = new RateLimit(0, 1000) }), StringComparison.Ordinal);
        Assert.Empty(Config(AllowAll, AllowRule.Arp()).Validate());
    }

    [Theory]
    [InlineData("10.0.0.0/8", true)]
    [InlineData("10.1.2.3", true)]
    [InlineData("fd00::/8", true)]
    [InlineData("10.0.0.0/33", false)]
    [InlineData("fe80::1%eth0/64", false)]
    [InlineData("10.0.0.0/", false)]
    [InlineData("nonsense", false)]
    [InlineData("", false)]
    public void PrefixParsing(string text, bool ok) => Assert.Equal(ok, IpPrefix.TryParse(text, out _));

    [Fact]
    public void PrefixClearsHostBitsAndPrints()
    {
        var p = IpPrefix.Parse("192.0.2.77/24");
        Assert.Equal("192.0.2.0/24", p.ToString());
        Assert.True(p.Contains(IpFamily.V4, 0xC00002FF));
        Assert.False(p.Contains(IpFamily.V6, 0xC00002FF));
        Assert.Equal("2001:db8::/32", IpPrefix.Parse("2001:db8:1::/32").ToString());
    }
}
