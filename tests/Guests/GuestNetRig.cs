using System.Buffers.Binary;
using System.Net;
using System.Text;
using SecureVmm.NetFilter;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;
using SecureVmm.TestSupport;

namespace SecureVmm.Tests.Guests;

/// <summary>A frame port that keeps every frame the guest's NIC transmits (called on the VM's thread).</summary>
internal sealed class CapturingFramePort : IFramePort
{
    private readonly List<byte[]> _frames = [];

    public void Transmit(ReadOnlySpan<byte> frame)
    {
        lock (_frames)
        {
            _frames.Add(frame.ToArray());
        }
    }

    public byte[][] Frames
    {
        get
        {
            lock (_frames)
            {
                return [.. _frames];
            }
        }
    }
}

/// <summary>A UDP datagram taken apart by <see cref="GuestNetRig.ParseUdp"/>, with what was checked.</summary>
internal sealed record ParsedUdp(MacAddress Destination, MacAddress Source, IPAddress SourceIp, IPAddress DestinationIp,
    ushort SourcePort, ushort DestinationPort, byte[] Payload, bool Ipv4ChecksumOk, bool UdpChecksumOk, ushort UdpChecksum)
{
    public string Text => Encoding.ASCII.GetString(Payload);
}

/// <summary>One project guest running in a VirtualMachine with a virtio-net NIC whose frames are captured.</summary>
internal sealed class GuestNetRig : IDisposable
{
    public static readonly MacAddress GuestMac = new(0x5254_0012_3456);

    public readonly BufferSerialOutput Serial = new();
    public readonly CapturingFramePort Port = new();
    public readonly VirtualMachine Vm;

    public GuestNetRig(GuestImage image, bool withNic = true, ClockMode clock = ClockMode.Deterministic)
    {
        byte[] mac = new byte[6];
        GuestMac.Write(mac);
        Vm = new VirtualMachine(new MachineConfig
        {
            Name = image.Name,
            MemoryBytes = 16L * 1024 * 1024,
            Clock = clock,
            Serial = Serial,
            NicMac = withNic ? mac : null,
        });
        if (Vm.Nic is not null)
        {
            Vm.Nic.Network = Port;
        }
        Vm.Boot(MultibootLoader.Load(Vm.Ram, image.Bytes, ""));
        Vm.Start();
    }

    public string Text => Serial.Text;

    /// <summary>Waits (bounded) until the condition holds or the VM stopped; returns whether it holds.</summary>
    public bool WaitFor(Func<bool> condition, int seconds = 30)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition() && DateTime.UtcNow < deadline && Vm.IsRunning)
        {
            Thread.Sleep(5);
        }
        return condition();
    }

    public bool WaitForText(string text, int seconds = 30) => WaitFor(() => Text.Contains(text, StringComparison.Ordinal), seconds);

    /// <summary>Occurrences of <paramref name="text"/> on the serial console.</summary>
    public int Count(string text)
    {
        string all = Text;
        int n = 0;
        for (int at = all.IndexOf(text, StringComparison.Ordinal); at >= 0; at = all.IndexOf(text, at + text.Length, StringComparison.Ordinal))
        {
            n++;
        }
        return n;
    }

    public ParsedUdp[] Datagrams => [.. Port.Frames.Select(ParseUdp).OfType<ParsedUdp>()];

    /// <summary>A UDP datagram from the peer to the guest, as a network would deliver it (unicast to the guest's MAC).</summary>
    public static byte[] UdpTo(GuestNetwork net, string payload, ushort? destinationPort = null, IPAddress? destination = null) =>
        UdpTo(net, Encoding.ASCII.GetBytes(payload), destinationPort, destination);

    public static byte[] UdpTo(GuestNetwork net, byte[] payload, ushort? destinationPort = null, IPAddress? destination = null) =>
        FrameBuilder.Ethernet(GuestMac, PeerMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(net.Peer, destination ?? net.Address, IpProtocols.Udp,
                FrameBuilder.Udp(net.Port, destinationPort ?? net.Port, payload)));

    public static readonly MacAddress PeerMac = new(0x5254_00BB_0002);

    /// <summary>Parses Ethernet II / IPv4 / UDP strictly; null when the frame is anything else.</summary>
    public static ParsedUdp? ParseUdp(byte[] frame)
    {
        if (frame.Length < 42 || BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)) != EtherTypes.Ipv4)
        {
            return null;
        }
        ReadOnlySpan<byte> ip = frame.AsSpan(14);
        int ihl = (ip[0] & 0x0F) * 4;
        if (ip[0] >> 4 != 4 || ihl < 20 || ip[9] != IpProtocols.Udp)
        {
            return null;
        }
        int total = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        if (total > ip.Length || total < ihl + 8)
        {
            return null;
        }
        bool ipOk = FrameBuilder.Checksum(ip[..ihl], 0) == 0;
        ReadOnlySpan<byte> udp = ip[ihl..total];
        int udpLength = BinaryPrimitives.ReadUInt16BigEndian(udp[4..]);
        if (udpLength != udp.Length)
        {
            return null;
        }
        ushort udpSum = BinaryPrimitives.ReadUInt16BigEndian(udp[6..]);
        uint pseudo = 0;
        for (int i = 12; i < 20; i += 2)
        {
            pseudo += BinaryPrimitives.ReadUInt16BigEndian(ip[i..]);
        }
        pseudo += IpProtocols.Udp + (uint)udpLength;
        bool udpOk = udpSum == 0 || FrameBuilder.Checksum(udp, pseudo) == 0;
        return new ParsedUdp(MacAddress.Read(frame), MacAddress.Read(frame.AsSpan(6)),
            new IPAddress(ip.Slice(12, 4)), new IPAddress(ip.Slice(16, 4)),
            BinaryPrimitives.ReadUInt16BigEndian(udp), BinaryPrimitives.ReadUInt16BigEndian(udp[2..]),
            udp[8..].ToArray(), ipOk, udpOk, udpSum);
    }

    /// <summary>The demo policy's filter for a guest's network: anti-spoofing on the NIC's MAC and the guest's
    /// address, UDP on the port both ways, broadcast allowed outbound, and ARP.</summary>
    public static Filter DemoFilter(GuestNetwork net) => new(new FilterConfig
    {
        Mac = GuestMac,
        Addresses = [net.Address],
        Rules =
        [
            AllowRule.Arp(),
            new AllowRule
            {
                Name = "udp-out", Direction = TrafficDirection.Outbound, IpProtocol = IpProtocols.Udp,
                DestinationPorts = NumberRange.Single(net.Port), LinkDestinations = LinkDestinations.Unicast | LinkDestinations.Broadcast,
            },
            new AllowRule { Name = "udp-in", Direction = TrafficDirection.Inbound, IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(net.Port) },
        ],
    });

    public void Dispose()
    {
        Vm.RequestStop();
        Vm.WaitForExit(TimeSpan.FromSeconds(10));
        Vm.Dispose();
    }
}
