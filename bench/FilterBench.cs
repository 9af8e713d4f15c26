using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;

namespace SecureVmm.Bench;

/// <summary>
/// Network filter speed: decisions per second on 64-byte frames on one core (target at least
/// 2 million/s), for the common verdicts, and frames per second through a whole Link (filter +
/// backend) with the none and UDP-loopback backends.
/// <c>dotnet run -c Release --project bench -- filter [seconds-per-case]</c>.
/// </summary>
public static class FilterBench
{
    private static readonly MacAddress VmMac = new(0x525400AA0001);
    private static readonly MacAddress PeerMac = new(0x525400BB0002);
    private static readonly IPAddress VmIp = IPAddress.Parse("192.0.2.10");
    private static readonly IPAddress PeerIp = IPAddress.Parse("192.0.2.1");

    public static int Run(string[] args)
    {
        double seconds = args.Length > 0 && double.TryParse(args[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 2;
        // A realistic policy: ARP, DHCP, DNS, HTTPS, ICMP echo; the benchmark frame matches rule 3.
        var config = new FilterConfig
        {
            Mac = VmMac,
            Addresses = [VmIp, IPAddress.Parse("2001:db8::10")],
            AllowDhcp = true,
            Rules =
            [
                AllowRule.Arp(),
                new AllowRule { Name = "dns", IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(53), Direction = TrafficDirection.Outbound },
                new AllowRule { Name = "https", IpProtocol = IpProtocols.Tcp, DestinationPorts = NumberRange.Single(443), Direction = TrafficDirection.Outbound },
                new AllowRule { Name = "app", IpProtocol = IpProtocols.Udp, Destination = IpPrefix.Parse("192.0.2.0/24"), DestinationPorts = new NumberRange(9000, 9100) },
                new AllowRule { Name = "ping", IpProtocol = IpProtocols.Icmp, IcmpType = 8 },
            ],
            OutboundRate = new RateLimit(100_000_000, 100_000_000_000),
        };
        var outbound = Udp64(VmMac, PeerMac, VmIp, PeerIp, 40000, 9000);
        var inbound = Udp64(PeerMac, VmMac, PeerIp, VmIp, 9000, 40000);
        var spoofed = Udp64(VmMac, PeerMac, IPAddress.Parse("192.0.2.66"), PeerIp, 40000, 9000);
        var unmatched = Udp64(VmMac, PeerMac, VmIp, PeerIp, 40000, 7);

        Console.WriteLine($"Network filter, 64-byte frames, one thread, {seconds:0.#} s per case ({Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}):");
        Report("outbound allow (rule 3 of 5, rate limit on)", MeasureDecisions(new Filter(config), outbound, inbound: false, seconds));
        Report("inbound allow (rule 3 of 5)", MeasureDecisions(new Filter(config), inbound, inbound: true, seconds));
        Report("outbound drop: spoofed source IP", MeasureDecisions(new Filter(config), spoofed, inbound: false, seconds));
        Report("outbound drop: no matching rule", MeasureDecisions(new Filter(config), unmatched, inbound: false, seconds));

        using (var link = new Link("bench", new Filter(config), new NoneBackend(), _ => true))
        {
            Report("link: guest -> filter -> none backend", Measure(() => link.FromGuest(outbound), seconds));
        }
        MeasureUdpPath(config, seconds);
        return 0;
    }

    private static void Report(string name, (double WallRate, double CpuRate) rate) =>
        Console.WriteLine($"  {name,-46} {rate.CpuRate / 1e6,8:0.00} million/s per CPU-second ({1e9 / rate.CpuRate,5:0} ns each); wall clock {rate.WallRate / 1e6:0.00} million/s");

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);

    /// <summary>CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), so a busy shared machine does not distort the rate.</summary>
    private static double ThreadCpuSeconds()
    {
        const int ClockThreadCpuTime = 3;
        if (!OperatingSystem.IsLinux() || ClockGetTime(ClockThreadCpuTime, out var t) != 0)
        {
            return double.NaN;
        }
        return t.Seconds + (t.Nanoseconds / 1e9);
    }

    private static (double, double) MeasureDecisions(Filter filter, byte[] frame, bool inbound, double seconds) =>
        inbound ? Measure(() => filter.Inbound(frame), seconds) : Measure(() => filter.Outbound(frame), seconds);

    private static (double WallRate, double CpuRate) Measure(Func<Verdict> decide, double seconds)
    {
        // Warm up (tiered JIT), then run batches until the time is up.
        for (int i = 0; i < 200_000; i++)
        {
            decide();
        }
        const int Batch = 100_000;
        long count = 0;
        double cpuStart = ThreadCpuSeconds();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < Batch; i++)
            {
                decide();
            }
            count += Batch;
        }
        double cpu = ThreadCpuSeconds() - cpuStart;
        double wall = count / clock.Elapsed.TotalSeconds;
        return (wall, double.IsNaN(cpu) || cpu <= 0 ? wall : count / cpu);
    }

    /// <summary>Whole path to a host socket: guest -> filter -> UDP backend -> peer socket on loopback, 1514-byte frames.</summary>
    private static void MeasureUdpPath(FilterConfig config, double seconds)
    {
        using var peer = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
        peer.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        peer.ReceiveBufferSize = 8 << 20;
        var peerEnd = (IPEndPoint)peer.LocalEndPoint!;
        var backend = new UdpBackend(new IPEndPoint(IPAddress.Loopback, 0), peerEnd);
        using var link = new Link("bench-udp", new Filter(config), backend, _ => true);
        var frame = new byte[1514];
        Udp64(VmMac, PeerMac, VmIp, PeerIp, 40000, 9000).CopyTo(frame, 0);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(16), 1500);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(38), 1480);

        long received = 0;
        var stop = false;
        var drain = new Thread(() =>
        {
            var buffer = new byte[65536];
            peer.ReceiveTimeout = 200;
            while (!Volatile.Read(ref stop))
            {
                try
                {
                    peer.Receive(buffer);
                    received++;
                }
                catch (System.Net.Sockets.SocketException)
                {
                }
            }
        }) { IsBackground = true };
        drain.Start();
        long sent = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < 1000; i++)
            {
                link.FromGuest(frame);
            }
            sent += 1000;
        }
        double elapsed = clock.Elapsed.TotalSeconds;
        Thread.Sleep(300);
        Volatile.Write(ref stop, true);
        drain.Join();
        Console.WriteLine($"  {"link: guest -> filter -> udp backend (1514 B)",-46} {sent / elapsed / 1e3,8:0.0} thousand/s  ({sent * 1514 * 8 / elapsed / 1e9:0.00} Gbit/s offered, {received * 100.0 / Math.Max(1, sent):0}% received by the peer)");
    }

    /// <summary>A 64-byte Ethernet + IPv4 + UDP frame (18 bytes of payload).</summary>
    private static byte[] Udp64(MacAddress source, MacAddress destination, IPAddress sourceIp, IPAddress destinationIp, ushort sourcePort, ushort destinationPort)
    {
        var frame = new byte[64];
        destination.Write(frame);
        source.Write(frame.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), EtherTypes.Ipv4);
        var ip = frame.AsSpan(14);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], 50);
        ip[8] = 64;
        ip[9] = IpProtocols.Udp;
        sourceIp.TryWriteBytes(ip[12..], out _);
        destinationIp.TryWriteBytes(ip[16..], out _);
        var udp = ip[20..];
        BinaryPrimitives.WriteUInt16BigEndian(udp, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], destinationPort);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], 30);
        return frame;
    }
}
