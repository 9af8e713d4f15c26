using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class PortBusTests
{
    private sealed class Echo : IPortDevice
    {
        public readonly List<(ushort Port, int Size, uint Value)> Writes = [];
        public uint Read(ushort port, int size) => port;
        public void Write(ushort port, int size, uint value) => Writes.Add((port, size, value));
    }

    [Fact]
    public void Unclaimed_ports_read_all_ones_per_size_and_ignore_writes()
    {
        var bus = new PortBus();
        Assert.Equal(0xFFu, bus.Read(0x1234, 1));
        Assert.Equal(0xFFFFu, bus.Read(0x1234, 2));
        Assert.Equal(0xFFFF_FFFFu, bus.Read(0x1234, 4));
        bus.Write(0x1234, 4, 0xDEADBEEF); // nothing to observe, but it must not throw
        Assert.Null(bus.DeviceAt(0x1234));
    }

    [Fact]
    public void Claimed_ports_dispatch_to_their_device_with_the_value_masked_to_the_size()
    {
        var bus = new PortBus();
        var a = new Echo();
        var b = new Echo();
        bus.Register(a, 0x3F8, 8);
        bus.Register(b, 0x60, 1);
        Assert.Equal(0xFAu, bus.Read(0x3FA, 1));
        bus.Write(0x3F9, 1, 0x1FF);
        bus.Write(0x60, 2, 0x12345);
        Assert.Equal([(0x3F9, 1, 0xFFu)], a.Writes);
        Assert.Equal([(0x60, 2, 0x2345u)], b.Writes);
        Assert.Same(a, bus.DeviceAt(0x3FF));
        Assert.Null(bus.DeviceAt(0x400));
    }

    [Fact]
    public void Overlapping_claims_are_refused()
    {
        var bus = new PortBus();
        bus.Register(new Echo(), 0x40, 4);
        var ex = Assert.Throws<InvalidOperationException>(() => bus.Register(new Echo(), 0x43, 2));
        Assert.Contains("0x0043", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => bus.Register(new Echo(), 0xFFFF, 2));
    }

    [Fact]
    public void Mmio_bus_dispatches_by_range_and_reads_all_ones_elsewhere()
    {
        var mmio = new MmioBus();
        var vga = new VgaText();
        mmio.Register(vga, VgaText.BufferBase, VgaText.BufferSize);
        mmio.Write(VgaText.BufferBase, 2, 0x1F41);
        Assert.Equal(0x1F41ul, mmio.Read(VgaText.BufferBase, 2));
        Assert.Equal(0xFFFF_FFFFul, mmio.Read(0xFEE0_0000, 4));
        Assert.Equal(ulong.MaxValue, mmio.Read(VgaText.BufferBase + VgaText.BufferSize - 4, 8)); // straddles the end
        Assert.Throws<InvalidOperationException>(() => mmio.Register(new VgaText(), 0xBF000, 0x2000));
    }

    [Fact]
    public void Debug_exit_and_post_code_ports_report_to_the_machine()
    {
        var requests = new MachineRequests();
        var bus = new PortBus();
        var post = new PostCodePort();
        bus.Register(new DebugExitPort(requests), DebugExitPort.Port);
        bus.Register(post, PostCodePort.Port);
        bus.Write(0x80, 1, 0x42);
        Assert.Equal(0x42, post.LastCode);
        Assert.Equal(1, post.WriteCount);
        Assert.Equal(MachineRequestKind.None, requests.Pending);
        bus.Write(0xF4, 1, 0x10);
        bus.Write(0xF4, 1, 0x20); // the first request wins until the machine takes it
        Assert.True(requests.TryTake(out var kind, out uint value));
        Assert.Equal(MachineRequestKind.DebugExit, kind);
        Assert.Equal(0x10u, value);
        Assert.Equal(0x21, DebugExitPort.ExitStatusFor(value));
        Assert.False(requests.TryTake(out _, out _));
    }

    [Fact]
    public void Clock_reports_the_earliest_deadline_and_jumps_to_it()
    {
        var clock = new DeviceClock();
        var irq = new IrqRecorder();
        var pit = new Pit8254(clock, irq);
        var bus = new PortBus();
        pit.Attach(bus);
        Assert.Equal(long.MaxValue, clock.NextDeadlineNs());
        Assert.False(clock.JumpToNextDeadline());
        bus.Write(0x43, 1, 0x34); // counter 0, LSB/MSB, mode 2
        bus.Write(0x40, 1, 0x9C); // 11932 = 100 Hz
        bus.Write(0x40, 1, 0x2E);
        long deadline = clock.NextDeadlineNs();
        Assert.InRange(deadline, 9_999_000, 10_001_000);
        int edges = irq.RisingEdges[0];
        Assert.True(clock.JumpToNextDeadline());
        Assert.Equal(deadline, clock.NowNs);
        Assert.Equal(edges + 1, irq.RisingEdges[0]);
        clock.SetNow(5); // never backwards
        Assert.Equal(deadline, clock.NowNs);
    }
}

public sealed class PcDevicesTests
{
    [Fact]
    public void Standard_set_claims_exactly_the_pc_ports_and_nothing_else()
    {
        var set = new PcDevices(new PcDeviceOptions { SerialOutput = new BufferSerialOutput(), RamBytes = 64L << 20 });
        int[] expected =
        [
            0x20, 0x21, 0x40, 0x41, 0x42, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0x80, 0xA0, 0xA1,
            .. Enumerable.Range(0x3C0, 16), 0x3D4, 0x3D5, 0x3DA, .. Enumerable.Range(0x3F8, 8), 0x4D0, 0x4D1,
            .. Enumerable.Range(0xCF8, 8),
        ];
        var claimed = Enumerable.Range(0, 0x10000).Where(p => set.Ports.DeviceAt((ushort)p) is not null).ToArray();
        Assert.Equal(expected.Order(), claimed);
        Assert.Null(set.DebugExit);
        var withDebug = new PcDevices(new PcDeviceOptions { SerialOutput = new BufferSerialOutput(), RamBytes = 64L << 20, DebugExit = true });
        Assert.NotNull(withDebug.Ports.DeviceAt(0xF4));
    }

    [Fact]
    public void Uart_interrupt_reaches_the_cpu_through_the_pic_with_vector_0x24()
    {
        var set = new PcDevices(new PcDeviceOptions { SerialOutput = new BufferSerialOutput(), RamBytes = 64L << 20 });
        foreach (var (port, value) in new (int, int)[] { (0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01) })
        {
            set.Ports.Write((ushort)port, 1, (uint)value);
        }
        set.Ports.Write(0x3FC, 1, 0x08); // OUT2
        set.Ports.Write(0x3F9, 1, 0x01); // receive interrupt
        set.Com1.EnqueueInput("k"u8);
        Assert.False(set.Pic.HasPending);
        set.PumpHostInput();
        Assert.True(set.Pic.HasPending);
        Assert.Equal(0x24, set.Pic.Acknowledge());
        Assert.Equal((uint)'k', set.Ports.Read(0x3F8, 1));
        // The RAM size reached the CMOS: 0x34/0x35 = (64 - 16) MiB in 64 KiB units.
        set.Ports.Write(0x70, 1, 0x34);
        Assert.Equal((uint)(48 * 16 & 0xFF), set.Ports.Read(0x71, 1));
    }
}
