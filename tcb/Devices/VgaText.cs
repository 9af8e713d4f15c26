using System.Text;

namespace SecureVmm.Tcb.Devices;

/// <summary>A snapshot of the VGA text screen: characters (as Unicode), attributes, cursor.</summary>
public sealed record VgaScreen(int Columns, int Rows, char[] Characters, byte[] Attributes, int CursorRow, int CursorColumn, bool CursorVisible)
{
    /// <summary>Row <paramref name="row"/> as text, trailing blanks removed.</summary>
    public string Line(int row) => new string(Characters, row * Columns, Columns).TrimEnd();

    /// <summary>The whole screen, one line per row, trailing blanks and empty last rows removed.</summary>
    public string Text
    {
        get
        {
            var sb = new StringBuilder();
            for (int row = 0; row < Rows; row++)
            {
                sb.Append(Line(row)).Append('\n');
            }
            return sb.ToString().TrimEnd('\n', ' ');
        }
    }

    public byte AttributeAt(int row, int column) => Attributes[row * Columns + column];
}

/// <summary>
/// VGA in 80x25 colour text mode (IBM VGA technical reference; FreeVGA register descriptions):
/// the 32 KiB text buffer at 0xB8000-0xBFFFF (character byte, attribute byte per cell), the CRT
/// controller at 0x3D4/0x3D5 (cursor start/end 0x0A/0x0B, start address 0x0C/0x0D, cursor
/// location 0x0E/0x0F), and the registers Linux's vgacon touches: attribute controller 0x3C0/0x3C1
/// with its index/data flip-flop, miscellaneous output 0x3C2/0x3CC, sequencer 0x3C4/0x3C5, DAC
/// 0x3C6-0x3C9, graphics controller 0x3CE/0x3CF, and input status 1 at 0x3DA, whose read resets the
/// attribute flip-flop. Registers are stored and read back; only text mode is displayed.
/// </summary>
public sealed class VgaText : IMmioDevice, IPortDevice
{
    public const ulong BufferBase = 0xB8000;
    public const int BufferSize = 0x8000;
    public const int Columns = 80;
    public const int Rows = 25;

    // CRTC register numbers (CRTC index register 0x3D4).
    private const int CrtcCursorStart = 0x0A, CrtcCursorEnd = 0x0B, CrtcStartHigh = 0x0C, CrtcStartLow = 0x0D,
        CrtcCursorHigh = 0x0E, CrtcCursorLow = 0x0F;

    internal readonly byte[] Buffer = new byte[BufferSize];
    internal readonly byte[] Crtc = new byte[0x19];
    internal readonly byte[] Sequencer = new byte[5];
    internal readonly byte[] Graphics = new byte[9];
    internal readonly byte[] Attribute = new byte[0x15];
    internal readonly byte[] Dac = new byte[256 * 3];
    internal int CrtcIndex, SequencerIndex, GraphicsIndex, AttributeIndex;
    internal bool AttributeFlipFlopData;  // false: next 0x3C0 write is an index
    internal byte MiscOutput = 0x67;      // colour, 0x3Dx CRTC addresses, 28 MHz clock (mode 3)
    internal int DacReadIndex, DacWriteIndex, DacComponent;
    internal byte DacPelMask = 0xFF;
    internal byte DacState;               // 0x3C7 read: 0 = write mode, 3 = read mode
    internal bool RetraceToggle;

    /// <summary>Code page 437, the VGA ROM font's character set, as Unicode.</summary>
    private const string CodePage437 =
        " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼" +
        " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~⌂" +
        "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀" +
        "αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ ";

    public VgaText()
    {
        // Mode 3 defaults a guest can expect before it programs anything: cursor on scan lines
        // 14-15 of a 16-line cell, 80 columns (offset register 0x13 = 40 words), blank screen.
        Crtc[CrtcCursorStart] = 0x0E;
        Crtc[CrtcCursorEnd] = 0x0F;
        Crtc[0x09] = 0x4F; // maximum scan line 15
        Crtc[0x13] = 0x28;
        for (int i = 0; i < Columns * Rows; i++)
        {
            Buffer[2 * i] = 0x20;
            Buffer[2 * i + 1] = 0x07;
        }
    }

    /// <summary>Registers the text buffer on <paramref name="mmio"/> and the register ports on <paramref name="ports"/>.</summary>
    public void Attach(PortBus ports, MmioBus mmio)
    {
        ArgumentNullException.ThrowIfNull(ports);
        ArgumentNullException.ThrowIfNull(mmio);
        mmio.Register(this, BufferBase, BufferSize);
        ports.Register(this, 0x3C0, 16);   // attribute, misc, sequencer, DAC, graphics
        ports.Register(this, 0x3D4, 2);    // CRTC
        ports.Register(this, 0x3DA, 1);    // input status 1
    }

    // ---- text buffer (MMIO) ----

    public ulong Read(ulong offset, int size)
    {
        ulong value = 0;
        for (int i = 0; i < size; i++)
        {
            ulong at = offset + (ulong)i;
            value |= (ulong)(at < BufferSize ? Buffer[at] : (byte)0xFF) << (8 * i);
        }
        return value;
    }

    public void Write(ulong offset, int size, ulong value)
    {
        for (int i = 0; i < size; i++)
        {
            ulong at = offset + (ulong)i;
            if (at < BufferSize)
            {
                Buffer[at] = (byte)(value >> (8 * i));
            }
        }
    }

    // ---- registers (ports) ----

    public uint Read(ushort port, int size)
    {
        uint value = ReadPort(port);
        if (size >= 2)
        {
            // A word IN reads the index and the data port together (the usual "out dx, ax" pair).
            value |= ReadPort((ushort)(port + 1)) << 8;
            value |= PortBus.SizeMask(size) & ~0xFFFFu;
        }
        return value;
    }

    public void Write(ushort port, int size, uint value)
    {
        WritePort(port, (byte)value);
        if (size >= 2)
        {
            // "out dx, ax" to an index port writes the index then the data byte (vgacon does this).
            WritePort((ushort)(port + 1), (byte)(value >> 8));
        }
    }

    private uint ReadPort(ushort port)
    {
        switch (port)
        {
            case 0x3C0: return (uint)AttributeIndex;
            case 0x3C1: return (AttributeIndex & 0x1F) < Attribute.Length ? Attribute[AttributeIndex & 0x1F] : 0xFFu;
            case 0x3C2: return 0x10; // input status 0: switch sense
            case 0x3C4: return (uint)SequencerIndex;
            case 0x3C5: return SequencerIndex < Sequencer.Length ? Sequencer[SequencerIndex] : 0xFFu;
            case 0x3C6: return DacPelMask;
            case 0x3C7: return DacState;
            case 0x3C8: return (uint)DacWriteIndex;
            case 0x3C9:
                byte component = Dac[DacReadIndex * 3 + DacComponent];
                if (++DacComponent == 3)
                {
                    DacComponent = 0;
                    DacReadIndex = (DacReadIndex + 1) & 0xFF;
                }
                return component;
            case 0x3CA: return 0x00; // feature control
            case 0x3CC: return MiscOutput;
            case 0x3CE: return (uint)GraphicsIndex;
            case 0x3CF: return GraphicsIndex < Graphics.Length ? Graphics[GraphicsIndex] : 0xFFu;
            case 0x3D4: return (uint)CrtcIndex;
            case 0x3D5: return CrtcIndex < Crtc.Length ? Crtc[CrtcIndex] : 0xFFu;
            case 0x3DA:
                // Input status 1: bit 0 display enable, bit 3 vertical retrace. They toggle on each
                // read so that guests waiting for a retrace make progress deterministically.
                AttributeFlipFlopData = false;
                RetraceToggle = !RetraceToggle;
                return RetraceToggle ? 0x09u : 0x00u;
            default: return 0xFF;
        }
    }

    private void WritePort(ushort port, byte value)
    {
        switch (port)
        {
            case 0x3C0:
                if (!AttributeFlipFlopData)
                {
                    AttributeIndex = value & 0x3F; // bit 5 = palette address source
                }
                else if ((AttributeIndex & 0x1F) < Attribute.Length)
                {
                    Attribute[AttributeIndex & 0x1F] = value;
                }
                AttributeFlipFlopData = !AttributeFlipFlopData;
                break;
            case 0x3C2: MiscOutput = value; break;
            case 0x3C4: SequencerIndex = value & 0x07; break;
            case 0x3C5: if (SequencerIndex < Sequencer.Length) Sequencer[SequencerIndex] = value; break;
            case 0x3C6: DacPelMask = value; break;
            case 0x3C7: DacReadIndex = value; DacComponent = 0; DacState = 3; break;
            case 0x3C8: DacWriteIndex = value; DacComponent = 0; DacState = 0; break;
            case 0x3C9:
                Dac[DacWriteIndex * 3 + DacComponent] = (byte)(value & 0x3F);
                if (++DacComponent == 3)
                {
                    DacComponent = 0;
                    DacWriteIndex = (DacWriteIndex + 1) & 0xFF;
                }
                break;
            case 0x3CE: GraphicsIndex = value & 0x0F; break;
            case 0x3CF: if (GraphicsIndex < Graphics.Length) Graphics[GraphicsIndex] = value; break;
            case 0x3D4: CrtcIndex = value & 0x1F; break;
            case 0x3D5:
                // CRTC registers 0-7 are write-protected when bit 7 of register 0x11 is set,
                // except the line compare bit 4 of register 7 (VGA reference, CRTC 0x11).
                if (CrtcIndex < Crtc.Length && !(CrtcIndex < 8 && (Crtc[0x11] & 0x80) != 0))
                {
                    Crtc[CrtcIndex] = value;
                }
                break;
            default: break; // 0x3C1, 0x3CA, 0x3CC, 0x3DA writes: read-only here
        }
    }

    // ---- screen API ----

    /// <summary>Display start address in character cells (CRTC 0x0C/0x0D).</summary>
    public int StartAddress => (Crtc[CrtcStartHigh] << 8) | Crtc[CrtcStartLow];

    /// <summary>Cursor location in character cells from the start of the buffer (CRTC 0x0E/0x0F).</summary>
    public int CursorAddress => (Crtc[CrtcCursorHigh] << 8) | Crtc[CrtcCursorLow];

    /// <summary>The current screen: what a monitor would show from the display start address.</summary>
    public VgaScreen Snapshot()
    {
        var chars = new char[Columns * Rows];
        var attrs = new byte[Columns * Rows];
        int start = StartAddress;
        for (int cell = 0; cell < chars.Length; cell++)
        {
            int at = ((start + cell) * 2) & (BufferSize - 1); // the text buffer wraps at 32 KiB
            chars[cell] = CodePage437[Buffer[at]];
            attrs[cell] = Buffer[at + 1];
        }
        int relative = CursorAddress - start;
        bool visible = (Crtc[CrtcCursorStart] & 0x20) == 0 && relative >= 0 && relative < Columns * Rows;
        int row = visible ? relative / Columns : -1;
        int column = visible ? relative % Columns : -1;
        return new VgaScreen(Columns, Rows, chars, attrs, row, column, visible);
    }

    /// <summary>Code page 437 character for a byte, as the VGA font draws it.</summary>
    public static char ToUnicode(byte value) => CodePage437[value];
}
