using System.Text;
using SecureVmm.Tcb.Devices;

namespace SecureVmm.Appliance.Terminal;

/// <summary>
/// A VM's serial output as lines of plain, printable text: the guest's bytes never reach the host
/// terminal as they are. Carriage return, line feed, backspace and tab are interpreted; escape
/// sequences (ECMA-48: CSI, the string controls OSC/DCS/SOS/PM/APC, two- and three-byte ESC
/// sequences) are consumed and dropped; every other control byte is dropped. Text is decoded as
/// UTF-8 (RFC 3629), what Linux guests send; bytes that are not valid UTF-8 are taken as Latin-1,
/// as older guests mean them. Raw bytes 0x80-0x9F are never taken as C1 controls (a UTF-8 terminal
/// does not either, and they occur inside UTF-8 characters). Each character kept passes
/// <see cref="PaneText.IsSafe"/>: one terminal cell, no control, format or combining character,
/// never the console's focus marker — anything else shows as '?'. So a guest cannot move the host
/// cursor, recolour the screen, or reach outside its pane to redraw another VM's frame or label.
/// Lines longer than <see cref="MaxColumns"/> wrap, as on a terminal. Thread-safe: the VM thread
/// writes, the console reads.
/// </summary>
public sealed class SerialScreen : ISerialOutput
{
    public const int MaxColumns = 256;

    /// <summary>
    /// A string control (OSC, DCS ...) longer than this is abandoned and what follows is shown
    /// again, so a guest that opens one and never closes it does not silence its own pane forever.
    /// </summary>
    public const int MaxSequenceBytes = 4096;

    private enum Escape
    {
        None,
        Started,      // after ESC
        Intermediate, // ESC then 0x20-0x2F ... until a final byte 0x30-0x7E (ECMA-35 13.2)
        Csi,          // control sequence: parameters, intermediates, final 0x40-0x7E (ECMA-48 5.4)
        String,       // OSC/DCS/SOS/PM/APC: until ST (ESC \ or 0x9C) or BEL (ECMA-48 5.6, 8.3.89)
        StringEscape, // ESC seen inside a string control
    }

    private const byte Esc = 0x1B, Bel = 0x07, Can = 0x18, Sub = 0x1A;

    private readonly Lock _lock = new();
    private readonly int _capacity;
    private readonly Queue<string> _lines = new();
    private readonly StringBuilder _current = new();
    private int _column;
    private Escape _escape;
    private int _sequenceBytes;
    private int _utf8Needed;   // continuation bytes still expected (RFC 3629 section 4)
    private int _utf8Length;   // bytes of the character seen so far
    private int _utf8Value;
    private uint _utf8Bytes;   // those bytes, for the Latin-1 fallback
    private long _bytes;

    /// <param name="scrollbackLines">Completed lines kept; older ones are forgotten.</param>
    public SerialScreen(int scrollbackLines = 1000)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(scrollbackLines, 1);
        _capacity = scrollbackLines;
    }

    /// <summary>
    /// Raised (on the VM thread, outside the screen's lock) with each completed line, already
    /// sanitized. Several listeners may subscribe (the line log, a recorder ...).
    /// </summary>
    public event Action<string>? LineCompleted;

    /// <summary>Bytes the guest has written in total.</summary>
    public long ByteCount => Interlocked.Read(ref _bytes);

    /// <summary>Completed lines still held (at most the scrollback size).</summary>
    public int LineCount
    {
        get
        {
            lock (_lock)
            {
                return _lines.Count;
            }
        }
    }

    public void Transmit(byte value)
    {
        string? completed;
        lock (_lock)
        {
            _bytes++;
            completed = Feed(value);
        }
        if (completed is not null)
        {
            LineCompleted?.Invoke(completed);
        }
    }

    public void Flush()
    {
    }

    /// <summary>The last <paramref name="rows"/> lines, the unfinished one included, oldest first.</summary>
    public IReadOnlyList<string> Tail(int rows)
    {
        if (rows < 1)
        {
            return [];
        }
        lock (_lock)
        {
            var result = new List<string>(Math.Min(rows, _lines.Count + 1));
            int fromHistory = Math.Min(_lines.Count, rows - 1);
            result.AddRange(_lines.Skip(_lines.Count - fromHistory));
            result.Add(_current.ToString());
            return result;
        }
    }

    /// <summary>The unfinished line (a prompt waits here).</summary>
    public string CurrentLine
    {
        get
        {
            lock (_lock)
            {
                return _current.ToString();
            }
        }
    }

    private string? Feed(byte b)
    {
        switch (_escape)
        {
            case Escape.Started:
                return AfterEscape(b);
            case Escape.Intermediate:
                if (b is >= 0x20 and <= 0x2F)
                {
                    return null;
                }
                _escape = Escape.None; // the final byte, or a malformed sequence: either way it ends here
                return null;
            case Escape.Csi:
                if (b is >= 0x40 and <= 0x7E || b is Can or Sub)
                {
                    _escape = Escape.None; // final byte (ECMA-48 5.4), or CAN/SUB cancelling it
                    return null;
                }
                if (b == Esc)
                {
                    Begin(Escape.Started);
                    return null;
                }
                if (b < 0x20)
                {
                    return Control(b); // C0 controls inside a control sequence act at once, as on xterm
                }
                return Bounded(); // parameter and intermediate bytes 0x20-0x3F, stray bytes
            case Escape.String:
                if (b is Bel or Can or Sub)
                {
                    _escape = Escape.None;
                    return null;
                }
                if (b == Esc)
                {
                    _escape = Escape.StringEscape;
                    return null;
                }
                return Bounded();
            case Escape.StringEscape:
                if (b == (byte)'\\')
                {
                    _escape = Escape.None; // ST
                    return null;
                }
                return AfterEscape(b); // ESC then something else: the string ends, a new sequence starts
        }

        if (_utf8Needed > 0)
        {
            if (b is >= 0x80 and <= 0xBF)
            {
                _utf8Value = (_utf8Value << 6) | (b & 0x3F);
                _utf8Bytes |= (uint)b << (8 * _utf8Length++);
                return --_utf8Needed == 0 ? PutCodePoint() : null;
            }
            string? fallback = Utf8Fallback(); // not a continuation: what came before was not UTF-8
            string? next = Feed(b);
            return fallback ?? next;
        }
        if (b == Esc)
        {
            Begin(Escape.Started);
            return null;
        }
        if (b < 0x20)
        {
            return Control(b);
        }
        if (b < 0x7F)
        {
            return Put((char)b);
        }
        if (b is >= 0xC2 and <= 0xF4)
        {
            _utf8Needed = b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
            _utf8Value = b & (b < 0xE0 ? 0x1F : b < 0xF0 ? 0x0F : 0x07);
            _utf8Bytes = b;
            _utf8Length = 1;
            return null;
        }
        return PutLatin1(b);
    }

    /// <summary>A complete UTF-8 character: overlong forms, surrogates and values past U+10FFFF are not characters (RFC 3629 section 3).</summary>
    private string? PutCodePoint()
    {
        int value = _utf8Value;
        int length = _utf8Length;
        ReadOnlySpan<int> minimum = [0, 0, 0x80, 0x800, 0x10000];
        if (value < minimum[length] || value is >= 0xD800 and <= 0xDFFF || value > 0x10FFFF)
        {
            return Utf8Fallback();
        }
        _utf8Length = 0;
        if (value is >= 0x80 and < 0xA0)
        {
            return null; // a C1 control, encoded: dropped like the C0 ones
        }
        return Put(value > 0xFFFF ? PaneText.Replacement : Shown((char)value));
    }

    /// <summary>Bytes that began a UTF-8 character but did not finish one, shown as Latin-1.</summary>
    private string? Utf8Fallback()
    {
        string? wrapped = null;
        for (int i = 0; i < _utf8Length; i++)
        {
            wrapped ??= PutLatin1((byte)(_utf8Bytes >> (8 * i)));
        }
        _utf8Needed = 0;
        _utf8Length = 0;
        return wrapped;
    }

    private string? PutLatin1(byte b) => b < 0xA0 ? null : Put(Shown((char)b)); // DEL and raw C1 bytes are dropped

    /// <summary>The character itself when it is one safe terminal cell; the soft hyphen as '-', since terminals disagree on its width.</summary>
    private static char Shown(char c) => c == '\u00AD' ? '-' : PaneText.IsSafe(c) ? c : PaneText.Replacement;

    private string? AfterEscape(byte b)
    {
        switch (b)
        {
            case (byte)'[':
                Begin(Escape.Csi);
                break;
            case (byte)']' or (byte)'P' or (byte)'X' or (byte)'^' or (byte)'_':
                Begin(Escape.String);
                break;
            case >= 0x20 and <= 0x2F:
                Begin(Escape.Intermediate);
                break;
            case Esc:
                Begin(Escape.Started);
                break;
            default:
                _escape = Escape.None; // a two-byte sequence such as ESC 7 or ESC c: dropped whole
                break;
        }
        return null;
    }

    private void Begin(Escape state)
    {
        _escape = state;
        _sequenceBytes = 0;
    }

    private string? Bounded()
    {
        if (++_sequenceBytes > MaxSequenceBytes)
        {
            _escape = Escape.None;
        }
        return null;
    }

    private string? Control(byte b)
    {
        switch (b)
        {
            case (byte)'\n':
                return EndLine();
            case (byte)'\r':
                _column = 0;
                return null;
            case 0x08:
                _column = Math.Max(0, _column - 1);
                return null;
            case (byte)'\t':
                string? wrapped = null;
                do
                {
                    wrapped ??= Put(' ');
                }
                while (_column % 8 != 0);
                return wrapped;
            default:
                return null; // BEL, NUL, SO/SI, form feed ...: nothing a log shows
        }
    }

    private string? Put(char c)
    {
        string? wrapped = null;
        if (_column >= MaxColumns)
        {
            wrapped = EndLine();
        }
        if (_column < _current.Length)
        {
            _current[_column] = c;
        }
        else
        {
            _current.Append(c);
        }
        _column++;
        return wrapped;
    }

    private string EndLine()
    {
        string line = _current.ToString();
        _lines.Enqueue(line);
        if (_lines.Count > _capacity)
        {
            _lines.Dequeue();
        }
        _current.Clear();
        _column = 0;
        return line;
    }
}
