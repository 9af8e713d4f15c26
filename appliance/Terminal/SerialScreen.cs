using System.Text;
using SecureVmm.Tcb.Devices;

namespace SecureVmm.Appliance.Terminal;

/// <summary>
/// A VM's serial output as lines of plain, printable text: the guest's bytes never reach the host
/// terminal as they are. Carriage return, line feed, backspace and tab are interpreted; escape
/// sequences (CSI and OSC) are consumed and dropped; every other control byte is dropped; bytes
/// 0x80-0xFF are shown as Latin-1. So a guest cannot move the host cursor, recolour the screen or
/// redraw another VM's label. Thread-safe: the VM thread writes, the console reads.
/// </summary>
public sealed class SerialScreen : ISerialOutput
{
    public const int MaxColumns = 256;

    private enum Escape { None, Started, Csi, Osc, OscEscape }

    private readonly Lock _lock = new();
    private readonly int _capacity;
    private readonly Queue<string> _lines = new();
    private readonly StringBuilder _current = new();
    private int _column;
    private Escape _escape;
    private long _bytes;

    /// <param name="scrollbackLines">Completed lines kept; older ones are forgotten.</param>
    public SerialScreen(int scrollbackLines = 1000)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(scrollbackLines, 1);
        _capacity = scrollbackLines;
    }

    /// <summary>Called (on the VM thread) with each completed line, already sanitized.</summary>
    public Action<string>? LineCompleted { get; set; }

    /// <summary>Bytes the guest has written in total.</summary>
    public long ByteCount => Interlocked.Read(ref _bytes);

    public void Transmit(byte value)
    {
        string? completed = null;
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
        lock (_lock)
        {
            var result = new List<string>(rows);
            int fromHistory = Math.Max(0, Math.Min(_lines.Count, rows - 1));
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
                _escape = b switch { (byte)'[' => Escape.Csi, (byte)']' => Escape.Osc, _ => Escape.None };
                return null;
            case Escape.Csi:
                if (b is >= 0x40 and <= 0x7E)
                {
                    _escape = Escape.None; // final byte (ECMA-48 5.4)
                }
                return null;
            case Escape.Osc:
                _escape = b switch { 0x07 => Escape.None, 0x1B => Escape.OscEscape, _ => Escape.Osc };
                return null;
            case Escape.OscEscape:
                _escape = b == (byte)'\\' ? Escape.None : Escape.Osc;
                return null;
        }
        switch (b)
        {
            case 0x1B:
                _escape = Escape.Started;
                return null;
            case (byte)'\n':
                return EndLine();
            case (byte)'\r':
                _column = 0;
                return null;
            case 0x08:
                _column = Math.Max(0, _column - 1);
                return null;
            case (byte)'\t':
                do
                {
                    Put(' ');
                }
                while (_column % 8 != 0 && _column < MaxColumns);
                return null;
        }
        if (b < 0x20 || b is >= 0x7F and < 0xA0)
        {
            return null;
        }
        Put((char)b);
        return null;
    }

    private void Put(char c)
    {
        if (_column >= MaxColumns)
        {
            return;
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
