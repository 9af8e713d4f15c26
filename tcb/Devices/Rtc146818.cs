namespace SecureVmm.Tcb.Devices;

/// <summary>
/// The MC146818 real-time clock and CMOS RAM at 0x70 (index, bit 7 = NMI mask) / 0x71 (data)
/// (Motorola MC146818A data sheet). Time and date run from the VM's virtual clock, starting at a
/// configured epoch; registers A-D follow the data sheet: UIP in A for the 244 us before each
/// update, B selects BCD/binary, 12/24 hour and the interrupt enables, C holds the interrupt
/// flags and clears on read, D reports valid RAM and time. Periodic, alarm and update-ended
/// interrupts go to IRQ8. Bytes 0x0E-0x7F are battery-backed CMOS RAM; the memory size bytes
/// (0x15-0x18, 0x30-0x31, 0x34-0x35) are set by the machine as a PC BIOS would.
/// </summary>
public sealed class Rtc146818 : IPortDevice, ITimedDevice
{
    public const ushort IndexPort = 0x70;
    public const ushort DataPort = 0x71;
    public const int Irq = 8;

    private const int RegA = 0x0A, RegB = 0x0B, RegC = 0x0C, RegD = 0x0D;
    private const byte BSet = 0x80, BPie = 0x40, BAie = 0x20, BUie = 0x10, BBinary = 0x04, B24Hour = 0x02;
    private const byte CIrqf = 0x80, CPf = 0x40, CAf = 0x20, CUf = 0x10;
    private const long NsPerSecond = 1_000_000_000;
    /// <summary>UIP is set this long before each update (data sheet, "Update cycle": 244 us).</summary>
    private const long UpdateInProgressNs = 244_000;
    /// <summary>IBM PC/AT century byte (BCD), used by Linux when present.</summary>
    public const int CenturyRegister = 0x32;

    private readonly byte[] _cmos = new byte[128];
    private readonly DeviceClock _clock;
    private readonly IIrqLines _irq;
    private int _index;
    private long _epochSeconds;     // Unix time at virtual time _epochNs
    private long _epochNs;
    private long _setSeconds;       // while SET is on: the frozen time the guest is editing
    private long _doneSecond;       // update-ended and alarm flags are current up to this second
    private long _donePeriod;       // periodic flags are current up to this period index
    private bool _irqLevel;

    /// <summary>NMI mask: bit 7 of the last write to port 0x70 (1 = NMI disabled).</summary>
    public bool NmiDisabled { get; private set; }

    public Rtc146818(DeviceClock clock, IIrqLines irq, DateTimeOffset start)
    {
        _clock = clock ?? throw new ArgumentNullException(nameof(clock));
        _irq = irq ?? throw new ArgumentNullException(nameof(irq));
        _epochSeconds = start.ToUnixTimeSeconds();
        _epochNs = clock.NowNs;
        // Power-on state: 32.768 kHz divider, 1024 Hz periodic rate; 24-hour BCD as a PC BIOS sets it.
        _cmos[RegA] = 0x26;
        _cmos[RegB] = B24Hour;
        _cmos[RegD] = 0x80; // VRT: RAM and time valid
        _doneSecond = CurrentSecondIndex();
        _donePeriod = CurrentPeriodIndex();
    }

    public void Attach(PortBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.Register(this, IndexPort, 2);
        _clock.Register(this);
    }

    /// <summary>
    /// Sets the BIOS memory size bytes for <paramref name="ramBytes"/> of RAM: base memory 640 KiB
    /// (0x15-0x16), extended memory above 1 MiB in KiB up to 64 MiB (0x17-0x18 and 0x30-0x31), and
    /// memory above 16 MiB in 64 KiB units (0x34-0x35), as the IBM PC/AT BIOS lays them out.
    /// </summary>
    public void SetMemorySize(long ramBytes)
    {
        SetCmosWord(0x15, 640);
        long extendedKiB = Math.Clamp((ramBytes - 0x100000) / 1024, 0, 0xFFFF);
        SetCmosWord(0x17, (int)extendedKiB);
        SetCmosWord(0x30, (int)extendedKiB);
        long above16M = Math.Clamp((ramBytes - 0x1000000) / 0x10000, 0, 0xFFFF);
        SetCmosWord(0x34, (int)above16M);
    }

    private void SetCmosWord(int index, int value)
    {
        _cmos[index] = (byte)value;
        _cmos[index + 1] = (byte)(value >> 8);
    }

    /// <summary>A CMOS byte as stored (0x0E-0x7F), for tests and the machine.</summary>
    public byte this[int index]
    {
        get => _cmos[index & 0x7F];
        set => _cmos[index & 0x7F] = value;
    }

    // ---- time ----

    private long NowSeconds(out long fractionNs)
    {
        long ns = _clock.NowNs - _epochNs;
        fractionNs = ns % NsPerSecond;
        if (fractionNs < 0)
        {
            fractionNs += NsPerSecond;
        }
        return _epochSeconds + (ns - fractionNs) / NsPerSecond;
    }

    private bool Running => (_cmos[RegB] & BSet) == 0 && (_cmos[RegA] & 0x70) == 0x20;

    private long CurrentSecondIndex() => Floor(_clock.NowNs - _epochNs, NsPerSecond);

    private long PeriodNs()
    {
        int rate = _cmos[RegA] & 0x0F;
        if (rate == 0 || (_cmos[RegA] & 0x70) != 0x20)
        {
            return 0;
        }
        // Periodic rate (data sheet, table 5, 32.768 kHz time base): rates 1 and 2 alias 8 and 9.
        int ticks = rate <= 2 ? 1 << (rate + 6) : 1 << (rate - 1);
        return ticks * NsPerSecond / 32768;
    }

    private long CurrentPeriodIndex()
    {
        long period = PeriodNs();
        return period == 0 ? 0 : Floor(_clock.NowNs, period);
    }

    private static long Floor(long a, long b) => a >= 0 ? a / b : -((-a + b - 1) / b);

    /// <summary>Brings the flag bits in register C up to the current time.</summary>
    private void CatchUp()
    {
        long period = PeriodNs();
        if (period != 0)
        {
            long index = Floor(_clock.NowNs, period);
            if (index > _donePeriod)
            {
                _cmos[RegC] |= CPf;
                _donePeriod = index;
            }
        }
        if (Running)
        {
            long second = CurrentSecondIndex();
            if (second > _doneSecond)
            {
                _cmos[RegC] |= CUf;
                // Check the alarm at each update that passed (at most one day's worth: after a
                // full day every alarm time has matched).
                long first = Math.Max(_doneSecond + 1, second - 86_399);
                for (long s = first; s <= second; s++)
                {
                    if (AlarmMatches(_epochSeconds + s))
                    {
                        _cmos[RegC] |= CAf;
                        break;
                    }
                }
                _doneSecond = second;
            }
        }
        else
        {
            _doneSecond = CurrentSecondIndex();
        }
        UpdateIrq();
    }

    private bool AlarmMatches(long unixSeconds)
    {
        var t = DateTime.UnixEpoch.AddSeconds(unixSeconds);
        return AlarmField(1, t.Second) && AlarmField(3, t.Minute) && AlarmHourMatches(t.Hour);
    }

    // An alarm byte of 0xC0-0xFF is "don't care" (data sheet, "Alarm").
    private bool AlarmField(int index, int value) => _cmos[index] >= 0xC0 || DecodeByte(_cmos[index]) == value;

    private bool AlarmHourMatches(int hour) => _cmos[5] >= 0xC0 || DecodeHour(_cmos[5]) == hour;

    private void UpdateIrq()
    {
        byte b = _cmos[RegB];
        byte c = _cmos[RegC];
        bool irqf = ((c & CPf) != 0 && (b & BPie) != 0) || ((c & CAf) != 0 && (b & BAie) != 0) || ((c & CUf) != 0 && (b & BUie) != 0);
        _cmos[RegC] = (byte)(irqf ? c | CIrqf : c & ~CIrqf);
        if (irqf != _irqLevel)
        {
            _irqLevel = irqf;
            _irq.SetIrq(Irq, irqf);
        }
    }

    public long NextDeadlineNs
    {
        get
        {
            byte b = _cmos[RegB];
            long next = long.MaxValue;
            long period = PeriodNs();
            if ((b & BPie) != 0 && period != 0)
            {
                next = (_donePeriod + 1) * period;
            }
            if ((b & (BUie | BAie)) != 0 && Running)
            {
                next = Math.Min(next, _epochNs + (_doneSecond + 1) * NsPerSecond);
            }
            return next;
        }
    }

    public void OnClock() => CatchUp();

    // ---- register encoding (data sheet, table 3: BCD or binary per register B DM bit) ----

    private bool Binary => (_cmos[RegB] & BBinary) != 0;

    private byte EncodeByte(int value) => Binary ? (byte)value : (byte)((value / 10 << 4) | (value % 10));

    private int DecodeByte(byte value) => Binary ? value : (value >> 4) * 10 + (value & 0x0F);

    private byte EncodeHour(int hour)
    {
        if ((_cmos[RegB] & B24Hour) != 0)
        {
            return EncodeByte(hour);
        }
        int h12 = hour % 12 == 0 ? 12 : hour % 12;
        return (byte)(EncodeByte(h12) | (hour >= 12 ? 0x80 : 0));
    }

    private int DecodeHour(byte value)
    {
        if ((_cmos[RegB] & B24Hour) != 0)
        {
            return DecodeByte(value);
        }
        int h12 = DecodeByte((byte)(value & 0x7F)) % 12;
        return (value & 0x80) != 0 ? h12 + 12 : h12;
    }

    private void EncodeTime(long unixSeconds)
    {
        var t = DateTime.UnixEpoch.AddSeconds(Math.Clamp(unixSeconds, 0, 253_402_300_799));
        _cmos[0] = EncodeByte(t.Second);
        _cmos[2] = EncodeByte(t.Minute);
        _cmos[4] = EncodeHour(t.Hour);
        _cmos[6] = EncodeByte((int)t.DayOfWeek + 1); // 1 = Sunday
        _cmos[7] = EncodeByte(t.Day);
        _cmos[8] = EncodeByte(t.Month);
        _cmos[9] = EncodeByte(t.Year % 100);
        _cmos[CenturyRegister] = (byte)((t.Year / 100 / 10 << 4) | (t.Year / 100 % 10)); // always BCD
    }

    /// <summary>The time the guest wrote into the registers while SET was on; out-of-range fields are clamped.</summary>
    private long DecodeTime()
    {
        int second = Math.Clamp(DecodeByte(_cmos[0]), 0, 59);
        int minute = Math.Clamp(DecodeByte(_cmos[2]), 0, 59);
        int hour = Math.Clamp(DecodeHour(_cmos[4]), 0, 23);
        int month = Math.Clamp(DecodeByte(_cmos[8]), 1, 12);
        int centuryByte = _cmos[CenturyRegister];
        int century = (centuryByte >> 4) * 10 + (centuryByte & 0x0F);
        int year = Math.Clamp((century is >= 19 and <= 99 ? century : 20) * 100 + Math.Clamp(DecodeByte(_cmos[9]), 0, 99), 1970, 9999);
        int day = Math.Clamp(DecodeByte(_cmos[7]), 1, DateTime.DaysInMonth(year, month));
        return new DateTimeOffset(year, month, day, hour, minute, second, TimeSpan.Zero).ToUnixTimeSeconds();
    }

    // ---- ports ----

    public uint Read(ushort port, int size)
    {
        uint high = PortBus.SizeMask(size) & ~0xFFu;
        if (port == IndexPort)
        {
            return 0xFF | high; // the index register is write-only
        }
        return ReadRegister(_index) | high;
    }

    private byte ReadRegister(int index)
    {
        switch (index)
        {
            case 0 or 2 or 4 or 6 or 7 or 8 or 9 or CenturyRegister:
                if ((_cmos[RegB] & BSet) == 0)
                {
                    EncodeTime(NowSeconds(out _));
                }
                return _cmos[index];
            case RegA:
                NowSeconds(out long fraction);
                bool uip = Running && fraction >= NsPerSecond - UpdateInProgressNs;
                return (byte)((_cmos[RegA] & 0x7F) | (uip ? 0x80 : 0));
            case RegC:
                CatchUp();
                byte c = _cmos[RegC];
                _cmos[RegC] = 0; // reading C clears all flags (data sheet, register C)
                UpdateIrq();
                return c;
            case RegD:
                return 0x80;
            default:
                return _cmos[index];
        }
    }

    public void Write(ushort port, int size, uint value)
    {
        byte b = (byte)value;
        if (port == IndexPort)
        {
            _index = b & 0x7F;
            NmiDisabled = (b & 0x80) != 0;
            return;
        }
        WriteRegister(_index, b);
    }

    private void WriteRegister(int index, byte value)
    {
        switch (index)
        {
            case RegA:
                CatchUp();
                _cmos[RegA] = (byte)(value & 0x7F); // UIP is read-only
                _donePeriod = CurrentPeriodIndex();
                break;
            case RegB:
                WriteRegisterB(value);
                break;
            case RegC:
            case RegD:
                break; // read-only
            case 0 or 2 or 4 or 6 or 7 or 8 or 9 or CenturyRegister:
                if ((_cmos[RegB] & BSet) == 0)
                {
                    // Writing time while running: take it as a set of that one field.
                    EncodeTime(NowSeconds(out _));
                    _cmos[index] = value;
                    RestartAt(DecodeTime());
                }
                else
                {
                    _cmos[index] = value;
                }
                break;
            default:
                _cmos[index] = value;
                break;
        }
    }

    private void WriteRegisterB(byte value)
    {
        CatchUp();
        byte old = _cmos[RegB];
        bool wasSet = (old & BSet) != 0;
        bool set = (value & BSet) != 0;
        if (!wasSet && set)
        {
            // SET freezes updates; the registers hold the current time for the guest to edit.
            _setSeconds = NowSeconds(out _);
            EncodeTime(_setSeconds);
        }
        if (set)
        {
            value &= unchecked((byte)~BUie); // SET clears UIE (data sheet, register B)
        }
        bool formatChanged = ((old ^ value) & (BBinary | B24Hour)) != 0;
        if (formatChanged && set)
        {
            // Re-encode the frozen time in the new format (Linux writes B before the time fields).
            long frozen = DecodeTime();
            _cmos[RegB] = value;
            EncodeTime(frozen);
        }
        _cmos[RegB] = value;
        if (wasSet && !set)
        {
            RestartAt(DecodeTime());
        }
        UpdateIrq();
    }

    /// <summary>Starts the clock at <paramref name="unixSeconds"/> now; the next update is one second away.</summary>
    private void RestartAt(long unixSeconds)
    {
        _epochSeconds = unixSeconds;
        _epochNs = _clock.NowNs;
        _doneSecond = 0;
    }
}
