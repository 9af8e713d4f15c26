namespace SecureVmm.Tcb.Devices;

/// <summary>
/// One counter of the 8254 (Intel 8254 programmable interval timer data sheet, order 231164).
/// The count is not stepped: it is computed from the virtual time since the counter was loaded
/// (or its gate last triggered), at 1.193182 MHz, so reading it costs nothing per tick.
/// </summary>
public sealed class PitChannel
{
    internal int Mode;              // 0-5 (control word M2-M0; 6 and 7 alias 2 and 3)
    internal int AccessMode = 3;    // control word RW1-RW0: 1 = LSB, 2 = MSB, 3 = LSB then MSB
    internal bool Bcd;              // control word BCD
    internal int Reload;            // counts per period; a written 0 means 0x10000 (10000 in BCD)
    internal bool Loaded;           // a count has been written since the last control word
    internal bool NullCount;        // status bit 6: new count written but not yet loaded into CE
    internal long StartNs;          // virtual time at which counting (from Reload) began
    internal long FrozenTicks = -1; // modes 0/4 with gate low: ticks counted before the gate fell
    internal long FrozenNs;         // ... and the virtual time they took, so resuming is exact
    internal bool Gate = true;      // GATE input (channel 2: port 0x61 bit 0; channels 0/1: tied high)
    internal bool WaitingForTrigger; // modes 1/5: loaded, waiting for a gate rising edge
    internal bool WriteHighNext;    // LSB-then-MSB write: the MSB comes next
    internal byte WriteLow;         // the LSB of a two-byte write
    internal bool ReadHighNext;     // LSB-then-MSB read: the MSB comes next
    internal int LatchedCount = -1; // output latch held by a counter-latch command (-1 = none)
    internal bool LatchedHighNext;  // LSB-then-MSB read of the latch: the MSB comes next
    internal int LatchedStatus = -1; // status byte held by a read-back command (-1 = none)
    internal readonly DeviceClock Clock;

    internal PitChannel(DeviceClock clock) => Clock = clock;

    /// <summary>Ticks of the 1.193182 MHz input since counting began.</summary>
    internal long Elapsed()
    {
        if (!Loaded || WaitingForTrigger)
        {
            return 0;
        }
        if (FrozenTicks >= 0)
        {
            return FrozenTicks;
        }
        long ns = Clock.NowNs - StartNs;
        return ns <= 0 ? 0 : DeviceClock.TicksFromNs(ns, Pit8254.InputHz);
    }

    /// <summary>Current value of the counting element (CE), binary.</summary>
    internal int Count()
    {
        if (!Loaded)
        {
            return 0;
        }
        long d = Elapsed();
        int reload = Reload;
        return Mode switch
        {
            // Modes 2 and 3 reload at terminal count; mode 3 decrements by two per clock.
            2 => (int)(reload - d % reload),
            3 => (int)(reload - 2 * d % reload),
            // Modes 0, 1, 4, 5 wrap through 0xFFFF (9999 in BCD) after terminal count.
            _ => (int)((reload - d) % Modulus + Modulus) % Modulus,
        };
    }

    private int Modulus => Bcd ? 10000 : 0x10000;

    /// <summary>Level of the OUT pin now (8254 data sheet, figures for modes 0-5).</summary>
    internal bool Output()
    {
        if (!Loaded)
        {
            // After a control word, OUT goes low in mode 0 and high in all other modes.
            return Mode != 0;
        }
        long d = Elapsed();
        int reload = Reload;
        return Mode switch
        {
            0 => d >= reload,                                 // high at terminal count, until reloaded
            1 => WaitingForTrigger || d >= reload,            // low from trigger to terminal count
            2 => !Gate || d % reload != reload - 1,           // low for one clock before each reload
            3 => !Gate || d % reload < (reload + 1) / 2,      // square wave, high half first
            _ => WaitingForTrigger || d != reload,            // modes 4/5: one-clock strobe at terminal count
        };
    }

    /// <summary>The next tick (after <paramref name="afterTick"/>) at which OUT rises, or -1 if never.</summary>
    internal long NextRisingEdgeTick(long afterTick)
    {
        if (!Loaded || WaitingForTrigger || FrozenTicks >= 0 || !Gate)
        {
            return -1;
        }
        long reload = Reload;
        switch (Mode)
        {
            case 0:
            case 1:
                return afterTick < reload ? reload : -1;
            case 2:
            case 3:
                // Mode 2 rises after the one-clock low pulse (at the reload); mode 3 rises at
                // the start of each period. Both: multiples of the reload value.
                return (afterTick / reload + 1) * reload;
            default:
                return afterTick < reload + 1 ? reload + 1 : -1;
        }
    }

    internal void SetGate(bool level)
    {
        if (level == Gate)
        {
            return;
        }
        long now = Clock.NowNs;
        if (Mode is 0 or 4)
        {
            // Gate low suspends counting; gate high resumes it (8254 data sheet, mode 0/4 GATE).
            if (!level)
            {
                if (FrozenTicks < 0)
                {
                    FrozenTicks = Elapsed();
                    FrozenNs = Loaded && !WaitingForTrigger ? Math.Max(0, now - StartNs) : 0;
                }
            }
            else if (FrozenTicks >= 0)
            {
                StartNs = now - FrozenNs;
                FrozenTicks = -1;
            }
        }
        else if (level && Loaded)
        {
            // A rising gate (re)triggers modes 1 and 5 and restarts modes 2 and 3 from the reload.
            StartNs = now;
            WaitingForTrigger = false;
        }
        Gate = level;
    }

    internal void WriteControl(int accessMode, int mode, bool bcd)
    {
        AccessMode = accessMode;
        Mode = mode > 5 ? mode - 4 : mode;
        Bcd = bcd;
        Loaded = false;
        NullCount = true;
        WriteHighNext = false;
        ReadHighNext = false;
        FrozenTicks = -1;
        WaitingForTrigger = false;
    }

    internal void LoadCount(int value)
    {
        if (Bcd)
        {
            value = FromBcd(value);
        }
        Reload = value == 0 ? Modulus : value;
        Loaded = true;
        NullCount = false;
        StartNs = Clock.NowNs;
        FrozenTicks = Mode is 0 or 4 && !Gate ? 0 : -1;
        FrozenNs = 0;
        // Modes 1 and 5 wait for a gate trigger; the others start counting on the next clock.
        WaitingForTrigger = Mode is 1 or 5;
    }

    internal void WriteData(byte value)
    {
        switch (AccessMode)
        {
            case 1: LoadCount(value); break;
            case 2: LoadCount(value << 8); break;
            default:
                if (!WriteHighNext)
                {
                    WriteLow = value;
                    WriteHighNext = true;
                    if (Mode == 0)
                    {
                        // Mode 0: writing the first byte stops the count (data sheet, mode 0).
                        if (FrozenTicks < 0)
                        {
                            FrozenTicks = Elapsed();
                            FrozenNs = Loaded ? Math.Max(0, Clock.NowNs - StartNs) : 0;
                        }
                        NullCount = true;
                    }
                }
                else
                {
                    WriteHighNext = false;
                    LoadCount(WriteLow | (value << 8));
                }
                break;
        }
    }

    internal byte ReadData()
    {
        if (LatchedStatus >= 0)
        {
            byte status = (byte)LatchedStatus;
            LatchedStatus = -1;
            return status;
        }
        int value;
        bool high;
        if (LatchedCount >= 0)
        {
            value = LatchedCount;
            if (AccessMode == 3)
            {
                high = LatchedHighNext;
                LatchedHighNext = !LatchedHighNext;
                if (high)
                {
                    LatchedCount = -1;
                }
            }
            else
            {
                high = AccessMode == 2;
                LatchedCount = -1;
            }
        }
        else
        {
            value = CountForRead();
            if (AccessMode == 3)
            {
                high = ReadHighNext;
                ReadHighNext = !ReadHighNext;
            }
            else
            {
                high = AccessMode == 2;
            }
        }
        return (byte)(high ? value >> 8 : value);
    }

    private int CountForRead()
    {
        int count = Count();
        if (count == 0x10000 || (Bcd && count == 10000))
        {
            count = 0;
        }
        return Bcd ? ToBcd(count) : count;
    }

    internal void LatchCount()
    {
        // A second latch command before the first is read is ignored (data sheet, "Counter latch command").
        if (LatchedCount < 0)
        {
            LatchedCount = CountForRead();
            LatchedHighNext = false;
        }
    }

    internal void LatchStatus()
    {
        if (LatchedStatus < 0)
        {
            LatchedStatus = (Output() ? 0x80 : 0) | (NullCount ? 0x40 : 0) | (AccessMode << 4) | (Mode << 1) | (Bcd ? 1 : 0);
        }
    }

    private static int FromBcd(int value) =>
        (value & 0xF) % 10 + ((value >> 4) & 0xF) % 10 * 10 + ((value >> 8) & 0xF) % 10 * 100 + ((value >> 12) & 0xF) % 10 * 1000;

    private static int ToBcd(int value) =>
        value % 10 | (value / 10 % 10) << 4 | (value / 100 % 10) << 8 | (value / 1000 % 10) << 12;
}

/// <summary>
/// The 8254 programmable interval timer at 0x40-0x43 (Intel 8254 data sheet) with its three
/// counters clocked at 1.193182 MHz from the VM's virtual clock: counter 0 drives IRQ0, counter 2
/// is gated by and read through system control port B (0x61: bit 0 gate, bit 1 speaker data,
/// bit 4 refresh toggle, bit 5 OUT2), which Linux uses to calibrate the TSC.
/// Implements modes 0-5, binary and BCD, LSB/MSB/LSB-MSB access, counter latch and read-back.
/// </summary>
public sealed class Pit8254 : IPortDevice, ITimedDevice
{
    /// <summary>The PC's PIT input clock, 14.31818 MHz / 12.</summary>
    public const long InputHz = 1_193_182;
    public const ushort Counter0Port = 0x40;
    public const ushort ControlPort = 0x43;
    public const ushort SystemControlPortB = 0x61;
    public const int Irq = 0;

    /// <summary>DRAM refresh request period on port 0x61 bit 4 (about 15 us, IBM PC/AT technical reference).</summary>
    private const long RefreshToggleNs = 15_085;

    private readonly PitChannel[] _channels;
    private readonly DeviceClock _clock;
    private readonly IIrqLines _irq;
    private byte _portB;          // port 0x61 bits 0-3 as written (gate, speaker, parity/IOCHK enables)
    private long _irqDoneTick;    // counter 0: rising edges up to this tick have been delivered

    public Pit8254(DeviceClock clock, IIrqLines irq)
    {
        _clock = clock ?? throw new ArgumentNullException(nameof(clock));
        _irq = irq ?? throw new ArgumentNullException(nameof(irq));
        _channels = [new PitChannel(clock), new PitChannel(clock), new PitChannel(clock)];
        _channels[2].Gate = false; // port 0x61 bit 0 is clear after reset
    }

    /// <summary>Registers 0x40-0x43 and 0x61 on <paramref name="bus"/> and the timer on the clock.</summary>
    public void Attach(PortBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.Register(this, Counter0Port, 4);
        bus.Register(this, SystemControlPortB, 1);
        _clock.Register(this);
    }

    /// <summary>A counter, for tests and the machine's status display.</summary>
    public PitChannel Channel(int index) => _channels[index];

    public uint Read(ushort port, int size)
    {
        uint high = PortBus.SizeMask(size) & ~0xFFu;
        switch (port)
        {
            case >= Counter0Port and < ControlPort:
                return _channels[port - Counter0Port].ReadData() | high;
            case SystemControlPortB:
                var ch2 = _channels[2];
                uint refresh = (uint)(_clock.NowNs / RefreshToggleNs) & 1;
                return (uint)(_portB & 0x0F) | refresh << 4 | (ch2.Output() ? 0x20u : 0) | high;
            default:
                return PortBus.SizeMask(size); // the control word register cannot be read
        }
    }

    public void Write(ushort port, int size, uint value)
    {
        byte b = (byte)value;
        switch (port)
        {
            case >= Counter0Port and < ControlPort:
                var channel = _channels[port - Counter0Port];
                channel.WriteData(b);
                if (port == Counter0Port && channel.Loaded)
                {
                    RestartIrq();
                }
                break;
            case ControlPort:
                WriteControlWord(b);
                break;
            case SystemControlPortB:
                _portB = (byte)(b & 0x0F);
                _channels[2].SetGate((b & 1) != 0);
                break;
        }
    }

    private void WriteControlWord(byte value)
    {
        int select = value >> 6;
        int access = (value >> 4) & 3;
        if (select == 3)
        {
            // Read-back command: bit 5 clear latches counts, bit 4 clear latches status,
            // bits 3-1 select counters 2-0 (8254 data sheet, "Read-back command").
            for (int i = 0; i < 3; i++)
            {
                if ((value & (2 << i)) == 0)
                {
                    continue;
                }
                if ((value & 0x10) == 0)
                {
                    _channels[i].LatchStatus();
                }
                if ((value & 0x20) == 0)
                {
                    _channels[i].LatchCount();
                }
            }
            return;
        }
        var channel = _channels[select];
        if (access == 0)
        {
            channel.LatchCount();
            return;
        }
        channel.WriteControl(access, (value >> 1) & 7, (value & 1) != 0);
        if (select == 0)
        {
            // OUT0 follows the new mode's initial level: low for mode 0, high otherwise.
            _irq.SetIrq(Irq, channel.Output());
            _irqDoneTick = long.MaxValue;
        }
    }

    private void RestartIrq()
    {
        _irqDoneTick = 0;
        _irq.SetIrq(Irq, _channels[0].Output());
    }

    public long NextDeadlineNs
    {
        get
        {
            var ch0 = _channels[0];
            if (_irqDoneTick == long.MaxValue)
            {
                return long.MaxValue;
            }
            long tick = ch0.NextRisingEdgeTick(_irqDoneTick);
            return tick < 0 ? long.MaxValue : ch0.StartNs + DeviceClock.NsFromTicks(tick, InputHz);
        }
    }

    public void OnClock()
    {
        var ch0 = _channels[0];
        if (_irqDoneTick == long.MaxValue)
        {
            return;
        }
        long tick = ch0.NextRisingEdgeTick(_irqDoneTick);
        if (tick < 0)
        {
            return;
        }
        long elapsed = ch0.Elapsed();
        if (elapsed < tick)
        {
            return;
        }
        // One rising edge of OUT0 = one IRQ0 request. Periods missed while the VM was not run
        // collapse into one, as lost ticks do on hardware whose IRQ0 was not serviced in time.
        _irq.SetIrq(Irq, false);
        _irq.SetIrq(Irq, true);
        _irqDoneTick = ch0.Mode is 2 or 3 ? elapsed / ch0.Reload * ch0.Reload : tick;
        if (!ch0.Output())
        {
            _irq.SetIrq(Irq, false);
        }
    }
}
