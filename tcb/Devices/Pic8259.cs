namespace SecureVmm.Tcb.Devices;

/// <summary>
/// One 8259A programmable interrupt controller (Intel 8259A data sheet, order 231468):
/// IRR/ISR/IMR, the ICW1-ICW4 initialization sequence, OCW2 end-of-interrupt and rotation
/// commands, OCW3 register select, poll and special mask modes, edge or level triggering per line
/// (the level bits come from ICW1 LTIM or the PIIX ELCR), auto-EOI, and the fully nested
/// priority resolution with a rotating lowest priority. Two of these, cascaded on master IR2,
/// make up <see cref="PicPair"/>.
/// </summary>
public sealed class Pic8259
{
    // Plain state, named after the data sheet's registers.
    internal byte Irr;              // interrupt request register
    internal byte Isr;              // in-service register
    internal byte Imr;              // interrupt mask register (OCW1)
    internal byte LineLevels;       // current level of each IR input, for edge detection
    internal byte Elcr;             // edge/level control: 1 = level triggered (PIIX ELCR)
    internal byte ElcrWritableMask; // which ELCR bits exist (IRQ 0, 1, 2, 8, 13 are always edge)
    internal byte VectorBase;       // ICW2 T7-T3
    internal byte LowestPriority = 7; // rotation: the IR with the lowest priority (OCW2 R/SL)
    internal int InitStep;          // 0 = operational, 1 = expect ICW2, 2 = ICW3, 3 = ICW4
    internal bool Icw4Needed;       // ICW1 IC4
    internal bool Single;           // ICW1 SNGL: no cascade, skip ICW3
    internal bool LevelTriggeredAll; // ICW1 LTIM
    internal bool AutoEoi;          // ICW4 AEOI
    internal bool RotateOnAutoEoi;  // OCW2 "rotate in automatic EOI mode"
    internal bool SpecialFullyNested; // ICW4 SFNM
    internal bool ReadIsr;          // OCW3 RIS: the command port reads ISR instead of IRR
    internal bool PollPending;      // OCW3 P: the next command-port read is a poll
    internal bool SpecialMask;      // OCW3 SMM
    internal byte Icw3;             // cascade configuration, kept for read-back in tests
    internal readonly bool IsMaster;

    internal Pic8259(bool isMaster, byte elcrWritableMask)
    {
        IsMaster = isMaster;
        ElcrWritableMask = elcrWritableMask;
    }

    private bool IsLevel(int line) => LevelTriggeredAll || (Elcr & (1 << line)) != 0;

    /// <summary>Drives input IR<paramref name="line"/> to <paramref name="level"/>.</summary>
    internal void SetLine(int line, bool level)
    {
        byte bit = (byte)(1 << line);
        if (IsLevel(line))
        {
            // Level mode: the request follows the input ("Level triggered mode", 8259A data sheet).
            if (level) { Irr |= bit; LineLevels |= bit; }
            else { Irr &= (byte)~bit; LineLevels &= (byte)~bit; }
        }
        else if (level)
        {
            // Edge mode: only a low-to-high transition latches a request.
            if ((LineLevels & bit) == 0)
            {
                Irr |= bit;
            }
            LineLevels |= bit;
        }
        else
        {
            LineLevels &= (byte)~bit;
        }
    }

    /// <summary>Highest-priority IR in <paramref name="bits"/> as a priority rank 0-7 (0 highest), or 8 if none.</summary>
    private int PriorityRank(byte bits)
    {
        if (bits == 0)
        {
            return 8;
        }
        for (int rank = 0; rank < 8; rank++)
        {
            if ((bits & (1 << ((rank + LowestPriority + 1) & 7))) != 0)
            {
                return rank;
            }
        }
        return 8;
    }

    /// <summary>The IR line this PIC would present on INT now, or -1.</summary>
    internal int PendingLine()
    {
        int requestRank = PriorityRank((byte)(Irr & ~Imr));
        if (requestRank == 8)
        {
            return -1;
        }
        // In-service levels block equal and lower priorities. In special mask mode only the
        // in-service level itself is blocked (OCW3 SMM); in special fully nested mode the master
        // lets further requests from a slave through while that slave's IR is in service (ICW4 SFNM).
        byte inService = Isr;
        if (SpecialMask)
        {
            // Special mask mode: an in-service level blocks only itself, so any unmasked request
            // that is not in service may interrupt, whatever its priority.
            int rank = PriorityRank((byte)(Irr & ~Imr & ~Isr));
            return rank == 8 ? -1 : (rank + LowestPriority + 1) & 7;
        }
        if (IsMaster && SpecialFullyNested)
        {
            inService &= unchecked((byte)~(1 << 2));
        }
        int serviceRank = PriorityRank(inService);
        return requestRank < serviceRank ? (requestRank + LowestPriority + 1) & 7 : -1;
    }

    /// <summary>The INTA cycle for <paramref name="line"/>: moves it from IRR to ISR (or not, in auto-EOI).</summary>
    internal void Acknowledge(int line)
    {
        byte bit = (byte)(1 << line);
        if (!IsLevel(line))
        {
            Irr &= (byte)~bit;
        }
        if (AutoEoi)
        {
            if (RotateOnAutoEoi)
            {
                LowestPriority = (byte)line;
            }
        }
        else
        {
            Isr |= bit;
        }
    }

    /// <summary>A poll read (OCW3 P): acknowledges the highest request like INTA and returns 0x80|IR, or 0.</summary>
    private byte Poll()
    {
        int line = PendingLine();
        if (line < 0)
        {
            return 0;
        }
        Acknowledge(line);
        return (byte)(0x80 | line);
    }

    /// <summary>Read of the command port (A0 = 0) or the data port (A0 = 1).</summary>
    internal byte Read(bool dataPort)
    {
        if (PollPending)
        {
            PollPending = false;
            return Poll();
        }
        if (dataPort)
        {
            return Imr;
        }
        return ReadIsr ? Isr : Irr;
    }

    /// <summary>Write to the command port (A0 = 0) or the data port (A0 = 1).</summary>
    internal void Write(bool dataPort, byte value)
    {
        if (!dataPort)
        {
            if ((value & 0x10) != 0)
            {
                WriteIcw1(value);
            }
            else if ((value & 0x08) != 0)
            {
                WriteOcw3(value);
            }
            else
            {
                WriteOcw2(value);
            }
            return;
        }
        switch (InitStep)
        {
            case 1: // ICW2: vector base (T7-T3; the low three bits come from the IR number in x86 mode)
                VectorBase = (byte)(value & 0xF8);
                InitStep = Single ? (Icw4Needed ? 3 : 0) : 2;
                break;
            case 2: // ICW3: cascade wiring
                Icw3 = value;
                InitStep = Icw4Needed ? 3 : 0;
                break;
            case 3: // ICW4: bit 1 AEOI, bit 4 SFNM (bit 0 uPM is always 8086 here)
                AutoEoi = (value & 0x02) != 0;
                SpecialFullyNested = (value & 0x10) != 0;
                InitStep = 0;
                break;
            default: // OCW1: the mask
                Imr = value;
                break;
        }
    }

    private void WriteIcw1(byte value)
    {
        // ICW1 starts initialization: "the interrupt mask register is cleared, IR7 is assigned
        // the lowest priority, the special mask mode is cleared and status read is set to IRR"
        // (8259A data sheet, "Initialization command words"). Edge-sense latches are reset too.
        Irr = 0;
        Isr = 0;
        Imr = 0;
        LineLevels = 0;
        LowestPriority = 7;
        SpecialMask = false;
        ReadIsr = false;
        PollPending = false;
        AutoEoi = false;
        RotateOnAutoEoi = false;
        SpecialFullyNested = false;
        Icw4Needed = (value & 0x01) != 0;
        Single = (value & 0x02) != 0;
        LevelTriggeredAll = (value & 0x08) != 0;
        InitStep = 1;
    }

    private void WriteOcw2(byte value)
    {
        int command = value >> 5; // R, SL, EOI
        int level = value & 7;
        switch (command)
        {
            case 0b000: RotateOnAutoEoi = false; break;
            case 0b100: RotateOnAutoEoi = true; break;
            case 0b001: // non-specific EOI: clear the highest-priority in-service bit
            case 0b101: // rotate on non-specific EOI
                int rank = PriorityRank(Isr);
                if (rank < 8)
                {
                    int line = (rank + LowestPriority + 1) & 7;
                    Isr &= (byte)~(1 << line);
                    if (command == 0b101)
                    {
                        LowestPriority = (byte)line;
                    }
                }
                break;
            case 0b011: // specific EOI
                Isr &= (byte)~(1 << level);
                break;
            case 0b111: // rotate on specific EOI
                Isr &= (byte)~(1 << level);
                LowestPriority = (byte)level;
                break;
            case 0b110: // set priority: IR level becomes the lowest
                LowestPriority = (byte)level;
                break;
            default: // 0b010: no operation
                break;
        }
    }

    private void WriteOcw3(byte value)
    {
        if ((value & 0x02) != 0) // RR: the RIS bit is valid
        {
            ReadIsr = (value & 0x01) != 0;
        }
        if ((value & 0x04) != 0)
        {
            PollPending = true;
        }
        if ((value & 0x40) != 0) // ESMM: the SMM bit is valid
        {
            SpecialMask = (value & 0x20) != 0;
        }
    }

    /// <summary>Write of the PIIX edge/level control register for this PIC's eight lines.</summary>
    internal void WriteElcr(byte value) => Elcr = (byte)(value & ElcrWritableMask);

    internal byte ReadElcr() => Elcr;

    /// <summary>Vector base programmed by ICW2.</summary>
    public byte Base => VectorBase;

    /// <summary>Interrupt request register (for the machine's status display and tests).</summary>
    public byte RequestRegister => Irr;

    /// <summary>In-service register.</summary>
    public byte InServiceRegister => Isr;

    /// <summary>Interrupt mask register.</summary>
    public byte MaskRegister => Imr;
}

/// <summary>
/// The PC/AT pair of 8259A PICs: master at 0x20/0x21, slave at 0xA0/0xA1 cascaded on master IR2,
/// plus the PIIX edge/level control registers at 0x4D0/0x4D1. It is the CPU's interrupt source
/// (INTR + INTA) and the IRQ lines devices drive. A request that disappears before INTA yields
/// the spurious vector for IR7 (master) or IR15 (slave) without setting an ISR bit
/// (8259A data sheet, "Interrupt sequence", spurious interrupts).
/// </summary>
public sealed class PicPair : IInterruptSource, IIrqLines, IPortDevice
{
    public const ushort MasterCommandPort = 0x20;
    public const ushort MasterDataPort = 0x21;
    public const ushort SlaveCommandPort = 0xA0;
    public const ushort SlaveDataPort = 0xA1;
    public const ushort ElcrMasterPort = 0x4D0;
    public const ushort ElcrSlavePort = 0x4D1;

    /// <summary>IRQ 0, 1, 2 (master) and 8, 13 (slave) are edge triggered on a PC and cannot be changed (PIIX ELCR).</summary>
    public Pic8259 Master { get; } = new(isMaster: true, elcrWritableMask: 0xF8);
    public Pic8259 Slave { get; } = new(isMaster: false, elcrWritableMask: 0xDE);

    /// <summary>Registers the pair's six ports on <paramref name="bus"/>.</summary>
    public void Attach(PortBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.Register(this, MasterCommandPort, 2);
        bus.Register(this, SlaveCommandPort, 2);
        bus.Register(this, ElcrMasterPort, 2);
    }

    public void SetIrq(int line, bool level)
    {
        if ((uint)line >= 16)
        {
            return;
        }
        if (line < 8)
        {
            Master.SetLine(line, level);
            _intr = Master.PendingLine() >= 0;
        }
        else
        {
            Slave.SetLine(line - 8, level);
            UpdateCascade();
        }
    }

    // The slave's INT output drives master IR2; the master's INT output is the CPU's INTR,
    // kept in a field so the CPU can test it at every instruction boundary for nothing.
    private void UpdateCascade()
    {
        Master.SetLine(2, Slave.PendingLine() >= 0);
        _intr = Master.PendingLine() >= 0;
    }

    private bool _intr;

    public bool HasPending => _intr;

    public byte Acknowledge()
    {
        int line = Master.PendingLine();
        byte vector;
        if (line < 0)
        {
            vector = (byte)(Master.Base + 7); // spurious IRQ7: ISR untouched
        }
        else
        {
            Master.Acknowledge(line);
            if (line == 2)
            {
                int slaveLine = Slave.PendingLine();
                if (slaveLine < 0)
                {
                    vector = (byte)(Slave.Base + 7); // spurious IRQ15
                }
                else
                {
                    Slave.Acknowledge(slaveLine);
                    vector = (byte)(Slave.Base + slaveLine);
                }
            }
            else
            {
                vector = (byte)(Master.Base + line);
            }
        }
        UpdateCascade();
        return vector;
    }

    public uint Read(ushort port, int size)
    {
        uint value = port switch
        {
            MasterCommandPort => Master.Read(false),
            MasterDataPort => Master.Read(true),
            SlaveCommandPort => Slave.Read(false),
            SlaveDataPort => Slave.Read(true),
            ElcrMasterPort => Master.ReadElcr(),
            ElcrSlavePort => Slave.ReadElcr(),
            _ => 0xFF,
        };
        UpdateCascade(); // a poll read acknowledges
        return value | (PortBus.SizeMask(size) & ~0xFFu);
    }

    public void Write(ushort port, int size, uint value)
    {
        byte b = (byte)value;
        switch (port)
        {
            case MasterCommandPort: Master.Write(false, b); break;
            case MasterDataPort: Master.Write(true, b); break;
            case SlaveCommandPort: Slave.Write(false, b); break;
            case SlaveDataPort: Slave.Write(true, b); break;
            case ElcrMasterPort: Master.WriteElcr(b); break;
            case ElcrSlavePort: Slave.WriteElcr(b); break;
            default: return;
        }
        UpdateCascade();
    }
}
