using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class VgaTests
{
    private readonly VgaText _vga = new();

    private void WriteText(int row, int column, string text, byte attribute)
    {
        for (int i = 0; i < text.Length; i++)
        {
            ulong offset = (ulong)((row * 80 + column + i) * 2);
            _vga.Write(offset, 2, (ulong)(attribute << 8 | text[i]));
        }
    }

    private void Crtc(int index, int value)
    {
        _vga.Out(0x3D4, index);
        _vga.Out(0x3D5, value);
    }

    [Fact]
    public void Screen_api_returns_text_attributes_and_the_cursor()
    {
        Assert.Equal("", _vga.Snapshot().Text);
        WriteText(0, 0, "Linux version 6.1", 0x07);
        WriteText(2, 5, "ALERT", 0x4F);
        Crtc(0x0E, 0x00);
        Crtc(0x0F, 85); // row 1, column 5
        var screen = _vga.Snapshot();
        Assert.Equal("Linux version 6.1", screen.Line(0));
        Assert.Equal("     ALERT", screen.Line(2));
        Assert.Equal(0x4F, screen.AttributeAt(2, 5));
        Assert.Equal(0x07, screen.AttributeAt(0, 0));
        Assert.Equal((1, 5, true), (screen.CursorRow, screen.CursorColumn, screen.CursorVisible));
        Assert.Equal("Linux version 6.1\n\n     ALERT", screen.Text);
    }

    [Fact]
    public void Start_address_scrolls_the_visible_window()
    {
        WriteText(0, 0, "first", 0x07);
        WriteText(1, 0, "second", 0x07);
        Crtc(0x0C, 0);
        Crtc(0x0D, 80);
        var screen = _vga.Snapshot();
        Assert.Equal("second", screen.Line(0));
        Crtc(0x0E, 0);
        Crtc(0x0F, 10); // above the window: cursor not shown
        Assert.False(_vga.Snapshot().CursorVisible);
    }

    [Fact]
    public void Cursor_disable_bit_and_crtc_read_back_with_word_writes()
    {
        _vga.Write(0x3D4, 2, 0x200A); // out dx, ax: index 0x0A, data 0x20 (cursor off)
        Assert.False(_vga.Snapshot().CursorVisible);
        _vga.Out(0x3D4, 0x0A);
        Assert.Equal(0x20, _vga.In(0x3D5));
        Assert.Equal(0x0A, _vga.In(0x3D4));
    }

    [Fact]
    public void Code_page_437_characters_map_to_unicode()
    {
        WriteText(0, 0, "\u00C4\u00CD\u00DB", 0x07); // bytes 0xC4, 0xCD, 0xDB
        Assert.Equal("─═█", _vga.Snapshot().Line(0));
        Assert.Equal('☺', VgaText.ToUnicode(1));
    }

    [Fact]
    public void Attribute_controller_flip_flop_is_reset_by_reading_input_status_1()
    {
        _vga.In(0x3DA);
        _vga.Out(0x3C0, 0x10); // index: mode control
        _vga.Out(0x3C0, 0x0C); // data
        Assert.Equal(0x0C, _vga.In(0x3C1));
        _vga.Out(0x3C0, 0x11); // flip-flop is back at "index"
        _vga.In(0x3DA);        // reset
        _vga.Out(0x3C0, 0x12); // index again
        _vga.Out(0x3C0, 0x0F);
        _vga.Out(0x3C0, 0x12);
        Assert.Equal(0x0F, _vga.In(0x3C1));
    }

    [Fact]
    public void Sequencer_graphics_dac_and_misc_registers_read_back()
    {
        _vga.Out(0x3C4, 0x02);
        _vga.Out(0x3C5, 0x04);
        Assert.Equal(0x04, _vga.In(0x3C5));
        _vga.Out(0x3CE, 0x06);
        _vga.Out(0x3CF, 0x0E);
        Assert.Equal(0x0E, _vga.In(0x3CF));
        _vga.Out(0x3C8, 5);
        _vga.Out(0x3C9, 0x3F);
        _vga.Out(0x3C9, 0x20);
        _vga.Out(0x3C9, 0x7F); // 6-bit DAC
        _vga.Out(0x3C7, 5);
        Assert.Equal(0x3F, _vga.In(0x3C9));
        Assert.Equal(0x20, _vga.In(0x3C9));
        Assert.Equal(0x3F, _vga.In(0x3C9));
        _vga.Out(0x3C2, 0x63);
        Assert.Equal(0x63, _vga.In(0x3CC));
    }

    [Fact]
    public void Text_buffer_accepts_every_access_size_and_ignores_bytes_past_its_end()
    {
        _vga.Write(0ul, 8, 0x0741_0742_0743_0744ul);
        Assert.Equal(0x0741_0742_0743_0744ul, _vga.Read(0ul, 8));
        _vga.Write((ulong)VgaText.BufferSize - 1, 2, 0xABCDul);
        Assert.Equal(0xFFCDul, _vga.Read((ulong)VgaText.BufferSize - 1, 2));
        Assert.Equal("DCBA", _vga.Snapshot().Line(0));
    }
}
