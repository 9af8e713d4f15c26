using SecureVmm.TestSupport;
using System.Buffers.Binary;
using System.Net;
using SecureVmm.NetFilter;

namespace SecureVmm.Verification.Network;

/// <summary>
/// Structured random frames for the network properties: every field is either the VM's own value,
/// a neighbour's, or random, so that a run covers honest frames, each kind of spoof, and junk.
/// Built from a seed so that FsCheck reports a reproducible counterexample.
/// </summary>
internal static class RandomFrames
{
    public static readonly MacAddress VmMac = new(0x525400AA0001);
    public static readonly IPAddress VmIp = IPAddress.Parse("198.51.100.10");
    public static readonly IPAddress VmIp6 = IPAddress.Parse("2001:db8:5::10");
    public static readonly IPAddress VmLinkLocal = IpAddressBits.ToIpAddress(IpFamily.V6, IpAddressBits.Ipv6LinkLocalFromMac(VmMac));
    public static readonly MacAddress PeerMac = new(0x525400BB0002);
    public static readonly IPAddress PeerIp = IPAddress.Parse("198.51.100.1");
    public static readonly IPAddress PeerIp6 = IPAddress.Parse("2001:db8:5::1");

    public static FilterConfig AllowEverythingConfig(bool dhcp) => new()
    {
        Mac = VmMac,
        Addresses = [VmIp, VmIp6],
        AllowDhcp = dhcp,
        Rules = [new AllowRule { Name = "all", LinkDestinations = LinkDestinations.Any, Vlans = null }, new AllowRule { Name = "all tagged", LinkDestinations = LinkDestinations.Any, Vlans = new NumberRange(0, 4095) }],
    };

    private static MacAddress Mac(Random rng, MacAddress own) => rng.Next(4) switch
    {
        0 or 1 => own,
        2 => PeerMac,
        _ => new MacAddress((ulong)rng.NextInt64(0, 1L << 48)),
    };

    private static MacAddress DestinationMac(Random rng, MacAddress own) => rng.Next(5) switch
    {
        0 => MacAddress.Broadcast,
        1 => new MacAddress(0x01005E000001),
        2 => new MacAddress(0x333300000001),
        _ => Mac(rng, own),
    };

    private static IPAddress Ip4(Random rng, IPAddress own) => rng.Next(5) switch
    {
        0 or 1 => own,
        2 => IPAddress.Any,
        3 => PeerIp,
        _ => new IPAddress(BitConverter.GetBytes(rng.Next())),
    };

    private static IPAddress Ip6(Random rng, IPAddress own) => rng.Next(6) switch
    {
        0 or 1 => own,
        2 => VmLinkLocal,
        3 => IPAddress.IPv6Any,
        4 => PeerIp6,
        _ => new IPAddress(Enumerable.Range(0, 16).Select(_ => (byte)rng.Next(256)).ToArray()),
    };

    private static byte[] Transport(Random rng, byte protocol, bool v6)
    {
        ushort Port() => rng.Next(3) switch { 0 => 67, 1 => 68, _ => (ushort)rng.Next(65536) };
        return protocol switch
        {
            IpProtocols.Udp => FrameBuilder.Udp(Port(), Port(), new byte[rng.Next(0, 64)]),
            IpProtocols.Tcp => FrameBuilder.Tcp(Port(), Port()),
            IpProtocols.Icmpv6 when rng.Next(2) == 0 => FrameBuilder.Ndp(
                rng.Next(2) == 0 ? Icmpv6Types.NeighborSolicitation : Icmpv6Types.NeighborAdvertisement,
                Ip6(rng, VmIp6),
                rng.Next(3) == 0 ? null : Mac(rng, VmMac)),
            _ => FrameBuilder.Icmp((byte)(v6 ? new byte[] { 128, 129, 133, 135, 143 }[rng.Next(5)] : new byte[] { 0, 3, 8 }[rng.Next(3)]), 0, new byte[rng.Next(0, 16)]),
        };
    }

    /// <summary>A frame as the guest might send it: usually honest, sometimes spoofed in one or more fields.</summary>
    public static byte[] Outbound(Random rng) => Build(rng, outbound: true);

    /// <summary>A frame as a network might deliver it: addressed to the VM or to anyone.</summary>
    public static byte[] Inbound(Random rng) => Build(rng, outbound: false);

    private static byte[] Build(Random rng, bool outbound)
    {
        var source = outbound ? Mac(rng, VmMac) : Mac(rng, PeerMac);
        var destination = outbound ? DestinationMac(rng, PeerMac) : DestinationMac(rng, VmMac);
        int? vlan = rng.Next(8) == 0 ? rng.Next(4096) : null;
        byte[] frame;
        switch (rng.Next(5))
        {
            case 0:
                frame = FrameBuilder.Ethernet(destination, source, EtherTypes.Arp, FrameBuilder.Arp(
                    (ushort)rng.Next(1, 3),
                    outbound ? Mac(rng, VmMac) : Mac(rng, PeerMac),
                    outbound ? Ip4(rng, VmIp) : Ip4(rng, PeerIp),
                    outbound ? Mac(rng, PeerMac) : Mac(rng, VmMac),
                    outbound ? Ip4(rng, PeerIp) : Ip4(rng, VmIp)), vlan);
                break;
            case 1:
            case 2:
            {
                byte protocol = new[] { IpProtocols.Udp, IpProtocols.Tcp, IpProtocols.Icmp }[rng.Next(3)];
                var ip = FrameBuilder.Ipv4(
                    outbound ? Ip4(rng, VmIp) : Ip4(rng, PeerIp),
                    outbound ? Ip4(rng, PeerIp) : Ip4(rng, VmIp),
                    protocol, Transport(rng, protocol, v6: false),
                    fragmentOffset: rng.Next(6) == 0 ? rng.Next(1, 100) : 0,
                    moreFragments: rng.Next(6) == 0,
                    optionWords: rng.Next(4) == 0 ? rng.Next(1, 10) : 0);
                frame = FrameBuilder.Ethernet(destination, source, EtherTypes.Ipv4, ip, vlan);
                break;
            }
            case 3:
            {
                byte protocol = new[] { IpProtocols.Udp, IpProtocols.Tcp, IpProtocols.Icmpv6 }[rng.Next(3)];
                var extensions = Enumerable.Range(0, rng.Next(0, 3)).Select(_ => FrameBuilder.Options8(IpProtocols.Ipv6DestinationOptions)).ToList();
                if (rng.Next(6) == 0)
                {
                    extensions.Add(FrameBuilder.Fragment6(rng.Next(0, 3), rng.Next(2) == 0));
                }
                var ip = FrameBuilder.Ipv6(
                    outbound ? Ip6(rng, VmIp6) : Ip6(rng, PeerIp6),
                    outbound ? Ip6(rng, PeerIp6) : Ip6(rng, VmIp6),
                    protocol, Transport(rng, protocol, v6: true), [.. extensions]);
                frame = FrameBuilder.Ethernet(destination, source, EtherTypes.Ipv6, ip, vlan);
                break;
            }
            default:
                frame = FrameBuilder.Ethernet(destination, source, (ushort)rng.Next(0, 65536), new byte[rng.Next(0, 80)], vlan);
                break;
        }
        if (rng.Next(10) == 0)
        {
            // Damage: flip a byte, or cut the frame short.
            if (rng.Next(2) == 0 && frame.Length > 0)
            {
                frame[rng.Next(frame.Length)] ^= (byte)rng.Next(1, 256);
            }
            else
            {
                frame = frame[..rng.Next(frame.Length + 1)];
            }
        }
        return frame;
    }

    /// <summary>The Ethernet payload offset and EtherType, reading the frame independently of the filter's parser.</summary>
    public static (int Offset, ushort EtherType) Payload(byte[] frame)
    {
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12));
        return type == EtherTypes.Vlan ? (18, BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(16))) : (14, type);
    }
}
