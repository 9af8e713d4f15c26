using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class PciTests
{
    private sealed class TestNic : PciConfigSpace
    {
        public TestNic() : base(0x1AF4, 0x1000, 0x02, 0x00, 0x00, 0x00, interruptPin: 1)
        {
            DefineBar(0, new PciBar(0x20, IsIo: true));
            DefineBar(1, new PciBar(0x1000, IsIo: false));
        }
    }

    private readonly MachineRequests _requests = new();
    private readonly PciHost _host;
    private readonly PortBus _bus = new();

    public PciTests()
    {
        _host = new PciHost(_requests);
        _host.Attach(_bus);
    }

    private static uint Address(int device, int function, int register) =>
        0x8000_0000u | (uint)device << 11 | (uint)function << 8 | (uint)register;

    private uint ReadConfig(int device, int function, int register, int size = 4)
    {
        _bus.Write(0xCF8, 4, Address(device, function, register & 0xFC));
        return _bus.Read((ushort)(0xCFC + (register & 3)), size);
    }

    private void WriteConfig(int device, int function, int register, uint value, int size = 4)
    {
        _bus.Write(0xCF8, 4, Address(device, function, register & 0xFC));
        _bus.Write((ushort)(0xCFC + (register & 3)), size, value);
    }

    [Fact]
    public void Host_bridge_answers_at_00_00_0_with_440fx_ids_and_class()
    {
        Assert.Equal(0x1237_8086u, ReadConfig(0, 0, 0));
        Assert.Equal(0x0600_0002u, ReadConfig(0, 0, 8));
        Assert.Equal(0x8086u, ReadConfig(0, 0, 0, 2));
        Assert.Equal(0x12u, ReadConfig(0, 0, 3, 1));
    }

    [Fact]
    public void Absent_functions_and_other_buses_read_all_ones()
    {
        Assert.Equal(0xFFFF_FFFFu, ReadConfig(1, 0, 0));
        Assert.Equal(0xFFFFu, ReadConfig(31, 7, 2, 2));
        _bus.Write(0xCF8, 4, 0x8001_0000); // bus 1
        Assert.Equal(0xFFFF_FFFFu, _bus.Read(0xCFC, 4));
        _bus.Write(0xCF8, 4, 0x0000_0000); // enable bit clear
        Assert.Equal(0xFFFF_FFFFu, _bus.Read(0xCFC, 4));
    }

    [Fact]
    public void Config_address_reads_back_only_as_a_dword_the_linux_type_1_probe()
    {
        _bus.Write(0xCFB, 1, 0x01);
        _bus.Write(0xCF8, 4, 0x8000_0000);
        Assert.Equal(0x8000_0000u, _bus.Read(0xCF8, 4));
        _bus.Write(0xCF8, 4, 0xFFFF_FFFF);
        Assert.Equal(0x80FF_FFFCu, _bus.Read(0xCF8, 4));
    }

    [Fact]
    public void Bars_answer_the_sizing_write_and_keep_their_type_bits()
    {
        _host.AddFunction(3, 0, new TestNic());
        Assert.Equal(0x1000_1AF4u, ReadConfig(3, 0, 0));
        WriteConfig(3, 0, 0x10, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_FFE1u, ReadConfig(3, 0, 0x10)); // 32-byte I/O BAR
        WriteConfig(3, 0, 0x14, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_F000u, ReadConfig(3, 0, 0x14)); // 4 KiB memory BAR
        WriteConfig(3, 0, 0x18, 0xFFFF_FFFF);
        Assert.Equal(0u, ReadConfig(3, 0, 0x18));           // unimplemented BAR
        WriteConfig(3, 0, 0x10, 0xC040);
        Assert.Equal(0xC041u, ReadConfig(3, 0, 0x10));
        WriteConfig(3, 0, 0x00, 0);                          // IDs are read-only
        Assert.Equal(0x1000_1AF4u, ReadConfig(3, 0, 0));
    }

    [Fact]
    public void Command_interrupt_line_and_pin_semantics()
    {
        var nic = new TestNic();
        _host.AddFunction(3, 0, nic);
        WriteConfig(3, 0, 0x04, 0xFFFF, 2);
        Assert.Equal(0x0547u, ReadConfig(3, 0, 0x04, 2));
        WriteConfig(3, 0, 0x3C, 0xFFFF_FF0B);
        Assert.Equal(0x0000_010Bu, ReadConfig(3, 0, 0x3C)); // line writable, pin 1 (INTA#) fixed
        Assert.Equal(11, nic.InterruptLine);
        Assert.Throws<InvalidOperationException>(() => _host.AddFunction(3, 0, new TestNic()));
    }

    [Fact]
    public void Port_cf9_reset_control_requests_a_reset()
    {
        _bus.Write(0xCF9, 1, 0x02);
        Assert.False(_requests.TryTake(out _, out _));
        _bus.Write(0xCF9, 1, 0x06);
        Assert.True(_requests.TryTake(out var kind, out _));
        Assert.Equal(MachineRequestKind.Reset, kind);
    }
}
