using System.Buffers.Binary;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Memory;
using Xunit;

namespace SecureVmm.Tests.Machine;

/// <summary>
/// Drives the legacy virtio-net device the way Linux's virtio_pci/virtio_net do (virtio 1.0 4.1.4.8,
/// 2.4.2): PCI identity, queue setup through the I/O BAR, a transmit and a receive, and the device's
/// answers to malformed rings.
/// </summary>
public class VirtioNetTests
{
    internal sealed class Irq : IIrqLines
    {
        public bool Level;
        public int Raised;
        public void SetIrq(int line, bool level)
        {
            if (level && !Level)
            {
                Raised++;
            }
            Level = level;
        }
    }

    internal sealed class Sink : IFramePort
    {
        public readonly List<byte[]> Frames = [];
        public void Transmit(ReadOnlySpan<byte> frame) => Frames.Add(frame.ToArray());
    }

    internal sealed class Rig : IDisposable
    {
        public readonly GuestRam Ram = new(4 * 1024 * 1024);
        public readonly PhysicalMemoryMap Map;
        public readonly Irq Irq = new();
        public readonly Sink Sink = new();
        public readonly VirtioNet Nic;
        public const ushort Io = 0xC000;
        public const uint RxRing = 0x10000, TxRing = 0x20000;

        public Rig()
        {
            Map = new PhysicalMemoryMap(Ram);
            Nic = new VirtioNet(Map, Irq, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]) { Network = Sink };
            Nic.WriteConfig(0x04, 2, 0x0005); // I/O space + bus master, as pci_enable_device does
        }

        public void SetupQueues()
        {
            Nic.Write(Io + 0x12, 1, 1 | 2); // ACKNOWLEDGE | DRIVER
            Nic.Write(Io + 0x04, 4, Nic.Read(Io + 0x00, 4));
            Nic.Write(Io + 0x0E, 2, 0);
            Nic.Write(Io + 0x08, 4, RxRing >> 12);
            Nic.Write(Io + 0x0E, 2, 1);
            Nic.Write(Io + 0x08, 4, TxRing >> 12);
            Nic.Write(Io + 0x12, 1, 1 | 2 | 4); // DRIVER_OK
        }

        public void Descriptor(uint ring, int index, ulong address, uint length, ushort flags, ushort next)
        {
            var d = Ram.Slice(ring + (16u * (uint)index), 16);
            BinaryPrimitives.WriteUInt64LittleEndian(d, address);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
        }

        public static uint Avail(uint ring) => ring + (16u * VirtioNet.QueueSize);
        public static uint Used(uint ring) => (Avail(ring) + 6 + (2u * VirtioNet.QueueSize) + 4095) & ~4095u;

        public void Offer(uint ring, ushort head)
        {
            var avail = Ram.Slice(Avail(ring), 4 + (2 * VirtioNet.QueueSize));
            ushort idx = BinaryPrimitives.ReadUInt16LittleEndian(avail[2..]);
            BinaryPrimitives.WriteUInt16LittleEndian(avail[(4 + (2 * (idx % VirtioNet.QueueSize)))..], head);
            BinaryPrimitives.WriteUInt16LittleEndian(avail[2..], (ushort)(idx + 1));
        }

        public ushort UsedIndex(uint ring) => BinaryPrimitives.ReadUInt16LittleEndian(Ram.Slice(Used(ring) + 2, 2));

        public (uint Id, uint Length) UsedElement(uint ring, int i)
        {
            var e = Ram.Slice(Used(ring) + 4 + (8u * (uint)i), 8);
            return (BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
        }

        public void Dispose() => Ram.Dispose();
    }

    [Fact]
    public void PresentsTheLegacyNetworkDeviceIdentity()
    {
        using var rig = new Rig();
        Assert.Equal(0x1AF4u, rig.Nic.ReadConfig(0x00, 2));
        Assert.Equal(0x1000u, rig.Nic.ReadConfig(0x02, 2));
        Assert.Equal(1u, rig.Nic.ReadConfig(0x2E, 2));              // subsystem: network
        Assert.Equal(0x02u, rig.Nic.ReadConfig(0x0B, 1));           // class: network
        Assert.Equal(Rig.Io | 1u, rig.Nic.ReadConfig(0x10, 4));     // BAR0: I/O at 0xC000
        rig.Nic.WriteConfig(0x10, 4, 0xFFFF_FFFF);
        Assert.Equal(~(uint)(VirtioNet.BarSize - 1) | 1u, rig.Nic.ReadConfig(0x10, 4)); // sizing
        rig.Nic.WriteConfig(0x10, 4, Rig.Io);
        Assert.Equal(11u, rig.Nic.ReadConfig(0x3C, 1));
        Assert.Equal(1u, rig.Nic.ReadConfig(0x3D, 1));              // INTA#
        // Host features and MAC in the device configuration.
        Assert.Equal(VirtioNet.FeatureMac | VirtioNet.FeatureStatus, rig.Nic.Read(Rig.Io, 4));
        Assert.Equal(0x52u, rig.Nic.Read(Rig.Io + 0x14, 1));
        Assert.Equal(0x56u, rig.Nic.Read(Rig.Io + 0x19, 1));
        Assert.Equal((uint)VirtioNet.QueueSize, rig.Nic.Read(Rig.Io + 0x0C, 2));
        rig.Nic.Write(Rig.Io + 0x0E, 2, 2); // no control queue
        Assert.Equal(0u, rig.Nic.Read(Rig.Io + 0x0C, 2));
    }

    [Fact]
    public void IoWindowIsDeadUntilIoSpaceIsEnabled()
    {
        using var rig = new Rig();
        rig.Nic.WriteConfig(0x04, 2, 0);
        Assert.Equal(0xFFFF_FFFFu, rig.Nic.Read(Rig.Io, 4));
    }

    [Fact]
    public void TransmitsAChainedFrameWithoutTheVirtioHeader()
    {
        using var rig = new Rig();
        rig.SetupQueues();
        byte[] frame = [.. Enumerable.Range(0, 60).Select(i => (byte)i)];
        rig.Ram.Slice(0x30000, 10).Fill(0xEE);               // virtio_net_hdr
        frame.AsSpan(0, 20).CopyTo(rig.Ram.Slice(0x31000, 20));
        frame.AsSpan(20).CopyTo(rig.Ram.Slice(0x32000, 40));
        rig.Descriptor(Rig.TxRing, 5, 0x30000, 10, 1, 6);
        rig.Descriptor(Rig.TxRing, 6, 0x31000, 20, 1, 7);
        rig.Descriptor(Rig.TxRing, 7, 0x32000, 40, 0, 0);
        rig.Offer(Rig.TxRing, 5);
        rig.Nic.Write(Rig.Io + 0x10, 2, 1);
        Assert.Single(rig.Sink.Frames);
        Assert.Equal(frame, rig.Sink.Frames[0]);
        Assert.Equal(1, rig.UsedIndex(Rig.TxRing));
        Assert.Equal(5u, rig.UsedElement(Rig.TxRing, 0).Id);
        Assert.True(rig.Irq.Level);
        Assert.Equal(1u, rig.Nic.Read(Rig.Io + 0x13, 1));     // ISR: queue interrupt, read clears
        Assert.False(rig.Irq.Level);
        Assert.Equal(0u, rig.Nic.Read(Rig.Io + 0x13, 1));
    }

    [Fact]
    public void ReceivesIntoGuestBuffersOnlyWhenTheyExist()
    {
        using var rig = new Rig();
        rig.SetupQueues();
        byte[] frame = [.. Enumerable.Range(0, 64).Select(i => (byte)(255 - i))];
        Assert.True(rig.Nic.Deliver(frame));
        rig.Nic.PumpHostInput();
        Assert.Equal(1, rig.Nic.PendingHostFrames);           // no receive buffer yet: kept, not lost
        rig.Descriptor(Rig.RxRing, 0, 0x40000, 10, 2 | 1, 1);
        rig.Descriptor(Rig.RxRing, 1, 0x41000, 1514, 2, 0);
        rig.Offer(Rig.RxRing, 0);
        rig.Nic.Write(Rig.Io + 0x10, 2, 0);                    // the driver kicks the receive queue
        Assert.Equal(0, rig.Nic.PendingHostFrames);
        Assert.Equal(frame, rig.Ram.Slice(0x41000, 64).ToArray());
        Assert.True(rig.Ram.Slice(0x40000, 10).IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal((0u, 74u), rig.UsedElement(Rig.RxRing, 0));
        Assert.Equal(1, rig.Nic.ReceivedFrames);
    }

    [Theory]
    [InlineData("loop")]
    [InlineData("outside")]
    [InlineData("index")]
    [InlineData("direction")]
    [InlineData("jump")]
    [InlineData("oversize")]
    public void MalformedTransmitRingsPutTheDeviceInErrorNotTheVmm(string kind)
    {
        using var rig = new Rig();
        rig.SetupQueues();
        switch (kind)
        {
            case "loop":
                rig.Descriptor(Rig.TxRing, 0, 0x30000, 10, 1, 1);
                rig.Descriptor(Rig.TxRing, 1, 0x30000, 10, 1, 0);
                rig.Offer(Rig.TxRing, 0);
                break;
            case "outside":
                rig.Descriptor(Rig.TxRing, 0, 0xFFFF_FFFF_0000, 100, 0, 0);
                rig.Offer(Rig.TxRing, 0);
                break;
            case "index":
                rig.Offer(Rig.TxRing, 4000);
                break;
            case "direction":
                rig.Descriptor(Rig.TxRing, 0, 0x30000, 100, 2, 0);
                rig.Offer(Rig.TxRing, 0);
                break;
            case "jump":
                BinaryPrimitives.WriteUInt16LittleEndian(rig.Ram.Slice(Rig.Avail(Rig.TxRing) + 2, 2), 1000);
                break;
            case "oversize":
                rig.Descriptor(Rig.TxRing, 0, 0x30000, 65536, 0, 0);
                rig.Offer(Rig.TxRing, 0);
                break;
        }
        rig.Nic.Write(Rig.Io + 0x10, 2, 1);
        Assert.NotEqual(VirtioNetError.None, rig.Nic.Error);
        Assert.Empty(rig.Sink.Frames);
        Assert.Equal(0x40u, rig.Nic.Read(Rig.Io + 0x12, 1) & 0x40); // DEVICE_NEEDS_RESET
        rig.Nic.Write(Rig.Io + 0x12, 1, 0);                          // reset clears the error
        Assert.Equal(VirtioNetError.None, rig.Nic.Error);
    }

    [Fact]
    public void RingsOutsideRamAreRefused()
    {
        using var rig = new Rig();
        rig.Nic.Write(Rig.Io + 0x0E, 2, 1);
        rig.Nic.Write(Rig.Io + 0x08, 4, 0x000F_FFFF); // 4 GiB - 4 KiB: far beyond 4 MiB of RAM
        Assert.Equal(VirtioNetError.RingOutsideRam, rig.Nic.Error);
        Assert.Equal(0u, rig.Nic.Read(Rig.Io + 0x08, 4));
    }

    [Fact]
    public void HostQueueIsBoundedAndCountsDrops()
    {
        using var rig = new Rig();
        byte[] frame = new byte[60];
        for (int i = 0; i < VirtioNet.HostQueueCapacity; i++)
        {
            Assert.True(rig.Nic.Deliver(frame));
        }
        Assert.False(rig.Nic.Deliver(frame));
        Assert.False(rig.Nic.Deliver(new byte[VirtioNet.MaxFrameSize + 1]));
        Assert.Equal(2, rig.Nic.DroppedFrames);
    }
}
