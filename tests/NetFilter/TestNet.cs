using SecureVmm.TestSupport;
using System.Net;
using SecureVmm.NetFilter;

namespace SecureVmm.Tests.NetFilter;

/// <summary>The VM and its neighbours used throughout the filter tests (documentation ranges, RFC 5737 / RFC 3849).</summary>
internal static class TestNet
{
    public static readonly MacAddress VmMac = new(0x525400AA0001);
    public static readonly MacAddress PeerMac = new(0x525400BB0002);
    public static readonly MacAddress OtherMac = new(0x525400CC0003);
    public static readonly IPAddress VmIp = IPAddress.Parse("192.0.2.10");
    public static readonly IPAddress PeerIp = IPAddress.Parse("192.0.2.1");
    public static readonly IPAddress OtherIp = IPAddress.Parse("192.0.2.99");
    public static readonly IPAddress VmIp6 = IPAddress.Parse("2001:db8::10");
    public static readonly IPAddress PeerIp6 = IPAddress.Parse("2001:db8::1");
    public static readonly IPAddress VmLinkLocal = IpAddressBits.ToIpAddress(IpFamily.V6, IpAddressBits.Ipv6LinkLocalFromMac(VmMac));

    public static FilterConfig Config(params AllowRule[] rules) => new()
    {
        Mac = VmMac,
        Addresses = [VmIp, VmIp6],
        Rules = rules,
    };

    public static AllowRule AllowAll => new() { Name = "all", LinkDestinations = LinkDestinations.Any };

    public static byte[] Out4(byte protocol, byte[] l4, IPAddress? source = null, IPAddress? destination = null, MacAddress? sourceMac = null) =>
        FrameBuilder.Ethernet(PeerMac, sourceMac ?? VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(source ?? VmIp, destination ?? PeerIp, protocol, l4));

    public static byte[] In4(byte protocol, byte[] l4, IPAddress? source = null, IPAddress? destination = null, MacAddress? destinationMac = null) =>
        FrameBuilder.Ethernet(destinationMac ?? VmMac, PeerMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(source ?? PeerIp, destination ?? VmIp, protocol, l4));

    public static byte[] Out6(byte protocol, byte[] l4, IPAddress? source = null, IPAddress? destination = null, MacAddress? destinationMac = null) =>
        FrameBuilder.Ethernet(destinationMac ?? PeerMac, VmMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(source ?? VmIp6, destination ?? PeerIp6, protocol, l4));

    public static byte[] In6(byte protocol, byte[] l4, IPAddress? source = null, IPAddress? destination = null) =>
        FrameBuilder.Ethernet(VmMac, PeerMac, EtherTypes.Ipv6, FrameBuilder.Ipv6(source ?? PeerIp6, destination ?? VmIp6, protocol, l4));
}
