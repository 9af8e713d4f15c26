namespace SecureVmm.Tcb.Devices;

/// <summary>Where a UART's transmitted bytes go (the console, a file, a test buffer).</summary>
public interface ISerialOutput
{
    void Transmit(byte value);
}

/// <summary>
/// Transmits into a host stream (stdout, a log file), flushing at each line end; the machine calls
/// <see cref="Flush"/> when the guest goes idle so that a prompt without a newline shows too.
/// </summary>
public sealed class StreamSerialOutput(Stream stream) : ISerialOutput
{
    public void Transmit(byte value)
    {
        stream.WriteByte(value);
        if (value == (byte)'\n')
        {
            stream.Flush();
        }
    }

    public void Flush() => stream.Flush();
}

/// <summary>Collects transmitted bytes in memory (tests, the machine's console capture). Thread-safe.</summary>
public sealed class BufferSerialOutput : ISerialOutput
{
    private readonly List<byte> _bytes = [];
    private readonly Lock _lock = new();

    public void Transmit(byte value)
    {
        lock (_lock)
        {
            _bytes.Add(value);
        }
    }

    public byte[] ToArray()
    {
        lock (_lock)
        {
            return [.. _bytes];
        }
    }

    /// <summary>The bytes so far as Latin-1 text (one char per byte, nothing lost).</summary>
    public string Text => System.Text.Encoding.Latin1.GetString(ToArray());

    public void Clear()
    {
        lock (_lock)
        {
            _bytes.Clear();
        }
    }
}

/// <summary>
/// A 16550A UART (National Semiconductor PC16550D data sheet): RBR/THR, IER, IIR/FCR with 16-byte
/// FIFOs and receive trigger levels, LCR with DLAB, MCR including loopback, LSR, MSR and SCR,
/// and the four prioritized interrupt sources (line status, received data / character timeout,
/// THR empty, modem status; data sheet table IV). The transmitter sends each byte to the sink at
/// once, so THR and the transmitter are always empty again when the guest looks. Received bytes
/// come from a host-side queue and move into the receive FIFO as it has room (the host side is
/// flow-controlled; nothing is dropped). The interrupt output reaches the IRQ line only when
/// MCR OUT2 is set, as on PC serial ports.
/// </summary>
public sealed class Uart16550 : IPortDevice, ITimedDevice
{
    public const ushort Com1Base = 0x3F8;
    public const int Com1Irq = 4;
    private const int FifoSize = 16;
    private const int HostQueueCapacity = 1 << 16;
    /// <summary>The UART's baud clock: 1.8432 MHz / 16.</summary>
    private const long BaseBaud = 115_200;

    // Register state (data sheet, table II).
    internal byte Ier;        // bits 0-3: ERBFI, ETBEI, ELSI, EDSSI
    internal byte Lcr;        // bit 7 DLAB
    internal byte Mcr;        // bits 0-4: DTR, RTS, OUT1, OUT2, LOOP
    internal byte LineErrors; // LSR bits 1-4 (OE, PE, FE, BI), cleared by reading LSR
    internal byte Msr = 0xB0; // CTS, DSR, DCD asserted by the host side; low nibble = deltas
    internal byte Scr;
    internal ushort Divisor = 1;
    internal bool FifoEnabled;
    internal int TriggerLevel = 1;
    internal bool ThrEmptyInterrupt; // THRE interrupt pending (cleared by reading IIR or writing THR)
    internal bool TimeoutArmed;      // character-timeout interrupt may fire at TimeoutDeadlineNs
    internal long TimeoutDeadlineNs = long.MaxValue;
    internal bool TimeoutPending;    // character timeout indication (IIR 0xC)
    private readonly byte[] _rxFifo = new byte[FifoSize];
    private int _rxHead, _rxCount;

    private readonly byte[] _hostQueue = new byte[HostQueueCapacity];
    private int _hostHead, _hostCount;
    private readonly Lock _hostLock = new();

    private readonly ushort _base;
    private readonly int _irqLine;
    private readonly IIrqLines _irq;
    private readonly DeviceClock _clock;
    private ISerialOutput _output;
    private bool _irqLevel;

    public Uart16550(DeviceClock clock, IIrqLines irq, ISerialOutput output, ushort basePort = Com1Base, int irqLine = Com1Irq)
    {
        _clock = clock ?? throw new ArgumentNullException(nameof(clock));
        _irq = irq ?? throw new ArgumentNullException(nameof(irq));
        _output = output ?? throw new ArgumentNullException(nameof(output));
        _base = basePort;
        _irqLine = irqLine;
    }

    /// <summary>Registers the eight ports and the character-timeout timer.</summary>
    public void Attach(PortBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.Register(this, _base, 8);
        _clock.Register(this);
    }

    /// <summary>Replaces the transmit sink (e.g. when the console is attached).</summary>
    public ISerialOutput Output
    {
        get => _output;
        set => _output = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>Called (on the host thread) after host input was queued, to wake a halted VM.</summary>
    public Action? InputSignal { get; set; }

    /// <summary>
    /// Queues bytes typed on the host side (any thread). Returns how many were accepted: the
    /// host queue holds 64 KiB and refuses the rest rather than dropping old input.
    /// </summary>
    public int EnqueueInput(ReadOnlySpan<byte> bytes)
    {
        int accepted;
        lock (_hostLock)
        {
            accepted = Math.Min(bytes.Length, HostQueueCapacity - _hostCount);
            for (int i = 0; i < accepted; i++)
            {
                _hostQueue[(_hostHead + _hostCount) % HostQueueCapacity] = bytes[i];
                _hostCount++;
            }
        }
        if (accepted > 0)
        {
            InputSignal?.Invoke();
        }
        return accepted;
    }

    /// <summary>Host bytes not yet moved into the receive FIFO.</summary>
    public int PendingHostInput
    {
        get
        {
            lock (_hostLock)
            {
                return _hostCount;
            }
        }
    }

    private int RxCapacity => FifoEnabled ? FifoSize : 1;

    /// <summary>Moves queued host input into the receive FIFO (machine thread). Loopback disconnects the line.</summary>
    public void PumpHostInput()
    {
        if ((Mcr & 0x10) != 0 || _rxCount >= RxCapacity || Volatile.Read(ref _hostCount) == 0)
        {
            return; // nothing to move: no lock taken on this frequent path
        }
        bool moved = false;
        lock (_hostLock)
        {
            while (_hostCount > 0 && _rxCount < RxCapacity)
            {
                ReceiveIntoFifo(_hostQueue[_hostHead]);
                _hostHead = (_hostHead + 1) % HostQueueCapacity;
                _hostCount--;
                moved = true;
            }
        }
        if (moved)
        {
            UpdateInterrupt();
        }
    }

    private void ReceiveIntoFifo(byte value)
    {
        if (_rxCount >= RxCapacity)
        {
            LineErrors |= 0x02; // overrun: the character is lost (data sheet, LSR bit 1)
            return;
        }
        _rxFifo[(_rxHead + _rxCount) % FifoSize] = value;
        _rxCount++;
        ArmTimeout();
    }

    /// <summary>Time for one character at the current divisor and frame (start + data + parity + stop bits).</summary>
    private long CharacterTimeNs()
    {
        int bits = 1 + 5 + (Lcr & 3) + ((Lcr & 0x08) != 0 ? 1 : 0) + ((Lcr & 0x04) != 0 ? 2 : 1);
        long divisor = Divisor == 0 ? 1 : Divisor; // 0 behaves as the largest divisor on some parts; 1 keeps it finite
        return bits * divisor * 1_000_000_000L / BaseBaud;
    }

    private void ArmTimeout()
    {
        // Character timeout: data in the FIFO, none received or read for four character times
        // (data sheet, IIR "character timeout indication").
        TimeoutPending = false;
        if (FifoEnabled && _rxCount > 0)
        {
            TimeoutArmed = true;
            TimeoutDeadlineNs = _clock.NowNs + 4 * CharacterTimeNs();
        }
        else
        {
            TimeoutArmed = false;
            TimeoutDeadlineNs = long.MaxValue;
        }
    }

    public long NextDeadlineNs => TimeoutArmed && (Ier & 0x01) != 0 ? TimeoutDeadlineNs : long.MaxValue;

    public void OnClock()
    {
        PumpHostInput();
        if (TimeoutArmed && _clock.NowNs >= TimeoutDeadlineNs)
        {
            TimeoutArmed = false;
            TimeoutDeadlineNs = long.MaxValue;
            TimeoutPending = _rxCount > 0;
            UpdateInterrupt();
        }
    }

    /// <summary>IIR value for the highest-priority pending interrupt (data sheet, table IV).</summary>
    private byte InterruptIdentification()
    {
        byte id;
        if ((Ier & 0x04) != 0 && (LineErrors & 0x1E) != 0)
        {
            id = 0x06; // receiver line status
        }
        else if ((Ier & 0x01) != 0 && _rxCount > 0 && (!FifoEnabled || _rxCount >= TriggerLevel))
        {
            id = 0x04; // received data available (trigger level reached)
        }
        else if ((Ier & 0x01) != 0 && TimeoutPending && _rxCount > 0)
        {
            id = 0x0C; // character timeout
        }
        else if ((Ier & 0x02) != 0 && ThrEmptyInterrupt)
        {
            id = 0x02; // transmitter holding register empty
        }
        else if ((Ier & 0x08) != 0 && (Msr & 0x0F) != 0)
        {
            id = 0x00; // modem status
        }
        else
        {
            id = 0x01; // no interrupt pending
        }
        return (byte)(id | (FifoEnabled ? 0xC0 : 0));
    }

    private void UpdateInterrupt()
    {
        bool pending = (InterruptIdentification() & 0x01) == 0;
        // OUT2 gates the interrupt onto the ISA bus on PC serial ports; in loopback the output is
        // internal only (data sheet, MCR bit 4).
        bool level = pending && (Mcr & 0x18) == 0x08;
        if (level != _irqLevel)
        {
            _irqLevel = level;
            _irq.SetIrq(_irqLine, level);
        }
    }

    private bool Dlab => (Lcr & 0x80) != 0;

    public uint Read(ushort port, int size)
    {
        uint value = ReadRegister(port - _base);
        UpdateInterrupt();
        return value | (PortBus.SizeMask(size) & ~0xFFu);
    }

    private byte ReadRegister(int offset)
    {
        switch (offset)
        {
            case 0:
                if (Dlab)
                {
                    return (byte)Divisor;
                }
                return ReadReceiveBuffer();
            case 1:
                return Dlab ? (byte)(Divisor >> 8) : Ier;
            case 2:
                byte iir = InterruptIdentification();
                if ((iir & 0x0F) == 0x02)
                {
                    ThrEmptyInterrupt = false; // reading IIR when THRE is the source clears it
                }
                return iir;
            case 3:
                return Lcr;
            case 4:
                return Mcr;
            case 5:
                return ReadLineStatus();
            case 6:
                byte msr = Msr;
                Msr &= 0xF0; // reading MSR clears the delta bits
                return msr;
            default:
                return Scr;
        }
    }

    private byte ReadReceiveBuffer()
    {
        if (_rxCount == 0)
        {
            return 0;
        }
        byte value = _rxFifo[_rxHead];
        _rxHead = (_rxHead + 1) % FifoSize;
        _rxCount--;
        ArmTimeout();
        PumpHostInput();
        return value;
    }

    private byte ReadLineStatus()
    {
        // THRE (bit 5) and TEMT (bit 6) are always set: transmission completes at once.
        byte lsr = (byte)(0x60 | LineErrors | (_rxCount > 0 ? 0x01 : 0));
        if (FifoEnabled && (LineErrors & 0x1E) != 0)
        {
            lsr |= 0x80; // error in receiver FIFO
        }
        LineErrors = 0;
        return lsr;
    }

    public void Write(ushort port, int size, uint value)
    {
        WriteRegister(port - _base, (byte)value);
        UpdateInterrupt();
    }

    private void WriteRegister(int offset, byte value)
    {
        switch (offset)
        {
            case 0:
                if (Dlab)
                {
                    Divisor = (ushort)((Divisor & 0xFF00) | value);
                }
                else
                {
                    Transmit(value);
                }
                break;
            case 1:
                if (Dlab)
                {
                    Divisor = (ushort)((Divisor & 0x00FF) | (value << 8));
                }
                else
                {
                    bool enablingThre = (value & 0x02) != 0 && (Ier & 0x02) == 0;
                    Ier = (byte)(value & 0x0F);
                    if (enablingThre)
                    {
                        // Enabling ETBEI while THR is empty raises the THRE interrupt at once;
                        // Linux's 8250 driver tests exactly this at start-up.
                        ThrEmptyInterrupt = true;
                    }
                }
                break;
            case 2:
                WriteFifoControl(value);
                break;
            case 3:
                Lcr = value;
                break;
            case 4:
                WriteModemControl(value);
                break;
            case 5:
            case 6:
                break; // LSR and MSR are read-only here (factory test writes are not modelled)
            default:
                Scr = value;
                break;
        }
    }

    private void Transmit(byte value)
    {
        ThrEmptyInterrupt = false;
        if ((Mcr & 0x10) != 0)
        {
            // Loopback: the transmitter output is wired to the receiver input.
            ReceiveIntoFifo(value);
        }
        else
        {
            _output.Transmit(value);
        }
        // The byte left at once: THR is empty again and, if enabled, says so.
        ThrEmptyInterrupt = true;
    }

    private void WriteFifoControl(byte value)
    {
        bool enable = (value & 0x01) != 0;
        if (enable != FifoEnabled)
        {
            // Changing the FIFO enable clears both FIFOs (data sheet, FCR bit 0).
            _rxCount = 0;
            _rxHead = 0;
        }
        FifoEnabled = enable;
        if ((value & 0x02) != 0)
        {
            _rxCount = 0;
            _rxHead = 0;
        }
        TriggerLevel = (value >> 6) switch { 0 => 1, 1 => 4, 2 => 8, _ => 14 };
        ArmTimeout();
        PumpHostInput();
    }

    private void WriteModemControl(byte value)
    {
        byte old = Mcr;
        Mcr = (byte)(value & 0x1F);
        byte newStatus;
        if ((Mcr & 0x10) != 0)
        {
            // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD (data sheet, MCR bit 4).
            newStatus = (byte)(((Mcr & 0x01) << 5) | ((Mcr & 0x02) << 3) | ((Mcr & 0x04) << 4) | ((Mcr & 0x08) << 4));
        }
        else
        {
            newStatus = 0xB0; // the host side always presents CTS, DSR and DCD
        }
        SetModemStatus(newStatus);
        if ((old & 0x10) != 0 && (Mcr & 0x10) == 0)
        {
            PumpHostInput();
        }
    }

    private void SetModemStatus(byte status)
    {
        byte old = Msr;
        byte deltas = (byte)(old & 0x0F);
        byte changed = (byte)((old ^ status) & 0xF0);
        if ((changed & 0x10) != 0) deltas |= 0x01;                          // DCTS
        if ((changed & 0x20) != 0) deltas |= 0x02;                          // DDSR
        if ((changed & 0x40) != 0 && (status & 0x40) == 0) deltas |= 0x04;  // TERI: RI trailing edge
        if ((changed & 0x80) != 0) deltas |= 0x08;                          // DDCD
        Msr = (byte)((status & 0xF0) | deltas);
    }
}
