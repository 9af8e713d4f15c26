using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class PitTests
{
    private readonly DeviceClock _clock = new();
    private readonly IrqRecorder _irq = new();
    private readonly Pit8254 _pit;

    public PitTests() => _pit = new Pit8254(_clock, _irq);

    /// <summary>Nanoseconds for <paramref name="ticks"/> PIT input clocks.</summary>
    private static long Ticks(long ticks) => DeviceClock.NsFromTicks(ticks, Pit8254.InputHz);

    private void Program(int channel, int mode, int count, int access = 3, bool bcd = false)
    {
        _pit.Out(0x43, channel << 6 | access << 4 | mode << 1 | (bcd ? 1 : 0));
        if (access is 1 or 3) _pit.Out(0x40 + channel, count & 0xFF);
        if (access is 2 or 3) _pit.Out(0x40 + channel, count >> 8);
    }

    private int ReadCount(int channel)
    {
        int low = _pit.In(0x40 + channel);
        int high = _pit.In(0x40 + channel);
        return low | high << 8;
    }

    [Fact]
    public void Mode_0_counts_down_and_raises_out_at_terminal_count_once()
    {
        Program(0, mode: 0, count: 1000);
        Assert.Equal(1000, ReadCount(0));
        Assert.False(_irq.Level[0]); // OUT low after the control word in mode 0
        _clock.SetNow(Ticks(400));
        Assert.Equal(600, ReadCount(0));
        _clock.SetNow(Ticks(999));
        _pit.OnClock();
        Assert.Equal(0, _irq.RisingEdges[0]);
        Assert.Equal(Ticks(1000), _pit.NextDeadlineNs);
        _clock.SetNow(Ticks(1000));
        _pit.OnClock();
        Assert.Equal(1, _irq.RisingEdges[0]);
        Assert.True(_irq.Level[0]);
        Assert.Equal(long.MaxValue, _pit.NextDeadlineNs); // one shot
        _clock.SetNow(Ticks(1010));
        Assert.Equal(0xFFFF - 9, ReadCount(0)); // keeps counting through 0xFFFF
    }

    [Fact]
    public void Mode_2_is_a_rate_generator_with_a_periodic_irq0()
    {
        Program(0, mode: 2, count: 100);
        int before = _irq.RisingEdges[0];
        for (int period = 1; period <= 5; period++)
        {
            long deadline = _pit.NextDeadlineNs;
            Assert.Equal(Ticks(100 * period), deadline);
            _clock.SetNow(deadline);
            _pit.OnClock();
            Assert.Equal(before + period, _irq.RisingEdges[0]);
        }
        _clock.SetNow(Ticks(550));
        Assert.Equal(50, ReadCount(0));
    }

    [Fact]
    public void Mode_2_missed_periods_collapse_into_one_irq()
    {
        Program(0, mode: 2, count: 100);
        int before = _irq.RisingEdges[0];
        _clock.SetNow(Ticks(1050));
        _pit.OnClock();
        Assert.Equal(before + 1, _irq.RisingEdges[0]);
        Assert.Equal(Ticks(1100), _pit.NextDeadlineNs);
    }

    [Fact]
    public void Mode_3_square_wave_output_is_high_for_the_first_half()
    {
        Program(2, mode: 3, count: 10);
        _pit.Out(0x61, 0x01); // gate channel 2 on
        Assert.NotEqual(0, _pit.In(0x61) & 0x20);
        _clock.SetNow(Ticks(4));
        Assert.NotEqual(0, _pit.In(0x61) & 0x20);
        _clock.SetNow(Ticks(5));
        Assert.Equal(0, _pit.In(0x61) & 0x20);
        _clock.SetNow(Ticks(12));
        Assert.NotEqual(0, _pit.In(0x61) & 0x20);
        Assert.Equal(10 - 2 * 2, ReadCount(2)); // decrements by two per clock
    }

    [Fact]
    public void Channel_2_gate_through_port_0x61_drives_the_linux_tsc_calibration_loop()
    {
        // What Linux's pit_calibrate_tsc does: gate high, speaker off, mode 0 on channel 2, then
        // poll OUT2 in port 0x61 bit 5 until the count runs out.
        _pit.Out(0x61, (_pit.In(0x61) & ~0x02) | 0x01);
        Program(2, mode: 0, count: 11932); // about 10 ms
        Assert.Equal(0, _pit.In(0x61) & 0x20);
        _clock.SetNow(Ticks(11931));
        Assert.Equal(0, _pit.In(0x61) & 0x20);
        _clock.SetNow(Ticks(11932));
        Assert.Equal(0x20, _pit.In(0x61) & 0x20);
        Assert.Equal(0x01, _pit.In(0x61) & 0x0F); // written bits read back
    }

    [Fact]
    public void Gate_low_suspends_mode_0_counting()
    {
        _pit.Out(0x61, 0x01);
        Program(2, mode: 0, count: 1000);
        _clock.SetNow(Ticks(100));
        _pit.Out(0x61, 0x00);
        _clock.SetNow(Ticks(600));
        Assert.Equal(900, ReadCount(2));
        _pit.Out(0x61, 0x01);
        _clock.SetNow(Ticks(700));
        Assert.InRange(ReadCount(2), 800, 801); // within the nanosecond rounding of one input clock
    }

    [Fact]
    public void Counter_latch_holds_the_value_until_both_bytes_are_read()
    {
        Program(0, mode: 2, count: 5000);
        _clock.SetNow(Ticks(1000));
        _pit.Out(0x43, 0x00); // latch counter 0
        _clock.SetNow(Ticks(2000));
        _pit.Out(0x43, 0x00); // ignored: a latch is already held
        Assert.Equal(4000, ReadCount(0));
        Assert.Equal(3000, ReadCount(0)); // latch released: live value
    }

    [Fact]
    public void Read_back_latches_status_then_count()
    {
        Program(1, mode: 2, count: 300, access: 3);
        _clock.SetNow(Ticks(50));
        _pit.Out(0x43, 0xC4); // read-back, count and status, counter 1
        int status = _pit.In(0x41);
        Assert.Equal(0x80 | 3 << 4 | 2 << 1, status); // OUT high, LSB/MSB, mode 2, binary
        Assert.Equal(250, ReadCount(1));
        _pit.Out(0x43, 0x70); // control word for counter 1: null count until loaded
        _pit.Out(0x43, 0xE4); // status only
        Assert.Equal(0x40, _pit.In(0x41) & 0x40);
    }

    [Fact]
    public void Lsb_only_and_msb_only_access_and_bcd()
    {
        Program(1, mode: 2, count: 0x20, access: 1);
        Assert.Equal(0x20, _pit.In(0x41));
        Program(1, mode: 2, count: 0x1200, access: 2);
        Assert.Equal(0x12, _pit.In(0x41));
        Program(1, mode: 2, count: 0x1234, bcd: true); // 1234 decimal
        _clock.SetNow(_clock.NowNs + Ticks(34));
        Assert.Equal(0x1200, ReadCount(1));
    }

    [Fact]
    public void Mode_4_strobes_once_and_mode_1_waits_for_the_gate()
    {
        Program(0, mode: 4, count: 50);
        int before = _irq.RisingEdges[0];
        _clock.SetNow(Ticks(51));
        _pit.OnClock();
        Assert.Equal(before + 1, _irq.RisingEdges[0]);

        Program(2, mode: 1, count: 20);
        Assert.NotEqual(0, _pit.In(0x61) & 0x20); // waiting for trigger: OUT high
        _pit.Out(0x61, 0x01);                      // rising gate triggers
        long t = _clock.NowNs;
        _clock.SetNow(t + Ticks(5));
        Assert.Equal(0, _pit.In(0x61) & 0x20);
        _clock.SetNow(t + Ticks(20));
        Assert.NotEqual(0, _pit.In(0x61) & 0x20);
    }

    [Fact]
    public void Refresh_bit_toggles_with_virtual_time()
    {
        int first = _pit.In(0x61) & 0x10;
        _clock.SetNow(15_085);
        Assert.NotEqual(first, _pit.In(0x61) & 0x10);
    }
}
