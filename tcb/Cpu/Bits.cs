using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Bit instructions (SDM vol. 2, BT/BTS/BTR/BTC, BSF/BSR, BSWAP, SETcc, CMOVcc).
public sealed partial class Cpu
{
    private const byte BitTest = 0, BitSet = 1, BitReset = 2, BitComplement = 3;

    private static void RegisterBits()
    {
        On(Mnemonic.Bt, (c, ref d) => BitOp(c, ref d), BitTest);
        On(Mnemonic.Bts, (c, ref d) => BitOp(c, ref d), BitSet);
        On(Mnemonic.Btr, (c, ref d) => BitOp(c, ref d), BitReset);
        On(Mnemonic.Btc, (c, ref d) => BitOp(c, ref d), BitComplement);
        On(Mnemonic.Bsf, (c, ref d) => Bsf(c, ref d));
        On(Mnemonic.Bsr, (c, ref d) => Bsr(c, ref d));
        // F3 0F BC / F3 0F BD decode as TZCNT / LZCNT, but on a processor without BMI1/ABM (this
        // one: CPUID advertises neither) the F3 prefix is ignored and they execute as BSF / BSR
        // (SDM vol. 2, TZCNT and LZCNT: "on processors that do not support ... executes as BSF/BSR").
        // Linux's find_first_bit relies on exactly this.
        On(Mnemonic.Tzcnt, (c, ref d) => Bsf(c, ref d));
        On(Mnemonic.Lzcnt, (c, ref d) => Bsr(c, ref d));
        On(Mnemonic.Bswap, (c, ref d) => c.WriteReg(d.Reg0, System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(c.ReadReg(d.Reg0))));
        foreach (var code in Enum.GetValues<Code>())
        {
            var m = code.Mnemonic();
            var info = code.ToOpCode();
            if (info.Encoding != EncodingKind.Legacy || (!info.Mode16 && !info.Mode32))
            {
                continue;
            }
            var cc = code.ToOpCode().Mnemonic;
            int cond = ConditionOf(m);
            if (cond < 0)
            {
                continue;
            }
            string name = m.ToString();
            if (name.StartsWith("Set", StringComparison.Ordinal))
            {
                On(code, (c, ref d) => Setcc(c, ref d), (byte)cond);
            }
            else if (name.StartsWith("Cmov", StringComparison.Ordinal))
            {
                On(code, (c, ref d) => Cmovcc(c, ref d), (byte)cond);
            }
            _ = cc;
        }
    }

    /// <summary>The tttn condition number (SDM vol. 2, B.1.4.7) for a Jcc/SETcc/CMOVcc mnemonic, or -1.</summary>
    internal static int ConditionOf(Mnemonic m)
    {
        string n = m.ToString();
        int start = n.StartsWith("Cmov", StringComparison.Ordinal) ? 4 : n.StartsWith("Set", StringComparison.Ordinal) ? 3 : n.StartsWith('J') ? 1 : -1;
        if (start < 0)
        {
            return -1;
        }
        return n[start..] switch
        {
            "o" => 0, "no" => 1, "b" => 2, "ae" => 3, "e" => 4, "ne" => 5, "be" => 6, "a" => 7,
            "s" => 8, "ns" => 9, "p" => 10, "np" => 11, "l" => 12, "ge" => 13, "le" => 14, "g" => 15,
            _ => -1,
        };
    }

    private static void Setcc(Cpu c, ref DecodedInsn d) => c.WriteOp0(ref d, c.Condition(d.Aux) ? 1u : 0u);

    private static void Cmovcc(Cpu c, ref DecodedInsn d)
    {
        // The source is read whatever the condition, so a bad memory operand faults either way.
        uint v = c.ReadOp1(ref d);
        if (c.Faulted) return;
        if (c.Condition(d.Aux))
        {
            c.WriteReg(d.Reg0, v);
        }
    }

    // BT*: with a register bit offset and a memory operand the offset is signed and may address
    // outside the operand (SDM vol. 2, BT "bit base/bit offset"); an immediate offset is taken
    // modulo the operand size. Only CF is defined; the other flags are left unchanged.
    private static void BitOp(Cpu c, ref DecodedInsn d)
    {
        int size = d.OpSize;
        int bits = size * 8;
        uint offset = d.Kind1 == OpKindCode.Imm ? d.Imm : c.ReadReg(d.Reg1);
        uint v;
        uint ea = 0;
        int bit;
        if (d.Kind0 == OpKindCode.Mem)
        {
            ea = c.EffectiveAddress(ref d);
            if (d.Kind1 == OpKindCode.Imm)
            {
                bit = (int)(offset & (uint)(bits - 1));
            }
            else
            {
                int signedOffset = size == 2 ? (short)offset : (int)offset;
                ea += (uint)((signedOffset >> (size == 2 ? 4 : 5)) * size);
                if (d.Addr16) ea &= 0xFFFF;
                bit = signedOffset & (bits - 1);
            }
            v = c.ReadSeg(d.Seg, ea, size);
        }
        else
        {
            bit = (int)(offset & (uint)(bits - 1));
            v = c.ReadReg(d.Reg0);
        }
        if (c.Faulted) return;
        bool old = ((v >> bit) & 1) != 0;
        uint r = d.Aux switch
        {
            BitSet => v | (1u << bit),
            BitReset => v & ~(1u << bit),
            BitComplement => v ^ (1u << bit),
            _ => v,
        };
        if (d.Aux != BitTest)
        {
            if (d.Kind0 == OpKindCode.Mem) c.WriteSeg(d.Seg, ea, size, r);
            else c.WriteReg(d.Reg0, r);
            if (c.Faulted) return;
        }
        c.SetFlagBits(EflagsBits.CF, old);
    }

    // BSF/BSR: ZF=1 and the destination unchanged when the source is 0 (the destination is
    // "undefined" in the SDM; P6 parts and QEMU leave it). CF/OF/SF/AF/PF are undefined: this
    // model sets them as a logical operation on the source would (CF=OF=AF=0).
    private static void Bsf(Cpu c, ref DecodedInsn d)
    {
        uint v = c.ReadOp1(ref d);
        if (c.Faulted) return;
        v &= SizeMask(d.OpSize);
        if (v != 0)
        {
            c.WriteReg(d.Reg0, (uint)System.Numerics.BitOperations.TrailingZeroCount(v));
        }
        c.FlagsLogic(v, d.OpSize);
    }

    private static void Bsr(Cpu c, ref DecodedInsn d)
    {
        uint v = c.ReadOp1(ref d);
        if (c.Faulted) return;
        v &= SizeMask(d.OpSize);
        if (v != 0)
        {
            c.WriteReg(d.Reg0, (uint)(31 - System.Numerics.BitOperations.LeadingZeroCount(v)));
        }
        c.FlagsLogic(v, d.OpSize);
    }
}
