using SecureVmm.Tcb.Devices;

namespace SecureVmm.Appliance.Boot;

/// <summary>
/// COM1 output into a host stream (the terminal or a file). Bytes are buffered and flushed when
/// the guest pauses for a moment (every 15 ms at most), so prompts without a newline appear at
/// once without a system call per byte.
/// </summary>
public sealed class FlushingSerialOutput : ISerialOutput, IDisposable
{
    private readonly Stream _stream;
    private readonly Lock _lock = new();
    private readonly Timer _timer;
    private bool _dirty;
    private bool _disposed;

    public FlushingSerialOutput(Stream stream)
    {
        _stream = new BufferedStream(stream, 64 * 1024);
        _timer = new Timer(_ => Flush(), null, 15, 15);
    }

    public void Transmit(byte value)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _stream.WriteByte(value);
            _dirty = true;
        }
    }

    public void Flush()
    {
        lock (_lock)
        {
            if (_dirty && !_disposed)
            {
                try
                {
                    _stream.Flush();
                }
                catch (IOException)
                {
                    // The reader went away (closed pipe): the guest's output has nowhere to go.
                }
                _dirty = false;
            }
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        Flush();
        lock (_lock)
        {
            _disposed = true;
            _stream.Dispose();
        }
    }
}

/// <summary>
/// Feeds the host's standard input to COM1. From a terminal, keys are read one at a time
/// without echo (raw input) and Ctrl-A then X stops the VM, as in QEMU; from a pipe or file,
/// bytes are passed through as they are.
/// </summary>
public sealed class StdinSerialInput
{
    public const char EscapeKey = '\u0001'; // Ctrl-A

    public static void Start(Uart16550 uart, Action stop)
    {
        var thread = new Thread(() => Pump(uart, stop)) { IsBackground = true, Name = "stdin->COM1" };
        thread.Start();
    }

    private static void Pump(Uart16550 uart, Action stop)
    {
        try
        {
            if (!Console.IsInputRedirected)
            {
                Console.TreatControlCAsInput = true;
                bool escape = false;
                while (true)
                {
                    ConsoleKeyInfo key = Console.ReadKey(intercept: true);
                    char c = key.KeyChar;
                    if (escape)
                    {
                        escape = false;
                        if (c is 'x' or 'X')
                        {
                            stop();
                            return;
                        }
                        if (c != EscapeKey)
                        {
                            continue;
                        }
                    }
                    else if (c == EscapeKey)
                    {
                        escape = true;
                        continue;
                    }
                    byte[] bytes = KeyBytes(key);
                    Feed(uart, bytes);
                }
            }
            using Stream input = Console.OpenStandardInput();
            byte[] buffer = new byte[4096];
            int n;
            while ((n = input.Read(buffer, 0, buffer.Length)) > 0)
            {
                Feed(uart, buffer.AsSpan(0, n));
            }
        }
        catch (IOException)
        {
            // stdin closed: the guest simply gets no more input.
        }
        catch (InvalidOperationException)
        {
            // no console attached
        }
    }

    private static void Feed(Uart16550 uart, ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0)
        {
            int accepted = uart.EnqueueInput(bytes);
            bytes = bytes[accepted..];
            if (bytes.Length > 0)
            {
                Thread.Sleep(5); // the host-side queue is full: wait for the guest to read
            }
        }
    }

    /// <summary>What a terminal would send for a key (VT100 sequences for the arrows).</summary>
    private static byte[] KeyBytes(ConsoleKeyInfo key) => key.Key switch
    {
        ConsoleKey.Enter => [(byte)'\r'],
        ConsoleKey.Backspace => [0x7F],
        ConsoleKey.UpArrow => "\u001b[A"u8.ToArray(),
        ConsoleKey.DownArrow => "\u001b[B"u8.ToArray(),
        ConsoleKey.RightArrow => "\u001b[C"u8.ToArray(),
        ConsoleKey.LeftArrow => "\u001b[D"u8.ToArray(),
        _ => key.KeyChar == '\0' ? [] : System.Text.Encoding.UTF8.GetBytes(key.KeyChar.ToString()),
    };
}
