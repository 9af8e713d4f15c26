using System.Net;
using SecureVmm.Appliance.Runtime;
using SecureVmm.NetFilter;
using SecureVmm.Policy.Policy;
using SecureVmm.Tests.Policy;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;
using SecureVmm.TestSupport;
using Xunit;

namespace SecureVmm.Tests.Appliance;

/// <summary>The policy's filter means what netfilter enforces, and a VM has only the devices its policy names.</summary>
public class PolicyNetworksTests
{
    private static NetworkPolicy SecretNet()
    {
        var policy = PolicyFixture.Check(PolicyFixture.TwoDesktops()).Policy!;
        return policy.Networks.Single(n => n.Name == "secret-net");
    }

    [Fact]
    public void RulesTranslateInOrderWithTheRemoteSideAndRates()
    {
        var net = SecretNet();
        var config = PolicyNetworks.FilterFor(net);
        Assert.Equal(net.Filter.Rules.Length, config.Rules.Count); // default deny: no catch-all rule
        Assert.Equal(new MacAddress(0x025ec0000001), config.Mac);
        Assert.Equal(IPAddress.Parse("10.20.0.10"), Assert.Single(config.Addresses));
        var https = config.Rules[2];
        Assert.Equal(TrafficDirection.Outbound, https.Direction);
        Assert.Equal(IpProtocols.Tcp, https.IpProtocol);
        Assert.Equal(IpPrefix.Parse("10.20.0.0/24"), https.Destination);
        Assert.Null(https.Source);
        Assert.Equal(NumberRange.Single(443), https.DestinationPorts);
        var inbound = config.Rules[3];
        Assert.Equal(IpPrefix.Parse("10.20.0.0/24"), inbound.Source);
        Assert.Null(inbound.Destination);
        Assert.Equal(new SecureVmm.NetFilter.RateLimit(10, 0, BurstFrames: 20), config.Rules[6].Rate);
        Assert.Empty(config.Validate());

        // The translated filter decides as the policy says.
        var filter = new Filter(config);
        var vmMac = config.Mac;
        var peer = new MacAddress(0x025ec0000099);
        byte[] Out(ushort port, string destination) => FrameBuilder.Ethernet(peer, vmMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(IPAddress.Parse("10.20.0.10"), IPAddress.Parse(destination), IpProtocols.Tcp, FrameBuilder.Tcp(40000, port)));
        Assert.True(filter.Outbound(Out(443, "10.20.0.5")).IsAllowed);
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(Out(80, "10.20.0.5")).Reason);
        Assert.Equal(DropReason.NoMatchingRule, filter.Outbound(Out(443, "10.30.0.5")).Reason);
    }

    [Fact]
    public void DefaultAllowAndDenyRules()
    {
        var net = SecretNet();
        var open = net with
        {
            Filter = net.Filter with
            {
                DefaultAction = FilterAction.Allow,
                AntiSpoofing = false,
                Rules = [new FilterRulePolicy(FilterDirection.Out, FilterAction.Deny, 0x0800, IpProtocol.Udp, null, new PortRange(53, 53), null)],
            },
        };
        var config = PolicyNetworks.FilterFor(open);
        Assert.False(config.AntiSpoofing);
        Assert.Equal(2, config.Rules.Count);
        Assert.Equal(RuleAction.Deny, config.Rules[0].Action);
        Assert.Equal("default allow", config.Rules[1].Name);
        var filter = new Filter(config);
        byte[] Udp(ushort port) => FrameBuilder.Ethernet(MacAddress.Broadcast, config.Mac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(IPAddress.Parse("10.20.0.10"), IPAddress.Parse("10.20.0.1"), IpProtocols.Udp, FrameBuilder.Udp(5000, port)));
        Assert.Equal(DropReason.DeniedByRule, filter.Outbound(Udp(53)).Reason);
        Assert.True(filter.Outbound(Udp(123)).IsAllowed);
    }

    [Fact]
    public void DevicesThePolicyLeavesOutDecodeNothing()
    {
        using var vm = new VirtualMachine(new MachineConfig { MemoryBytes = 4 << 20, Devices = OptionalDevices.Serial });
        Assert.Equal(0xFFu, vm.Devices.Ports.Read(0x3DA, 1)); // VGA input status 1: no VGA
        Assert.Equal(0xFFu, vm.Devices.Ports.Read(0x71, 1)); // RTC data: no RTC
        Assert.NotEqual(0xFFu, vm.Devices.Ports.Read(0x3FD, 1)); // COM1 line status: present
        using var full = new VirtualMachine(new MachineConfig { MemoryBytes = 4 << 20 });
        Assert.NotEqual(0xFFu, full.Devices.Ports.Read(0x3DA, 1));
    }
}
