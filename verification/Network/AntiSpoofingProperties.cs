using SecureVmm.TestSupport;
using System.Buffers.Binary;
using System.Net;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Parsing;
using Xunit;
using static SecureVmm.Verification.Network.RandomFrames;

namespace SecureVmm.Verification.Network;

/// <summary>
/// Spoofed frames never leave a VM, whatever its rules allow: with an allow-everything policy,
/// every frame the filter lets out is re-read independently here and must carry only the VM's
/// own MAC and addresses (clean-traffic's no-mac/arp/ip-spoofing). And no input makes the parser
/// or the filter throw.
/// </summary>
public class AntiSpoofingProperties
{
    /// <summary>Set SECUREVMM_SOAK=1 for a long run (100x the cases).</summary>
    internal static readonly int Scale = Environment.GetEnvironmentVariable("SECUREVMM_SOAK") is { Length: > 0 } ? 100 : 1;

    private static readonly Config Runs = Config.QuickThrowOnFailure.WithMaxTest(3000 * Scale);

    private static readonly UInt128 OwnV6 = IpAddressBits.FromIpAddress(VmIp6).Value;
    private static readonly UInt128 OwnLinkLocal = IpAddressBits.FromIpAddress(VmLinkLocal).Value;
    private static readonly uint OwnV4 = (uint)IpAddressBits.FromIpAddress(VmIp).Value;

    private static Arbitrary<int> Seeds => Arb.From(Gen.Choose(0, int.MaxValue));

    [Fact]
    public void AllowedOutboundFramesCarryOnlyTheVmsIdentity()
    {
        var filters = new[] { new Filter(AllowEverythingConfig(dhcp: false)), new Filter(AllowEverythingConfig(dhcp: true)) };
        int allowed = 0, dropped = 0;
        Check.One(Runs, Prop.ForAll(Seeds, seed =>
        {
            var rng = new Random(seed);
            var frame = Outbound(rng);
            var filter = filters[rng.Next(2)];
            var verdict = filter.Outbound(frame);
            _ = verdict.IsAllowed ? allowed++ : dropped++;
            return !verdict.IsAllowed || CarriesOnlyOwnIdentity(frame, filter.Config.AllowDhcp);
        }));
        // The generator must exercise both sides, or the property says nothing.
        Assert.True(allowed > 300 && dropped > 300, $"allowed {allowed}, dropped {dropped}");
    }

    [Fact]
    public void FramesWithAForeignSourceMacNeverPassOutbound()
    {
        var filter = new Filter(AllowEverythingConfig(dhcp: true));
        var foreignMacs = ArbMap.Default.GeneratorFor<long>().Select(v => new MacAddress((ulong)v & 0xFFFF_FFFF_FFFF)).Where(m => m != VmMac);
        Check.One(Runs, Prop.ForAll(Arb.From(foreignMacs), Seeds, (mac, seed) =>
        {
            var frame = Outbound(new Random(seed));
            if (frame.Length >= 12)
            {
                mac.Write(frame.AsSpan(6));
            }
            return !filter.Outbound(frame).IsAllowed;
        }));
    }

    [Fact]
    public void FramesWithAForeignIpv4SourceNeverPassOutbound()
    {
        var filter = new Filter(AllowEverythingConfig(dhcp: false));
        Check.One(Runs, Prop.ForAll(Arb.From(ArbMap.Default.GeneratorFor<uint>().Where(a => a != OwnV4)), ArbMap.Default.ArbFor<ushort>(), (source, port) =>
        {
            var ip = FrameBuilder.Ipv4(new IPAddress(BinaryPrimitives.ReverseEndianness(source)), PeerIp, IpProtocols.Udp, FrameBuilder.Udp(port, 67));
            var frame = FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Ipv4, ip);
            var arp = FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp,
                FrameBuilder.Arp(2, VmMac, new IPAddress(BinaryPrimitives.ReverseEndianness(source)), PeerMac, PeerIp));
            return !filter.Outbound(frame).IsAllowed && !filter.Outbound(arp).IsAllowed;
        }));
    }

    [Fact]
    public void FramesWithAForeignIpv6SourceNeverPassOutbound()
    {
        var filter = new Filter(AllowEverythingConfig(dhcp: true));
        var sources = Gen.ArrayOf(ArbMap.Default.GeneratorFor<byte>(), 16)
            .Select(b => new IPAddress(b))
            .Where(a => !a.Equals(VmIp6) && !a.Equals(VmLinkLocal) && !a.Equals(IPAddress.IPv6Any));
        Check.One(Runs, Prop.ForAll(Arb.From(sources), Seeds, (source, seed) =>
        {
            var rng = new Random(seed);
            byte protocol = new[] { IpProtocols.Udp, IpProtocols.Icmpv6, IpProtocols.Tcp }[rng.Next(3)];
            byte[] l4 = protocol switch
            {
                IpProtocols.Udp => FrameBuilder.Udp(546, 547),
                IpProtocols.Tcp => FrameBuilder.Tcp(1, 2),
                _ => FrameBuilder.Ndp((byte)(135 + rng.Next(2)), VmIp6, VmMac),
            };
            var frame = FrameBuilder.Ethernet(PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(source, PeerIp6, protocol, l4));
            return !filter.Outbound(frame).IsAllowed;
        }));
    }

    [Fact]
    public void AllowedInboundFramesAreAddressedToTheVm()
    {
        var filter = new Filter(AllowEverythingConfig(dhcp: false));
        Check.One(Runs, Prop.ForAll(Seeds, seed =>
        {
            var frame = Inbound(new Random(seed));
            if (!filter.Inbound(frame).IsAllowed)
            {
                return true;
            }
            var destination = MacAddress.Read(frame);
            if (!destination.IsMulticast && destination != VmMac)
            {
                return false;
            }
            if (MacAddress.Read(frame.AsSpan(6)) == VmMac)
            {
                return false;
            }
            var (offset, type) = Payload(frame);
            return type switch
            {
                EtherTypes.Arp => BinaryPrimitives.ReadUInt32BigEndian(frame.AsSpan(offset + 24)) == OwnV4,
                EtherTypes.Ipv4 => destination.IsMulticast || BinaryPrimitives.ReadUInt32BigEndian(frame.AsSpan(offset + 16)) == OwnV4,
                EtherTypes.Ipv6 => destination.IsMulticast || BinaryPrimitives.ReadUInt128BigEndian(frame.AsSpan(offset + 24)) is var d && (d == OwnV6 || d == OwnLinkLocal),
                _ => true,
            };
        }));
    }

    [Fact]
    public void RandomBytesNeverThrow()
    {
        var filters = new[]
        {
            new Filter(AllowEverythingConfig(dhcp: true)),
            new Filter(new FilterConfig { Mac = VmMac, Addresses = [VmIp], Rules = [new AllowRule { IpProtocol = IpProtocols.Tcp, DestinationPorts = new NumberRange(1, 1000) }], OutboundRate = new RateLimit(1000, 1_000_000) }),
        };
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(5000 * Scale), Prop.ForAll(ArbMap.Default.ArbFor<byte[]>(), bytes =>
        {
            FrameParser.Parse(bytes, out _);
            foreach (var f in filters)
            {
                f.Outbound(bytes);
                f.Inbound(bytes);
            }
            return true;
        }));
    }

    [Fact]
    public void MutatedFramesNeverThrowAndNeverReadPastTheirEnd()
    {
        var filter = new Filter(AllowEverythingConfig(dhcp: true));
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(5000 * Scale), Prop.ForAll(Seeds, seed =>
        {
            var rng = new Random(seed);
            var frame = rng.Next(2) == 0 ? Outbound(rng) : Inbound(rng);
            // Put the frame at the front of a larger buffer full of the VM's identity bytes: a parser
            // that read past the frame's end could then pick up "honest" values and let it through.
            var buffer = new byte[frame.Length + 128];
            frame.CopyTo(buffer, 0);
            for (int i = frame.Length; i + 6 <= buffer.Length; i += 6)
            {
                VmMac.Write(buffer.AsSpan(i));
            }
            var span = buffer.AsSpan(0, frame.Length);
            for (int cut = 0; cut <= frame.Length; cut += 1 + rng.Next(7))
            {
                var a = FrameParser.Parse(span[..cut], out var fa);
                var b = FrameParser.Parse(frame.AsSpan(0, cut), out var fb);
                if (a != b || !fa.Equals(fb))
                {
                    return false;
                }
                filter.Outbound(span[..cut]);
                filter.Inbound(span[..cut]);
            }
            return true;
        }));
    }

    /// <summary>The clean-traffic invariants, read straight from the bytes.</summary>
    private static bool CarriesOnlyOwnIdentity(byte[] frame, bool dhcp)
    {
        if (frame.Length < 14 || MacAddress.Read(frame.AsSpan(6)) != VmMac)
        {
            return false;
        }
        var (offset, type) = Payload(frame);
        var p = frame.AsSpan(offset);
        switch (type)
        {
            case EtherTypes.Arp:
                uint spa = BinaryPrimitives.ReadUInt32BigEndian(p[14..]);
                return MacAddress.Read(p[8..]) == VmMac && (spa == OwnV4 || (spa == 0 && p[7] == 1));
            case EtherTypes.Ipv4:
                uint source = BinaryPrimitives.ReadUInt32BigEndian(p[12..]);
                if (source == OwnV4)
                {
                    return true;
                }
                int ihl = (p[0] & 15) * 4;
                return dhcp && source == 0 && p[9] == IpProtocols.Udp
                    && BinaryPrimitives.ReadUInt16BigEndian(p[ihl..]) == 68 && BinaryPrimitives.ReadUInt16BigEndian(p[(ihl + 2)..]) == 67;
            case EtherTypes.Ipv6:
                var source6 = BinaryPrimitives.ReadUInt128BigEndian(p[8..]);
                if (source6 == OwnV6 || source6 == OwnLinkLocal)
                {
                    return true;
                }
                // :: only for DAD / router solicitation / MLDv2 report: find the ICMPv6 type past any extension headers.
                byte next = p[6];
                int at = 40;
                while (next is IpProtocols.HopByHop or IpProtocols.Ipv6Routing or IpProtocols.Ipv6DestinationOptions or IpProtocols.Ipv6Fragment)
                {
                    int length = next == IpProtocols.Ipv6Fragment ? 8 : (p[at + 1] + 1) * 8;
                    next = p[at];
                    at += length;
                }
                return source6 == 0 && next == IpProtocols.Icmpv6 && p[at] is 133 or 135 or 143;
            default:
                return true;
        }
    }
}
