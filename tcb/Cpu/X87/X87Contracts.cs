namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// Guest memory as the x87 unit sees it, implemented by the CPU without allocation per call.
/// Accesses are at (memory operand's effective address + offset), with the CPU's segmentation
/// and paging checks. False means a guest fault was raised: the unit abandons the instruction
/// without having changed FPU state.
/// </summary>
public interface IX87Memory
{
    bool Read(int offset, Span<byte> dest);
    bool Write(int offset, ReadOnlySpan<byte> src);
}

/// <summary>The slice of CPU state x87 instructions read or write.</summary>
public struct X87CpuContext
{
    /// <summary>FNSTSW AX result; <see cref="AxWritten"/> tells the CPU to commit it.</summary>
    public ushort Ax;
    public bool AxWritten;
    /// <summary>In/out: FCOMI/FUCOMI(P) set ZF/PF/CF and clear OF/SF/AF; FCMOVcc reads CF/ZF/PF.</summary>
    public uint Eflags;
    /// <summary>Selects the real-mode environment layout for FNSTENV/FLDENV/FNSAVE/FRSTOR (SDM vol.1 8.1.10).</summary>
    public bool RealMode;
    /// <summary>32-bit operand size: 28-byte environment (else 14-byte).</summary>
    public bool OperandSize32;
    /// <summary>This instruction's address, recorded as the FPU instruction pointer.</summary>
    public ushort Cs;
    public uint Eip;
    /// <summary>The memory operand's address, recorded as the FPU data pointer.</summary>
    public ushort DataSelector;
    public uint DataOffset;
}

public enum X87Outcome
{
    Done,
    /// <summary>The memory callback raised a guest fault; FPU state is unchanged.</summary>
    MemoryFault,
    /// <summary>A pending unmasked exception: the CPU raises #MF (vector 16) when CR0.NE=1, else IRQ13 (SDM vol.1 8.7).</summary>
    FloatingPointError,
}
