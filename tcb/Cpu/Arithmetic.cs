using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Binary arithmetic (SDM vol. 1, 7.3.2; vol. 2 ADD ... IDIV, XADD, CMPXCHG, CMPXCHG8B, decimal
// adjust). Memory destinations are read, computed, written, and only then are flags set, so a
// faulting write leaves the flags untouched. LOCK is accepted and ignored: one vCPU, and every
// instruction completes atomically with respect to interrupts.
public sealed partial class Cpu
{
    private static void RegisterArithmetic()
    {
        On(Mnemonic.Add, (c, ref d) => Add(c, ref d));
        On(Mnemonic.Adc, (c, ref d) => Adc(c, ref d));
        On(Mnemonic.Sub, (c, ref d) => Sub(c, ref d));
        On(Mnemonic.Sbb, (c, ref d) => Sbb(c, ref d));
        On(Mnemonic.Cmp, (c, ref d) => Cmp(c, ref d));
        On(Mnemonic.Inc, (c, ref d) => Inc(c, ref d));
        On(Mnemonic.Dec, (c, ref d) => Dec(c, ref d));
        On(Mnemonic.Neg, (c, ref d) => Neg(c, ref d));
        On(Mnemonic.Mul, (c, ref d) => Mul(c, ref d));
        On(Mnemonic.Imul, (c, ref d) => Imul(c, ref d));
        On(Mnemonic.Div, (c, ref d) => Div(c, ref d));
        On(Mnemonic.Idiv, (c, ref d) => Idiv(c, ref d));
        On(Mnemonic.Xadd, (c, ref d) => Xadd(c, ref d));
        On(Mnemonic.Cmpxchg, (c, ref d) => Cmpxchg(c, ref d));
        On(Mnemonic.Cmpxchg8b, (c, ref d) => Cmpxchg8b(c, ref d));
        On(Mnemonic.Cbw, (c, ref d) => c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | (uint)(ushort)(short)(sbyte)(byte)c._gpr[0]);
        On(Mnemonic.Cwde, (c, ref d) => c._gpr[0] = (uint)(short)c._gpr[0]);
        On(Mnemonic.Cwd, (c, ref d) => c._gpr[2] = (c._gpr[2] & 0xFFFF_0000) | ((c._gpr[0] & 0x8000) != 0 ? 0xFFFFu : 0));
        On(Mnemonic.Cdq, (c, ref d) => c._gpr[2] = (c._gpr[0] & 0x8000_0000) != 0 ? 0xFFFF_FFFFu : 0);
        On(Mnemonic.Daa, (c, ref d) => Daa(c, ref d));
        On(Mnemonic.Das, (c, ref d) => Das(c, ref d));
        On(Mnemonic.Aaa, (c, ref d) => Aaa(c, ref d));
        On(Mnemonic.Aas, (c, ref d) => Aas(c, ref d));
        On(Mnemonic.Aam, (c, ref d) => Aam(c, ref d));
        On(Mnemonic.Aad, (c, ref d) => Aad(c, ref d));
    }

    private static void Add(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a + b;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsAdd(a, b, r, d.OpSize);
    }

    private static void Adc(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a + b + (c.GetCF() ? 1u : 0u);
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsAdd(a, b, r, d.OpSize);
    }

    private static void Sub(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a - b;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsSub(a, b, r, d.OpSize);
    }

    private static void Sbb(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a - b - (c.GetCF() ? 1u : 0u);
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsSub(a, b, r, d.OpSize);
    }

    private static void Cmp(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        c.FlagsSub(a, b, a - b, d.OpSize);
    }

    private static void Inc(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d);
        if (c.Faulted) return;
        uint r = a + 1;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsIncDec(a, r, d.OpSize, dec: false);
    }

    private static void Dec(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d);
        if (c.Faulted) return;
        uint r = a - 1;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsIncDec(a, r, d.OpSize, dec: true);
    }

    private static void Neg(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d);
        if (c.Faulted) return;
        uint r = 0 - a;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsSub(0, a, r, d.OpSize);
    }

    // MUL/IMUL: CF=OF say whether the high half is significant. SF, ZF, PF and AF are
    // "undefined" in the SDM; this model sets SF/ZF/PF from the low half of the result and
    // clears AF, as QEMU does (so the differential tests compare them too; see docs/cpu.md).
    private static void Mul(Cpu c, ref DecodedInsn d)
    {
        uint src = c.ReadOp0(ref d);
        if (c.Faulted) return;
        int size = d.OpSize;
        bool high;
        uint low;
        switch (size)
        {
            case 1:
            {
                uint r = (c._gpr[0] & 0xFF) * src;
                c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | (r & 0xFFFF);
                low = r & 0xFF;
                high = (r >> 8) != 0;
                break;
            }
            case 2:
            {
                uint r = (c._gpr[0] & 0xFFFF) * src;
                c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | (r & 0xFFFF);
                c._gpr[2] = (c._gpr[2] & 0xFFFF_0000) | (r >> 16);
                low = r & 0xFFFF;
                high = (r >> 16) != 0;
                break;
            }
            default:
            {
                ulong r = (ulong)c._gpr[0] * src;
                c._gpr[0] = (uint)r;
                c._gpr[2] = (uint)(r >> 32);
                low = (uint)r;
                high = (r >> 32) != 0;
                break;
            }
        }
        c.FlagsExplicit(low, size, high, high, false);
    }

    private static void Imul(Cpu c, ref DecodedInsn d)
    {
        int size = d.OpSize;
        if (d.I.OpCount == 1)
        {
            uint src = c.ReadOp0(ref d);
            if (c.Faulted) return;
            long r;
            bool overflow;
            switch (size)
            {
                case 1:
                    r = (long)(sbyte)c._gpr[0] * (sbyte)src;
                    c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | ((uint)r & 0xFFFF);
                    overflow = r != (sbyte)r;
                    break;
                case 2:
                    r = (long)(short)c._gpr[0] * (short)src;
                    c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | ((uint)r & 0xFFFF);
                    c._gpr[2] = (c._gpr[2] & 0xFFFF_0000) | (((uint)r >> 16) & 0xFFFF);
                    overflow = r != (short)r;
                    break;
                default:
                    r = (long)(int)c._gpr[0] * (int)src;
                    c._gpr[0] = (uint)r;
                    c._gpr[2] = (uint)((ulong)r >> 32);
                    overflow = r != (int)r;
                    break;
            }
            c.FlagsExplicit((uint)r, size, overflow, overflow, false);
            return;
        }
        uint a = d.I.OpCount == 3 ? c.ReadOp1(ref d) : c.ReadOp0(ref d);
        uint b = d.I.OpCount == 3 ? d.Imm : c.ReadOp1(ref d);
        if (c.Faulted) return;
        long p = size == 2 ? (long)(short)a * (short)b : (long)(int)a * (int)b;
        bool ov = size == 2 ? p != (short)p : p != (int)p;
        c.WriteReg(d.Reg0, (uint)p);
        c.FlagsExplicit((uint)p, size, ov, ov, false);
    }

    // DIV/IDIV: #DE on a zero divisor or a quotient that does not fit (SDM vol. 2, DIV). The
    // flags are undefined; this model leaves them unchanged, as QEMU does.
    private static void Div(Cpu c, ref DecodedInsn d)
    {
        uint src = c.ReadOp0(ref d);
        if (c.Faulted) return;
        if (src == 0)
        {
            c.Fault(Vector.DE);
            return;
        }
        switch (d.OpSize)
        {
            case 1:
            {
                uint n = c._gpr[0] & 0xFFFF;
                uint q = n / src;
                if (q > 0xFF) { c.Fault(Vector.DE); return; }
                c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | ((n % src) << 8) | q;
                break;
            }
            case 2:
            {
                uint n = ((c._gpr[2] & 0xFFFF) << 16) | (c._gpr[0] & 0xFFFF);
                uint q = n / src;
                if (q > 0xFFFF) { c.Fault(Vector.DE); return; }
                c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | q;
                c._gpr[2] = (c._gpr[2] & 0xFFFF_0000) | (n % src);
                break;
            }
            default:
            {
                ulong n = ((ulong)c._gpr[2] << 32) | c._gpr[0];
                ulong q = n / src;
                if (q > 0xFFFF_FFFF) { c.Fault(Vector.DE); return; }
                c._gpr[0] = (uint)q;
                c._gpr[2] = (uint)(n % src);
                break;
            }
        }
    }

    private static void Idiv(Cpu c, ref DecodedInsn d)
    {
        uint src = c.ReadOp0(ref d);
        if (c.Faulted) return;
        if ((src & SizeMask(d.OpSize)) == 0)
        {
            c.Fault(Vector.DE);
            return;
        }
        switch (d.OpSize)
        {
            case 1:
            {
                int n = (short)c._gpr[0];
                int s = (sbyte)src;
                int q = n / s;
                if (q != (sbyte)q) { c.Fault(Vector.DE); return; }
                int rem = n % s;
                c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | (((uint)rem & 0xFF) << 8) | ((uint)q & 0xFF);
                break;
            }
            case 2:
            {
                int n = (int)(((c._gpr[2] & 0xFFFF) << 16) | (c._gpr[0] & 0xFFFF));
                int s = (short)src;
                long q = (long)n / s;
                if (q != (short)q) { c.Fault(Vector.DE); return; }
                long rem = (long)n % s;
                c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | ((uint)q & 0xFFFF);
                c._gpr[2] = (c._gpr[2] & 0xFFFF_0000) | ((uint)rem & 0xFFFF);
                break;
            }
            default:
            {
                long n = (long)(((ulong)c._gpr[2] << 32) | c._gpr[0]);
                long s = (int)src;
                if (n == long.MinValue && s == -1) { c.Fault(Vector.DE); return; }
                long q = n / s;
                if (q != (int)q) { c.Fault(Vector.DE); return; }
                c._gpr[0] = (uint)q;
                c._gpr[2] = (uint)(n % s);
                break;
            }
        }
    }

    private static void Xadd(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a + b;
        // SDM vol. 2B, XADD: TEMP := SRC + DEST; SRC := DEST; DEST := TEMP. The destination is written
        // last, so XADD r, r leaves the sum. A memory destination is written first so that a fault
        // leaves the source register unchanged.
        if (d.Kind0 != OpKindCode.Mem)
        {
            c.WriteReg(d.Reg1, a);
            c.WriteOp0(ref d, r);
        }
        else
        {
            c.WriteOp0(ref d, r);
            if (c.Faulted) return;
            c.WriteReg(d.Reg1, a);
        }
        c.FlagsAdd(a, b, r, d.OpSize);
    }

    // CMPXCHG: the destination is always written (with its old value on mismatch), as the
    // processor does, so a read-only destination faults either way (SDM vol. 2, CMPXCHG).
    private static void Cmpxchg(Cpu c, ref DecodedInsn d)
    {
        uint dest = c.ReadOp0(ref d), src = c.ReadOp1(ref d);
        if (c.Faulted) return;
        int size = d.OpSize;
        uint acc = c._gpr[0] & SizeMask(size);
        bool equal = acc == dest;
        c.WriteOp0(ref d, equal ? src : dest);
        if (c.Faulted) return;
        if (!equal)
        {
            c.WriteReg(size == 4 ? (byte)0 : size == 2 ? (byte)8 : (byte)16, dest);
        }
        c.FlagsSub(acc, dest, acc - dest, size);
    }

    private static void Cmpxchg8b(Cpu c, ref DecodedInsn d)
    {
        if (d.Kind0 != OpKindCode.Mem)
        {
            c.Fault(Vector.UD);
            return;
        }
        uint ea = c.EffectiveAddress(ref d);
        uint lo = c.ReadSeg(d.Seg, ea, 4);
        uint hi = c.ReadSeg(d.Seg, ea + 4, 4);
        if (c.Faulted) return;
        bool equal = lo == c._gpr[0] && hi == c._gpr[2];
        if (!c.SegCheck(d.Seg, ea, 8, true, out _)) return;
        uint wlo = equal ? c._gpr[3] : lo, whi = equal ? c._gpr[1] : hi;
        c.WriteSeg(d.Seg, ea, 4, wlo);
        c.WriteSeg(d.Seg, ea + 4, 4, whi);
        if (c.Faulted) return;
        if (!equal)
        {
            c._gpr[0] = lo;
            c._gpr[2] = hi;
        }
        c.SetFlagBits(EflagsBits.ZF, equal);
    }

    // Decimal adjust (SDM vol. 2, DAA/DAS/AAA/AAS/AAM/AAD pseudo-code). OF is undefined; like
    // QEMU this model leaves it as computed by the result carry vector (0 for AAA/AAS).
    private static void Daa(Cpu c, ref DecodedInsn d)
    {
        uint al = c._gpr[0] & 0xFF;
        bool cf = c.GetCF(), af = c.GetAF();
        uint oldAl = al;
        bool oldCf = cf;
        cf = false;
        if ((al & 0xF) > 9 || af) { al += 6; cf = oldCf || al > 0xFF; af = true; } else af = false;
        if (oldAl > 0x99 || oldCf) { al += 0x60; cf = true; }
        al &= 0xFF;
        c._gpr[0] = (c._gpr[0] & 0xFFFF_FF00) | al;
        c.FlagsExplicit(al, 1, cf, false, af);
    }

    private static void Das(Cpu c, ref DecodedInsn d)
    {
        uint al = c._gpr[0] & 0xFF;
        bool cf = c.GetCF(), af = c.GetAF();
        uint oldAl = al;
        bool oldCf = cf;
        cf = false;
        if ((al & 0xF) > 9 || af) { cf = oldCf || al < 6; al -= 6; af = true; } else af = false;
        if (oldAl > 0x99 || oldCf) { al -= 0x60; cf = true; }
        al &= 0xFF;
        c._gpr[0] = (c._gpr[0] & 0xFFFF_FF00) | al;
        c.FlagsExplicit(al, 1, cf, false, af);
    }

    private static void Aaa(Cpu c, ref DecodedInsn d)
    {
        uint ax = c._gpr[0] & 0xFFFF;
        bool adjust = (ax & 0xF) > 9 || c.GetAF();
        if (adjust)
        {
            ax = (ax + 0x106) & 0xFFFF;
        }
        ax &= 0xFF0F;
        c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | ax;
        c.FlagsExplicit(ax & 0xFF, 1, adjust, false, adjust);
    }

    private static void Aas(Cpu c, ref DecodedInsn d)
    {
        uint ax = c._gpr[0] & 0xFFFF;
        bool adjust = (ax & 0xF) > 9 || c.GetAF();
        if (adjust)
        {
            // SDM vol. 2A, AAS (current text): AX := AX - 6; AH := AH - 1. The borrow out of AL
            // reaches AH, as AAA's AX := AX + 106H carries into it.
            ax = (ax - 6) & 0xFFFF;
            ax = (ax - 0x100) & 0xFFFF;
        }
        ax &= 0xFF0F;
        c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | ax;
        c.FlagsExplicit(ax & 0xFF, 1, adjust, false, adjust);
    }

    private static void Aam(Cpu c, ref DecodedInsn d)
    {
        uint imm = d.Imm & 0xFF;
        if (imm == 0)
        {
            c.Fault(Vector.DE);
            return;
        }
        uint al = c._gpr[0] & 0xFF;
        uint ah = al / imm;
        al %= imm;
        c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | (ah << 8) | al;
        c.FlagsLogic(al, 1);
    }

    private static void Aad(Cpu c, ref DecodedInsn d)
    {
        uint imm = d.Imm & 0xFF;
        uint al = c._gpr[0] & 0xFF, ah = (c._gpr[0] >> 8) & 0xFF;
        uint r = (al + ah * imm) & 0xFF;
        c._gpr[0] = (c._gpr[0] & 0xFFFF_0000) | r;
        c.FlagsLogic(r, 1);
    }
}
