using System.Collections.Frozen;
using System.Text;

namespace SecureVmm.Appliance.Terminal;

/// <summary>How the panes share the screen.</summary>
public enum ConsoleLayout
{
    /// <summary>Every VM at once, side by side, stacked or in a grid, as the terminal's shape suits.</summary>
    SideBySide,

    /// <summary>Only the focused VM, full size.</summary>
    Single,
}

/// <summary>What the console must do after a key.</summary>
public enum KeyAction
{
    /// <summary>Nothing to do (the key was swallowed, e.g. an unknown escape command).</summary>
    None,

    /// <summary>Send the bytes written to the caller's buffer to <see cref="KeyOutcome.Pane"/>.</summary>
    Input,

    /// <summary>The focus, layout, view or prompt changed: draw again.</summary>
    Redraw,

    /// <summary>Show the appliance's status report.</summary>
    ShowStatus,

    /// <summary>Stop the VM of <see cref="KeyOutcome.Pane"/>.</summary>
    StopFocused,

    /// <summary>Stop every VM and leave the console.</summary>
    StopAll,
}

/// <summary>The result of one key: an action, the pane it concerns, and how many input bytes it produced.</summary>
public readonly record struct KeyOutcome(KeyAction Action, int Pane, int ByteCount);

/// <summary>The commands that may follow the escape key (Ctrl-A), as the help line lists them.</summary>
public enum EscapeCommand
{
    NextPane,
    FocusNumber,
    ToggleLayout,
    ToggleView,
    ShowStatus,
    StopFocused,
    StopAll,
    LiteralEscape,
    LiteralInterrupt,
}

/// <summary>
/// The console's keyboard logic, free of any terminal so that it can be tested key by key. Every
/// key goes to the focused pane as the bytes a terminal would send, except Ctrl-A (the escape
/// prefix, as in `securevmm boot` and QEMU) followed by a command key, and Ctrl-C, which stops
/// everything. The router also owns the focus, the layout and each pane's view (VGA screen or
/// serial log). Input only ever goes to <see cref="Focus"/>: no command sends bytes elsewhere.
/// </summary>
public sealed class KeyRouter
{
    public const char EscapeKey = '\u0001';    // Ctrl-A
    public const char InterruptKey = '\u0003'; // Ctrl-C

    /// <summary>The most bytes one key produces (a UTF-8 surrogate pair, or "ESC [ 6 ~").</summary>
    public const int MaxBytesPerKey = 8;

    /// <summary>
    /// Command keys after Ctrl-A: the keys that choose each command, how the help line shows them,
    /// and what it says. The router's lookup and the help line are both made from this table, so
    /// they cannot disagree.
    /// </summary>
    public static readonly IReadOnlyList<(string Keys, string Shown, EscapeCommand Command, string Help)> EscapeCommands =
    [
        ("\tn", "Tab/n", EscapeCommand.NextPane, "next"),
        ("123456789", "1-9", EscapeCommand.FocusNumber, "VM N"),
        ("l", "l", EscapeCommand.ToggleLayout, "layout"),
        ("v", "v", EscapeCommand.ToggleView, "VGA/serial"),
        ("s", "s", EscapeCommand.ShowStatus, "status"),
        ("k", "k", EscapeCommand.StopFocused, "stop VM"),
        ("xq", "x/q", EscapeCommand.StopAll, "stop all"),
        ("\u0001", "Ctrl-A", EscapeCommand.LiteralEscape, "sends Ctrl-A"),
        ("c", "c", EscapeCommand.LiteralInterrupt, "sends Ctrl-C"),
    ];

    private static readonly FrozenDictionary<char, EscapeCommand> CommandByKey =
        EscapeCommands.SelectMany(e => e.Keys.Select(k => KeyValuePair.Create(k, e.Command))).ToFrozenDictionary();

    /// <summary>
    /// What a VT100/xterm terminal sends for the keys that have no character of their own (xterm
    /// "PC-Style Function Keys"); Enter is CR as a serial terminal sends it, and Backspace is DEL
    /// (0x7F), the erase character a Linux tty expects by default (termios VERASE).
    /// </summary>
    private static readonly FrozenDictionary<ConsoleKey, byte[]> SpecialKeys = new Dictionary<ConsoleKey, byte[]>
    {
        [ConsoleKey.Enter] = [(byte)'\r'],
        [ConsoleKey.Backspace] = [0x7F],
        [ConsoleKey.Tab] = [(byte)'\t'],
        [ConsoleKey.Escape] = [0x1B],
        [ConsoleKey.UpArrow] = "\e[A"u8.ToArray(),
        [ConsoleKey.DownArrow] = "\e[B"u8.ToArray(),
        [ConsoleKey.RightArrow] = "\e[C"u8.ToArray(),
        [ConsoleKey.LeftArrow] = "\e[D"u8.ToArray(),
        [ConsoleKey.Home] = "\e[H"u8.ToArray(),
        [ConsoleKey.End] = "\e[F"u8.ToArray(),
        [ConsoleKey.Insert] = "\e[2~"u8.ToArray(),
        [ConsoleKey.Delete] = "\e[3~"u8.ToArray(),
        [ConsoleKey.PageUp] = "\e[5~"u8.ToArray(),
        [ConsoleKey.PageDown] = "\e[6~"u8.ToArray(),
    }.ToFrozenDictionary();

    private readonly bool[] _hasVga;
    private readonly bool[] _showSerial;
    private char _highSurrogate;

    /// <param name="hasVga">Per pane, in pane order: whether the VM has a VGA screen to flip to.</param>
    /// <param name="startOnVga">Per pane: whether it first shows its VGA screen (a VGA console); by default, every VM that has one.</param>
    public KeyRouter(IReadOnlyList<bool> hasVga, IReadOnlyList<bool>? startOnVga = null)
    {
        ArgumentNullException.ThrowIfNull(hasVga);
        if (hasVga.Count == 0)
        {
            throw new ArgumentException("the console needs at least one pane", nameof(hasVga));
        }
        if (startOnVga is not null && startOnVga.Count != hasVga.Count)
        {
            throw new ArgumentException("one entry per pane", nameof(startOnVga));
        }
        _hasVga = [.. hasVga];
        _showSerial = [.. hasVga.Select((vga, i) => !(vga && (startOnVga?[i] ?? true)))];
    }

    /// <summary>A router for these panes: a VGA console starts on its VGA screen, any other VM on its serial log.</summary>
    public static KeyRouter For(IReadOnlyList<IConsolePane> panes)
    {
        ArgumentNullException.ThrowIfNull(panes);
        bool[] vgaConsole = [.. panes.Select(p => p.Kind == SecureVmm.Policy.Policy.ConsoleKind.Vga)];
        return new KeyRouter([.. panes.Select((p, i) => vgaConsole[i] || p.VgaSnapshot() is not null)], vgaConsole);
    }

    public int PaneCount => _hasVga.Length;

    /// <summary>The pane that receives typed input. Always exactly one.</summary>
    public int Focus { get; private set; }

    public ConsoleLayout Layout { get; private set; }

    /// <summary>Ctrl-A was pressed and the next key is a command.</summary>
    public bool EscapePending { get; private set; }

    /// <summary>A short message about the last command (e.g. "no VM 7"), or null.</summary>
    public string? Notice { get; private set; }

    /// <summary>Whether pane <paramref name="pane"/> shows its serial log (true) or its VGA screen (false).</summary>
    public bool ShowsSerial(int pane) => _showSerial[pane];

    public bool HasVga(int pane) => _hasVga[pane];

    /// <summary>
    /// Handles one key. Input bytes are written to <paramref name="bytes"/> (at least
    /// <see cref="MaxBytesPerKey"/> long); the outcome says what to do with them.
    /// </summary>
    public KeyOutcome Handle(ConsoleKeyInfo key, Span<byte> bytes)
    {
        if (bytes.Length < MaxBytesPerKey)
        {
            throw new ArgumentException($"the buffer must hold {MaxBytesPerKey} bytes", nameof(bytes));
        }
        key = Normalize(key);
        char c = key.KeyChar;
        if (EscapePending)
        {
            EscapePending = false;
            return Command(key, bytes);
        }
        if (c == EscapeKey)
        {
            EscapePending = true;
            Notice = null;
            return new KeyOutcome(KeyAction.Redraw, Focus, 0);
        }
        if (c == InterruptKey)
        {
            return new KeyOutcome(KeyAction.StopAll, Focus, 0);
        }
        int n = KeyBytes(key, bytes);
        return n == 0 ? new KeyOutcome(KeyAction.None, Focus, 0) : new KeyOutcome(KeyAction.Input, Focus, n);
    }

    /// <summary>Focus pane <paramref name="pane"/> (0-based); false when there is no such pane.</summary>
    public bool FocusOn(int pane)
    {
        if (pane < 0 || pane >= _hasVga.Length)
        {
            return false;
        }
        Focus = pane;
        _highSurrogate = '\0'; // half a character must not reach the other VM
        return true;
    }

    private KeyOutcome Command(ConsoleKeyInfo key, Span<byte> bytes)
    {
        char c = key.Key == ConsoleKey.Tab ? '\t' : char.ToLowerInvariant(key.KeyChar);
        Notice = null;
        if (!CommandByKey.TryGetValue(c, out EscapeCommand command))
        {
            Notice = "Ctrl-A " + Describe(key) + " is not a command";
            return new KeyOutcome(KeyAction.Redraw, Focus, 0);
        }
        switch (command)
        {
            case EscapeCommand.NextPane:
                FocusOn((Focus + 1) % PaneCount);
                return new KeyOutcome(KeyAction.Redraw, Focus, 0);
            case EscapeCommand.FocusNumber:
                if (!FocusOn(c - '1'))
                {
                    Notice = $"no VM {c}: there are {PaneCount}";
                }
                return new KeyOutcome(KeyAction.Redraw, Focus, 0);
            case EscapeCommand.ToggleLayout:
                Layout = Layout == ConsoleLayout.SideBySide ? ConsoleLayout.Single : ConsoleLayout.SideBySide;
                return new KeyOutcome(KeyAction.Redraw, Focus, 0);
            case EscapeCommand.ToggleView:
                if (_hasVga[Focus])
                {
                    _showSerial[Focus] = !_showSerial[Focus];
                }
                else
                {
                    Notice = "this VM has no VGA screen";
                }
                return new KeyOutcome(KeyAction.Redraw, Focus, 0);
            case EscapeCommand.ShowStatus:
                return new KeyOutcome(KeyAction.ShowStatus, Focus, 0);
            case EscapeCommand.StopFocused:
                return new KeyOutcome(KeyAction.StopFocused, Focus, 0);
            case EscapeCommand.StopAll:
                return new KeyOutcome(KeyAction.StopAll, Focus, 0);
            case EscapeCommand.LiteralEscape:
                bytes[0] = (byte)EscapeKey;
                return new KeyOutcome(KeyAction.Input, Focus, 1);
            case EscapeCommand.LiteralInterrupt:
                bytes[0] = (byte)InterruptKey;
                return new KeyOutcome(KeyAction.Input, Focus, 1);
            default:
                return new KeyOutcome(KeyAction.None, Focus, 0);
        }
    }

    /// <summary>
    /// Gives a Ctrl-letter key its control character (Ctrl-A is 0x01, ASCII's C0 set), whichever way
    /// the terminal layer reported it.
    /// </summary>
    private static ConsoleKeyInfo Normalize(ConsoleKeyInfo key)
    {
        bool control = (key.Modifiers & ConsoleModifiers.Control) != 0 && (key.Modifiers & ConsoleModifiers.Alt) == 0;
        if (control && key.Key is >= ConsoleKey.A and <= ConsoleKey.Z && key.KeyChar is '\0' or (>= 'a' and <= 'z') or (>= 'A' and <= 'Z'))
        {
            char c = (char)(key.Key - ConsoleKey.A + 1);
            return new ConsoleKeyInfo(c, key.Key, shift: false, alt: false, control: true);
        }
        return key;
    }

    private static string Describe(ConsoleKeyInfo key) =>
        key.KeyChar is > ' ' and <= '~' ? key.KeyChar.ToString() : key.Key.ToString();

    /// <summary>The bytes a terminal sends for <paramref name="key"/>: UTF-8 for characters, VT100 sequences for the rest.</summary>
    private int KeyBytes(ConsoleKeyInfo key, Span<byte> bytes)
    {
        if (SpecialKeys.TryGetValue(key.Key, out byte[]? sequence))
        {
            _highSurrogate = '\0';
            sequence.CopyTo(bytes);
            return sequence.Length;
        }
        char c = key.KeyChar;
        if (c == '\0')
        {
            return 0; // a key with no character (F1, Shift alone ...): nothing a serial line carries
        }
        if (char.IsHighSurrogate(c))
        {
            _highSurrogate = c; // the terminal delivers a character outside the BMP as two keys
            return 0;
        }
        if (char.IsLowSurrogate(c))
        {
            if (_highSurrogate == '\0')
            {
                return 0;
            }
            ReadOnlySpan<char> pair = [_highSurrogate, c];
            _highSurrogate = '\0';
            return Encoding.UTF8.GetBytes(pair, bytes);
        }
        _highSurrogate = '\0';
        if ((key.Modifiers & ConsoleModifiers.Alt) != 0)
        {
            bytes[0] = 0x1B; // Alt-key: ESC prefix, as xterm sends it with metaSendsEscape
            return 1 + Encoding.UTF8.GetBytes([c], bytes[1..]);
        }
        return Encoding.UTF8.GetBytes([c], bytes);
    }
}
