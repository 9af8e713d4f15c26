using SecureVmm.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Appliance.Network;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tests.Machine;
using SecureVmm.Tests.NetFilter;
using Xunit;

namespace SecureVmm.Tests.Network;

/// <summary>
/// The NIC attachment without a guest: frames the NIC transmits go through the filter to the
/// backend, frames from the backend go through the filter into the NIC's host queue, and drops
/// become FramesDropped records in a verifiable audit log.
/// </summary>
public class NicAttachmentTests
{
    /// <summary>A backend that keeps a count (and the last frame) of what was sent, and lets the test inject frames.</summary>
    private sealed class LoopBackend : INetworkBackend
    {
        private readonly byte[] _last = new byte[2048];
        public FrameHandler? Receive;
        public int Sent;
        public int LastLength;
        public string Description => "test loop";
        public long SendErrors => 0;
        public void Send(ReadOnlySpan<byte> frame)
        {
            Sent++;
            frame.CopyTo(_last);
            LastLength = frame.Length;
        }
        public ReadOnlySpan<byte> Last => _last.AsSpan(0, LastLength);
        public void Start(FrameHandler onReceive) => Receive = onReceive;
        public bool Disposed;
        public void Dispose() => Disposed = true;
    }

    private static AllowRule[] PingRules =>
    [
        AllowRule.Arp(),
        new AllowRule { Name = "ping", IpProtocol = IpProtocols.Icmp, IcmpType = 8, Direction = TrafficDirection.Outbound },
        new AllowRule { Name = "pong", IpProtocol = IpProtocols.Icmp, IcmpType = 0, Direction = TrafficDirection.Inbound },
    ];

    private static VirtioNet NewNic(out VirtioNetTests.Rig rig)
    {
        rig = new VirtioNetTests.Rig();
        rig.Nic.Network = null;
        var mac = new byte[6];
        TestNet.VmMac.Write(mac);
        return new VirtioNet(rig.Map, rig.Irq, mac, ioBase: 0xC100);
    }

    [Fact]
    public void AllowedFramesPassBothWaysAndSpoofedOnesAreDroppedAndAudited()
    {
        var nic = NewNic(out var rig);
        using var _ = rig;
        string dir = Directory.CreateTempSubdirectory("svmm-nic").FullName;
        try
        {
            string log = Path.Combine(dir, "nic.audit");
            var writer = AuditWriter.Create(log, AuditLogHeader.Create(["vm0", "vm1"], ["red", "black"]), new AuditWriterOptions());
            var backend = new LoopBackend();
            long virtualTime = 123_000;
            var attachment = new NicAttachment(nic, "black", TestNet.Config(PingRules), backend,
                new NicAuditTarget(writer, 1, 1, () => virtualTime), flushInterval: TimeSpan.FromHours(1));
            Assert.Same(attachment, nic.Network);
            attachment.Start();

            // Guest → network: an echo request from the VM's own addresses is sent as is.
            byte[] ping = TestNet.Out4(IpProtocols.Icmp, FrameBuilder.Icmp(8, 0, new byte[8]));
            nic.Network!.Transmit(ping);
            Assert.Equal(1, backend.Sent);
            Assert.True(backend.Last.SequenceEqual(ping));

            // A frame from another IP address (the guest changed its address) never reaches the backend.
            byte[] spoofed = TestNet.Out4(IpProtocols.Icmp, FrameBuilder.Icmp(8, 0, new byte[8]), source: TestNet.OtherIp);
            for (int i = 0; i < 5; i++)
            {
                nic.Network!.Transmit(spoofed);
            }
            Assert.Equal(1, backend.Sent);

            // Network → guest: the reply reaches the NIC's queue; a frame for another address does not.
            backend.Receive!(TestNet.In4(IpProtocols.Icmp, FrameBuilder.Icmp(0, 0, new byte[8])));
            Assert.Equal(1, nic.PendingHostFrames);
            backend.Receive!(TestNet.In4(IpProtocols.Icmp, FrameBuilder.Icmp(0, 0, new byte[8]), destination: TestNet.OtherIp));
            Assert.Equal(1, nic.PendingHostFrames);

            var report = attachment.Filter.Flush();
            Assert.NotNull(report);
            Assert.Equal(2, attachment.AuditRecords);
            attachment.Dispose();
            Assert.True(backend.Disposed);
            Assert.Null(nic.Network);
            Assert.True(writer.Close(), writer.FailureReason);

            var seen = new List<(FrameDirection, DropReason, ulong, byte[], ushort, ushort, ulong)>();
            var result = AuditLogVerifier.VerifyFile(log, null, (in AuditRecord r) =>
            {
                if (r.Kind == AuditKind.FramesDropped)
                {
                    var (direction, reason) = NicAttachment.DecodeAuditReason(r.Reason);
                    seen.Add((direction, reason, r.Value, ((ReadOnlySpan<byte>)r.Sample)[..r.SampleLength].ToArray(), r.VmId, r.Network, r.VirtualTimeNs));
                }
            });
            Assert.True(result.Ok, result.Problem?.ToString());
            Assert.Equal(2, seen.Count);
            var outbound = Assert.Single(seen, s => s.Item1 == FrameDirection.Outbound);
            Assert.Equal(DropReason.SpoofedSourceIp, outbound.Item2);
            Assert.Equal(5UL, outbound.Item3);
            Assert.Equal(spoofed.AsSpan(0, FrameSample.Size).ToArray(), outbound.Item4);
            Assert.Equal((ushort)1, outbound.Item5);
            Assert.Equal((ushort)1, outbound.Item6);
            Assert.Equal(123_000UL, outbound.Item7);
            var inbound = Assert.Single(seen, s => s.Item1 == FrameDirection.Inbound);
            Assert.Equal(1UL, inbound.Item3);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void ANicIsAttachedOnlyOnceAndOnlyWithItsOwnMac()
    {
        var nic = NewNic(out var rig);
        using var _ = rig;
        var otherMac = TestNet.Config(PingRules) with { Mac = TestNet.OtherMac };
        var refused = Assert.Throws<ArgumentException>(() => new NicAttachment(nic, "red", otherMac, new LoopBackend()));
        Assert.Contains("red", refused.Message, StringComparison.Ordinal);
        Assert.Null(nic.Network);

        using var first = new NicAttachment(nic, "red", TestNet.Config(PingRules), new LoopBackend());
        var twice = Assert.Throws<InvalidOperationException>(() => new NicAttachment(nic, "black", TestNet.Config(PingRules), new LoopBackend()));
        Assert.Contains("already attached", twice.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ASwitchboardRefusesOneBackendOnTwoNetworks()
    {
        var nicA = NewNic(out var rigA);
        var nicB = NewNic(out var rigB);
        using var _ = rigA;
        using var __ = rigB;
        using var board = new NetworkSwitchboard();
        var backend = new LoopBackend();
        using var red = new NicAttachment(nicA, "red", TestNet.Config(PingRules), backend, switchboard: board);
        Assert.Throws<InvalidOperationException>(() => new NicAttachment(nicB, "black", TestNet.Config(PingRules), backend, switchboard: board));
    }

    [Fact]
    public void TheTransmitPathDoesNotAllocatePerFrame()
    {
        var nic = NewNic(out var rig);
        using var _ = rig;
        var backend = new LoopBackend();
        using var attachment = new NicAttachment(nic, "red", TestNet.Config(PingRules), backend, flushInterval: TimeSpan.FromHours(1));
        byte[] ping = TestNet.Out4(IpProtocols.Icmp, FrameBuilder.Icmp(8, 0, new byte[56]));
        for (int i = 0; i < 100; i++)
        {
            attachment.Transmit(ping); // warm up (JIT, tiered compilation)
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            attachment.Transmit(ping);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(10_100, backend.Sent);
        Assert.True(allocated < 1024, $"{allocated} bytes allocated for 10,000 frames");
    }

    [Fact]
    public void AuditReasonCodesRoundTrip()
    {
        var reasons = Enum.GetValues<DropReason>();
        Prop.ForAll(Gen.Elements(reasons).ToArbitrary(), Gen.Elements(FrameDirection.Inbound, FrameDirection.Outbound).ToArbitrary(),
            (reason, direction) => NicAttachment.DecodeAuditReason(NicAttachment.AuditReasonCode(direction, reason)) == (direction, reason))
            .QuickCheckThrowOnFailure();
    }
}
