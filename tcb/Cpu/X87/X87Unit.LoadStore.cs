using System.Buffers.Binary;
using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

// Data transfer instructions (SDM vol.1 8.3.3; vol.2A FLD, FILD, FBLD, FST/FSTP, FIST/FISTP,
// FISTTP, FBSTP, FXCH, FCMOVcc, FLD1/FLDZ/FLDPI/..., FFREE).
public sealed partial class X87Unit
{
    /// <summary>
    /// Reads a floating-point or integer memory operand and widens it exactly to extended precision.
    /// SNaN and denormal single/double sources raise IE/DE into <paramref name="env"/>.
    /// </summary>
    private static bool ReadOperand(in Instruction insn, IX87Memory mem, ref X87Arithmetic env, out Float80 value,
        bool keepSignaling = false)
    {
        Span<byte> bytes = stackalloc byte[10];
        value = default;
        switch (insn.MemorySize)
        {
            case MemorySize.Float32:
                if (!mem.Read(0, bytes[..4])) return false;
                value = MemoryFormats.FromSingleBits(BinaryPrimitives.ReadUInt32LittleEndian(bytes), ref env, !keepSignaling);
                return true;
            case MemorySize.Float64:
                if (!mem.Read(0, bytes[..8])) return false;
                value = MemoryFormats.FromDoubleBits(BinaryPrimitives.ReadUInt64LittleEndian(bytes), ref env, !keepSignaling);
                return true;
            case MemorySize.Float80:
                if (!mem.Read(0, bytes)) return false;
                value = Float80.Read(bytes);
                return true;
            case MemorySize.Int16:
                if (!mem.Read(0, bytes[..2])) return false;
                value = ExtendedArithmetic.FromInt64(BinaryPrimitives.ReadInt16LittleEndian(bytes));
                return true;
            case MemorySize.Int32:
                if (!mem.Read(0, bytes[..4])) return false;
                value = ExtendedArithmetic.FromInt64(BinaryPrimitives.ReadInt32LittleEndian(bytes));
                return true;
            case MemorySize.Int64:
                if (!mem.Read(0, bytes[..8])) return false;
                value = ExtendedArithmetic.FromInt64(BinaryPrimitives.ReadInt64LittleEndian(bytes));
                return true;
            case MemorySize.Bcd:
                if (!mem.Read(0, bytes)) return false;
                value = MemoryFormats.FromPackedBcd(bytes);
                return true;
            default:
                throw new ArgumentException($"unexpected x87 memory operand size {insn.MemorySize}", nameof(insn));
        }
    }

    /// <summary>Pushes a loaded value, handling stack overflow and unmasked load exceptions.</summary>
    private X87Outcome PushLoaded(Float80 value, in X87Arithmetic env)
    {
        if (PushOverflows)
        {
            // Masked response: the indefinite is pushed (SDM vol.1 8.5.1.1).
            if (StackOverflow())
            {
                Push(Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        Raise(env.Flags);
        SetC1(false);
        if (!env.Unmasked(PreComputation))
        {
            Push(value);
        }
        return X87Outcome.Done;
    }

    private X87Outcome Load(in Instruction insn, IX87Memory mem)
    {
        X87Arithmetic env = NewEnvironment();
        if (insn.Op0Kind == OpKind.Memory)
        {
            if (!ReadOperand(insn, mem, ref env, out Float80 value))
            {
                return X87Outcome.MemoryFault;
            }
            return PushLoaded(value, env);
        }
        int i = StackIndex(insn.Op0Register);
        if (Empty(i))
        {
            if (StackUnderflow())
            {
                Push(Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        return PushLoaded(St(i), env);
    }

    private X87Outcome LoadInteger(in Instruction insn, IX87Memory mem)
    {
        X87Arithmetic env = NewEnvironment();
        if (!ReadOperand(insn, mem, ref env, out Float80 value))
        {
            return X87Outcome.MemoryFault;
        }
        return PushLoaded(value, env);
    }

    private X87Outcome LoadBcd(IX87Memory mem)
    {
        Span<byte> bytes = stackalloc byte[10];
        if (!mem.Read(0, bytes))
        {
            return X87Outcome.MemoryFault;
        }
        return PushLoaded(MemoryFormats.FromPackedBcd(bytes), NewEnvironment());
    }

    /// <summary>
    /// Constants are held internally with 66 bits and rounded under RC (SDM vol.1 8.3.7): these are
    /// the round-to-nearest significands plus which other modes round them one unit down or up.
    /// </summary>
    private Float80 Constant(Mnemonic mnemonic)
    {
        X87Rounding rc = (X87Rounding)((_control >> X87Control.RoundingShift) & 3);
        bool downOrChop = rc is X87Rounding.Down or X87Rounding.TowardZero;
        return mnemonic switch
        {
            Mnemonic.Fld1 => Float80.One,
            Mnemonic.Fldz => Float80.PositiveZero,
            // log2(10) = D49A784BCD1B8AFE 492B...: nearest rounds down; Up rounds up.
            Mnemonic.Fldl2t => new Float80(0x4000, rc == X87Rounding.Up ? 0xD49A_784B_CD1B_8AFFUL : 0xD49A_784B_CD1B_8AFEUL),
            // log2(e) = B8AA3B295C17F0BB BE87...: nearest and Up round up.
            Mnemonic.Fldl2e => new Float80(0x3FFF, downOrChop ? 0xB8AA_3B29_5C17_F0BBUL : 0xB8AA_3B29_5C17_F0BCUL),
            // pi = C90FDAA22168C234 C4C6...
            Mnemonic.Fldpi => new Float80(0x4000, downOrChop ? 0xC90F_DAA2_2168_C234UL : 0xC90F_DAA2_2168_C235UL),
            // log10(2) = 9A209A84FBCFF798 8F89...
            Mnemonic.Fldlg2 => new Float80(0x3FFD, downOrChop ? 0x9A20_9A84_FBCF_F798UL : 0x9A20_9A84_FBCF_F799UL),
            // ln(2) = B17217F7D1CF79AB C9E3...
            _ => new Float80(0x3FFE, downOrChop ? 0xB172_17F7_D1CF_79ABUL : 0xB172_17F7_D1CF_79ACUL),
        };
    }

    private X87Outcome LoadConstant(Mnemonic mnemonic) => PushLoaded(Constant(mnemonic), NewEnvironment());

    private X87Outcome Store(in Instruction insn, IX87Memory mem, bool pop)
    {
        if (insn.Op0Kind != OpKind.Memory)
        {
            int i = StackIndex(insn.Op0Register);
            if (Empty(0))
            {
                if (!StackUnderflow())
                {
                    return X87Outcome.Done;
                }
                SetSt(i, Float80.Indefinite);
            }
            else
            {
                SetSt(i, St(0));
                SetC1(false);
            }
            if (pop)
            {
                Pop();
            }
            return X87Outcome.Done;
        }

        Span<byte> bytes = stackalloc byte[10];
        int size;
        X87Arithmetic env = NewEnvironment();
        bool underflow = Empty(0);
        Float80 value = St(0);
        switch (insn.MemorySize)
        {
            case MemorySize.Float32:
                size = 4;
                BinaryPrimitives.WriteUInt32LittleEndian(bytes, underflow ? MemoryFormats.SingleIndefinite : MemoryFormats.ToSingleBits(value, ref env));
                break;
            case MemorySize.Float64:
                size = 8;
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, underflow ? MemoryFormats.DoubleIndefinite : MemoryFormats.ToDoubleBits(value, ref env));
                break;
            case MemorySize.Float80:
                size = 10;
                (underflow ? Float80.Indefinite : value).Write(bytes);
                break;
            default:
                throw new ArgumentException($"unexpected FST operand size {insn.MemorySize}", nameof(insn));
        }
        return FinishStore(mem, bytes[..size], env, underflow, pop);
    }

    /// <summary>
    /// Common tail of stores to memory: a stack underflow or unmasked pre-computation, overflow or
    /// underflow exception stores nothing (SDM vol.1 8.5.1.2, 4.9.1.4, 4.9.1.5); otherwise the write
    /// must succeed before any FPU state changes.
    /// </summary>
    private X87Outcome FinishStore(IX87Memory mem, ReadOnlySpan<byte> bytes, in X87Arithmetic env, bool underflow, bool pop)
    {
        if (underflow)
        {
            if ((_control & X87Status.InvalidOperation) == 0)
            {
                StackUnderflow();
                return X87Outcome.Done;
            }
            if (!mem.Write(0, bytes))
            {
                return X87Outcome.MemoryFault;
            }
            StackUnderflow();
        }
        else if (env.Unmasked(PreComputation | X87Status.Overflow | X87Status.Underflow))
        {
            Commit(env);
            return X87Outcome.Done;
        }
        else
        {
            if (!mem.Write(0, bytes))
            {
                return X87Outcome.MemoryFault;
            }
            Commit(env);
        }
        if (pop)
        {
            Pop();
        }
        return X87Outcome.Done;
    }

    private X87Outcome StoreInteger(in Instruction insn, IX87Memory mem, bool pop, bool truncate = false)
    {
        int size = insn.MemorySize switch
        {
            MemorySize.Int16 => 2,
            MemorySize.Int32 => 4,
            MemorySize.Int64 => 8,
            _ => throw new ArgumentException($"unexpected FIST operand size {insn.MemorySize}", nameof(insn)),
        };
        ushort control = truncate ? (ushort)(_control | (3 << X87Control.RoundingShift)) : _control;
        X87Arithmetic env = new(control);
        bool underflow = Empty(0);
        long integer = long.MinValue >> (64 - 8 * size);     // the integer indefinite of this size
        if (!underflow && !ExtendedArithmetic.TryConvertToInteger(St(0), 8 * size, ref env, out integer))
        {
            integer = long.MinValue >> (64 - 8 * size);
        }
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, integer);
        return FinishStore(mem, bytes[..size], env, underflow, pop);
    }

    private X87Outcome StoreBcd(IX87Memory mem)
    {
        X87Arithmetic env = NewEnvironment();
        bool underflow = Empty(0);
        Span<byte> bytes = stackalloc byte[10];
        if (underflow || !MemoryFormats.TryToPackedBcd(St(0), bytes, ref env))
        {
            MemoryFormats.WriteBcdIndefinite(bytes);
        }
        return FinishStore(mem, bytes, env, underflow, pop: true);
    }

    private X87Outcome Exchange(in Instruction insn)
    {
        int i = insn.OpCount > 1 ? StackIndex(insn.Op1Register) : 1;
        if (Empty(0) || Empty(i))
        {
            if (!StackUnderflow())
            {
                return X87Outcome.Done;
            }
            // Masked: empty operands are replaced by the indefinite, then exchanged.
            if (Empty(0)) SetSt(0, Float80.Indefinite);
            if (Empty(i)) SetSt(i, Float80.Indefinite);
        }
        else
        {
            SetC1(false);
        }
        Float80 top = St(0);
        SetSt(0, St(i));
        SetSt(i, top);
        return X87Outcome.Done;
    }

    private X87Outcome Free(in Instruction insn, bool pop)
    {
        _validMask &= ~(1 << Physical(StackIndex(insn.Op0Register)));
        if (pop)
        {
            Pop();
        }
        return X87Outcome.Done;
    }

    /// <summary>FCMOVcc (SDM vol.2A): conditions on CF (bit 0), PF (bit 2) and ZF (bit 6).</summary>
    private X87Outcome ConditionalMove(in Instruction insn, uint eflags)
    {
        bool cf = (eflags & 0x01) != 0, pf = (eflags & 0x04) != 0, zf = (eflags & 0x40) != 0;
        bool condition = insn.Mnemonic switch
        {
            Mnemonic.Fcmovb => cf,
            Mnemonic.Fcmove => zf,
            Mnemonic.Fcmovbe => cf || zf,
            Mnemonic.Fcmovu => pf,
            Mnemonic.Fcmovnb => !cf,
            Mnemonic.Fcmovne => !zf,
            Mnemonic.Fcmovnbe => !cf && !zf,
            _ => !pf,
        };
        int i = StackIndex(insn.Op1Register);
        if (Empty(0) || Empty(i))
        {
            if (StackUnderflow())
            {
                SetSt(0, Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        SetC1(false);
        if (condition)
        {
            SetSt(0, St(i));
        }
        return X87Outcome.Done;
    }
}
