using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Shifts and rotates (SDM vol. 2, SAL/SAR/SHL/SHR, ROL/ROR/RCL/RCR, SHLD/SHRD). The count is
// masked to 5 bits; a masked count of 0 changes nothing, flags included. For counts other than
// 1, OF is "undefined"; this model computes it as QEMU does: for shifts from the last step
// (MSB of the value before the last step XOR MSB of the result), for RCL/RCR as MSB of source
// XOR MSB of result (both equal the SDM's count-1 definition); AF is cleared.
public sealed partial class Cpu
{
    private const byte ShiftShl = 0, ShiftShr = 1, ShiftSar = 2, ShiftRol = 3, ShiftRor = 4, ShiftRcl = 5, ShiftRcr = 6;

    private static void RegisterShifts()
    {
        On(Mnemonic.Shl, (c, ref d) => Shift(c, ref d), ShiftShl);
        On(Mnemonic.Sal, (c, ref d) => Shift(c, ref d), ShiftShl);
        On(Mnemonic.Shr, (c, ref d) => Shift(c, ref d), ShiftShr);
        On(Mnemonic.Sar, (c, ref d) => Shift(c, ref d), ShiftSar);
        On(Mnemonic.Rol, (c, ref d) => Shift(c, ref d), ShiftRol);
        On(Mnemonic.Ror, (c, ref d) => Shift(c, ref d), ShiftRor);
        On(Mnemonic.Rcl, (c, ref d) => Shift(c, ref d), ShiftRcl);
        On(Mnemonic.Rcr, (c, ref d) => Shift(c, ref d), ShiftRcr);
        On(Mnemonic.Shld, (c, ref d) => DoubleShift(c, ref d), 0);
        On(Mnemonic.Shrd, (c, ref d) => DoubleShift(c, ref d), 1);
    }

    private static void Shift(Cpu c, ref DecodedInsn d)
    {
        // Count: CL, an immediate, or the implicit 1 of the D0/D1 forms (Iced gives it as Immediate8 = 1).
        uint count = d.Kind1 == OpKindCode.Reg ? c._gpr[1] & 0x1F : d.Kind1 == OpKindCode.Imm ? d.Imm & 0x1F : 1;
        if (count == 0)
        {
            return;
        }
        uint v = c.ReadOp0(ref d);
        if (c.Faulted) return;
        int size = d.OpSize;
        int bits = size * 8;
        uint mask = SizeMask(size);
        uint msb = 1u << (bits - 1);
        v &= mask;
        uint r;
        bool cf, of;
        switch (d.Aux)
        {
            case ShiftShl or ShiftShr or ShiftSar:
                r = ShiftCore(d.Aux, v, count, size, out cf, out of);
                break;
            case ShiftRol:
            {
                int n = (int)(count % (uint)bits);
                r = n == 0 ? v : ((v << n) | (v >> (bits - n))) & mask;
                cf = (r & 1) != 0;
                of = ((r & msb) != 0) ^ cf;
                break;
            }
            case ShiftRor:
            {
                int n = (int)(count % (uint)bits);
                r = n == 0 ? v : ((v >> n) | (v << (bits - n))) & mask;
                cf = (r & msb) != 0;
                of = (((r << 1) ^ r) & msb) != 0;
                break;
            }
            case ShiftRcl:
            {
                int n = bits == 32 ? (int)count : (int)(count % (uint)(bits + 1));
                if (n == 0)
                {
                    return;
                }
                ulong wide = ((ulong)(c.GetCF() ? 1u : 0u) << bits) | v;
                int width = bits + 1;
                wide = ((wide << n) | (wide >> (width - n))) & ((1UL << width) - 1);
                r = (uint)wide & mask;
                cf = ((wide >> bits) & 1) != 0;
                of = ((v ^ r) & msb) != 0;
                break;
            }
            default:
            {
                int n = bits == 32 ? (int)count : (int)(count % (uint)(bits + 1));
                if (n == 0)
                {
                    return;
                }
                ulong wide = ((ulong)(c.GetCF() ? 1u : 0u) << bits) | v;
                int width = bits + 1;
                wide = ((wide >> n) | (wide << (width - n))) & ((1UL << width) - 1);
                r = (uint)wide & mask;
                cf = ((wide >> bits) & 1) != 0;
                of = ((v ^ r) & msb) != 0;
                break;
            }
        }
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        if (d.Aux >= ShiftRol)
        {
            c.FlagsRotate(cf, of);
            return;
        }
        c.FlagsExplicit(r, size, cf, of, false);
    }

    /// <summary>
    /// SHL/SHR/SAR of <paramref name="v"/> (already masked to <paramref name="size"/> bytes) by a
    /// masked count of 1-31: the result, the last bit shifted out (CF) and OF as the comment at the
    /// top says. Pure, so translated code (Translator.cs) computes the same.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint ShiftCore(int kind, uint v, uint count, int size, out bool cf, out bool of)
    {
        int bits = size * 8;
        uint mask = SizeMask(size);
        uint msb = 1u << (bits - 1);
        uint r;
        switch (kind)
        {
            case ShiftShl:
            {
                ulong t = (ulong)v << (int)(count - 1);
                cf = ((t >> (bits - 1)) & 1) != 0;
                r = (uint)(t << 1) & mask;
                of = cf ^ ((r & msb) != 0);
                break;
            }
            case ShiftShr:
            {
                uint t = count - 1 >= 32 ? 0 : v >> (int)(count - 1);
                cf = (t & 1) != 0;
                r = t >> 1;
                of = ((t ^ r) & msb) != 0;
                break;
            }
            default:
            {
                int sv = bits == 32 ? (int)v : bits == 16 ? (short)v : (sbyte)v;
                int t = sv >> (int)Math.Min(count - 1, 31);
                cf = (t & 1) != 0;
                r = (uint)(t >> 1) & mask;
                of = (((uint)t ^ r) & msb) != 0;
                break;
            }
        }
        return r;
    }

    /// <summary><see cref="ShiftCore"/>'s result.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint ShiftResult(int kind, uint v, uint count, int size) => ShiftCore(kind, v, count, size, out _, out _);

    /// <summary><see cref="ShiftCore"/>'s flags as a carry vector (AF cleared, as FlagsExplicit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint ShiftCarries(int kind, uint v, uint count, int size)
    {
        ShiftCore(kind, v, count, size, out bool cf, out bool of);
        return ExplicitCarries(size * 8 - 1, cf, of, false);
    }

    private static void DoubleShift(Cpu c, ref DecodedInsn d)
    {
        uint count = (d.Kind2 == OpKindCode.Imm ? d.Imm : c._gpr[1]) & 0x1F;
        if (count == 0)
        {
            return;
        }
        uint dest = c.ReadOp0(ref d);
        uint src = c.ReadReg(d.Reg1);
        if (c.Faulted) return;
        int size = d.OpSize;
        int bits = size * 8;
        uint mask = SizeMask(size);
        uint msb = 1u << (bits - 1);
        dest &= mask;
        src &= mask;
        uint r;
        bool cf;
        bool of;
        if (d.Aux == 0)
        {
            // SHLD: dest:src shifted left, taken from the top of a 64-bit window; for 16-bit
            // counts above 16 the bits come from dest again (the 48-bit dest:src:dest view of
            // Intel P6 parts and QEMU).
            ulong wide = size == 2 ? ((ulong)dest << 48) | ((ulong)src << 32) | ((ulong)dest << 16) : ((ulong)dest << 32) | src;
            ulong t = wide << (int)(count - 1);
            cf = ((t >> 63) & 1) != 0;
            r = (uint)((t << 1) >> (64 - bits)) & mask;
            of = cf ^ ((r & msb) != 0);
        }
        else
        {
            ulong wide = size == 2 ? dest | ((ulong)src << 16) | ((ulong)dest << 32) : ((ulong)src << 32) | dest;
            ulong t = wide >> (int)(count - 1);
            cf = (t & 1) != 0;
            r = (uint)(t >> 1) & mask;
            of = (((uint)t ^ r) & msb) != 0;
        }
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsExplicit(r, size, cf, of, false);
    }
}
