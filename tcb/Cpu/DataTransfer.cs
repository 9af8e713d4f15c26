using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Data movement and stack instructions (SDM vol. 1, 7.3.1; vol. 2 MOV, MOVZX/MOVSX, XCHG, LEA,
// PUSH/POP, PUSHA/POPA, ENTER/LEAVE, BOUND, XLAT, LAHF/SAHF, flag-bit instructions, NOP/PAUSE).
public sealed partial class Cpu
{
    private static void RegisterDataTransfer()
    {
        On(Mnemonic.Mov, (c, ref d) => Mov(c, ref d));
        On(Mnemonic.Movzx, (c, ref d) =>
        {
            uint v = c.ReadOp1(ref d);
            if (!c.Faulted) c.WriteReg(d.Reg0, v);
        });
        On(Mnemonic.Movsx, (c, ref d) =>
        {
            uint v = c.ReadOp1(ref d);
            if (!c.Faulted) c.WriteReg(d.Reg0, d.SrcSize == 1 ? (uint)(sbyte)v : (uint)(short)v);
        });
        On(Mnemonic.Xchg, (c, ref d) => Xchg(c, ref d));
        On(Mnemonic.Lea, (c, ref d) => c.WriteReg(d.Reg0, c.EffectiveAddressRaw(ref d)));
        On(Mnemonic.Push, (c, ref d) => Push(c, ref d));
        On(Mnemonic.Pop, (c, ref d) => Pop(c, ref d));
        On(Mnemonic.Pusha, (c, ref d) => Pusha(c, ref d));
        On(Mnemonic.Pushad, (c, ref d) => Pusha(c, ref d));
        On(Mnemonic.Popa, (c, ref d) => Popa(c, ref d));
        On(Mnemonic.Popad, (c, ref d) => Popa(c, ref d));
        On(Mnemonic.Enter, (c, ref d) => Enter(c, ref d));
        On(Mnemonic.Leave, (c, ref d) => Leave(c, ref d));
        On(Mnemonic.Bound, (c, ref d) => Bound(c, ref d));
        On(Mnemonic.Xlatb, (c, ref d) =>
        {
            uint ea = d.Addr16 ? (c._gpr[3] + (c._gpr[0] & 0xFF)) & 0xFFFF : c._gpr[3] + (c._gpr[0] & 0xFF);
            uint v = c.ReadSeg(d.Seg, ea, 1);
            if (!c.Faulted) c.WriteReg(16, v);
        });
        On(Mnemonic.Lahf, (c, ref d) =>
        {
            // AH = SF:ZF:0:AF:0:PF:1:CF (SDM vol. 2, LAHF).
            uint f = c.Eflags & 0xD5 | 2;
            c.WriteReg(24, f);
        });
        On(Mnemonic.Sahf, (c, ref d) =>
        {
            uint ah = (c._gpr[0] >> 8) & 0xD5;
            uint f = c.Eflags;
            c._eflags = (f & ~0xD5u) | ah | EflagsBits.Reserved1;
        });
        On(Mnemonic.Clc, (c, ref d) => c.SetFlagBits(EflagsBits.CF, false));
        On(Mnemonic.Stc, (c, ref d) => c.SetFlagBits(EflagsBits.CF, true));
        On(Mnemonic.Cmc, (c, ref d) => c.SetFlagBits(EflagsBits.CF, !c.GetCF()));
        On(Mnemonic.Cld, (c, ref d) => c._eflags &= ~EflagsBits.DF);
        On(Mnemonic.Std, (c, ref d) => c._eflags |= EflagsBits.DF);
        On(Mnemonic.Nop, (c, ref d) => { });
        // SALC (D6): undocumented but present on P6 parts; AL = CF ? FF : 00.
        On(Mnemonic.Salc, (c, ref d) => c.WriteReg(16, c.GetCF() ? 0xFFu : 0u));
        On(Mnemonic.Pause, (c, ref d) => { });
        // Hint NOPs 0F 18-1F with ModR/M (Iced: Nop_rm*, Prefetch*, Reservednop ...) are NOPs on P6
        // for the NOP_rm forms; PREFETCHh needs SSE and stays #UD.
        foreach (var code in Enum.GetValues<Code>())
        {
            string n = code.ToString();
            if (n.StartsWith("Reservednop_", StringComparison.Ordinal) || n.StartsWith("Nop_rm", StringComparison.Ordinal))
            {
                On(code, (c, ref d) => { });
            }
        }
    }

    /// <summary>The effective address without segment (LEA), truncated to the operand size by WriteReg.</summary>
    internal uint EffectiveAddressRaw(ref DecodedInsn d) => EffectiveAddress(ref d);

    private static void Mov(Cpu c, ref DecodedInsn d)
    {
        uint v = c.ReadOp1(ref d);
        if (c.Faulted) return;
        c.WriteOp0(ref d, v);
    }

    private static void Xchg(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        if (d.Kind1 == OpKindCode.Mem)
        {
            c.WriteSeg(d.Seg, c.EffectiveAddress(ref d), d.SrcSize, a);
            if (c.Faulted) return;
            c.WriteReg(d.Reg0, b);
            return;
        }
        c.WriteOp0(ref d, b);
        if (c.Faulted) return;
        c.WriteReg(d.Reg1, a);
    }

    private static void Push(Cpu c, ref DecodedInsn d)
    {
        uint v;
        if (d.Kind0 == OpKindCode.Reg && d.Reg0 >= 0x20)
        {
            v = c._seg[d.Reg0 & 7].Selector;
        }
        else
        {
            v = c.ReadOp0(ref d);
            if (c.Faulted) return;
        }
        int size = d.Kind0 == OpKindCode.Imm || (d.Kind0 == OpKindCode.Reg && d.Reg0 >= 0x20) ? OperandSizeOf(in d.I) : d.OpSize;
        c.Push(v, size);
    }

    private static void Pop(Cpu c, ref DecodedInsn d)
    {
        int size = d.OpSize;
        uint v = c.PeekStack(0, size);
        if (c.Faulted) return;
        // The destination's address is computed after ESP is incremented (SDM vol. 2, POP).
        c.SetStackPointer(c.StackPointer + (uint)size);
        c.WriteOp0(ref d, v);
    }

    private static void Pusha(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        uint sp = c._gpr[4];
        for (int r = 0; r < 8 && !c.Faulted; r++)
        {
            uint v = r == 4 ? sp : c._gpr[r];
            c.Push(size == 2 ? v & 0xFFFF : v, size);
        }
    }

    private static void Popa(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        Span<uint> vals = stackalloc uint[8];
        for (int r = 7; r >= 0; r--)
        {
            vals[r] = c.Pop(size);
            if (c.Faulted) return;
        }
        for (int r = 0; r < 8; r++)
        {
            if (r == 4) continue; // the saved ESP is discarded
            c.WriteReg((byte)(r | (size == 2 ? 8 : 0)), vals[r]);
        }
    }

    // ENTER imm16, imm8 (SDM vol. 2, ENTER pseudo-code, nesting level modulo 32).
    private static void Enter(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        uint allocSize = d.Imm & 0xFFFF;
        int level = (int)(d.Imm2 & 0x1F);
        bool big = c.StackBig;
        c.Push(size == 2 ? c._gpr[5] & 0xFFFF : c._gpr[5], size);
        if (c.Faulted) return;
        uint frameTemp = c.StackPointer;
        if (level > 0)
        {
            uint bp = big ? c._gpr[5] : c._gpr[5] & 0xFFFF;
            for (int i = 1; i < level; i++)
            {
                bp -= (uint)size;
                if (!big) bp &= 0xFFFF;
                uint v = c.ReadSeg((int)SegReg.Ss, bp, size);
                if (c.Faulted) return;
                c.Push(v, size);
                if (c.Faulted) return;
            }
            c.Push(frameTemp, size);
            if (c.Faulted) return;
        }
        uint newSp = c.StackPointer - allocSize;
        if (!big) newSp &= 0xFFFF;
        // The final stack pointer must be writable (P6 probes it).
        if (allocSize != 0 && !c.SegCheck((int)SegReg.Ss, newSp, 1, true, out _)) return;
        if (size == 2) c._gpr[5] = (c._gpr[5] & 0xFFFF_0000) | (frameTemp & 0xFFFF);
        else c._gpr[5] = frameTemp;
        c.SetStackPointer(newSp);
    }

    private static void Leave(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        uint savedSp = c._gpr[4];
        c.SetStackPointer(c._gpr[5]);
        uint v = c.Pop(size);
        if (c.Faulted)
        {
            c._gpr[4] = savedSp;
            return;
        }
        if (size == 2) c._gpr[5] = (c._gpr[5] & 0xFFFF_0000) | (v & 0xFFFF);
        else c._gpr[5] = v;
    }

    private static void Bound(Cpu c, ref DecodedInsn d)
    {
        int size = d.OpSize;
        uint ea = c.EffectiveAddress(ref d);
        uint lo = c.ReadSeg(d.Seg, ea, size);
        uint hi = c.ReadSeg(d.Seg, d.Addr16 ? (ea + (uint)size) & 0xFFFF : ea + (uint)size, size);
        if (c.Faulted) return;
        int idx = size == 2 ? (short)c.ReadReg(d.Reg0) : (int)c.ReadReg(d.Reg0);
        int l = size == 2 ? (short)lo : (int)lo;
        int h = size == 2 ? (short)hi : (int)hi;
        if (idx < l || idx > h)
        {
            c.Fault(Vector.BR);
        }
    }
}
