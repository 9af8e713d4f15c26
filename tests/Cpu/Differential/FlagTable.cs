namespace SecureVmm.Tests.Cpu.Differential;

/// <summary>How one instruction treats the status flags: which it reads, which it leaves with a
/// defined value, which it leaves undefined. Flags in none of the three are unaffected.</summary>
public readonly record struct FlagEffect(uint Reads, uint Defined, uint Undefined);

/// <summary>
/// The status-flag effects of the integer instructions the generated differential tier draws, as
/// the Intel SDM (vol. 2A/2B, each instruction's "Flags Affected" section) gives them. A flag the
/// SDM calls undefined after an instruction is masked out of the comparison until an instruction
/// defines it again, and no flag-reading instruction is generated while a flag it reads is undefined
/// (the generator defines them first), so a difference in an undefined flag can never reach a register.
/// </summary>
public static class FlagTable
{
    public const uint CF = 0x001, PF = 0x004, AF = 0x010, ZF = 0x040, SF = 0x080, DF = 0x400, OF = 0x800;
    public const uint Status = CF | PF | AF | ZF | SF | OF;

    private static readonly FlagEffect None = new(0, 0, 0);
    private static readonly FlagEffect Arithmetic = new(0, Status, 0);
    private static readonly FlagEffect Logic = new(0, OF | CF | SF | ZF | PF, AF);
    private static readonly FlagEffect Multiply = new(0, OF | CF, SF | ZF | AF | PF);

    /// <summary>By Iced mnemonic (lower case), for instructions whose effect does not depend on the operands.</summary>
    public static readonly IReadOnlyDictionary<string, FlagEffect> ByMnemonic = new Dictionary<string, FlagEffect>(StringComparer.Ordinal)
    {
        // ADD, SUB, CMP, NEG, XADD, CMPXCHG, CMPS, SCAS: OF, SF, ZF, AF, CF and PF set according to the result.
        ["add"] = Arithmetic, ["sub"] = Arithmetic, ["cmp"] = Arithmetic, ["neg"] = Arithmetic,
        ["xadd"] = Arithmetic, ["cmpxchg"] = Arithmetic, ["cmps"] = Arithmetic, ["scas"] = Arithmetic,
        // ADC, SBB: as ADD/SUB, and they read CF.
        ["adc"] = Arithmetic with { Reads = CF }, ["sbb"] = Arithmetic with { Reads = CF },
        // AND, OR, XOR, TEST: OF and CF cleared; SF, ZF, PF by the result; AF undefined.
        ["and"] = Logic, ["or"] = Logic, ["xor"] = Logic, ["test"] = Logic,
        // INC, DEC: CF not affected; OF, SF, ZF, AF, PF by the result.
        ["inc"] = new(0, OF | SF | ZF | AF | PF, 0), ["dec"] = new(0, OF | SF | ZF | AF | PF, 0),
        // MUL, IMUL (all forms): OF and CF defined; SF, ZF, AF, PF undefined.
        ["mul"] = Multiply, ["imul"] = Multiply,
        // DIV, IDIV: CF, OF, SF, ZF, AF, PF undefined.
        ["div"] = new(0, 0, Status), ["idiv"] = new(0, 0, Status),
        // BT, BTS, BTR, BTC: CF = the selected bit; ZF unaffected; OF, SF, AF, PF undefined.
        ["bt"] = new(0, CF, OF | SF | AF | PF), ["bts"] = new(0, CF, OF | SF | AF | PF),
        ["btr"] = new(0, CF, OF | SF | AF | PF), ["btc"] = new(0, CF, OF | SF | AF | PF),
        // BSF, BSR: ZF defined; CF, OF, SF, AF, PF undefined.
        ["bsf"] = new(0, ZF, CF | OF | SF | AF | PF), ["bsr"] = new(0, ZF, CF | OF | SF | AF | PF),
        // CMPXCHG8B: ZF defined; CF, PF, AF, SF, OF unaffected.
        ["cmpxchg8b"] = new(0, ZF, 0),
        // LAHF reads SF ZF AF PF CF; SAHF writes them from AH (OF unaffected); PUSHFD copies them all.
        ["lahf"] = new(SF | ZF | AF | PF | CF, 0, 0), ["sahf"] = new(0, SF | ZF | AF | PF | CF, 0),
        ["pushfd"] = new(Status, 0, 0),
        // CLC, STC, CMC (reads CF), CLD, STD.
        ["clc"] = new(0, CF, 0), ["stc"] = new(0, CF, 0), ["cmc"] = new(CF, CF, 0),
        ["cld"] = new(0, DF, 0), ["std"] = new(0, DF, 0),
        // DAA, DAS: read AF and CF; CF, AF, SF, ZF, PF defined; OF undefined.
        ["daa"] = new(AF | CF, CF | AF | SF | ZF | PF, OF), ["das"] = new(AF | CF, CF | AF | SF | ZF | PF, OF),
        // AAA, AAS: read AF; AF and CF defined; OF, SF, ZF, PF undefined.
        ["aaa"] = new(AF, AF | CF, OF | SF | ZF | PF), ["aas"] = new(AF, AF | CF, OF | SF | ZF | PF),
        // AAM, AAD: SF, ZF, PF defined; OF, AF, CF undefined.
        ["aam"] = new(0, SF | ZF | PF, OF | AF | CF), ["aad"] = new(0, SF | ZF | PF, OF | AF | CF),
        // No flags: data movement, NOT, BSWAP, LEA, sign extensions, stack, MOVS/STOS/LODS.
        ["mov"] = None, ["not"] = None, ["bswap"] = None, ["lea"] = None, ["movzx"] = None, ["movsx"] = None,
        ["xchg"] = None, ["push"] = None, ["pop"] = None, ["cbw"] = None, ["cwde"] = None, ["cwd"] = None,
        ["cdq"] = None, ["movs"] = None, ["stos"] = None, ["lods"] = None, ["invlpg"] = None,
    };

    /// <summary>
    /// Where qemu-system-i386 (7.2, TCG) departs from the SDM: flags the SDM defines but QEMU leaves
    /// different after the instruction. The tier treats them as undefined for the comparison (masked,
    /// and redefined before a reader) and verification/README.md lists each with the evidence.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, (uint Flags, string Reason)> QemuDepartures = new Dictionary<string, (uint, string)>(StringComparer.Ordinal)
    {
        // SDM vol. 2A, CMPXCHG8B: "The CF, PF, AF, SF, and OF flags are unaffected." QEMU 7.2 returns
        // CF = OF = 0 (and stray lazy-flag bits) after it, whatever they were before.
        ["cmpxchg8b"] = (CF | PF | AF | SF | OF, "QEMU 7.2 clears CF/OF (and garbles the other unaffected flags) after CMPXCHG8B; the SDM leaves them unaffected"),
    };

    /// <summary>The effect of <paramref name="mnemonic"/> for the comparison: the SDM's, with QEMU's known departures made undefined.</summary>
    public static FlagEffect Compared(string mnemonic)
    {
        FlagEffect effect = ByMnemonic[mnemonic];
        return QemuDepartures.TryGetValue(mnemonic, out var departure)
            ? effect with { Defined = effect.Defined & ~departure.Flags, Undefined = effect.Undefined | departure.Flags }
            : effect;
    }

    /// <summary>
    /// SAL/SAR/SHL/SHR, ROL/ROR/RCL/RCR and SHLD/SHRD, whose flags depend on the count
    /// (SDM vol. 2B, "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR", "SHLD", "SHRD", Flags Affected).
    /// </summary>
    public static FlagEffect Shift(string mnemonic, int width, int count)
    {
        int masked = count & 0x1F;
        uint reads = mnemonic is "rcl" or "rcr" ? CF : 0;
        if (masked == 0)
        {
            // "If the count is 0, the flags are not affected."
            return new(reads, 0, 0);
        }
        uint overflow = masked == 1 ? OF : 0;          // OF only for 1-bit shifts and rotates
        uint overflowUndefined = masked == 1 ? 0 : OF;
        switch (mnemonic)
        {
            case "rol" or "ror" or "rcl" or "rcr":
                // CF affected when the masked count is non-zero; SF, ZF, AF, PF always unaffected.
                return new(reads, CF | overflow, overflowUndefined);
            case "shl" or "shr" or "sar":
                // CF = last bit shifted out, undefined for SHL/SHR when count >= operand size; SF, ZF, PF by the
                // result; AF undefined for a non-zero count.
                bool carryUndefined = mnemonic != "sar" && masked >= width;
                return new(0, SF | ZF | PF | overflow | (carryUndefined ? 0 : CF), AF | overflowUndefined | (carryUndefined ? CF : 0));
            case "shld" or "shrd":
                // Count > operand size: result and flags undefined (the generator never draws it).
                if (masked > width)
                {
                    throw new ArgumentOutOfRangeException(nameof(count), "SHLD/SHRD count above the operand size is undefined");
                }
                return new(0, CF | SF | ZF | PF | overflow, AF | overflowUndefined);
            default:
                throw new ArgumentException($"not a shift: {mnemonic}", nameof(mnemonic));
        }
    }

    /// <summary>The flags condition code <paramref name="cc"/> (Jcc/SETcc/CMOVcc order O, NO, B, AE, E, NE, BE, A,
    /// S, NS, P, NP, L, GE, LE, G; SDM vol. 1, table B-1) reads.</summary>
    public static uint ConditionReads(int cc) => (cc >> 1) switch
    {
        0 => OF,
        1 => CF,
        2 => ZF,
        3 => CF | ZF,
        4 => SF,
        5 => PF,
        6 => SF | OF,
        _ => ZF | SF | OF,
    };

    /// <summary>The condition-code suffixes in encoding order, as Iced names them in <c>Code</c>.</summary>
    public static readonly string[] ConditionNames = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"];
}
