namespace SecureVmm.Tcb.Devices;

/// <summary>
/// A source of maskable external interrupts, as the 8259A PIC pair presents itself to the CPU:
/// <see cref="HasPending"/> is the INTR line; <see cref="Acknowledge"/> is the INTA cycle that
/// returns the vector (8259A data sheet, "Interrupt sequence").
/// </summary>
public interface IInterruptSource
{
    bool HasPending { get; }
    byte Acknowledge();
}

/// <summary>A device that decodes I/O ports. Sizes are 1, 2 or 4 bytes.</summary>
public interface IPortDevice
{
    uint Read(ushort port, int size);
    void Write(ushort port, int size, uint value);
}

/// <summary>A device that decodes a guest-physical address range; offsets are from the range base.</summary>
public interface IMmioDevice
{
    ulong Read(ulong offset, int size);
    void Write(ulong offset, int size, ulong value);
}

/// <summary>
/// The interrupt request lines devices drive (ISA IRQ 0-15 on the 8259A pair). A device sets its
/// line to the level of its interrupt output; the controller decides whether that is an edge or a
/// level request (8259A data sheet, "Edge and level triggered modes").
/// </summary>
public interface IIrqLines
{
    void SetIrq(int line, bool level);
}

/// <summary>
/// A device whose behaviour depends on virtual time (PIT, RTC, UART timeouts). The machine calls
/// <see cref="OnClock"/> whenever the clock reaches <see cref="NextDeadlineNs"/> (or after any
/// advance); HLT jumps virtual time to the smallest deadline (deterministic mode) or sleeps until
/// it (realtime mode).
/// </summary>
public interface ITimedDevice
{
    /// <summary>Virtual time (ns) of the next event this device must see, or long.MaxValue for none.</summary>
    long NextDeadlineNs { get; }

    /// <summary>Brings the device up to the clock's current time (raising interrupts that fell due).</summary>
    void OnClock();
}
