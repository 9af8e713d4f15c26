using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class RtcTests
{
    private static readonly DateTimeOffset Start = new(2024, 2, 29, 23, 59, 58, TimeSpan.Zero); // a Thursday
    private readonly DeviceClock _clock = new();
    private readonly IrqRecorder _irq = new();
    private readonly Rtc146818 _rtc;

    public RtcTests() => _rtc = new Rtc146818(_clock, _irq, Start);

    private int Reg(int index)
    {
        _rtc.Out(0x70, index);
        return _rtc.In(0x71);
    }

    private void SetReg(int index, int value)
    {
        _rtc.Out(0x70, index);
        _rtc.Out(0x71, value);
    }

    [Fact]
    public void Time_and_date_read_in_bcd_24_hour_by_default_and_advance_with_virtual_time()
    {
        Assert.Equal(0x58, Reg(0x00));
        Assert.Equal(0x59, Reg(0x02));
        Assert.Equal(0x23, Reg(0x04));
        Assert.Equal(0x05, Reg(0x06)); // Thursday = 5 (Sunday = 1)
        Assert.Equal(0x29, Reg(0x07));
        Assert.Equal(0x02, Reg(0x08));
        Assert.Equal(0x24, Reg(0x09));
        Assert.Equal(0x20, Reg(0x32)); // century
        _clock.SetNow(3_000_000_000); // 3 s later: 2024-03-01 00:00:01
        Assert.Equal(0x01, Reg(0x00));
        Assert.Equal(0x00, Reg(0x04));
        Assert.Equal(0x01, Reg(0x07));
        Assert.Equal(0x03, Reg(0x08));
    }

    [Fact]
    public void Binary_and_12_hour_formats_follow_register_b()
    {
        SetReg(0x0B, 0x04); // binary, 12-hour
        Assert.Equal(58, Reg(0x00));
        Assert.Equal(11 | 0x80, Reg(0x04)); // 11 PM
        Assert.Equal(29, Reg(0x07));
        SetReg(0x0B, 0x00); // BCD, 12-hour
        Assert.Equal(0x11 | 0x80, Reg(0x04));
        _clock.SetNow(2_000_000_000); // midnight: 12 AM
        Assert.Equal(0x12, Reg(0x04));
    }

    [Fact]
    public void Setting_the_time_with_the_set_bit_takes_effect_when_set_is_cleared()
    {
        SetReg(0x0B, 0x82); // SET, 24-hour, BCD
        SetReg(0x00, 0x30);
        SetReg(0x02, 0x15);
        SetReg(0x04, 0x10);
        SetReg(0x07, 0x04);
        SetReg(0x08, 0x07);
        SetReg(0x09, 0x99);
        SetReg(0x32, 0x19);
        _clock.SetNow(5_000_000_000); // frozen while SET
        Assert.Equal(0x30, Reg(0x00));
        SetReg(0x0B, 0x02);
        _clock.SetNow(7_000_000_000);
        Assert.Equal(0x32, Reg(0x00));
        Assert.Equal(0x15, Reg(0x02));
        Assert.Equal(0x99, Reg(0x09));
        Assert.Equal(0x19, Reg(0x32));
    }

    [Fact]
    public void Uip_is_set_only_in_the_last_244_microseconds_before_an_update()
    {
        Assert.Equal(0, Reg(0x0A) & 0x80);
        _clock.SetNow(1_000_000_000 - 100_000);
        Assert.Equal(0x80, Reg(0x0A) & 0x80);
        _clock.SetNow(1_000_000_000);
        Assert.Equal(0, Reg(0x0A) & 0x80);
        Assert.Equal(0x26, Reg(0x0A));
    }

    [Fact]
    public void Periodic_interrupt_at_the_register_a_rate_with_register_c_read_to_clear()
    {
        SetReg(0x0A, 0x26);             // 1024 Hz
        SetReg(0x0B, 0x02 | 0x40);      // PIE
        long deadline = _rtc.NextDeadlineNs;
        Assert.Equal(976_562, deadline);
        _clock.SetNow(deadline);
        _rtc.OnClock();
        Assert.True(_irq.Level[8]);
        Assert.Equal(0xC0, Reg(0x0C) & 0xF0); // IRQF | PF
        Assert.False(_irq.Level[8]);
        Assert.Equal(0x00, Reg(0x0C));        // cleared by the read
        SetReg(0x0A, 0x2F);                  // 2 Hz
        Assert.Equal(500_000_000, _rtc.NextDeadlineNs);
    }

    [Fact]
    public void Update_ended_and_alarm_interrupts()
    {
        SetReg(0x01, 0x00);            // alarm seconds 00
        SetReg(0x03, 0xC0);            // any minute
        SetReg(0x05, 0xFF);            // any hour
        SetReg(0x0B, 0x02 | 0x10 | 0x20); // UIE, AIE
        Assert.Equal(1_000_000_000, _rtc.NextDeadlineNs);
        _clock.SetNow(1_000_000_000);  // 23:59:59
        _rtc.OnClock();
        Assert.Equal(0x90, Reg(0x0C) & 0xB0); // IRQF | UF (PF runs too, without PIE: masked out)
        _clock.SetNow(2_000_000_000);  // 00:00:00 matches the alarm
        _rtc.OnClock();
        Assert.Equal(0xB0, Reg(0x0C) & 0xB0); // IRQF | AF | UF
    }

    [Fact]
    public void Nmi_mask_bit_is_stored_and_cmos_ram_and_memory_size_bytes_are_kept()
    {
        _rtc.Out(0x70, 0x80 | 0x20);
        Assert.True(_rtc.NmiDisabled);
        _rtc.Out(0x71, 0x5A);
        _rtc.Out(0x70, 0x20);
        Assert.False(_rtc.NmiDisabled);
        Assert.Equal(0x5A, _rtc.In(0x71));
        _rtc.SetMemorySize(128L * 1024 * 1024);
        Assert.Equal(640, Reg(0x15) | Reg(0x16) << 8);
        Assert.Equal(0xFFFF, Reg(0x17) | Reg(0x18) << 8);        // capped at 64 MiB
        Assert.Equal(0xFFFF, Reg(0x30) | Reg(0x31) << 8);
        Assert.Equal((128 - 16) * 16, Reg(0x34) | Reg(0x35) << 8); // 64 KiB units above 16 MiB
        Assert.Equal(0x80, Reg(0x0D));
    }
}
