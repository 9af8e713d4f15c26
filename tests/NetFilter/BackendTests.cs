using SecureVmm.TestSupport;
using System.Collections.Concurrent;
using System.Net;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.NetFilter.Capture;
using Xunit;
using Xunit.Abstractions;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

public class BackendTests(ITestOutputHelper output)
{
    private static byte[] Receive(BlockingCollection<byte[]> queue, Func<byte[], bool> wanted, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (queue.TryTake(out var frame, TimeSpan.FromMilliseconds(100)) && wanted(frame))
            {
                return frame;
            }
        }
        throw new TimeoutException("expected frame did not arrive");
    }

    [Fact]
    public void UdpBackendsOnLoopbackCarryFramesBothWays()
    {
        // Bind both to ephemeral ports first, then pair them up.
        using var probeA = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        using var probeB = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var endA = (IPEndPoint)probeA.Client.LocalEndPoint!;
        var endB = (IPEndPoint)probeB.Client.LocalEndPoint!;
        probeA.Dispose();
        probeB.Dispose();

        using var a = new UdpBackend(endA, endB);
        using var b = new UdpBackend(endB, endA);
        var atA = new BlockingCollection<byte[]>();
        var atB = new BlockingCollection<byte[]>();
        a.Start(f => atA.Add(f.ToArray()));
        b.Start(f => atB.Add(f.ToArray()));

        var toB = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2, new byte[1400]));
        var toA = In4(IpProtocols.Tcp, FrameBuilder.Tcp(3, 4));
        a.Send(toB);
        b.Send(toA);
        Assert.Equal(toB, Receive(atB, _ => true, TimeSpan.FromSeconds(5)));
        Assert.Equal(toA, Receive(atA, _ => true, TimeSpan.FromSeconds(5)));
        Assert.Contains("udp 127.0.0.1", a.Description, StringComparison.Ordinal);
        Assert.Equal(0, a.SendErrors);
    }

    private static IPEndPoint FreeLoopbackPort()
    {
        using var probe = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        return (IPEndPoint)probe.Client.LocalEndPoint!;
    }

    /// <summary>
    /// Wire compatibility with QEMU's `-net socket,udp=...,localaddr=...`: QEMU joins two such
    /// netdevs on its hub 0, so it relays whatever one of our backends sends to the other.
    /// </summary>
    [Fact]
    public void UdpBackendInteroperatesWithQemuSocketNetdev()
    {
        string? qemu = ExternalTool.Find("qemu-system-x86_64") ?? ExternalTool.Find("qemu-system-i386");
        if (qemu is null)
        {
            output.WriteLine("SKIPPED: qemu-system-x86_64/i386 not installed; QEMU interoperability not checked");
            return;
        }
        var ourA = FreeLoopbackPort();
        var qemuA = FreeLoopbackPort();
        var ourB = FreeLoopbackPort();
        var qemuB = FreeLoopbackPort();
        var start = new System.Diagnostics.ProcessStartInfo(qemu) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var arg in new[]
        {
            "-machine", "none", "-nodefaults", "-display", "none",
            "-net", $"socket,udp={ourA},localaddr={qemuA}",
            "-net", $"socket,udp={ourB},localaddr={qemuB}",
        })
        {
            start.ArgumentList.Add(arg);
        }
        using var process = System.Diagnostics.Process.Start(start)!;
        try
        {
            using var a = new UdpBackend(ourA, qemuA);
            using var b = new UdpBackend(ourB, qemuB);
            var atA = new BlockingCollection<byte[]>();
            var atB = new BlockingCollection<byte[]>();
            a.Start(f => atA.Add(f.ToArray()));
            b.Start(f => atB.Add(f.ToArray()));
            var frame = Out4(IpProtocols.Udp, FrameBuilder.Udp(1234, 5678, new byte[1000]));
            byte[]? relayed = null;
            for (int attempt = 0; attempt < 50 && relayed is null && !process.HasExited; attempt++)
            {
                a.Send(frame); // QEMU may still be starting: retry
                relayed = atB.TryTake(out var got, TimeSpan.FromMilliseconds(200)) ? got : null;
            }
            if (process.HasExited)
            {
                Assert.Fail($"qemu exited with {process.ExitCode}: {process.StandardError.ReadToEnd()}");
            }
            Assert.Equal(frame, relayed);
            var back = In4(IpProtocols.Tcp, FrameBuilder.Tcp(1, 2));
            b.Send(back);
            Assert.Equal(back, Receive(atA, f => f.Length == back.Length, TimeSpan.FromSeconds(5)));
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
            process.WaitForExit();
        }
    }

    [Fact]
    public void UdpBackendIgnoresDatagramsFromAnyoneButThePeer()
    {
        using var peer = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        using var stranger = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        using var backend = new UdpBackend(new IPEndPoint(IPAddress.Loopback, 0), (IPEndPoint)peer.Client.LocalEndPoint!);
        var received = new BlockingCollection<byte[]>();
        backend.Start(f => received.Add(f.ToArray()));
        stranger.Send(new byte[60], backend.Local);
        peer.Send(new byte[61], backend.Local);
        Assert.Equal(61, Receive(received, _ => true, TimeSpan.FromSeconds(5)).Length);
        Assert.False(received.TryTake(out _, TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public void UdpBackendReportsBindFailuresClearly()
    {
        using var taken = new System.Net.Sockets.UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var e = Assert.Throws<NetworkBackendException>(() => new UdpBackend((IPEndPoint)taken.Client.LocalEndPoint!, new IPEndPoint(IPAddress.Loopback, 9)));
        Assert.Contains("cannot bind", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void NoneBackendDiscardsAndNeverReceives()
    {
        using var none = new NoneBackend();
        int received = 0;
        none.Start(_ => received++);
        none.Send(new byte[60]);
        Assert.Equal(1, none.Discarded);
        Assert.Equal(0, received);
    }

    private static string TempFile(string extension) => Path.Combine(Path.GetTempPath(), $"securevmm-netfilter-{Guid.NewGuid():N}{extension}");

    [Fact]
    public void PcapNgRoundTripsFramesDirectionsAndVerdicts()
    {
        var path = TempFile(".pcapng");
        try
        {
            var clock = new ManualTimeProvider();
            var frames = new[] { Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2)), In4(IpProtocols.Tcp, FrameBuilder.Tcp(3, 4)), new byte[] { 1, 2, 3 } };
            using (var writer = PcapNgWriter.Create(path, "vm0", clock))
            {
                writer.Capture(FrameDirection.Outbound, Verdict.Allow(2), frames[0]);
                writer.Capture(FrameDirection.Inbound, Verdict.Drop(DropReason.NotForThisVm), frames[1]);
                writer.Capture(FrameDirection.Inbound, Verdict.Drop(DropReason.RateLimited, 0), frames[2]);
            }
            var read = PcapNgReader.ReadFile(path);
            Assert.Equal(3, read.Count);
            Assert.Equal(frames[0], read[0].Data);
            Assert.Equal(frames[2], read[2].Data);
            Assert.Equal(FrameDirection.Outbound, read[0].Direction);
            Assert.Equal(FrameDirection.Inbound, read[1].Direction);
            Assert.Equal("out allow rule 2", read[0].Comment);
            Assert.Equal("in drop NotForThisVm", read[1].Comment);
            Assert.Equal("in drop RateLimited rule 0", read[2].Comment);
            Assert.Equal((clock.GetUtcNow().UtcTicks - DateTime.UnixEpoch.Ticks) / 10, read[0].TimestampMicroseconds);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void PcapNgReaderRejectsDamagedFilesWithAnOffset()
    {
        var stream = new MemoryStream();
        using (var writer = new PcapNgWriter(stream, ownsStream: false))
        {
            writer.Capture(FrameDirection.Outbound, Verdict.Allow(0), new byte[60]);
        }
        var bytes = stream.ToArray();
        Assert.Single(PcapNgReader.Read(bytes));
        var truncated = bytes[..^5];
        Assert.Contains("offset", Assert.Throws<PcapFormatException>(() => PcapNgReader.Read(truncated)).Message, StringComparison.Ordinal);
        var badLength = (byte[])bytes.Clone();
        badLength[^4] ^= 0x40;
        Assert.Throws<PcapFormatException>(() => PcapNgReader.Read(badLength));
        // Every truncation and single-byte corruption either reads or fails cleanly.
        for (int i = 0; i < bytes.Length; i++)
        {
            var damaged = (byte[])bytes.Clone();
            damaged[i] ^= 0xFF;
            try
            {
                PcapNgReader.Read(damaged);
            }
            catch (PcapFormatException)
            {
            }
            try
            {
                PcapNgReader.Read(bytes.AsSpan(0, i));
            }
            catch (PcapFormatException)
            {
            }
        }
    }

    [Fact]
    public void TcpdumpAndTsharkReadTheCapture()
    {
        var path = TempFile(".pcapng");
        try
        {
            using (var writer = PcapNgWriter.Create(path, "vm0"))
            {
                writer.Capture(FrameDirection.Outbound, Verdict.Allow(1), Out4(IpProtocols.Icmp, FrameBuilder.EchoRequest(7, 1)));
                writer.Capture(FrameDirection.Inbound, Verdict.Drop(DropReason.SpoofedSourceMac), In4(IpProtocols.Udp, FrameBuilder.Udp(53, 5353, new byte[12])));
            }
            bool ranOne = false;
            if (ExternalTool.Find("tcpdump") is { } tcpdump)
            {
                var (code, text, error) = ExternalTool.Run(tcpdump, "-nn", "-r", path);
                Assert.True(code == 0, $"tcpdump failed: {error}");
                var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                Assert.Equal(2, lines.Length);
                Assert.Contains("192.0.2.10 > 192.0.2.1: ICMP echo request, id 7, seq 1", lines[0], StringComparison.Ordinal);
                Assert.Contains("192.0.2.1.53 > 192.0.2.10.5353", lines[1], StringComparison.Ordinal);
                ranOne = true;
            }
            else
            {
                output.WriteLine("tcpdump not installed: tcpdump read-back skipped");
            }
            if (ExternalTool.Find("tshark") is { } tshark)
            {
                var (code, text, error) = ExternalTool.Run(tshark, "-r", path, "-T", "fields", "-E", "separator=|",
                    "-e", "frame.packet_flags_direction", "-e", "frame.comment", "-e", "ip.src");
                Assert.True(code == 0, $"tshark failed: {error}");
                var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                Assert.Equal(["0x00000002|out allow rule 1|192.0.2.10", "0x00000001|in drop SpoofedSourceMac|192.0.2.1"], lines);
                ranOne = true;
            }
            else
            {
                output.WriteLine("tshark not installed: tshark read-back skipped");
            }
            if (!ranOne)
            {
                output.WriteLine("SKIPPED: neither tcpdump nor tshark is installed; only the project's own reader checked the file");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void PcapBackendWritesEverythingSent()
    {
        var path = TempFile(".pcapng");
        try
        {
            using (var backend = new PcapBackend(path))
            {
                backend.Start(_ => throw new InvalidOperationException("pcap backend never receives"));
                backend.Send(new byte[60]);
                backend.Send(new byte[70]);
                Assert.Equal(2, backend.Frames);
            }
            var read = PcapNgReader.ReadFile(path);
            Assert.Equal([60, 70], read.Select(r => r.Data.Length));
            Assert.All(read, r => Assert.Equal("out sent", r.Comment));
        }
        finally
        {
            File.Delete(path);
        }
        Assert.Throws<NetworkBackendException>(() => new PcapBackend("/nonexistent-dir/x.pcapng"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TapBackendInANetworkNamespaceAnswersArpAndPing(bool viaBridge)
    {
        if (TapBackend.UnavailableReason() is { } why)
        {
            output.WriteLine($"SKIPPED: {why}");
            return;
        }
        if (ExternalTool.Find("ip") is null)
        {
            output.WriteLine("SKIPPED: iproute2's `ip` is not installed");
            return;
        }
        string suffix = Guid.NewGuid().ToString("N")[..8];
        string ns = "svmm-nf-" + suffix;
        string tap = "svnf" + suffix;
        var (created, _, createError) = ExternalTool.Run("ip", "netns", "add", ns);
        if (created != 0)
        {
            // Root without the right to make namespaces (e.g. an unprivileged container).
            output.WriteLine($"SKIPPED: cannot create a network namespace here: {createError.Trim()}");
            return;
        }
        try
        {
            var hostSide = IPAddress.Parse("10.213.0.1");
            var guestIp = IPAddress.Parse("10.213.0.2");
            var filter = new Filter(new FilterConfig
            {
                Mac = VmMac,
                Addresses = [guestIp],
                Rules = [AllowRule.Arp(), new AllowRule { Name = "icmp", IpProtocol = IpProtocols.Icmp }],
            });
            var toGuest = new BlockingCollection<byte[]>();
            string? bridge = null;
            if (viaBridge)
            {
                // The bridge lives inside the test's own namespace and carries the host-side address.
                bridge = "svbr" + suffix;
                TapBackend.RunIp("-n", ns, "link", "add", bridge, "type", "bridge");
                TapBackend.RunIp("-n", ns, "link", "set", "dev", bridge, "up");
            }
            using var backend = TapBackend.Create(new TapOptions(tap, bridge, ns));
            Assert.Equal(tap, backend.Name);
            Assert.Equal(viaBridge ? $"tap {tap} on bridge {bridge} in netns {ns}" : $"tap {tap} in netns {ns}", backend.Description);
            TapBackend.RunIp("-n", ns, "addr", "add", "10.213.0.1/24", "dev", bridge ?? tap);
            using var link = new Link("test", filter, backend, f =>
            {
                toGuest.Add(f.ToArray());
                return true;
            });
            link.Start();

            // ARP: who has 10.213.0.1? The namespace's kernel answers with the TAP's MAC.
            var request = FrameBuilder.Ethernet(MacAddress.Broadcast, VmMac, EtherTypes.Arp, FrameBuilder.Arp(1, VmMac, guestIp, default, hostSide));
            Assert.True(link.FromGuest(request).IsAllowed);
            var reply = Receive(toGuest, f => f.Length >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2, TimeSpan.FromSeconds(10));
            var hostMac = MacAddress.Read(reply.AsSpan(22));
            Assert.Equal(hostSide, new IPAddress(reply.AsSpan(28, 4)));

            // ICMP echo to the namespace's address; the kernel replies through the TAP.
            var ping = FrameBuilder.Ethernet(hostMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(guestIp, hostSide, IpProtocols.Icmp, FrameBuilder.EchoRequest(0x5EC, 1)));
            Assert.True(link.FromGuest(ping).IsAllowed);
            var echoReply = Receive(toGuest, f => f.Length >= 42 && f[23] == IpProtocols.Icmp && f[34] == 0 && f[38] == 0x05 && f[39] == 0xEC, TimeSpan.FromSeconds(10));
            Assert.Equal(hostSide, new IPAddress(echoReply.AsSpan(26, 4)));

            // A spoofed ping never reaches the namespace: no reply comes back for it.
            var spoofed = FrameBuilder.Ethernet(hostMac, VmMac, EtherTypes.Ipv4, FrameBuilder.Ipv4(IPAddress.Parse("10.213.0.3"), hostSide, IpProtocols.Icmp, FrameBuilder.EchoRequest(0x5ED, 1)));
            Assert.Equal(DropReason.SpoofedSourceIp, link.FromGuest(spoofed).Reason);
            Assert.Throws<TimeoutException>(() => Receive(toGuest, f => f.Length >= 42 && f[38] == 0x05 && f[39] == 0xED, TimeSpan.FromSeconds(1)));
            Assert.True(filter.ReadCounters().Rules[1].Frames >= 2);
        }
        finally
        {
            ExternalTool.Run("ip", "netns", "del", ns);
        }
        // The device went with its descriptor; nothing is left behind.
        Assert.NotEqual(0, ExternalTool.Run("ip", "link", "show", tap).ExitCode);
    }

    [Fact]
    public void TapBackendRejectsBadNamesBeforeTouchingTheHost()
    {
        Assert.Throws<NetworkBackendException>(() => TapBackend.Create(new TapOptions("name/with/slash")));
        Assert.Throws<NetworkBackendException>(() => TapBackend.Create(new TapOptions("waytoolonginterfacename")));
        Assert.Throws<NetworkBackendException>(() => TapBackend.Create(new TapOptions("ok", NetworkNamespace: "bad ns")));
        Assert.Throws<NetworkBackendException>(() => TapBackend.Create(new TapOptions("ok", Bridge: "br 0")));
    }
}
