using System.Buffers.Binary;
using System.Net;
using SecureVmm.NetFilter;

// Shared by the tests and verification projects (verification links this file).
namespace SecureVmm.TestSupport;

/// <summary>
/// Builds well-formed Ethernet frames for tests, with correct IPv4 header, ICMP, UDP/TCP and
/// ICMPv6 checksums (RFC 1071; RFC 8200 section 8.1 pseudo-header) so a real kernel accepts them.
/// </summary>
public static class FrameBuilder
{
    public static byte[] Ethernet(MacAddress destination, MacAddress source, ushort etherType, ReadOnlySpan<byte> payload, int? vlan = null)
    {
        int header = vlan is null ? 14 : 18;
        var frame = new byte[header + payload.Length];
        destination.Write(frame);
        source.Write(frame.AsSpan(6));
        if (vlan is { } id)
        {
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), EtherTypes.Vlan);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(14), (ushort)id);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(16), etherType);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), etherType);
        }
        payload.CopyTo(frame.AsSpan(header));
        return frame;
    }

    public static byte[] Arp(ushort operation, MacAddress senderMac, IPAddress senderIp, MacAddress targetMac, IPAddress targetIp)
    {
        var arp = new byte[28];
        BinaryPrimitives.WriteUInt16BigEndian(arp, 1);
        BinaryPrimitives.WriteUInt16BigEndian(arp.AsSpan(2), EtherTypes.Ipv4);
        arp[4] = 6;
        arp[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(arp.AsSpan(6), operation);
        senderMac.Write(arp.AsSpan(8));
        senderIp.TryWriteBytes(arp.AsSpan(14), out _);
        targetMac.Write(arp.AsSpan(18));
        targetIp.TryWriteBytes(arp.AsSpan(24), out _);
        return arp;
    }

    public static byte[] Ipv4(IPAddress source, IPAddress destination, byte protocol, ReadOnlySpan<byte> payload, int fragmentOffset = 0, bool moreFragments = false, int optionWords = 0, ushort id = 0x1234)
    {
        int headerLength = 20 + (optionWords * 4);
        var ip = new byte[headerLength + payload.Length];
        ip[0] = (byte)(0x40 | (headerLength / 4));
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(2), (ushort)ip.Length);
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(6), (ushort)((moreFragments ? 0x2000 : 0) | fragmentOffset));
        ip[8] = 64;
        ip[9] = protocol;
        source.TryWriteBytes(ip.AsSpan(12), out _);
        destination.TryWriteBytes(ip.AsSpan(16), out _);
        for (int i = 20; i < headerLength; i++)
        {
            ip[i] = 1; // NOP options (RFC 791)
        }
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(10), Checksum(ip.AsSpan(0, headerLength), 0));
        payload.CopyTo(ip.AsSpan(headerLength));
        if (fragmentOffset == 0 && !moreFragments)
        {
            FillTransportChecksum(ip.AsSpan(headerLength), protocol, PseudoHeader4(source, destination, protocol, payload.Length));
        }
        return ip;
    }

    /// <summary>IPv6 with optional extension headers given as (type, bytes without next-header) pairs already sized.</summary>
    public static byte[] Ipv6(IPAddress source, IPAddress destination, byte nextHeader, ReadOnlySpan<byte> payload, params (byte Type, byte[] Body)[] extensions)
    {
        int extLength = extensions.Sum(e => e.Body.Length);
        var ip = new byte[40 + extLength + payload.Length];
        ip[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(4), (ushort)(extLength + payload.Length));
        ip[6] = extensions.Length > 0 ? extensions[0].Type : nextHeader;
        ip[7] = 255;
        source.TryWriteBytes(ip.AsSpan(8), out _);
        destination.TryWriteBytes(ip.AsSpan(24), out _);
        int at = 40;
        for (int i = 0; i < extensions.Length; i++)
        {
            var body = extensions[i].Body;
            body.CopyTo(ip.AsSpan(at));
            ip[at] = i + 1 < extensions.Length ? extensions[i + 1].Type : nextHeader;
            at += body.Length;
        }
        payload.CopyTo(ip.AsSpan(at));
        FillTransportChecksum(ip.AsSpan(at), nextHeader, PseudoHeader6(source, destination, nextHeader, payload.Length));
        return ip;
    }

    /// <summary>A Hop-by-Hop / Routing / Destination Options header of 8 bytes (length field 0, PadN inside).</summary>
    public static (byte, byte[]) Options8(byte type) => (type, [0, 0, 1, 4, 0, 0, 0, 0]);

    public static (byte, byte[]) Fragment6(int offsetUnits, bool more) =>
        (IpProtocols.Ipv6Fragment, [0, 0, (byte)(offsetUnits >> 5), (byte)((offsetUnits << 3) | (more ? 1 : 0)), 0, 0, 0, 1]);

    public static byte[] Udp(ushort sourcePort, ushort destinationPort, ReadOnlySpan<byte> data = default)
    {
        var udp = new byte[8 + data.Length];
        BinaryPrimitives.WriteUInt16BigEndian(udp, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(2), destinationPort);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(4), (ushort)udp.Length);
        data.CopyTo(udp.AsSpan(8));
        return udp;
    }

    public static byte[] Tcp(ushort sourcePort, ushort destinationPort, byte flags = 0x02)
    {
        var tcp = new byte[20];
        BinaryPrimitives.WriteUInt16BigEndian(tcp, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(2), destinationPort);
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(14), 65535);
        return tcp;
    }

    public static byte[] Icmp(byte type, byte code, ReadOnlySpan<byte> rest = default)
    {
        var icmp = new byte[8 + rest.Length];
        icmp[0] = type;
        icmp[1] = code;
        rest.CopyTo(icmp.AsSpan(8));
        return icmp;
    }

    public static byte[] EchoRequest(ushort id, ushort sequence, int dataBytes = 32)
    {
        var icmp = Icmp(8, 0, Enumerable.Range(0, dataBytes).Select(i => (byte)i).ToArray());
        BinaryPrimitives.WriteUInt16BigEndian(icmp.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(icmp.AsSpan(6), sequence);
        return icmp;
    }

    /// <summary>Neighbour solicitation / advertisement (RFC 4861 4.3, 4.4) with an optional link-layer option.</summary>
    public static byte[] Ndp(byte type, IPAddress target, MacAddress? linkLayer, byte optionType = 0)
    {
        var msg = new byte[24 + (linkLayer is null ? 0 : 8)];
        msg[0] = type;
        target.TryWriteBytes(msg.AsSpan(8), out _);
        if (linkLayer is { } mac)
        {
            msg[24] = optionType != 0 ? optionType : (byte)(type == Icmpv6Types.NeighborAdvertisement ? 2 : 1);
            msg[25] = 1;
            mac.Write(msg.AsSpan(26));
        }
        return msg;
    }

    public static ushort Checksum(ReadOnlySpan<byte> data, uint initial)
    {
        uint sum = initial;
        int i = 0;
        for (; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }
        if (i < data.Length)
        {
            sum += (uint)(data[i] << 8);
        }
        while (sum >> 16 != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        return (ushort)~sum;
    }

    private static uint PseudoHeader4(IPAddress source, IPAddress destination, byte protocol, int length)
    {
        Span<byte> b = stackalloc byte[8];
        source.TryWriteBytes(b, out _);
        destination.TryWriteBytes(b[4..], out _);
        uint sum = 0;
        for (int i = 0; i < 8; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(b[i..]);
        }
        return sum + protocol + (uint)length;
    }

    private static uint PseudoHeader6(IPAddress source, IPAddress destination, byte protocol, int length)
    {
        Span<byte> b = stackalloc byte[32];
        source.TryWriteBytes(b, out _);
        destination.TryWriteBytes(b[16..], out _);
        uint sum = 0;
        for (int i = 0; i < 32; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(b[i..]);
        }
        return sum + protocol + (uint)length;
    }

    private static void FillTransportChecksum(Span<byte> l4, byte protocol, uint pseudo)
    {
        switch (protocol)
        {
            case IpProtocols.Icmp when l4.Length >= 4:
                l4[2] = l4[3] = 0;
                BinaryPrimitives.WriteUInt16BigEndian(l4[2..], Checksum(l4, 0));
                break;
            case IpProtocols.Icmpv6 when l4.Length >= 4:
                l4[2] = l4[3] = 0;
                BinaryPrimitives.WriteUInt16BigEndian(l4[2..], Checksum(l4, pseudo));
                break;
            case IpProtocols.Udp when l4.Length >= 8:
                l4[6] = l4[7] = 0;
                ushort udp = Checksum(l4, pseudo);
                BinaryPrimitives.WriteUInt16BigEndian(l4[6..], udp == 0 ? (ushort)0xFFFF : udp);
                break;
            case IpProtocols.Tcp when l4.Length >= 20:
                l4[16] = l4[17] = 0;
                BinaryPrimitives.WriteUInt16BigEndian(l4[16..], Checksum(l4, pseudo));
                break;
        }
    }
}

/// <summary>A clock the test moves by hand (for rate limits and drop sampling).</summary>
public sealed class ManualTimeProvider : TimeProvider
{
    public const long Frequency = 1_000_000_000;

    private long _ticks = 1_000 * Frequency;

    public override long TimestampFrequency => Frequency;

    public override long GetTimestamp() => Interlocked.Read(ref _ticks);

    public override DateTimeOffset GetUtcNow() =>
        new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero).AddTicks(Interlocked.Read(ref _ticks) / 100);

    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, (long)(by.TotalSeconds * Frequency));
}
