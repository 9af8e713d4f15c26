using System.Runtime.CompilerServices;

namespace SecureVmm.Tcb.Cpu;

/// <summary>General-purpose register numbers in the x86 encoding order (Intel SDM vol. 2, table 2-2).</summary>
public enum Gpr : byte { Eax = 0, Ecx = 1, Edx = 2, Ebx = 3, Esp = 4, Ebp = 5, Esi = 6, Edi = 7 }

/// <summary>Segment register numbers in the x86 encoding order (Intel SDM vol. 2, 3.1.1.3 "sreg").</summary>
public enum SegReg : byte { Es = 0, Cs = 1, Ss = 2, Ds = 3, Fs = 4, Gs = 5 }

/// <summary>The eight GPRs stored inline in the CPU object (no separate allocation).</summary>
[InlineArray(8)]
internal struct GprFile
{
    private uint _e0;
}

/// <summary>The six segment registers with their hidden descriptor caches, stored inline.</summary>
[InlineArray(6)]
internal struct SegmentFile
{
    private SegmentCache _e0;
}

/// <summary>The debug registers DR0-DR7 (DR4/DR5 alias DR6/DR7 when CR4.DE=0).</summary>
[InlineArray(8)]
internal struct DebugRegisterFile
{
    private uint _e0;
}

/// <summary>
/// A segment register: the visible selector and the hidden descriptor cache (Intel SDM vol. 3,
/// 3.4.3 "Segment Registers"). The cache is what addressing uses, which is why "unreal mode"
/// (protected-mode limits kept after returning to real mode) works as on hardware.
/// </summary>
public struct SegmentCache
{
    public ushort Selector;
    public uint Base;
    /// <summary>Limit in bytes (already scaled by the G bit).</summary>
    public uint Limit;
    /// <summary>Descriptor bits 40-55 as in the descriptor: access byte (type, S, DPL, P) and flags (AVL, L, D/B, G) in bits 12-15.</summary>
    public ushort Attributes;
    /// <summary>Derived access rights used by the data-access fast path (see <see cref="SegmentRights"/>).</summary>
    internal byte Rights;

    public readonly int Dpl => (Attributes >> 5) & 3;
    public readonly bool Present => (Attributes & 0x80) != 0;
    /// <summary>D/B bit: 32-bit code segment or 32-bit stack (ESP).</summary>
    public readonly bool Big => (Attributes & 0x4000) != 0;
    public readonly int Type => Attributes & 0xF;
    public readonly bool IsSystem => (Attributes & 0x10) == 0;
}

/// <summary>Access-rights bits derived from a segment's descriptor, checked on every data access.</summary>
internal static class SegmentRights
{
    public const byte Read = 1;
    public const byte Write = 2;
    /// <summary>Expand-down data segment: valid offsets lie above the limit (SDM vol. 3, 5.3).</summary>
    public const byte ExpandDown = 4;
    /// <summary>A usable (non-null) segment.</summary>
    public const byte Usable = 8;
}

/// <summary>EFLAGS bits (Intel SDM vol. 1, 3.4.3).</summary>
public static class EflagsBits
{
    public const uint CF = 1u << 0;
    public const uint Reserved1 = 1u << 1;
    public const uint PF = 1u << 2;
    public const uint AF = 1u << 4;
    public const uint ZF = 1u << 6;
    public const uint SF = 1u << 7;
    public const uint TF = 1u << 8;
    public const uint IF = 1u << 9;
    public const uint DF = 1u << 10;
    public const uint OF = 1u << 11;
    public const uint IOPL = 3u << 12;
    public const uint NT = 1u << 14;
    public const uint RF = 1u << 16;
    public const uint VM = 1u << 17;
    public const uint AC = 1u << 18;
    public const uint VIF = 1u << 19;
    public const uint VIP = 1u << 20;
    public const uint ID = 1u << 21;
    /// <summary>The six status flags that arithmetic computes (kept lazily).</summary>
    public const uint Arithmetic = CF | PF | AF | ZF | SF | OF;
    /// <summary>Bits a P6 with CPUID lets software change at all (VIF/VIP only matter with CR4.VME, not offered).</summary>
    public const uint Writable = Arithmetic | TF | IF | DF | IOPL | NT | RF | VM | AC | ID;
}

/// <summary>Control-register bits used by the model (Intel SDM vol. 3, 2.5).</summary>
public static class ControlBits
{
    public const uint Cr0PE = 1u << 0;
    public const uint Cr0MP = 1u << 1;
    public const uint Cr0EM = 1u << 2;
    public const uint Cr0TS = 1u << 3;
    public const uint Cr0ET = 1u << 4;
    public const uint Cr0NE = 1u << 5;
    public const uint Cr0WP = 1u << 16;
    public const uint Cr0AM = 1u << 18;
    public const uint Cr0NW = 1u << 29;
    public const uint Cr0CD = 1u << 30;
    public const uint Cr0PG = 1u << 31;
    public const uint Cr4VME = 1u << 0;
    public const uint Cr4PVI = 1u << 1;
    public const uint Cr4TSD = 1u << 2;
    public const uint Cr4DE = 1u << 3;
    public const uint Cr4PSE = 1u << 4;
    public const uint Cr4PAE = 1u << 5;
    public const uint Cr4MCE = 1u << 6;
    public const uint Cr4PGE = 1u << 7;
    public const uint Cr4PCE = 1u << 8;
    /// <summary>CR4 bits this model implements; setting any other bit is #GP(0) (SDM vol. 3, 2.5).</summary>
    public const uint Cr4Supported = Cr4TSD | Cr4DE | Cr4PSE | Cr4PGE | Cr4PCE | Cr4MCE;
}

/// <summary>Why <see cref="Cpu.Run"/> returned.</summary>
public enum RunStatus : byte
{
    /// <summary>The instruction budget was used up; call Run again to continue.</summary>
    BudgetExhausted = 0,
    /// <summary>The guest executed HLT and no interrupt is deliverable.</summary>
    Halted = 1,
    /// <summary>The exit handler returned <see cref="Exits.ExitAction.Stop"/>.</summary>
    Stopped = 2,
    /// <summary>Triple fault: the processor is in shutdown; Run keeps returning this.</summary>
    Shutdown = 3,
}
