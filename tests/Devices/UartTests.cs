using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class UartTests
{
    private const int Base = 0x3F8;
    private const int Rbr = Base, Thr = Base, Ier = Base + 1, Iir = Base + 2, Fcr = Base + 2, Lcr = Base + 3,
        Mcr = Base + 4, Lsr = Base + 5, Msr = Base + 6, Scr = Base + 7;
    private readonly DeviceClock _clock = new();
    private readonly IrqRecorder _irq = new();
    private readonly BufferSerialOutput _output = new();
    private readonly Uart16550 _uart;

    public UartTests() => _uart = new Uart16550(_clock, _irq, _output);

    [Fact]
    public void Transmitted_bytes_reach_the_sink_and_lsr_says_the_transmitter_is_empty()
    {
        foreach (char c in "hello\n")
        {
            Assert.Equal(0x60, _uart.In(Lsr) & 0x60);
            _uart.Out(Thr, c);
        }
        Assert.Equal("hello\n", _output.Text);
    }

    [Fact]
    public void Scratch_register_and_ier_probes_of_the_linux_8250_driver_pass()
    {
        _uart.Out(Scr, 0xA5);
        Assert.Equal(0xA5, _uart.In(Scr));
        _uart.Out(Ier, 0x00);
        Assert.Equal(0x00, _uart.In(Ier) & 0x0F);
        _uart.Out(Ier, 0xFF);
        Assert.Equal(0x0F, _uart.In(Ier)); // bits 4-7 (UUE etc.) do not exist on a 16550A
    }

    [Fact]
    public void Loopback_test_reflects_mcr_in_msr_and_echoes_transmitted_bytes()
    {
        _uart.Out(Mcr, 0x10 | 0x0A); // LOOP | RTS | OUT2
        Assert.Equal(0x90, _uart.In(Msr) & 0xF0); // CTS | DCD, as Linux's autoconfig expects
        _uart.Out(Mcr, 0x10 | 0x05); // LOOP | DTR | OUT1
        Assert.Equal(0x60, _uart.In(Msr) & 0xF0); // DSR | RI
        _uart.Out(Thr, 'x');
        Assert.Equal(0x01, _uart.In(Lsr) & 0x01);
        Assert.Equal((byte)'x', _uart.In(Rbr));
        Assert.Equal("", _output.Text); // nothing left the machine
    }

    [Fact]
    public void Fifo_detection_via_iir_bits_6_and_7_reports_a_16550a()
    {
        Assert.Equal(0x00, _uart.In(Iir) & 0xC0);
        _uart.Out(Fcr, 0x01);
        Assert.Equal(0xC0, _uart.In(Iir) & 0xC0);
        Assert.Equal(0xC1, _uart.In(Iir)); // FIFOs on, no interrupt
        _uart.Out(Fcr, 0x00);
        Assert.Equal(0x01, _uart.In(Iir));
    }

    [Fact]
    public void Dlab_switches_offsets_0_and_1_to_the_divisor_latch()
    {
        _uart.Out(Ier, 0x05);
        _uart.Out(Lcr, 0x83);
        _uart.Out(Base, 0x0C);
        _uart.Out(Base + 1, 0x00);
        Assert.Equal(0x0C, _uart.In(Base));
        Assert.Equal(0x00, _uart.In(Base + 1));
        _uart.Out(Lcr, 0x03);
        Assert.Equal(0x05, _uart.In(Ier));
        Assert.Equal(0x03, _uart.In(Lcr));
        Assert.Equal("", _output.Text); // the divisor write was not transmitted
    }

    [Fact]
    public void Enabling_thre_interrupt_raises_it_at_once_and_reading_iir_clears_it()
    {
        _uart.Out(Mcr, 0x08); // OUT2 connects the interrupt to IRQ4
        _uart.Out(Ier, 0x02);
        Assert.True(_irq.Level[4]);
        Assert.Equal(0x02, _uart.In(Iir) & 0x0F);
        Assert.False(_irq.Level[4]);
        Assert.Equal(0x01, _uart.In(Iir) & 0x0F);
        _uart.Out(Thr, 'a'); // transmitting empties THR again: THRE again
        Assert.True(_irq.Level[4]);
    }

    [Fact]
    public void Out2_gates_the_irq_line()
    {
        _uart.Out(Ier, 0x02);
        Assert.Equal(0x02, _uart.In(Iir) & 0x0F);
        Assert.Equal(0, _irq.RisingEdges[4]);
    }

    [Fact]
    public void Received_data_interrupt_waits_for_the_fifo_trigger_level()
    {
        _uart.Out(Mcr, 0x08);
        _uart.Out(Fcr, 0x81); // FIFO on, trigger 8
        _uart.Out(Ier, 0x01);
        _uart.EnqueueInput("abcdefg"u8);
        _uart.PumpHostInput();
        Assert.False(_irq.Level[4]);
        Assert.Equal(0xC1, _uart.In(Iir));
        _uart.EnqueueInput("h"u8);
        _uart.PumpHostInput();
        Assert.True(_irq.Level[4]);
        Assert.Equal(0xC4, _uart.In(Iir));
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal((byte)"abcdefgh"[i], _uart.In(Rbr));
        }
        Assert.Equal(0, _uart.In(Lsr) & 0x01);
        Assert.False(_irq.Level[4]);
    }

    [Fact]
    public void Character_timeout_fires_after_four_character_times_below_the_trigger()
    {
        _uart.Out(Mcr, 0x08);
        _uart.Out(Lcr, 0x03);    // 8N1: 10 bits per character
        _uart.Out(Fcr, 0xC1);    // trigger 14
        _uart.Out(Ier, 0x01);
        _uart.EnqueueInput("ab"u8);
        _uart.PumpHostInput();
        Assert.Equal(0xC1, _uart.In(Iir));
        long deadline = _uart.NextDeadlineNs;
        Assert.Equal(4 * (10 * 1_000_000_000L / 115_200), deadline);
        _clock.SetNow(deadline);
        _uart.OnClock();
        Assert.Equal(0xCC, _uart.In(Iir));
        Assert.True(_irq.Level[4]);
        Assert.Equal((byte)'a', _uart.In(Rbr)); // reading resets the timeout
        Assert.Equal(0xC1, _uart.In(Iir));
    }

    [Fact]
    public void Host_input_is_flow_controlled_into_the_fifo_without_loss()
    {
        _uart.Out(Fcr, 0x01);
        byte[] text = new byte[100];
        for (int i = 0; i < text.Length; i++) text[i] = (byte)('0' + i % 10);
        Assert.Equal(100, _uart.EnqueueInput(text));
        _uart.PumpHostInput();
        Assert.Equal(84, _uart.PendingHostInput);
        var received = new List<byte>();
        while ((_uart.In(Lsr) & 0x01) != 0)
        {
            received.Add(_uart.In(Rbr));
        }
        Assert.Equal(text, received);
        Assert.Equal(0, _uart.In(Lsr) & 0x02); // no overrun
    }

    [Fact]
    public void Line_status_interrupt_has_priority_over_received_data_and_lsr_read_clears_it()
    {
        _uart.Out(Mcr, 0x18); // loopback: receive what we send
        _uart.Out(Ier, 0x05); // data + line status
        _uart.Out(Thr, '1');
        _uart.Out(Thr, '2'); // FIFO off: holding register overrun
        Assert.Equal(0x06, _uart.In(Iir) & 0x0F);
        Assert.Equal(0x02, _uart.In(Lsr) & 0x02);
        Assert.Equal(0x04, _uart.In(Iir) & 0x0F);
        Assert.Equal(0, _uart.In(Lsr) & 0x02);
    }

    [Fact]
    public void Modem_status_interrupt_reports_deltas_and_msr_read_clears_them()
    {
        _uart.Out(Ier, 0x08);
        _uart.Out(Mcr, 0x10); // loopback with everything low: CTS, DSR, DCD drop
        Assert.Equal(0x00, _uart.In(Iir) & 0x0F);
        int msr = _uart.In(Msr);
        Assert.Equal(0x0B, msr & 0x0F); // DCTS, DDSR, DDCD
        Assert.Equal(0x01, _uart.In(Iir) & 0x0F);
    }
}

public sealed class SerialOutputTests
{
    [Fact]
    public void Stream_output_writes_every_byte_and_flushes_at_line_ends_and_on_request()
    {
        using var buffer = new MemoryStream();
        using var buffered = new BufferedStream(buffer, 4096);
        var output = new StreamSerialOutput(buffered);
        foreach (byte b in "line\nprompt# "u8)
        {
            output.Transmit(b);
        }
        Assert.Equal("line\n", System.Text.Encoding.ASCII.GetString(buffer.ToArray()));
        output.Flush();
        Assert.Equal("line\nprompt# ", System.Text.Encoding.ASCII.GetString(buffer.ToArray()));
    }
}
