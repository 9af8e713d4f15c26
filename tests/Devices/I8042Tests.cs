using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class I8042Tests
{
    private readonly IrqRecorder _irq = new();
    private readonly MachineRequests _requests = new();
    private readonly I8042 _kbc;

    public I8042Tests() => _kbc = new I8042(_irq, _requests);

    private byte ReadData()
    {
        Assert.Equal(0x01, _kbc.In(0x64) & 0x01); // output buffer full
        return _kbc.In(0x60);
    }

    [Fact]
    public void Self_test_interface_test_and_command_byte_round_trip()
    {
        _kbc.Out(0x64, 0xAA);
        Assert.Equal(0x55, ReadData());
        _kbc.Out(0x64, 0xAB);
        Assert.Equal(0x00, ReadData());
        _kbc.Out(0x64, 0x20);
        Assert.Equal(0x45, ReadData()); // IRQ1, system flag, translation
        _kbc.Out(0x64, 0x60);
        _kbc.Out(0x60, 0x44);           // IRQ1 off
        _kbc.Out(0x64, 0x20);
        Assert.Equal(0x08, _kbc.In(0x64) & 0x08); // A2: the last write went to the command port
        Assert.Equal(0x44, ReadData());
        Assert.Equal(0, _kbc.In(0x64) & 0x01);
    }

    [Fact]
    public void Pulse_reset_command_and_output_port_bit_0_request_a_reset()
    {
        _kbc.Out(0x64, 0xFE);
        Assert.True(_requests.TryTake(out var kind, out _));
        Assert.Equal(MachineRequestKind.Reset, kind);
        _kbc.Out(0x64, 0xFF); // pulses nothing: bit 0 set
        Assert.False(_requests.TryTake(out _, out _));
        _kbc.Out(0x64, 0xD1);
        _kbc.Out(0x60, 0x02); // A20 on, reset line low
        Assert.True(_requests.TryTake(out kind, out _));
        Assert.Equal(MachineRequestKind.Reset, kind);
        _kbc.Out(0x64, 0xD1);
        _kbc.Out(0x60, 0x01); // A20 off, no reset
        Assert.False(_kbc.A20Enabled);
        Assert.False(_requests.TryTake(out _, out _));
        _kbc.Out(0x64, 0xD0);
        Assert.Equal(0x01, ReadData());
    }

    [Fact]
    public void Keyboard_reset_answers_ack_and_bat_passed_and_raises_irq1()
    {
        _kbc.Out(0x60, 0xFF);
        Assert.True(_irq.Level[1]);
        Assert.Equal(0xFA, ReadData());
        Assert.Equal(0xAA, ReadData());
        Assert.False(_irq.Level[1]);
        Assert.Equal(2, _irq.RisingEdges[1]); // one edge per byte
    }

    [Fact]
    public void Identify_is_translated_when_translation_is_on()
    {
        _kbc.Out(0x60, 0xF2);
        Assert.Equal(0xFA, ReadData());
        Assert.Equal(0xAB, ReadData());
        Assert.Equal(0x41, ReadData()); // 0x83 through the 8042 translation table
        _kbc.Out(0x64, 0x60);
        _kbc.Out(0x60, 0x05);          // translation off
        _kbc.Out(0x60, 0xF2);
        Assert.Equal(0xFA, ReadData());
        Assert.Equal(0xAB, ReadData());
        Assert.Equal(0x83, ReadData());
    }

    [Fact]
    public void Key_presses_are_translated_from_set_2_to_set_1()
    {
        _kbc.PressKey("A");
        _kbc.PumpHostInput();
        Assert.Equal(0x1E, ReadData());
        Assert.Equal(0x9E, ReadData()); // F0 1C -> 9E
        _kbc.PressKey("Up");
        _kbc.PumpHostInput();
        Assert.Equal(0xE0, ReadData());
        Assert.Equal(0x48, ReadData());
        Assert.Equal(0xE0, ReadData());
        Assert.Equal(0xC8, ReadData());
        _kbc.InjectSet1([0x1C, 0x9C]);   // Enter, as set 1 bytes
        _kbc.PumpHostInput();
        Assert.Equal(0x1C, ReadData());
        Assert.Equal(0x9C, ReadData());
        Assert.Throws<ArgumentException>(() => _kbc.PressKey("NoSuchKey"));
    }

    [Fact]
    public void Leds_scan_set_and_scanning_commands()
    {
        _kbc.Out(0x60, 0xED);
        Assert.Equal(0xFA, ReadData());
        _kbc.Out(0x60, 0x07);
        Assert.Equal(0xFA, ReadData());
        Assert.Equal(0x07, _kbc.Leds);
        _kbc.Out(0x60, 0xF0);
        Assert.Equal(0xFA, ReadData());
        _kbc.Out(0x60, 0x00);
        Assert.Equal(0xFA, ReadData());
        Assert.Equal(0x02, ReadData()); // reports set 2 (no key has set 2 code 0x02, so it passes translation unchanged)
        _kbc.Out(0x60, 0xF5);
        Assert.Equal(0xFA, ReadData());
        _kbc.PressKey("B");
        _kbc.PumpHostInput();
        Assert.Equal(0, _kbc.In(0x64) & 0x01); // not scanning: keys wait
        _kbc.Out(0x60, 0xF4);
        Assert.Equal(0xFA, ReadData());
        Assert.Equal(0x30, ReadData());
        Assert.Equal(0xB0, ReadData());
        _kbc.Out(0x60, 0xEE);
        Assert.Equal(0xEE, ReadData()); // echo
    }

    [Fact]
    public void Disabled_keyboard_interface_holds_bytes_until_enabled()
    {
        _kbc.Out(0x64, 0xAD);
        _kbc.PressKey("Space");
        _kbc.PumpHostInput();
        Assert.Equal(0, _kbc.In(0x64) & 0x01);
        _kbc.Out(0x64, 0xAE);
        Assert.Equal(0x39, ReadData());
    }

    [Fact]
    public void Aux_commands_answer_as_an_empty_ps2_port()
    {
        _kbc.Out(0x64, 0xD4);
        _kbc.Out(0x60, 0xFF);
        int status = _kbc.In(0x64);
        Assert.Equal(0x61, status & 0x61); // output full, aux data, time-out
        Assert.Equal(0xFE, _kbc.In(0x60));
        _kbc.Out(0x64, 0xA7);
        _kbc.Out(0x64, 0x20);
        Assert.Equal(0x20, ReadData() & 0x20);
    }

    [Fact]
    public void Typed_text_becomes_set_1_make_and_break_codes_with_shift()
    {
        _kbc.TypeText("aB!\n");
        var codes = new List<byte>();
        for (int guard = 0; guard < 100; guard++)
        {
            _kbc.PumpHostInput();
            if ((_kbc.In(0x64) & 0x01) == 0) break;
            codes.Add(_kbc.In(0x60));
        }
        Assert.Equal(new byte[]
        {
            0x1E, 0x9E,                         // a
            0x2A, 0x30, 0xB0, 0xAA,             // Shift+B
            0x2A, 0x02, 0x82, 0xAA,             // Shift+1 = !
            0x1C, 0x9C,                         // Enter
        }, codes);
        Assert.Throws<ArgumentException>(() => _kbc.TypeText("é"));
    }
}
