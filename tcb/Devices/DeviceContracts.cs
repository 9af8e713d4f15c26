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
