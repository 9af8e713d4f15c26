using System.Buffers.Binary;
using System.Net;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.NetFilter;
using SecureVmm.Policy.Guests;
using SecureVmm.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Guests;

/// <summary>
/// The project guests on their NICs: the kiosk's uptime datagrams and the interactive guest's typed
/// lines leave as well-formed Ethernet/IPv4/UDP frames from the NIC's MAC that the filter's
/// anti-spoofing lets through; datagrams delivered to the interactive guest show up on its console;
/// malformed, oversized and foreign frames are ignored without breaking the guest.
/// </summary>
public class GuestNetTests(ITestOutputHelper output)
{
    private static readonly GuestNetwork Kiosk = GuestNetwork.KioskDefault;
    private static readonly GuestNetwork Interactive = GuestNetwork.InteractiveDefault;

    [Fact]
    public void DefaultsAreTheDemoPolicysAddresses()
    {
        Assert.Equal(IPAddress.Parse("10.1.0.10"), Kiosk.Address);
        Assert.Equal(IPAddress.Parse("10.1.0.1"), Kiosk.Peer);
        Assert.Equal(7000, Kiosk.Port);
        Assert.Equal(IPAddress.Parse("10.2.0.10"), Interactive.Address);
        Assert.Equal(IPAddress.Parse("10.2.0.1"), Interactive.Peer);
        Assert.Equal(7000, Interactive.Port);
    }

    [Fact]
    public void ImagesAreDeterministicAndCarryTheirParameters()
    {
        Assert.Equal(ProjectGuests.Build("kiosk")!.Bytes, ProjectGuests.Kiosk("SECRET KIOSK", 0x4F, Kiosk, "SECRET kiosk").Bytes);
        Assert.Equal(ProjectGuests.Build("interactive")!.Bytes, ProjectGuests.Interactive("unclass> ", Interactive, "unclass").Bytes);
        var other = new GuestNetwork(IPAddress.Parse("10.9.0.10"), IPAddress.Parse("10.9.0.1"), 7001);
        Assert.NotEqual(ProjectGuests.Build("kiosk")!.Bytes, ProjectGuests.Kiosk("SECRET KIOSK", 0x4F, other).Bytes);
        Assert.Equal(ProjectGuests.Kiosk("SECRET KIOSK", 0x4F, other).Bytes, ProjectGuests.Kiosk("SECRET KIOSK", 0x4F, other).Bytes);
        var v6 = new GuestNetwork(IPAddress.Parse("2001:db8::1"), IPAddress.Parse("10.9.0.1"), 7000);
        var e = Assert.Throws<ArgumentException>(() => ProjectGuests.Kiosk("K", 0x1F, v6));
        Assert.Contains("GuestNetwork.Address", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void KioskSendsOneUptimeDatagramPerSecondThatPassesTheFilter()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("kiosk")!);
        Assert.True(rig.WaitFor(() => rig.Datagrams.Length >= 3), "no three datagrams:\n" + rig.Text);
        Assert.True(rig.WaitForText("kiosk: uptime 3 s"));
        output.WriteLine(rig.Text);
        Assert.Equal(1, rig.Count("net: up, mac 52:54:00:12:34:56 ip 10.1.0.10"));
        Assert.DoesNotContain("no virtio-net", rig.Text, StringComparison.Ordinal);

        var filter = GuestNetRig.DemoFilter(Kiosk);
        var datagrams = rig.Datagrams;
        Assert.Equal(rig.Port.Frames.Length, datagrams.Length); // nothing but UDP was sent
        for (int i = 0; i < 3; i++)
        {
            ParsedUdp d = datagrams[i];
            Assert.Equal($"SECRET kiosk uptime {i + 1} s", d.Text);
            Assert.Equal(GuestNetRig.GuestMac, d.Source);
            Assert.Equal(MacAddress.Broadcast, d.Destination);
            Assert.Equal(Kiosk.Address, d.SourceIp);
            Assert.Equal(Kiosk.Peer, d.DestinationIp);
            Assert.Equal(7000, d.SourcePort);
            Assert.Equal(7000, d.DestinationPort);
            Assert.True(d.Ipv4ChecksumOk, "IPv4 header checksum");
            Assert.NotEqual(0, d.UdpChecksum);
            Assert.True(d.UdpChecksumOk, "UDP checksum");
            Verdict verdict = filter.Outbound(rig.Port.Frames[i]);
            Assert.True(verdict.IsAllowed, verdict.ToString());
        }
        // Identification counts up; the header is the fixed one documented in GuestNet.
        byte[] first = rig.Port.Frames[0], second = rig.Port.Frames[1];
        Assert.Equal(0x45, first[14]);
        Assert.Equal(64, first[22]);
        Assert.Equal(0x4000, BinaryPrimitives.ReadUInt16BigEndian(first.AsSpan(20)));
        Assert.Equal(BinaryPrimitives.ReadUInt16BigEndian(first.AsSpan(18)) + 1, BinaryPrimitives.ReadUInt16BigEndian(second.AsSpan(18)));

        // The screen counts what was sent.
        var screen = rig.Vm.Vga.Snapshot();
        Assert.Contains("frames sent:", screen.Text, StringComparison.Ordinal);
        Assert.Contains("network: 10.1.0.10 -> 10.1.0.1 udp 7000", screen.Text, StringComparison.Ordinal);
        string row = screen.Text.Split('\n')[8];
        long shownCount = long.Parse(row[(row.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(shownCount, 3, rig.Port.Frames.Length);
    }

    [Fact]
    public void AFilterForAnotherMacOrAddressDropsTheKiosksFrames()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("kiosk")!);
        Assert.True(rig.WaitFor(() => rig.Datagrams.Length >= 1), rig.Text);
        byte[] frame = rig.Port.Frames[0];
        var otherMac = new Filter(new FilterConfig { Mac = new MacAddress(0x5254_0000_0001), Addresses = [Kiosk.Address], Rules = [new AllowRule { LinkDestinations = LinkDestinations.Any }] });
        Assert.Equal(DropReason.SpoofedSourceMac, otherMac.Outbound(frame).Reason);
        var otherIp = new Filter(new FilterConfig { Mac = GuestNetRig.GuestMac, Addresses = [Interactive.Address], Rules = [new AllowRule { LinkDestinations = LinkDestinations.Any }] });
        Assert.Equal(DropReason.SpoofedSourceIp, otherIp.Outbound(frame).Reason);
    }

    [Fact]
    public void InteractivePrintsReceivedDatagramsAndSendsTypedLines()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        Assert.Contains("net: up, mac 52:54:00:12:34:56 ip 10.2.0.10", rig.Text, StringComparison.Ordinal);

        byte[] inbound = GuestNetRig.UdpTo(Interactive, "hello from the gateway");
        Assert.True(GuestNetRig.DemoFilter(Interactive).Inbound(inbound).IsAllowed);
        Assert.True(rig.Vm.Nic!.Deliver(inbound));
        Assert.True(rig.WaitForText("net: hello from the gateway\r\nunclass> "), rig.Text);

        rig.Vm.Serial.EnqueueInput("secret plans\r"u8);
        Assert.True(rig.WaitFor(() => rig.Datagrams.Length >= 1), rig.Text);
        Assert.True(rig.WaitForText("you typed: secret plans"));
        ParsedUdp d = Assert.Single(rig.Datagrams);
        Assert.Equal("unclass: secret plans", d.Text);
        Assert.Equal(GuestNetRig.GuestMac, d.Source);
        Assert.Equal(Interactive.Address, d.SourceIp);
        Assert.Equal(Interactive.Peer, d.DestinationIp);
        Assert.Equal(7000, d.SourcePort);
        Assert.Equal(7000, d.DestinationPort);
        Assert.True(d.Ipv4ChecksumOk && d.UdpChecksumOk);
        Assert.True(GuestNetRig.DemoFilter(Interactive).Outbound(rig.Port.Frames[0]).IsAllowed);

        // An empty line sends nothing; a partly typed line survives an arriving datagram.
        rig.Vm.Serial.EnqueueInput("\r"u8);
        Assert.True(rig.WaitFor(() => rig.Count("unclass> ") >= 4), rig.Text);
        rig.Vm.Serial.EnqueueInput("half"u8);
        Assert.True(rig.WaitForText("unclass> half"));
        rig.Vm.Nic.Deliver(GuestNetRig.UdpTo(Interactive, "interrupting"));
        Assert.True(rig.WaitForText("net: interrupting\r\nunclass> half"), rig.Text);
        rig.Vm.Serial.EnqueueInput(" done\r"u8);
        Assert.True(rig.WaitFor(() => rig.Datagrams.Length >= 2), rig.Text);
        Assert.Equal("unclass: half done", rig.Datagrams[1].Text);
        output.WriteLine(rig.Text);
    }

    [Fact]
    public void InteractiveAnswersArpForItsOwnAddressOnly()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        var nic = rig.Vm.Nic!;
        // A request for another address first: no answer.
        nic.Deliver(FrameBuilder.Ethernet(MacAddress.Broadcast, GuestNetRig.PeerMac, EtherTypes.Arp,
            FrameBuilder.Arp(1, GuestNetRig.PeerMac, Interactive.Peer, default, IPAddress.Parse("10.2.0.99"))));
        nic.Deliver(FrameBuilder.Ethernet(MacAddress.Broadcast, GuestNetRig.PeerMac, EtherTypes.Arp,
            FrameBuilder.Arp(1, GuestNetRig.PeerMac, Interactive.Peer, default, Interactive.Address)));
        Assert.True(rig.WaitFor(() => rig.Port.Frames.Length >= 1), rig.Text);
        Thread.Sleep(100);
        byte[] reply = Assert.Single(rig.Port.Frames);
        byte[] expected = FrameBuilder.Ethernet(GuestNetRig.PeerMac, GuestNetRig.GuestMac, EtherTypes.Arp,
            FrameBuilder.Arp(2, GuestNetRig.GuestMac, Interactive.Address, GuestNetRig.PeerMac, Interactive.Peer));
        Assert.Equal(expected, reply);
        Assert.True(GuestNetRig.DemoFilter(Interactive).Outbound(reply).IsAllowed);
    }

    /// <summary>Frames the guest must ignore, each with why.</summary>
    private static IEnumerable<(string Why, byte[] Frame)> BadFrames()
    {
        byte[] good = GuestNetRig.UdpTo(Interactive, "BAD");
        byte[] Mutate(Action<byte[]> change)
        {
            byte[] f = (byte[])good.Clone();
            change(f);
            return f;
        }
        yield return ("truncated Ethernet", good[..13]);
        yield return ("truncated IPv4", good[..30]);
        yield return ("truncated UDP", Mutate(f => { }).AsSpan(0, 38).ToArray());
        yield return ("another MAC", Mutate(f => new MacAddress(0x5254_0000_9999).Write(f)));
        yield return ("another EtherType", Mutate(f => { f[12] = 0x86; f[13] = 0xDD; }));
        yield return ("IP version 6 in an IPv4 EtherType", Mutate(f => f[14] = 0x65));
        yield return ("IHL 4", Mutate(f => f[14] = 0x44));
        yield return ("total length past the frame", Mutate(f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 200)));
        yield return ("bad IPv4 checksum", Mutate(f => f[24] ^= 0x55));
        yield return ("bad UDP checksum", Mutate(f => f[40] ^= 0x55));
        yield return ("UDP length past the IP payload", Mutate(f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(38), 100)));
        yield return ("another port", GuestNetRig.UdpTo(Interactive, "BAD", destinationPort: 7001));
        yield return ("another address", GuestNetRig.UdpTo(Interactive, "BAD", destination: IPAddress.Parse("10.2.0.11")));
        yield return ("TCP", FrameBuilder.Ethernet(GuestNetRig.GuestMac, GuestNetRig.PeerMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(Interactive.Peer, Interactive.Address, IpProtocols.Tcp, FrameBuilder.Tcp(7000, 7000))));
        yield return ("ICMP", FrameBuilder.Ethernet(GuestNetRig.GuestMac, GuestNetRig.PeerMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(Interactive.Peer, Interactive.Address, IpProtocols.Icmp, FrameBuilder.EchoRequest(1, 1))));
        yield return ("first fragment", FrameBuilder.Ethernet(GuestNetRig.GuestMac, GuestNetRig.PeerMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(Interactive.Peer, Interactive.Address, IpProtocols.Udp, FrameBuilder.Udp(7000, 7000, "BAD"u8), moreFragments: true)));
        yield return ("later fragment", FrameBuilder.Ethernet(GuestNetRig.GuestMac, GuestNetRig.PeerMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(Interactive.Peer, Interactive.Address, IpProtocols.Udp, FrameBuilder.Udp(7000, 7000, "BAD"u8), fragmentOffset: 8)));
        yield return ("ARP reply (not a request)", FrameBuilder.Ethernet(GuestNetRig.GuestMac, GuestNetRig.PeerMac, EtherTypes.Arp,
            FrameBuilder.Arp(2, GuestNetRig.PeerMac, Interactive.Peer, GuestNetRig.GuestMac, Interactive.Address)));
        yield return ("oversized (larger than any Ethernet frame)", Mutate(f => { }).Concat(new byte[1600]).ToArray());
    }

    [Fact]
    public void MalformedForeignAndOversizedFramesAreIgnored()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        var nic = rig.Vm.Nic!;
        int n = 0;
        foreach (var (why, frame) in BadFrames())
        {
            output.WriteLine($"delivering: {why} ({frame.Length} bytes)");
            nic.Deliver(frame);
            n++;
        }
        // Options in the IPv4 header are fine; an unprintable, over-long payload is cleaned and cut.
        nic.Deliver(FrameBuilder.Ethernet(GuestNetRig.GuestMac, GuestNetRig.PeerMac, EtherTypes.Ipv4,
            FrameBuilder.Ipv4(Interactive.Peer, Interactive.Address, IpProtocols.Udp, FrameBuilder.Udp(7000, 7000, "with options"u8), optionWords: 2)));
        byte[] noisy = [.. "tab\tbell\a"u8, .. Enumerable.Repeat((byte)'x', 300), 0xFF];
        nic.Deliver(GuestNetRig.UdpTo(Interactive, noisy));
        nic.Deliver(GuestNetRig.UdpTo(Interactive, "still here"));
        Assert.True(rig.WaitForText("net: still here"), rig.Text);
        output.WriteLine(rig.Text);
        Assert.DoesNotContain("BAD", rig.Text, StringComparison.Ordinal);
        Assert.Contains("net: with options\r\n", rig.Text, StringComparison.Ordinal);
        Assert.Contains("net: tab.bell." + new string('x', ProjectGuests.NetPrintMax - 9) + "...\r\n", rig.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("unexpected vector", rig.Text, StringComparison.Ordinal);
        Assert.Equal(Tcb.Devices.VirtioNetError.None, nic.Error);
        Assert.Empty(rig.Port.Frames); // nothing answered any of it
        // Still typing and sending.
        rig.Vm.Serial.EnqueueInput("after\r"u8);
        Assert.True(rig.WaitFor(() => rig.Datagrams.Length == 1), rig.Text);
        Assert.Equal("unclass: after", rig.Datagrams[0].Text);
    }

    [Fact]
    public void RandomFramesNeverBreakTheGuest()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        var nic = rig.Vm.Nic!;
        byte[] header = GuestNetRig.UdpTo(Interactive, "")[..42];
        // Random bytes, and random bytes behind a valid-looking Ethernet/IPv4/UDP prefix (so the deeper checks run).
        var frames = Gen.Choose(14, 1600).SelectMany(len => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), len))
            .SelectMany(bytes => Gen.Elements(true, false).Select(prefixed =>
            {
                if (prefixed && bytes.Length > 42)
                {
                    int keep = bytes[0] % 42;
                    header.AsSpan(0, keep).CopyTo(bytes);
                }
                return bytes;
            }));
        int delivered = 0;
        Prop.ForAll(frames.ToArbitrary(), frame =>
        {
            // Wait for room rather than lose frames to the host queue.
            rig.WaitFor(() => nic.PendingHostFrames < 64, 10);
            nic.Deliver(frame);
            delivered++;
            return true;
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(300));
        nic.Deliver(GuestNetRig.UdpTo(Interactive, "survived"));
        Assert.True(rig.WaitForText("net: survived"), rig.Text);
        output.WriteLine($"{delivered} random frames delivered; {nic.ReceivedFrames} reached the guest");
        Assert.DoesNotContain("unexpected vector", rig.Text, StringComparison.Ordinal);
        Assert.Equal(Tcb.Devices.VirtioNetError.None, nic.Error);
        // Whatever the guest sent in answer (ARP replies at most) is still from its own MAC and address.
        var filter = GuestNetRig.DemoFilter(Interactive);
        foreach (byte[] sent in rig.Port.Frames)
        {
            Assert.True(filter.Outbound(sent).IsAllowed, filter.Outbound(sent).ToString());
        }
    }

    [Fact]
    public void KeepsReceivingLongAfterEveryBufferWasUsedOnce()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        for (int i = 0; i < 3 * GuestNet.RxBuffers + 5; i++)
        {
            rig.Vm.Nic!.Deliver(GuestNetRig.UdpTo(Interactive, $"datagram {i}"));
            Assert.True(rig.WaitForText($"net: datagram {i}\r\n"), rig.Text);
        }
        // And the transmit ring wraps too (8 buffers reclaimed as the device returns them).
        for (int i = 0; i < 2 * GuestNet.TxBuffers + 3; i++)
        {
            rig.Vm.Serial.EnqueueInput(Encoding.ASCII.GetBytes($"line {i}\r"));
            int expected = i + 1;
            Assert.True(rig.WaitFor(() => rig.Datagrams.Length >= expected), rig.Text);
        }
        Assert.Equal(Enumerable.Range(0, (2 * GuestNet.TxBuffers) + 3).Select(i => $"unclass: line {i}"), rig.Datagrams.Select(d => d.Text));
    }

    [Fact]
    public void SendingAndReceivingADatagramCostsAFewExits()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        var nic = rig.Vm.Nic!;
        // Receive: interrupt, ISR read, EOIs, the reposting notify, then the console output.
        Thread.Sleep(50);
        long exits = rig.Vm.ExitCount, instructions = rig.Vm.InstructionCount;
        nic.Deliver(GuestNetRig.UdpTo(Interactive, "x"));
        Assert.True(rig.WaitForText("net: x\r\nunclass> "), rig.Text);
        Thread.Sleep(50);
        long rxExits = rig.Vm.ExitCount - exits, rxInstructions = rig.Vm.InstructionCount - instructions;
        string printed = "\r\nnet: x\r\nunclass> ";
        // Send: the typed character's interrupt and echo, then one notify for the frame.
        exits = rig.Vm.ExitCount;
        instructions = rig.Vm.InstructionCount;
        rig.Vm.Serial.EnqueueInput("y\r"u8);
        Assert.True(rig.WaitFor(() => rig.Datagrams.Length == 1), rig.Text);
        Thread.Sleep(50);
        long txExits = rig.Vm.ExitCount - exits, txInstructions = rig.Vm.InstructionCount - instructions;
        output.WriteLine($"receive one datagram and print {printed.Length} characters: {rxExits} exits, {rxInstructions} instructions");
        output.WriteLine($"type one character and Enter, print the answer, send one datagram: {txExits} exits, {txInstructions} instructions");
        // Each printed character costs two port exits (LSR poll, THR write); the network part is a handful.
        Assert.InRange(rxExits - (2 * printed.Length), 1, 16);
    }

    [Fact]
    public void ADeviceThatNeedsResetStopsTheNetworkButNotTheGuest()
    {
        using var rig = new GuestNetRig(ProjectGuests.Build("interactive")!);
        Assert.True(rig.WaitForText("unclass> "), rig.Text);
        var nic = rig.Vm.Nic!;
        // Corrupt the guest's receive descriptors behind its back (as a stray write would): the device
        // refuses the buffer, enters DEVICE_NEEDS_RESET and raises a configuration interrupt.
        rig.Vm.Pause();
        Assert.True(rig.WaitFor(() => rig.Vm.IsPaused, 10));
        nic.Write((ushort)(nic.IoBase + 0x0E), 2, 0);
        ulong descriptors = (ulong)nic.Read((ushort)(nic.IoBase + 0x08), 4) << 12;
        for (int i = 0; i < GuestNet.RxBuffers; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(rig.Vm.Ram.Slice(descriptors + (ulong)((32 * i) + 16), 8), 0xFFFF_0000UL);
        }
        rig.Vm.Resume();
        nic.Deliver(GuestNetRig.UdpTo(Interactive, "lost"));
        Assert.True(rig.WaitForText("net: virtio-net device needs reset; network stopped"), rig.Text);
        Assert.Equal(Tcb.Devices.VirtioNetError.BufferOutsideRam, nic.Error);
        rig.Vm.Serial.EnqueueInput("still typing\r"u8);
        Assert.True(rig.WaitForText("you typed: still typing\r\nunclass> "), rig.Text);
        Assert.Empty(rig.Port.Frames); // the network is down for this guest: nothing is sent
        Assert.Equal(1, rig.Count("needs reset"));
    }

    [Theory]
    [InlineData("kiosk")]
    [InlineData("interactive")]
    public void WithoutANicTheGuestSaysSoOnceAndKeepsWorking(string name)
    {
        using var rig = new GuestNetRig(ProjectGuests.Build(name)!, withNic: false);
        if (name == "kiosk")
        {
            Assert.True(rig.WaitForText("kiosk: uptime 2 s"), rig.Text);
            Assert.Contains("network: no virtio-net device", rig.Vm.Vga.Snapshot().Text, StringComparison.Ordinal);
        }
        else
        {
            Assert.True(rig.WaitForText("unclass> "), rig.Text);
            rig.Vm.Serial.EnqueueInput("no network\r"u8);
            Assert.True(rig.WaitForText("you typed: no network\r\nunclass> "), rig.Text);
        }
        Assert.Equal(1, rig.Count("net: no virtio-net device"));
        Assert.DoesNotContain("net: up", rig.Text, StringComparison.Ordinal);
        Assert.True(rig.Vm.IsRunning);
    }
}
