using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Specialized handlers for the commonest operand shapes, chosen once when an instruction is
// decoded: 32-bit register/register, register/immediate and register-from-memory forms of the
// everyday ALU and MOV instructions. They compute exactly what the generic handlers in
// Arithmetic.cs/Logic.cs/DataTransfer.cs compute (the differential tests run through both),
// without the per-execution operand-kind and width dispatch.
public sealed partial class Cpu
{
    private static readonly InsnHandler?[] s_fastRegReg = new InsnHandler?[CodeCount];
    private static readonly InsnHandler?[] s_fastRegImm = new InsnHandler?[CodeCount];
    private static readonly InsnHandler?[] s_fastRegMem = new InsnHandler?[CodeCount];

    private static void RegisterFastPaths()
    {
        Fast(Mnemonic.Mov,
            (c, ref d) => c._gpr[d.Reg0] = c._gpr[d.Reg1],
            (c, ref d) => c._gpr[d.Reg0] = d.Imm,
            (c, ref d) =>
            {
                uint v = c.ReadSeg(d.Seg, c.EffectiveAddress(ref d), 4);
                if (!c.Faulted) c._gpr[d.Reg0] = v;
            });
        Fast(Mnemonic.Add,
            (c, ref d) => { uint a = c._gpr[d.Reg0], b = c._gpr[d.Reg1], r = a + b; c._gpr[d.Reg0] = r; c.FlagsAdd(a, b, r, 4); },
            (c, ref d) => { uint a = c._gpr[d.Reg0], b = d.Imm, r = a + b; c._gpr[d.Reg0] = r; c.FlagsAdd(a, b, r, 4); },
            (c, ref d) =>
            {
                uint b = c.ReadSeg(d.Seg, c.EffectiveAddress(ref d), 4);
                if (c.Faulted) return;
                uint a = c._gpr[d.Reg0], r = a + b;
                c._gpr[d.Reg0] = r;
                c.FlagsAdd(a, b, r, 4);
            });
        Fast(Mnemonic.Sub,
            (c, ref d) => { uint a = c._gpr[d.Reg0], b = c._gpr[d.Reg1], r = a - b; c._gpr[d.Reg0] = r; c.FlagsSub(a, b, r, 4); },
            (c, ref d) => { uint a = c._gpr[d.Reg0], b = d.Imm, r = a - b; c._gpr[d.Reg0] = r; c.FlagsSub(a, b, r, 4); },
            null);
        Fast(Mnemonic.Cmp,
            (c, ref d) => { uint a = c._gpr[d.Reg0], b = c._gpr[d.Reg1]; c.FlagsSub(a, b, a - b, 4); },
            (c, ref d) => { uint a = c._gpr[d.Reg0], b = d.Imm; c.FlagsSub(a, b, a - b, 4); },
            (c, ref d) =>
            {
                uint b = c.ReadSeg(d.Seg, c.EffectiveAddress(ref d), 4);
                if (c.Faulted) return;
                uint a = c._gpr[d.Reg0];
                c.FlagsSub(a, b, a - b, 4);
            });
        Fast(Mnemonic.And,
            (c, ref d) => { uint r = c._gpr[d.Reg0] & c._gpr[d.Reg1]; c._gpr[d.Reg0] = r; c.FlagsLogic(r, 4); },
            (c, ref d) => { uint r = c._gpr[d.Reg0] & d.Imm; c._gpr[d.Reg0] = r; c.FlagsLogic(r, 4); },
            null);
        Fast(Mnemonic.Or,
            (c, ref d) => { uint r = c._gpr[d.Reg0] | c._gpr[d.Reg1]; c._gpr[d.Reg0] = r; c.FlagsLogic(r, 4); },
            (c, ref d) => { uint r = c._gpr[d.Reg0] | d.Imm; c._gpr[d.Reg0] = r; c.FlagsLogic(r, 4); },
            null);
        Fast(Mnemonic.Xor,
            (c, ref d) => { uint r = c._gpr[d.Reg0] ^ c._gpr[d.Reg1]; c._gpr[d.Reg0] = r; c.FlagsLogic(r, 4); },
            (c, ref d) => { uint r = c._gpr[d.Reg0] ^ d.Imm; c._gpr[d.Reg0] = r; c.FlagsLogic(r, 4); },
            null);
        Fast(Mnemonic.Test,
            (c, ref d) => c.FlagsLogic(c._gpr[d.Reg0] & c._gpr[d.Reg1], 4),
            (c, ref d) => c.FlagsLogic(c._gpr[d.Reg0] & d.Imm, 4),
            null);
        // INC/DEC r32 (one operand): the "register/register" slot is used for the register form.
        Fast(Mnemonic.Inc,
            (c, ref d) => { uint a = c._gpr[d.Reg0], r = a + 1; c._gpr[d.Reg0] = r; c.FlagsIncDec(a, r, 4, dec: false); },
            null, null);
        Fast(Mnemonic.Dec,
            (c, ref d) => { uint a = c._gpr[d.Reg0], r = a - 1; c._gpr[d.Reg0] = r; c.FlagsIncDec(a, r, 4, dec: true); },
            null, null);
        Fast(Mnemonic.Lea, null, null, (c, ref d) => c._gpr[d.Reg0] = c.EffectiveAddress(ref d));
    }

    private static void Fast(Mnemonic m, InsnHandler? regReg, InsnHandler? regImm, InsnHandler? regMem)
    {
        foreach (var code in s_codesByMnemonic.Value[(int)m])
        {
            s_fastRegReg[(int)code] = regReg;
            s_fastRegImm[(int)code] = regImm;
            s_fastRegMem[(int)code] = regMem;
        }
    }

    /// <summary>Picks a specialized handler when the digested operands have a fast shape.</summary>
    private static void Specialize(ref DecodedInsn d, int opCount)
    {
        int code = (int)d.I.Code;
        if (d.Kind0 != OpKindCode.Reg || d.Reg0 >= 8 || d.OpSize != 4)
        {
            return;
        }
        InsnHandler? fast = null;
        if (opCount == 1)
        {
            fast = s_fastRegReg[code];
        }
        else if (opCount == 2)
        {
            if (d.Kind1 == OpKindCode.Reg && d.Reg1 < 8 && d.SrcSize == 4) fast = s_fastRegReg[code];
            else if (d.Kind1 == OpKindCode.Imm) fast = s_fastRegImm[code];
            else if (d.Kind1 == OpKindCode.Mem && (d.SrcSize == 4 || d.I.Mnemonic == Mnemonic.Lea)) fast = s_fastRegMem[code];
        }
        if (fast is not null)
        {
            d.Handler = fast;
        }
    }
}
