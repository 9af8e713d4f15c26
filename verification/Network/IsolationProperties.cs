using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using Xunit;

namespace SecureVmm.Verification.Network;

/// <summary>
/// A frame entering network A never reaches network B. Two VMs with identical identities (so a
/// frame one filter allows, the other would allow too) sit on two links; random traffic is
/// pushed in from both guests and both networks, each frame tagged with a unique serial. Every
/// frame that comes out anywhere must have gone in on the same network.
/// </summary>
public class IsolationProperties
{
    /// <summary>A backend whose "network" is the test: it records sends and injects receives.</summary>
    private sealed class ScriptedBackend(string name) : INetworkBackend
    {
        private FrameHandler? _receive;

        public List<byte[]> Sent { get; } = [];

        public string Description => name;

        public long SendErrors => 0;

        public void Send(ReadOnlySpan<byte> frame) => Sent.Add(frame.ToArray());

        public void Start(FrameHandler onReceive) => _receive = onReceive;

        public void Inject(byte[] frame) => _receive!(frame);

        public void Dispose()
        {
        }
    }

    private const int SerialBytes = 4;

    /// <summary>Appends a 4-byte serial in the Ethernet padding/trailer, which every parser ignores.</summary>
    private static byte[] Tag(byte[] frame, int serial)
    {
        var tagged = new byte[frame.Length + SerialBytes];
        frame.CopyTo(tagged, 0);
        BinaryPrimitives.WriteInt32BigEndian(tagged.AsSpan(frame.Length), serial);
        return tagged;
    }

    private static int SerialOf(byte[] frame) => BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(frame.Length - SerialBytes));

    [Fact]
    public void FramesNeverCrossBetweenNetworks()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300 * AntiSpoofingProperties.Scale), Prop.ForAll(Arb.From(Gen.Choose(0, int.MaxValue)), seed =>
        {
            var rng = new Random(seed);
            using var board = new NetworkSwitchboard();
            var backends = new[] { new ScriptedBackend("A"), new ScriptedBackend("B") };
            var delivered = new[] { new List<byte[]>(), new List<byte[]>() };
            var links = new Link[2];
            for (int n = 0; n < 2; n++)
            {
                var sink = delivered[n];
                links[n] = board.Connect(n == 0 ? "A" : "B", new Filter(RandomFrames.AllowEverythingConfig(dhcp: true)), backends[n], f =>
                {
                    sink.Add(f.ToArray());
                    return true;
                });
            }
            board.StartAll();

            // Serial numbers encode where each frame went in: serial % 4 = 2 * network + (0 guest, 1 wire).
            int allowedAnywhere = 0;
            for (int i = 0; i < 200; i++)
            {
                int network = rng.Next(2);
                bool fromWire = rng.Next(2) == 0;
                int serial = (i * 4) + (2 * network) + (fromWire ? 1 : 0);
                var frame = Tag(fromWire ? RandomFrames.Inbound(rng) : RandomFrames.Outbound(rng), serial);
                if (fromWire)
                {
                    backends[network].Inject(frame);
                }
                else if (links[network].FromGuest(frame).IsAllowed)
                {
                    allowedAnywhere++;
                }
            }
            for (int n = 0; n < 2; n++)
            {
                // Out of network n's backend: only frames its own guest sent.
                if (backends[n].Sent.Any(f => SerialOf(f) % 4 != 2 * n))
                {
                    return false;
                }
                // Into network n's guest: only frames that arrived on its own backend.
                if (delivered[n].Any(f => SerialOf(f) % 4 != (2 * n) + 1))
                {
                    return false;
                }
            }
            return allowedAnywhere > 0 && delivered.Sum(d => d.Count) > 0;
        }));
    }

    [Fact]
    public void TheSwitchboardRefusesToShareABackendFilterOrGuestPortBetweenNetworks()
    {
        using var board = new NetworkSwitchboard();
        var backend = new ScriptedBackend("shared");
        var filter = new Filter(RandomFrames.AllowEverythingConfig(dhcp: false));
        GuestPort port = _ => true;
        board.Connect("A", filter, backend, port);
        Assert.Throws<InvalidOperationException>(() => board.Connect("B", new Filter(RandomFrames.AllowEverythingConfig(false)), backend, _ => true));
        Assert.Throws<InvalidOperationException>(() => board.Connect("B", filter, new ScriptedBackend("b"), _ => true));
        Assert.Throws<InvalidOperationException>(() => board.Connect("B", new Filter(RandomFrames.AllowEverythingConfig(false)), new ScriptedBackend("b"), port));
        Assert.Throws<InvalidOperationException>(() => board.Connect("A", new Filter(RandomFrames.AllowEverythingConfig(false)), new ScriptedBackend("b"), _ => true));
        board.Connect("B", new Filter(RandomFrames.AllowEverythingConfig(false)), new ScriptedBackend("b"), _ => true);
        Assert.Equal(2, board.Links.Count);
    }
}
