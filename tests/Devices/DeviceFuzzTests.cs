using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

/// <summary>
/// Hostile guests: random sequences of port writes, port reads, MMIO accesses, interrupt
/// acknowledges and clock jumps against the whole device set never throw, and every read returns
/// a value within its access size.
/// </summary>
public sealed class DeviceFuzzTests
{
    /// <summary>Every device the machine wires up, on one bus, plus some host input waiting.</summary>
    private static PcDevices NewDeviceSet()
    {
        var set = new PcDevices(new PcDeviceOptions { SerialOutput = new BufferSerialOutput(), RamBytes = 64L << 20, DebugExit = true });
        set.Com1.EnqueueInput("input from the host"u8);
        set.Keyboard.PressKey("Enter");
        return set;
    }

    /// <summary>Ports devices decode, so that random operations hit them often.</summary>
    private static readonly int[] InterestingPorts =
    [
        0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC,
        0x3FD, 0x3FE, 0x3FF, 0x70, 0x71, 0x60, 0x64, 0x3C0, 0x3C1, 0x3C4, 0x3C5, 0x3C7, 0x3C8, 0x3C9, 0x3CE,
        0x3CF, 0x3D4, 0x3D5, 0x3DA, 0xCF8, 0xCF9, 0xCFC, 0xCFD, 0xCFE, 0xCFF, 0xF4, 0x80,
    ];

    private readonly record struct Op(int Kind, int Port, int Size, uint Value, long Advance);

    private static Gen<Op> OpGen =>
        from kind in Gen.Choose(0, 5)
        from port in Gen.OneOf(Gen.Elements(InterestingPorts), Gen.Choose(0, 0xFFFF))
        from size in Gen.Elements(1, 2, 4)
        from value in Gen.OneOf(Gen.Choose(0, 0xFF), Gen.Choose(int.MinValue, int.MaxValue)).Select(v => (uint)v)
        from advance in Gen.Choose(0, 2_000_000)
        select new Op(kind, port, size, value, advance * 37L);

    private static bool Run(Op[] ops)
    {
        var set = NewDeviceSet();
        foreach (var op in ops)
        {
            switch (op.Kind)
            {
                case 0:
                case 1:
                    set.Ports.Write((ushort)op.Port, op.Size, op.Value);
                    break;
                case 2:
                    uint read = set.Ports.Read((ushort)op.Port, op.Size);
                    if (read > PortBus.SizeMask(op.Size)) return false;
                    break;
                case 3:
                    ulong address = VgaText.BufferBase + (ulong)(op.Value % (VgaText.BufferSize + 64));
                    set.Mmio.Write(address, op.Size, op.Value);
                    if (set.Mmio.Read(address, op.Size) > MmioBus.SizeMask(op.Size)) return false;
                    break;
                case 4:
                    if (set.Pic.HasPending) set.Pic.Acknowledge();
                    break;
                default:
                    set.AdvanceTo(set.Clock.NowNs + op.Advance);
                    set.PumpHostInput();
                    break;
            }
            set.Requests.TryTake(out _, out _);
        }
        var screen = set.Vga.Snapshot();
        return screen.Characters.Length == 80 * 25;
    }

    [Fact]
    public void Random_port_mmio_interrupt_and_clock_operations_never_throw()
    {
        Prop.ForAll(Arb.From(Gen.ArrayOf(OpGen)), Run)
            .Check(Config.QuickThrowOnFailure.WithMaxTest(300));
    }

    [Fact]
    public void Random_writes_to_every_claimed_port_never_throw()
    {
        var set = NewDeviceSet();
        var random = new Random(1234);
        for (int round = 0; round < 4; round++)
        {
            for (int port = 0; port < 0x10000; port++)
            {
                if (set.Ports.DeviceAt((ushort)port) is null && port % 257 != 0)
                {
                    continue;
                }
                int size = 1 << random.Next(3);
                set.Ports.Write((ushort)port, size, (uint)random.Next());
                set.Ports.Read((ushort)port, size);
                set.Clock.Advance(random.Next(100_000));
                set.Clock.RunDue();
                while (set.Pic.HasPending)
                {
                    set.Pic.Acknowledge();
                    set.Ports.Write(0x20, 1, 0x20);
                    set.Ports.Write(0xA0, 1, 0x20);
                    if (random.Next(4) == 0) break;
                }
            }
        }
    }
}
