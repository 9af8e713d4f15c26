using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using SecureVmm.Appliance.Network;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Guests;

/// <summary>
/// The demo pair in miniature, in real time: the kiosk and the interactive guest each joined to its own
/// network through a NicAttachment (filter with anti-spoofing) and a UDP backend, the way the appliance
/// wires a policy's networks. Each guest's datagrams arrive on its own network only, and a datagram
/// from the interactive guest's network reaches its console.
/// </summary>
public class GuestNetAttachmentTests(ITestOutputHelper output)
{
    private static readonly MacAddress KioskMac = new(0x5254_0010_0010);
    private static readonly MacAddress InteractiveMac = new(0x5254_0020_0010);

    /// <summary>The rules the demo policy needs for a project guest: ARP, and UDP on the guest's port,
    /// broadcast destinations allowed outbound (the guests send to ff:ff:ff:ff:ff:ff).</summary>
    private static FilterConfig DemoConfig(MacAddress mac, GuestNetwork net) => new()
    {
        Mac = mac,
        Addresses = [net.Address],
        Rules =
        [
            AllowRule.Arp(),
            new AllowRule
            {
                Name = "guest-udp-out", Direction = TrafficDirection.Outbound, IpProtocol = IpProtocols.Udp,
                Destination = IpPrefix.Host(net.Peer),
                DestinationPorts = NumberRange.Single(net.Port), LinkDestinations = LinkDestinations.Unicast | LinkDestinations.Broadcast,
            },
            new AllowRule
            {
                Name = "guest-udp-in", Direction = TrafficDirection.Inbound, IpProtocol = IpProtocols.Udp,
                Source = IpPrefix.Host(net.Peer), DestinationPorts = NumberRange.Single(net.Port),
            },
        ],
    };

    private sealed class Guest : IDisposable
    {
        public readonly BufferSerialOutput Serial = new();
        public readonly VirtualMachine Vm;
        public readonly NicAttachment Attachment;
        public readonly UdpClient Wire; // the other end of the network's UDP backend

        public Guest(GuestImage image, MacAddress mac, FilterConfig config)
        {
            byte[] macBytes = new byte[6];
            mac.Write(macBytes);
            Vm = new VirtualMachine(new MachineConfig
            {
                Name = image.Name,
                MemoryBytes = 16L * 1024 * 1024,
                Clock = ClockMode.Realtime,
                Serial = Serial,
                NicMac = macBytes,
            });
            Wire = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
            var backend = new UdpBackend(new IPEndPoint(IPAddress.Loopback, 0), (IPEndPoint)Wire.Client.LocalEndPoint!);
            Attachment = new NicAttachment(Vm.Nic!, image.Name, config, backend);
            Attachment.Start();
            Wire.Connect(backend.Local);
            Vm.Boot(MultibootLoader.Load(Vm.Ram, image.Bytes, ""));
            Vm.Start();
        }

        public bool WaitForText(string text, int seconds = 30)
        {
            var clock = Stopwatch.StartNew();
            while (!Serial.Text.Contains(text, StringComparison.Ordinal) && clock.Elapsed.TotalSeconds < seconds && Vm.IsRunning)
            {
                Thread.Sleep(10);
            }
            return Serial.Text.Contains(text, StringComparison.Ordinal);
        }

        /// <summary>Every frame that arrived on this network's wire within <paramref name="wait"/>.</summary>
        public List<byte[]> Drain(TimeSpan wait)
        {
            var frames = new List<byte[]>();
            var clock = Stopwatch.StartNew();
            Wire.Client.ReceiveTimeout = 100;
            while (clock.Elapsed < wait)
            {
                try
                {
                    var from = new IPEndPoint(IPAddress.Any, 0);
                    frames.Add(Wire.Receive(ref from));
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
                {
                    // nothing this time
                }
            }
            return frames;
        }

        public void Dispose()
        {
            Vm.RequestStop();
            Vm.WaitForExit(TimeSpan.FromSeconds(10));
            Attachment.Dispose();
            Vm.Dispose();
            Wire.Dispose();
        }
    }

    [Fact]
    public void EachGuestTalksOnItsOwnNetworkOnly()
    {
        var kioskNet = GuestNetwork.KioskDefault;
        var interactiveNet = GuestNetwork.InteractiveDefault;
        using var kiosk = new Guest(ProjectGuests.Build("kiosk")!, KioskMac, DemoConfig(KioskMac, kioskNet));
        using var interactive = new Guest(ProjectGuests.Build("interactive")!, InteractiveMac, DemoConfig(InteractiveMac, interactiveNet));

        Assert.True(interactive.WaitForText("unclass> "), interactive.Serial.Text);
        interactive.Vm.Serial.EnqueueInput("from the unclassified side\r"u8);
        byte[] inbound = SecureVmm.TestSupport.FrameBuilder.Ethernet(InteractiveMac, GuestNetRig.PeerMac, EtherTypes.Ipv4,
            SecureVmm.TestSupport.FrameBuilder.Ipv4(interactiveNet.Peer, interactiveNet.Address, IpProtocols.Udp,
                SecureVmm.TestSupport.FrameBuilder.Udp(7000, 7000, "hello unclassified"u8)));
        interactive.Wire.Send(inbound, inbound.Length);
        Assert.True(kiosk.WaitForText("kiosk: uptime 2 s"), kiosk.Serial.Text);
        Assert.True(interactive.WaitForText("net: hello unclassified"), interactive.Serial.Text);

        var kioskFrames = kiosk.Drain(TimeSpan.FromMilliseconds(500)).Select(f => GuestNetRig.ParseUdp(f)!).ToList();
        var interactiveFrames = interactive.Drain(TimeSpan.FromMilliseconds(200)).Select(f => GuestNetRig.ParseUdp(f)!).ToList();
        output.WriteLine(kiosk.Serial.Text);
        output.WriteLine(interactive.Serial.Text);
        foreach (var d in kioskFrames)
        {
            output.WriteLine($"kiosk network: {d.Source} {d.SourceIp}:{d.SourcePort} -> {d.DestinationIp}:{d.DestinationPort} \"{d.Text}\"");
        }
        foreach (var d in interactiveFrames)
        {
            output.WriteLine($"interactive network: {d.Source} {d.SourceIp}:{d.SourcePort} -> {d.DestinationIp}:{d.DestinationPort} \"{d.Text}\"");
        }
        Assert.Contains(kioskFrames, d => d is not null && d.Text == "SECRET kiosk uptime 1 s");
        Assert.Contains(kioskFrames, d => d is not null && d.Text == "SECRET kiosk uptime 2 s");
        Assert.All(kioskFrames, d => Assert.True(d is not null && d.Source == KioskMac && d.Text.StartsWith("SECRET kiosk uptime ", StringComparison.Ordinal)));
        var typed = Assert.Single(interactiveFrames);
        Assert.Equal("unclass: from the unclassified side", typed.Text);
        Assert.Equal(InteractiveMac, typed.Source);
        // Nothing was dropped: both guests only ever sent what their filters allow.
        Assert.Equal(0, kiosk.Attachment.Filter.ReadCounters().DroppedFrames(FrameDirection.Outbound));
        Assert.Equal(0, interactive.Attachment.Filter.ReadCounters().DroppedFrames(FrameDirection.Outbound));
        Assert.Equal(0, interactive.Attachment.Filter.ReadCounters().DroppedFrames(FrameDirection.Inbound));
    }
}
