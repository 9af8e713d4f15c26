using SecureVmm.TestSupport;
using SecureVmm.NetFilter;
using Xunit;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

/// <summary>Deny rules, per-rule rate limits and the anti-spoofing switch (the policy's filter model).</summary>
public class RuleActionTests
{
    private static readonly byte[] UdpToPeer53 = Out4(IpProtocols.Udp, FrameBuilder.Udp(4000, 53));
    private static readonly byte[] UdpToPeer80 = Out4(IpProtocols.Udp, FrameBuilder.Udp(4000, 80));

    [Fact]
    public void FirstMatchDecidesAndADenyRuleShadowsLaterAllows()
    {
        var filter = new Filter(Config(
            new AllowRule { Name = "no dns", Action = RuleAction.Deny, IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(53) },
            AllowAll));
        var denied = filter.Outbound(UdpToPeer53);
        Assert.Equal(DropReason.DeniedByRule, denied.Reason);
        Assert.Equal(0, denied.RuleIndex);
        var allowed = filter.Outbound(UdpToPeer80);
        Assert.True(allowed.IsAllowed);
        Assert.Equal(1, allowed.RuleIndex);
        Assert.Equal(1, filter.DropsFor(FrameDirection.Outbound, DropReason.DeniedByRule));

        // The same rules the other way round: the allow-all matches first.
        var reversed = new Filter(Config(AllowAll,
            new AllowRule { Action = RuleAction.Deny, IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(53) }));
        Assert.True(reversed.Outbound(UdpToPeer53).IsAllowed);
    }

    [Fact]
    public void EachRuleHasItsOwnBucket()
    {
        var clock = new ManualTimeProvider();
        var filter = new Filter(Config(
            new AllowRule { Name = "dns", IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(53), Rate = new RateLimit(2, 0, BurstFrames: 2) },
            AllowAll), clock);
        Assert.True(filter.Outbound(UdpToPeer53).IsAllowed);
        Assert.True(filter.Outbound(UdpToPeer53).IsAllowed);
        var limited = filter.Outbound(UdpToPeer53);
        Assert.Equal(DropReason.RateLimited, limited.Reason);
        Assert.Equal(0, limited.RuleIndex);
        for (int i = 0; i < 10; i++)
        {
            Assert.True(filter.Outbound(UdpToPeer80).IsAllowed); // another rule, no limit
        }
        clock.Advance(TimeSpan.FromMilliseconds(500)); // one token at 2/s
        Assert.True(filter.Outbound(UdpToPeer53).IsAllowed);
        Assert.False(filter.Outbound(UdpToPeer53).IsAllowed);
    }

    [Fact]
    public void RuleRatesAndActionsAreValidated()
    {
        var problems = Config(new AllowRule { Action = RuleAction.Deny, Rate = new RateLimit(1, 0) }).Validate();
        Assert.Contains(problems, p => p.Contains("Rules[0].Rate", StringComparison.Ordinal));
        problems = Config(new AllowRule { Rate = new RateLimit(-1, 0) }).Validate();
        Assert.Contains(problems, p => p.Contains("Rules[0].Rate", StringComparison.Ordinal));
        problems = Config(new AllowRule { Action = (RuleAction)7 }).Validate();
        Assert.Contains(problems, p => p.Contains("Rules[0].Action", StringComparison.Ordinal));
    }

    [Fact]
    public void AntiSpoofingIsOnByDefaultAndCanBeTurnedOffForOutboundOnly()
    {
        var spoofed = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: OtherIp, sourceMac: OtherMac);
        Assert.Equal(DropReason.SpoofedSourceMac, new Filter(Config(AllowAll)).Outbound(spoofed).Reason);

        var open = new Filter(Config(AllowAll) with { AntiSpoofing = false });
        Assert.True(open.Outbound(spoofed).IsAllowed);
        // Inbound addressing still applies: a frame for another VM's MAC is not delivered.
        Assert.Equal(DropReason.NotForThisVm, open.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destinationMac: OtherMac)).Reason);
        // And the rules still decide.
        var denyAll = new Filter(Config() with { AntiSpoofing = false });
        Assert.Equal(DropReason.NoMatchingRule, denyAll.Outbound(spoofed).Reason);
    }
}
