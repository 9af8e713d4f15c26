namespace SecureVmm.Tcb.Devices;

/// <summary>
/// Scan-code tables for an AT keyboard (IBM PC/AT and PS/2 technical references, keyboard
/// scan-code sets 1 and 2). One row per key: name, set 1 make code, set 2 make code; keys with an
/// E0 prefix carry it in bit 8. The 8042's set 2 to set 1 translation table is derived from these
/// rows, so the two sets cannot disagree.
/// </summary>
public static class ScanCodes
{
    private static readonly (string Name, ushort Set1, ushort Set2)[] Keys =
    [
        ("Escape", 0x01, 0x76), ("1", 0x02, 0x16), ("2", 0x03, 0x1E), ("3", 0x04, 0x26), ("4", 0x05, 0x25),
        ("5", 0x06, 0x2E), ("6", 0x07, 0x36), ("7", 0x08, 0x3D), ("8", 0x09, 0x3E), ("9", 0x0A, 0x46),
        ("0", 0x0B, 0x45), ("Minus", 0x0C, 0x4E), ("Equals", 0x0D, 0x55), ("Backspace", 0x0E, 0x66),
        ("Tab", 0x0F, 0x0D), ("Q", 0x10, 0x15), ("W", 0x11, 0x1D), ("E", 0x12, 0x24), ("R", 0x13, 0x2D),
        ("T", 0x14, 0x2C), ("Y", 0x15, 0x35), ("U", 0x16, 0x3C), ("I", 0x17, 0x43), ("O", 0x18, 0x44),
        ("P", 0x19, 0x4D), ("LeftBracket", 0x1A, 0x54), ("RightBracket", 0x1B, 0x5B), ("Enter", 0x1C, 0x5A),
        ("LeftCtrl", 0x1D, 0x14), ("A", 0x1E, 0x1C), ("S", 0x1F, 0x1B), ("D", 0x20, 0x23), ("F", 0x21, 0x2B),
        ("G", 0x22, 0x34), ("H", 0x23, 0x33), ("J", 0x24, 0x3B), ("K", 0x25, 0x42), ("L", 0x26, 0x4B),
        ("Semicolon", 0x27, 0x4C), ("Apostrophe", 0x28, 0x52), ("Backquote", 0x29, 0x0E), ("LeftShift", 0x2A, 0x12),
        ("Backslash", 0x2B, 0x5D), ("Z", 0x2C, 0x1A), ("X", 0x2D, 0x22), ("C", 0x2E, 0x21), ("V", 0x2F, 0x2A),
        ("B", 0x30, 0x32), ("N", 0x31, 0x31), ("M", 0x32, 0x3A), ("Comma", 0x33, 0x41), ("Period", 0x34, 0x49),
        ("Slash", 0x35, 0x4A), ("RightShift", 0x36, 0x59), ("KeypadMultiply", 0x37, 0x7C), ("LeftAlt", 0x38, 0x11),
        ("Space", 0x39, 0x29), ("CapsLock", 0x3A, 0x58), ("F1", 0x3B, 0x05), ("F2", 0x3C, 0x06), ("F3", 0x3D, 0x04),
        ("F4", 0x3E, 0x0C), ("F5", 0x3F, 0x03), ("F6", 0x40, 0x0B), ("F7", 0x41, 0x83), ("F8", 0x42, 0x0A),
        ("F9", 0x43, 0x01), ("F10", 0x44, 0x09), ("NumLock", 0x45, 0x77), ("ScrollLock", 0x46, 0x7E),
        ("Keypad7", 0x47, 0x6C), ("Keypad8", 0x48, 0x75), ("Keypad9", 0x49, 0x7D), ("KeypadMinus", 0x4A, 0x7B),
        ("Keypad4", 0x4B, 0x6B), ("Keypad5", 0x4C, 0x73), ("Keypad6", 0x4D, 0x74), ("KeypadPlus", 0x4E, 0x79),
        ("Keypad1", 0x4F, 0x69), ("Keypad2", 0x50, 0x72), ("Keypad3", 0x51, 0x7A), ("Keypad0", 0x52, 0x70),
        ("KeypadPeriod", 0x53, 0x71), ("F11", 0x57, 0x78), ("F12", 0x58, 0x07),
        ("KeypadEnter", 0x11C, 0x15A), ("RightCtrl", 0x11D, 0x114), ("KeypadDivide", 0x135, 0x14A),
        ("RightAlt", 0x138, 0x111), ("Home", 0x147, 0x16C), ("Up", 0x148, 0x175), ("PageUp", 0x149, 0x17D),
        ("Left", 0x14B, 0x16B), ("Right", 0x14D, 0x174), ("End", 0x14F, 0x169), ("Down", 0x150, 0x172),
        ("PageDown", 0x151, 0x17A), ("Insert", 0x152, 0x170), ("Delete", 0x153, 0x171),
    ];

    private static readonly Dictionary<string, (ushort Set1, ushort Set2)> ByName = BuildByName();

    /// <summary>The 8042's translation of a set 2 byte below 0x80 to set 1 (bytes 0x80 and up pass through).</summary>
    private static readonly byte[] Set2ToSet1 = BuildTranslation();

    private static Dictionary<string, (ushort, ushort)> BuildByName()
    {
        var map = new Dictionary<string, (ushort, ushort)>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, set1, set2) in Keys)
        {
            map[name] = (set1, set2);
        }
        return map;
    }

    private static byte[] BuildTranslation()
    {
        var table = new byte[128];
        for (int i = 0; i < table.Length; i++)
        {
            table[i] = (byte)i; // codes no key uses translate to themselves
        }
        foreach (var (_, set1, set2) in Keys)
        {
            if ((set2 & 0xFF) < 0x80)
            {
                table[set2 & 0xFF] = (byte)set1;
            }
        }
        return table;
    }

    /// <summary>Translates one set 2 byte (not 0xF0) to set 1, as the 8042 does with translation on.</summary>
    public static byte TranslateSet2Byte(byte set2) => set2 switch
    {
        < 0x80 => Set2ToSet1[set2],
        0x83 => 0x41, // F7, the one set 2 make code above 0x7F
        _ => set2,
    };

    /// <summary>True and the key's codes if <paramref name="name"/> is a known key (case-insensitive).</summary>
    public static bool TryGetKey(string name, out ushort set1, out ushort set2)
    {
        bool found = ByName.TryGetValue(name, out var codes);
        (set1, set2) = codes;
        return found;
    }

    /// <summary>The key names this table knows.</summary>
    public static IEnumerable<string> KeyNames => Keys.Select(k => k.Name);

    /// <summary>US keyboard layout: the unshifted and shifted character of each printable key.</summary>
    private static readonly (string Key, char Plain, char Shifted)[] UsLayout =
    [
        ("1", '1', '!'), ("2", '2', '@'), ("3", '3', '#'), ("4", '4', '$'), ("5", '5', '%'), ("6", '6', '^'),
        ("7", '7', '&'), ("8", '8', '*'), ("9", '9', '('), ("0", '0', ')'), ("Minus", '-', '_'), ("Equals", '=', '+'),
        ("LeftBracket", '[', '{'), ("RightBracket", ']', '}'), ("Semicolon", ';', ':'), ("Apostrophe", '\'', '"'),
        ("Backquote", '`', '~'), ("Backslash", '\\', '|'), ("Comma", ',', '<'), ("Period", '.', '>'), ("Slash", '/', '?'),
        ("Space", ' ', ' '), ("Enter", '\n', '\n'), ("Tab", '\t', '\t'), ("Backspace", '\b', '\b'),
    ];

    /// <summary>The key and shift state that type <paramref name="c"/> on a US keyboard.</summary>
    public static bool TryGetCharacter(char c, out string key, out bool shift)
    {
        if (c is >= 'a' and <= 'z' or >= 'A' and <= 'Z')
        {
            key = char.ToUpperInvariant(c).ToString();
            shift = c is >= 'A' and <= 'Z';
            return true;
        }
        foreach (var (name, plain, shifted) in UsLayout)
        {
            if (c == plain || c == shifted)
            {
                key = name;
                shift = c != plain;
                return true;
            }
        }
        key = "";
        shift = false;
        return false;
    }
}

/// <summary>
/// The 8042 keyboard controller at 0x60 (data) / 0x64 (status and command) with an AT keyboard
/// (IBM PC/AT technical reference, "Keyboard controller"; PS/2 keyboard command set). The
/// controller's command byte enables IRQ1, inhibits the keyboard and turns scan-code
/// translation (set 2 to set 1) on or off; commands 0xAA, 0xAB, 0xAD, 0xAE, 0x20/0x60, 0xD0/0xD1,
/// 0xD2 and the pulse commands are modelled; pulsing output-port bit 0 (0xFE, or 0xD1 with bit 0
/// clear) asks the machine for a reset. There is no auxiliary (mouse) port: the aux loop command
/// (0xD3) echoes as keyboard data, the aux interface test (0xA9) reports the clock line stuck, and
/// writes to the aux device (0xD4) answer with a time-out, so guests conclude there is no mouse.
/// </summary>
public sealed class I8042 : IPortDevice
{
    public const ushort DataPort = 0x60;
    public const ushort StatusPort = 0x64;
    public const int KeyboardIrq = 1;
    public const int AuxIrq = 12;

    // Status register bits.
    private const byte StOutputFull = 0x01, StInputFull = 0x02, StSystem = 0x04, StCommand = 0x08,
        StNotInhibited = 0x10, StAuxData = 0x20, StTimeout = 0x40;
    // Command byte bits.
    private const byte CbKeyboardIrq = 0x01, CbAuxIrq = 0x02, CbSystem = 0x04, CbKeyboardDisabled = 0x10,
        CbAuxDisabled = 0x20, CbTranslate = 0x40;

    private const int QueueCapacity = 64;

    // Controller state.
    internal byte CommandByte = CbKeyboardIrq | CbSystem | CbTranslate;
    internal byte OutputPort = 0x03; // bit 0: reset line (high = not reset), bit 1: A20 gate
    internal byte Status = StSystem | StNotInhibited;
    internal byte OutputBuffer;
    internal byte PendingCommand;    // controller command waiting for its data byte (0x60, 0xD1 ...)
    internal bool TranslateBreakPrefix; // a set 2 0xF0 was seen: the next byte is a break code

    // Keyboard state.
    internal byte PendingKeyboardCommand; // keyboard command waiting for its parameter (0xED, 0xF0, 0xF3)
    internal bool ScanningEnabled = true;
    internal int ScanSet = 2;
    /// <summary>Keyboard LEDs as last set by command 0xED (bit 0 Scroll, 1 Num, 2 Caps Lock).</summary>
    public byte Leds { get; private set; }
    internal byte TypematicRate = 0x2B;

    private readonly byte[] _keyboardQueue = new byte[QueueCapacity]; // bytes from the keyboard, untranslated
    private int _queueHead, _queueCount;
    private readonly Lock _hostLock = new();
    private readonly byte[] _hostKeys = new byte[1024];             // host key injection, any thread
    private int _hostHead, _hostCount;
    private readonly IIrqLines _irq;
    private readonly MachineRequests _requests;
    private bool _irq1Level, _irq12Level;

    public I8042(IIrqLines irq, MachineRequests requests)
    {
        _irq = irq ?? throw new ArgumentNullException(nameof(irq));
        _requests = requests ?? throw new ArgumentNullException(nameof(requests));
    }

    public void Attach(PortBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.Register(this, DataPort, 1);
        bus.Register(this, StatusPort, 1);
    }

    /// <summary>A20 gate (output port bit 1): the machine masks address bit 20 when it is off.</summary>
    public bool A20Enabled => (OutputPort & 0x02) != 0;

    /// <summary>Called (host thread) after keys were injected, to wake a halted VM.</summary>
    public Action? InputSignal { get; set; }

    // ---- host-side key injection ----

    /// <summary>
    /// Injects scan codes in set 2 (what the keyboard sends; the controller translates to set 1
    /// when its command byte says so). Any thread. Returns the number of bytes accepted.
    /// </summary>
    public int InjectSet2(ReadOnlySpan<byte> codes)
    {
        int accepted;
        lock (_hostLock)
        {
            accepted = Math.Min(codes.Length, _hostKeys.Length - _hostCount);
            for (int i = 0; i < accepted; i++)
            {
                _hostKeys[(_hostHead + _hostCount) % _hostKeys.Length] = codes[i];
                _hostCount++;
            }
        }
        if (accepted > 0)
        {
            InputSignal?.Invoke();
        }
        return accepted;
    }

    /// <summary>
    /// Injects set 1 scan codes (make = code, break = code | 0x80, 0xE0 prefixes allowed) by
    /// converting them to the set 2 bytes a keyboard would send. Unknown codes are refused with
    /// an ArgumentException naming the byte.
    /// </summary>
    public int InjectSet1(ReadOnlySpan<byte> codes)
    {
        Span<byte> set2 = stackalloc byte[codes.Length * 3];
        int n = 0;
        bool extended = false;
        for (int i = 0; i < codes.Length; i++)
        {
            byte c = codes[i];
            if (c == 0xE0)
            {
                extended = true;
                continue;
            }
            ushort wanted = (ushort)((extended ? 0x100 : 0) | (c & 0x7F));
            ushort? found = null;
            foreach (var name in ScanCodes.KeyNames)
            {
                ScanCodes.TryGetKey(name, out ushort s1, out ushort s2);
                if (s1 == wanted)
                {
                    found = s2;
                    break;
                }
            }
            if (found is not ushort code)
            {
                throw new ArgumentException($"set 1 scan code 0x{c:X2} at index {i} is not a known key", nameof(codes));
            }
            if ((code & 0x100) != 0) set2[n++] = 0xE0;
            if ((c & 0x80) != 0) set2[n++] = 0xF0;
            set2[n++] = (byte)code;
            extended = false;
        }
        return InjectSet2(set2[..n]);
    }

    /// <summary>Presses and releases the named key (e.g. "Enter", "A", "F7"). Unknown names throw ArgumentException.</summary>
    public void PressKey(string name)
    {
        if (!ScanCodes.TryGetKey(name, out _, out ushort set2))
        {
            throw new ArgumentException($"unknown key name '{name}'", nameof(name));
        }
        Span<byte> bytes = stackalloc byte[5];
        int n = 0;
        if ((set2 & 0x100) != 0) bytes[n++] = 0xE0;
        bytes[n++] = (byte)set2;
        if ((set2 & 0x100) != 0) bytes[n++] = 0xE0;
        bytes[n++] = 0xF0;
        bytes[n++] = (byte)set2;
        InjectSet2(bytes[..n]);
    }

    /// <summary>
    /// Types <paramref name="text"/> as a person would on a US keyboard (Shift held for capitals
    /// and shifted symbols; '\n' is Enter). Characters with no key throw ArgumentException naming them.
    /// </summary>
    public void TypeText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        ScanCodes.TryGetKey("LeftShift", out _, out ushort shiftCode);
        var bytes = new List<byte>(text.Length * 6);
        for (int i = 0; i < text.Length; i++)
        {
            if (!ScanCodes.TryGetCharacter(text[i], out string key, out bool shift))
            {
                throw new ArgumentException($"character U+{(int)text[i]:X4} at index {i} has no key on a US keyboard", nameof(text));
            }
            ScanCodes.TryGetKey(key, out _, out ushort code);
            if (shift) bytes.Add((byte)shiftCode);
            bytes.Add((byte)code);
            bytes.Add(0xF0);
            bytes.Add((byte)code);
            if (shift)
            {
                bytes.Add(0xF0);
                bytes.Add((byte)shiftCode);
            }
        }
        if (InjectSet2(bytes.ToArray()) < bytes.Count)
        {
            throw new InvalidOperationException("the keyboard's host queue is full; type less at a time");
        }
    }

    /// <summary>Moves injected keys into the keyboard while it is scanning (machine thread).</summary>
    public void PumpHostInput()
    {
        if (!ScanningEnabled || Volatile.Read(ref _hostCount) == 0)
        {
            FillOutputBuffer();
            return;
        }
        lock (_hostLock)
        {
            while (_hostCount > 0 && _queueCount < QueueCapacity)
            {
                EnqueueKeyboardByte(_hostKeys[_hostHead]);
                _hostHead = (_hostHead + 1) % _hostKeys.Length;
                _hostCount--;
            }
        }
        FillOutputBuffer();
    }

    // ---- controller ----

    private void EnqueueKeyboardByte(byte value)
    {
        if (_queueCount < QueueCapacity)
        {
            _keyboardQueue[(_queueHead + _queueCount) % QueueCapacity] = value;
            _queueCount++;
        }
    }

    /// <summary>Moves the next keyboard byte into the output buffer if it is free and the keyboard not inhibited.</summary>
    private void FillOutputBuffer()
    {
        while ((Status & StOutputFull) == 0 && _queueCount > 0 && (CommandByte & CbKeyboardDisabled) == 0)
        {
            byte value = _keyboardQueue[_queueHead];
            _queueHead = (_queueHead + 1) % QueueCapacity;
            _queueCount--;
            if ((CommandByte & CbTranslate) != 0)
            {
                if (value == 0xF0)
                {
                    TranslateBreakPrefix = true;
                    continue; // the prefix is folded into the next byte
                }
                value = ScanCodes.TranslateSet2Byte(value);
                if (TranslateBreakPrefix)
                {
                    value |= 0x80;
                    TranslateBreakPrefix = false;
                }
            }
            SetOutput(value, fromAux: false);
        }
        UpdateIrq();
    }

    private void SetOutput(byte value, bool fromAux, bool timeout = false)
    {
        OutputBuffer = value;
        Status = (byte)((Status & ~(StAuxData | StTimeout)) | StOutputFull | (fromAux ? StAuxData : 0) | (timeout ? StTimeout : 0));
        UpdateIrq();
    }

    /// <summary>IRQ1/IRQ12 follow "output buffer full" for enabled sources (command byte bits 0 and 1).</summary>
    private void UpdateIrq()
    {
        bool full = (Status & StOutputFull) != 0;
        bool aux = (Status & StAuxData) != 0;
        bool irq1 = full && !aux && (CommandByte & CbKeyboardIrq) != 0;
        bool irq12 = full && aux && (CommandByte & CbAuxIrq) != 0;
        if (irq1 != _irq1Level)
        {
            _irq1Level = irq1;
            _irq.SetIrq(KeyboardIrq, irq1);
        }
        if (irq12 != _irq12Level)
        {
            _irq12Level = irq12;
            _irq.SetIrq(AuxIrq, irq12);
        }
    }

    public uint Read(ushort port, int size)
    {
        uint high = PortBus.SizeMask(size) & ~0xFFu;
        if (port == StatusPort)
        {
            return Status | high;
        }
        byte value = OutputBuffer;
        Status &= unchecked((byte)~(StOutputFull | StAuxData | StTimeout));
        UpdateIrq();
        PumpHostInput();
        FillOutputBuffer();
        return value | high;
    }

    public void Write(ushort port, int size, uint value)
    {
        byte b = (byte)value;
        if (port == StatusPort)
        {
            Status |= StCommand;
            WriteCommand(b);
        }
        else
        {
            Status &= unchecked((byte)~StCommand);
            WriteData(b);
        }
        FillOutputBuffer();
    }

    private void WriteCommand(byte command)
    {
        PendingCommand = 0;
        switch (command)
        {
            case 0x20: // read command byte
                SetOutput(CommandByte, fromAux: false);
                break;
            case 0x60: // write command byte (next data byte)
            case 0xD1: // write output port
            case 0xD2: // write keyboard output buffer
            case 0xD3: // write auxiliary output buffer
            case 0xD4: // write to auxiliary device
                PendingCommand = command;
                break;
            case 0xA7: CommandByte |= CbAuxDisabled; break;
            case 0xA8: CommandByte &= unchecked((byte)~CbAuxDisabled); break;
            case 0xA9: SetOutput(0x01, fromAux: false); break; // aux interface test: clock line stuck low (no port)
            case 0xAA: // self test passed: 0x55; sets the system flag
                Status |= StSystem;
                SetOutput(0x55, fromAux: false);
                break;
            case 0xAB: SetOutput(0x00, fromAux: false); break; // keyboard interface test: no error
            case 0xAD: CommandByte |= CbKeyboardDisabled; break;
            case 0xAE: CommandByte &= unchecked((byte)~CbKeyboardDisabled); break;
            case 0xC0: SetOutput(0xBF, fromAux: false); break; // input port: keyboard not locked, colour adapter
            case 0xD0: SetOutput(OutputPort, fromAux: false); break;
            case 0xE0: SetOutput(0x00, fromAux: false); break; // test inputs
            default:
                if (command >= 0xF0)
                {
                    // Pulse output port bits 0-3 low for each clear bit in the low nibble; bit 0 is
                    // the CPU reset line (IBM PC/AT technical reference, command 0xF0-0xFF).
                    if ((command & 0x01) == 0)
                    {
                        _requests.Request(MachineRequestKind.Reset, 0, "i8042");
                    }
                }
                break; // other commands are ignored, as undefined ones are by the 8042 firmware
        }
        Status &= unchecked((byte)~StInputFull);
    }

    private void WriteData(byte value)
    {
        byte command = PendingCommand;
        PendingCommand = 0;
        switch (command)
        {
            case 0x60:
                CommandByte = value;
                Status = (byte)((Status & ~StSystem) | (value & CbSystem));
                UpdateIrq();
                break;
            case 0xD1:
                OutputPort = value;
                if ((value & 0x01) == 0)
                {
                    _requests.Request(MachineRequestKind.Reset, 0, "i8042");
                }
                break;
            case 0xD2:
                SetOutput(value, fromAux: false);
                break;
            case 0xD3:
                // There is no auxiliary port, so the byte comes back as keyboard data (AUX flag
                // clear). Linux's i8042_check_aux() reads that as a failed loop test and, with the
                // 0xA9 answer below, decides there is no aux port, at once and without time-outs.
                SetOutput(value, fromAux: false);
                break;
            case 0xD4:
                // No auxiliary device is attached: the controller reports a transmit time-out.
                SetOutput(0xFE, fromAux: true, timeout: true);
                break;
            default:
                // Data without a pending controller command goes to the keyboard, which also
                // re-enables the keyboard interface (IBM PC/AT technical reference).
                CommandByte &= unchecked((byte)~CbKeyboardDisabled);
                KeyboardCommand(value);
                break;
        }
    }

    // ---- AT keyboard ----

    private void KeyboardReply(byte value) => EnqueueKeyboardByte(value);

    private void KeyboardCommand(byte value)
    {
        byte pending = PendingKeyboardCommand;
        PendingKeyboardCommand = 0;
        switch (pending)
        {
            case 0xED: // set LEDs: parameter byte
                Leds = (byte)(value & 0x07);
                KeyboardReply(0xFA);
                return;
            case 0xF3: // typematic rate/delay
                TypematicRate = (byte)(value & 0x7F);
                KeyboardReply(0xFA);
                return;
            case 0xF0: // scan code set: 0 = report, 1-3 = select
                KeyboardReply(0xFA);
                if (value == 0)
                {
                    KeyboardReply((byte)ScanSet);
                }
                else if (value <= 3)
                {
                    ScanSet = value;
                }
                return;
        }
        switch (value)
        {
            case 0xED:
            case 0xF3:
            case 0xF0:
                PendingKeyboardCommand = value;
                KeyboardReply(0xFA);
                break;
            case 0xEE: KeyboardReply(0xEE); break; // echo
            case 0xF2: // identify: ACK, then the MF2 keyboard ID AB 83
                KeyboardReply(0xFA);
                KeyboardReply(0xAB);
                KeyboardReply(0x83);
                break;
            case 0xF4: ScanningEnabled = true; KeyboardReply(0xFA); break;
            case 0xF5: // disable scanning and restore defaults
                ScanningEnabled = false;
                SetKeyboardDefaults();
                KeyboardReply(0xFA);
                break;
            case 0xF6: SetKeyboardDefaults(); KeyboardReply(0xFA); break;
            case 0xFE: KeyboardReply(0xFA); break; // resend: nothing was lost
            case 0xFF: // reset: ACK, then the basic assurance test passes (0xAA)
                SetKeyboardDefaults();
                ScanningEnabled = true;
                _queueCount = 0;
                KeyboardReply(0xFA);
                KeyboardReply(0xAA);
                break;
            default:
                if (value >= 0xF7 && value <= 0xFD)
                {
                    KeyboardReply(0xFA); // set 3 key-type commands: acknowledged, no effect
                }
                else
                {
                    KeyboardReply(0xFE); // unknown command: resend
                }
                break;
        }
    }

    private void SetKeyboardDefaults()
    {
        ScanSet = 2;
        Leds = 0;
        TypematicRate = 0x2B;
    }
}
