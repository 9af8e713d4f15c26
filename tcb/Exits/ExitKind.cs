namespace SecureVmm.Tcb.Exits;

/// <summary>
/// Why the CPU left guest context. Every value is a typed VM exit that the machine's single
/// dispatch point records in the audit log before the exit's effect reaches the guest.
/// The numeric values are part of the audit log format (docs/audit-format.md): never renumber.
/// </summary>
public enum ExitKind : byte
{
    /// <summary>IN/INS from an I/O port.</summary>
    IoIn = 1,
    /// <summary>OUT/OUTS to an I/O port.</summary>
    IoOut = 2,
    /// <summary>Read from a guest-physical address that is not RAM or ROM.</summary>
    MmioRead = 3,
    /// <summary>Write to a guest-physical address that is not RAM.</summary>
    MmioWrite = 4,
    /// <summary>HLT with interrupts disabled or no interrupt pending.</summary>
    Hlt = 5,
    /// <summary>CPUID: leaf/subleaf and the registers returned.</summary>
    Cpuid = 6,
    /// <summary>RDMSR.</summary>
    Rdmsr = 7,
    /// <summary>WRMSR.</summary>
    Wrmsr = 8,
    /// <summary>Triple fault: the processor enters shutdown (Intel SDM vol. 3, 6.15, #DF).</summary>
    Shutdown = 9,
    /// <summary>A reset request (keyboard controller 0xFE, port 0xCF9 ...).</summary>
    Reset = 10,
    /// <summary>Write to the isa-debug-exit port (dev boot only).</summary>
    DebugExit = 11,
}
