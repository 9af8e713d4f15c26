namespace SecureVmm.Tcb.Devices;

/// <summary>
/// QEMU's isa-debug-exit device at port 0xF4 (dev boot only): a write of value V stops the VM,
/// and the process exits with status (V &lt;&lt; 1) | 1, so the same test guests run on both.
/// Reads return all-ones, like an unclaimed port.
/// </summary>
public sealed class DebugExitPort(MachineRequests requests) : IPortDevice
{
    public const ushort Port = 0xF4;

    /// <summary>The process exit status QEMU's isa-debug-exit gives for a written value.</summary>
    public static int ExitStatusFor(uint value) => (int)((value << 1) | 1);

    public uint Read(ushort port, int size) => PortBus.SizeMask(size);

    public void Write(ushort port, int size, uint value) =>
        requests.Request(MachineRequestKind.DebugExit, value & PortBus.SizeMask(size), "isa-debug-exit");
}

/// <summary>
/// Port 0x80, the POST-code (manufacturing diagnostic) port. Firmware writes progress codes and
/// Linux writes it as an I/O delay; it is accepted and the last code kept for the audit record.
/// Reads return all-ones: nothing on a PC answers reads of it.
/// </summary>
public sealed class PostCodePort : IPortDevice
{
    public const ushort Port = 0x80;

    /// <summary>The last byte written.</summary>
    public byte LastCode { get; private set; }

    /// <summary>How many writes the port has taken.</summary>
    public long WriteCount { get; private set; }

    public uint Read(ushort port, int size) => PortBus.SizeMask(size);

    public void Write(ushort port, int size, uint value)
    {
        LastCode = (byte)value;
        WriteCount++;
    }
}
