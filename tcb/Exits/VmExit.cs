namespace SecureVmm.Tcb.Exits;

/// <summary>
/// One VM exit, filled by the CPU and handed to the machine's single dispatch point
/// (<see cref="IExitHandler"/>). It is a reusable value: the CPU owns one instance and
/// overwrites it for every exit, so exits allocate nothing.
/// Which fields mean something depends on <see cref="Kind"/>:
/// IoIn/IoOut: Port, Size (1, 2 or 4), Value (OUT: the value written; IN: set by the handler).
/// MmioRead/MmioWrite: Address (guest-physical), Size (1, 2, 4 or 8), Value (as for I/O).
/// Cpuid: Leaf, Subleaf and the returned Eax..Edx (filled by the CPU before dispatch).
/// Rdmsr/Wrmsr: Address = MSR number, Value = the 64-bit value read or written.
/// DebugExit: Value = the value written to the debug-exit port.
/// Hlt, Shutdown, Reset: no details.
/// </summary>
public struct VmExit
{
    public ExitKind Kind;
    /// <summary>Guest CS selector and EIP of the instruction that caused the exit.</summary>
    public ushort Cs;
    public uint Eip;
    /// <summary>Guest instructions retired before this exit (the VM's virtual clock source).</summary>
    public ulong InstructionCount;
    public ushort Port;
    public byte Size;
    public ulong Address;
    public ulong Value;
    public uint Leaf;
    public uint Subleaf;
    public uint Eax;
    public uint Ebx;
    public uint Ecx;
    public uint Edx;
}

/// <summary>What the CPU does after the dispatch point has handled an exit.</summary>
public enum ExitAction : byte
{
    /// <summary>Deliver the exit's effect and go on executing.</summary>
    Continue = 0,
    /// <summary>Stop the VM: the CPU's run loop returns at once (power-off, debug exit, audit failure).</summary>
    Stop = 1,
}

/// <summary>
/// The machine's single exit dispatch point. The CPU calls it synchronously for every exit,
/// before the exit's effect (an IN value, an MMIO read value ...) is delivered to the guest;
/// the audit log records the exit there.
/// </summary>
public interface IExitHandler
{
    ExitAction OnExit(ref VmExit exit);
}
