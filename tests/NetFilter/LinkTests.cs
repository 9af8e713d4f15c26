using SecureVmm.TestSupport;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.NetFilter.Capture;
using Xunit;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

public class LinkTests
{
    private sealed class ScriptedBackend : INetworkBackend
    {
        private FrameHandler? _receive;

        public List<byte[]> Sent { get; } = [];

        public bool Disposed { get; private set; }

        public string Description => "scripted";

        public long SendErrors => 0;

        public void Send(ReadOnlySpan<byte> frame) => Sent.Add(frame.ToArray());

        public void Start(FrameHandler onReceive) => _receive = onReceive;

        public void Inject(byte[] frame) => _receive!(frame);

        public void Dispose() => Disposed = true;
    }

    [Fact]
    public void OnlyAllowedFramesAreSentOrDelivered()
    {
        var backend = new ScriptedBackend();
        var toGuest = new List<byte[]>();
        var filter = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Udp }));
        using var link = new Link("lan", filter, backend, f =>
        {
            toGuest.Add(f.ToArray());
            return true;
        });
        link.Start();
        var good = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2));
        var spoofed = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), source: OtherIp);
        var tcp = Out4(IpProtocols.Tcp, FrameBuilder.Tcp(1, 2));
        Assert.True(link.FromGuest(good).IsAllowed);
        Assert.Equal(DropReason.SpoofedSourceIp, link.FromGuest(spoofed).Reason);
        Assert.Equal(DropReason.NoMatchingRule, link.FromGuest(tcp).Reason);
        Assert.Equal([good], backend.Sent);

        var inGood = In4(IpProtocols.Udp, FrameBuilder.Udp(2, 1));
        backend.Inject(inGood);
        backend.Inject(In4(IpProtocols.Udp, FrameBuilder.Udp(2, 1), destinationMac: OtherMac));
        Assert.Equal([inGood], toGuest);
        Assert.Throws<InvalidOperationException>(link.Start);
        link.Dispose();
        Assert.True(backend.Disposed);
    }

    [Fact]
    public void GuestRefusalsAreCounted()
    {
        var backend = new ScriptedBackend();
        using var link = new Link("lan", new Filter(Config(AllowAll)), backend, _ => false);
        link.Start();
        backend.Inject(In4(IpProtocols.Udp, FrameBuilder.Udp(2, 1)));
        Assert.Equal(1, link.GuestRefused);
    }

    [Fact]
    public void CaptureModeRecordsEveryFrameWithItsVerdict()
    {
        var backend = new ScriptedBackend();
        var stream = new MemoryStream();
        var capture = new PcapNgWriter(stream, ownsStream: false);
        using (var link = new Link("lan", new Filter(Config(new AllowRule { Name = "udp", IpProtocol = IpProtocols.Udp })), backend, _ => true, capture))
        {
            link.Start();
            link.FromGuest(Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2)));
            link.FromGuest(Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), sourceMac: OtherMac));
            backend.Inject(In4(IpProtocols.Tcp, FrameBuilder.Tcp(2, 1)));
        }
        capture.Dispose();
        var frames = PcapNgReader.Read(stream.ToArray());
        Assert.Equal(["out allow rule 0", "out drop SpoofedSourceMac", "in drop NoMatchingRule"], frames.Select(f => f.Comment));
        Assert.Equal([FrameDirection.Outbound, FrameDirection.Outbound, FrameDirection.Inbound], frames.Select(f => f.Direction));
    }
}
