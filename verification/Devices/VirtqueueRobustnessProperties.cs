using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Memory;
using Xunit;

namespace SecureVmm.Verification.Devices;

/// <summary>
/// VMM robustness for virtqueues: whatever descriptor tables and ring indices a guest writes,
/// the virtio-net device never throws, never changes a byte of RAM outside the receive buffers the
/// guest offered and the used rings, and never sends more than one frame per offered chain.
/// </summary>
public class VirtqueueRobustnessProperties
{
    private sealed class NoIrq : IIrqLines
    {
        public void SetIrq(int line, bool level)
        {
        }
    }

    private sealed class Counter : IFramePort
    {
        public int Frames;
        public void Transmit(ReadOnlySpan<byte> frame) => Frames++;
    }

    public sealed record Descriptor(ulong Address, uint Length, ushort Flags, ushort Next);

    private static Gen<Descriptor> Descriptors =>
        from address in Gen.OneOf(Gen.Choose(0, 0x7FFFF).Select(v => (ulong)v), ArbMap.Default.GeneratorFor<ulong>())
        from length in Gen.OneOf(Gen.Choose(0, 2000).Select(v => (uint)v), ArbMap.Default.GeneratorFor<uint>())
        from flags in Gen.Choose(0, 7).Select(v => (ushort)v)
        from next in Gen.OneOf(Gen.Choose(0, 8).Select(v => (ushort)v), ArbMap.Default.GeneratorFor<ushort>())
        select new Descriptor(address, length, flags, next);

    [Fact]
    public void RandomDescriptorChainsNeverCrashOrWriteOutsideTheirBuffers()
    {
        const uint Rx = 0x10000, Tx = 0x20000;
        var gen =
            from descCount in Gen.Choose(1, 12)
            from descs in Gen.ArrayOf(Descriptors, descCount)
            from headCount in Gen.Choose(0, 6)
            from heads in Gen.ArrayOf(Gen.OneOf(Gen.Choose(0, 12), Gen.Choose(0, 65535)).Select(v => (ushort)v), headCount)
            from availJump in Gen.Choose(0, 3)
            from frames in Gen.Choose(0, 4)
            select (Descs: descs.ToArray(), Heads: heads.ToArray(), Jump: availJump, Frames: frames);
        Prop.ForAll(Arb.From(gen), c =>
        {
            using var ram = new GuestRam(512 * 1024);
            var map = new PhysicalMemoryMap(ram);
            var sink = new Counter();
            var nic = new VirtioNet(map, new NoIrq(), [2, 0, 0, 0, 0, 1]) { Network = sink };
            nic.WriteConfig(0x04, 2, 1);
            nic.Write(0xC000 + 0x0E, 2, 0);
            nic.Write(0xC000 + 0x08, 4, Rx >> 12);
            nic.Write(0xC000 + 0x0E, 2, 1);
            nic.Write(0xC000 + 0x08, 4, Tx >> 12);
            nic.Write(0xC000 + 0x12, 1, 7);
            foreach (uint ring in new[] { Rx, Tx })
            {
                for (int i = 0; i < c.Descs.Length; i++)
                {
                    var d = ram.Slice(ring + (16u * (uint)i), 16);
                    BinaryPrimitives.WriteUInt64LittleEndian(d, c.Descs[i].Address);
                    BinaryPrimitives.WriteUInt32LittleEndian(d[8..], c.Descs[i].Length);
                    BinaryPrimitives.WriteUInt16LittleEndian(d[12..], c.Descs[i].Flags);
                    BinaryPrimitives.WriteUInt16LittleEndian(d[14..], c.Descs[i].Next);
                }
                uint avail = ring + (16u * VirtioNet.QueueSize);
                for (int i = 0; i < c.Heads.Length; i++)
                {
                    BinaryPrimitives.WriteUInt16LittleEndian(ram.Slice(avail + 4 + (2u * (uint)i), 2), c.Heads[i]);
                }
                ushort idx = c.Jump == 3 ? (ushort)60000 : (ushort)c.Heads.Length;
                BinaryPrimitives.WriteUInt16LittleEndian(ram.Slice(avail + 2, 2), idx);
            }
            byte[] before = ram.Span.ToArray();
            nic.Write(0xC000 + 0x10, 2, 1);
            for (int f = 0; f < c.Frames; f++)
            {
                nic.Deliver(new byte[60 + f]);
            }
            nic.PumpHostInput();

            // Bytes may change only in writable RX buffers the guest described, or in the used rings.
            bool ok = sink.Frames <= c.Heads.Length;
            byte[] after = ram.Span.ToArray();
            for (int a = 0; a < after.Length && ok; a++)
            {
                if (after[a] == before[a])
                {
                    continue;
                }
                bool inUsed = InUsedRing(Rx, a) || InUsedRing(Tx, a);
                bool inRxBuffer = c.Descs.Any(d => (d.Flags & 2) != 0 && (ulong)a >= d.Address && (ulong)a - d.Address < d.Length);
                ok = inUsed || inRxBuffer;
            }
            return ok;
        }).QuickCheckThrowOnFailure();
    }

    private static bool InUsedRing(uint ring, int address)
    {
        uint used = (ring + (16u * VirtioNet.QueueSize) + 6 + (2u * VirtioNet.QueueSize) + 4095) & ~4095u;
        return address >= used && address < used + 6 + (8 * VirtioNet.QueueSize);
    }
}
