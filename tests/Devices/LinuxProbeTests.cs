using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

/// <summary>
/// The register sequences Linux's drivers run at boot (8250 autoconfig and start-up, i8042
/// controller check), replayed against the devices: what the kernel concludes from them decides
/// whether the console works at all.
/// </summary>
public sealed class LinuxProbeTests
{
    [Fact]
    public void Serial_8250_autoconfig_identifies_a_16550a_with_working_thre()
    {
        var pic = new PicPair();
        var uart = new Uart16550(new DeviceClock(), pic, new BufferSerialOutput());
        const int b = 0x3F8;
        // autoconfig(): IER probe
        int savedIer = uart.In(b + 1);
        uart.Out(b + 1, 0);
        int scratch1 = uart.In(b + 1);
        uart.Out(b + 1, 0x0F);
        int scratch2 = uart.In(b + 1);
        uart.Out(b + 1, savedIer);
        Assert.Equal((0, 0x0F), (scratch1 & 0x0F, scratch2 & 0x0F));
        // loopback check: MSR must read 0x90 with MCR = LOOP | 0x0A
        int savedMcr = uart.In(b + 4);
        uart.Out(b + 4, 0x10 | 0x0A);
        int status = uart.In(b + 6) & 0xF0;
        uart.Out(b + 4, savedMcr);
        Assert.Equal(0x90, status);
        // FIFO type via IIR bits 6-7
        uart.Out(b + 3, 0xBF); // LCR_CONF_MODE_B: EFR probe reads IIR here on a plain 16550A
        uart.Out(b + 2, 0);
        uart.Out(b + 3, 0);
        uart.Out(b + 2, 0x01);
        int type = uart.In(b + 2) >> 6;
        Assert.Equal(3, type);
        // autoconfig_16550a: no EFR (reads at offset 2 with LCR 0x80/0xBF are IIR, not 0)
        uart.Out(b + 3, 0x80);
        Assert.NotEqual(0, uart.In(b + 2));
        uart.Out(b + 3, 0xBF);
        Assert.NotEqual(0, uart.In(b + 2));
        // no 64-byte FIFO (16750): IIR bit 5 stays clear with FCR bit 5 set
        uart.Out(b + 3, 0);
        uart.Out(b + 2, 0x21);
        Assert.Equal(0xC0, uart.In(b + 2) & 0xE0);
        // IER bit 6 (XScale UUE) cannot be set
        uart.Out(b + 1, 0x40);
        Assert.Equal(0, uart.In(b + 1) & 0x40);
        uart.Out(b + 1, 0);
        // serial8250_do_startup(): THRE must re-assert each time THRI is enabled
        uart.Out(b + 1, 0x02);
        int iir1 = uart.In(b + 2);
        uart.Out(b + 1, 0);
        uart.Out(b + 1, 0x02);
        int lsr = uart.In(b + 5);
        int iir = uart.In(b + 2);
        uart.Out(b + 1, 0);
        Assert.Equal(0x02, iir1 & 0x0F);
        Assert.Equal(0x40, lsr & 0x40);   // TEMT
        Assert.Equal(0, iir & 0x01);      // an interrupt was pending: no UART_BUG_THRE
    }

    [Fact]
    public void I8042_controller_check_selftest_and_ctr_read_are_stable()
    {
        var pic = new PicPair();
        var kbc = new I8042(pic, new MachineRequests());
        // i8042_controller_check(): status must not float (0xFF), and the flush must terminate
        Assert.NotEqual(0xFF, kbc.In(0x64));
        int flushed = 0;
        while ((kbc.In(0x64) & 0x01) != 0 && flushed++ < 16) kbc.In(0x60);
        Assert.True(flushed < 16);
        // i8042_controller_selftest()
        kbc.Out(0x64, 0xAA);
        Assert.Equal(0x55, kbc.In(0x60));
        // i8042_controller_init(): two identical CTR reads
        kbc.Out(0x64, 0x20);
        int ctr1 = kbc.In(0x60);
        kbc.Out(0x64, 0x20);
        int ctr2 = kbc.In(0x60);
        Assert.Equal(ctr1, ctr2);
        Assert.Equal(0x40, ctr1 & 0x40); // translated, so atkbd skips set selection
        // i8042_check_aux(): the loop byte comes back without the AUXDATA flag ("auxerr"), and the
        // interface test then reports an error that is neither 0x00, 0xFA nor 0xFF: no aux port.
        kbc.Out(0x64, 0xD3);
        kbc.Out(0x60, 0x5A);
        Assert.Equal(0x01, kbc.In(0x64) & 0x21);
        Assert.Equal(0x5A, kbc.In(0x60));
        kbc.Out(0x64, 0xA9);
        int auxTest = kbc.In(0x60);
        Assert.True(auxTest is not (0x00 or 0xFA or 0xFF));
    }
}
