using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

// Basic arithmetic (SDM vol.1 8.3.5; vol.2A FADD, FSUB, FSUBR, FMUL, FDIV, FDIVR and their P/I
// forms, FCHS, FABS, FSQRT, FRNDINT, FSCALE, FXTRACT, FPREM, FPREM1).
public sealed partial class X87Unit
{
    private enum BinaryOperation : byte { Add, Subtract, Multiply, Divide }

    /// <summary>Operation, reversed operands (the R forms) and pop (the P forms) per mnemonic.</summary>
    private static (BinaryOperation Op, bool Reverse, bool Pop) Decode(Mnemonic mnemonic) => mnemonic switch
    {
        Mnemonic.Fadd or Mnemonic.Fiadd => (BinaryOperation.Add, false, false),
        Mnemonic.Faddp => (BinaryOperation.Add, false, true),
        Mnemonic.Fsub or Mnemonic.Fisub => (BinaryOperation.Subtract, false, false),
        Mnemonic.Fsubp => (BinaryOperation.Subtract, false, true),
        Mnemonic.Fsubr or Mnemonic.Fisubr => (BinaryOperation.Subtract, true, false),
        Mnemonic.Fsubrp => (BinaryOperation.Subtract, true, true),
        Mnemonic.Fmul or Mnemonic.Fimul => (BinaryOperation.Multiply, false, false),
        Mnemonic.Fmulp => (BinaryOperation.Multiply, false, true),
        Mnemonic.Fdiv or Mnemonic.Fidiv => (BinaryOperation.Divide, false, false),
        Mnemonic.Fdivp => (BinaryOperation.Divide, false, true),
        Mnemonic.Fdivr or Mnemonic.Fidivr => (BinaryOperation.Divide, true, false),
        _ => (BinaryOperation.Divide, true, true),   // Fdivrp
    };

    private static Float80 Apply(BinaryOperation op, Float80 a, Float80 b, ref X87Arithmetic env) => op switch
    {
        BinaryOperation.Add => ExtendedArithmetic.Add(a, b, ref env),
        BinaryOperation.Subtract => ExtendedArithmetic.Subtract(a, b, ref env),
        BinaryOperation.Multiply => ExtendedArithmetic.Multiply(a, b, ref env),
        _ => ExtendedArithmetic.Divide(a, b, ref env),
    };

    /// <summary>
    /// dest = dest op src (or src op dest for the R forms). Memory forms: dest = ST(0).
    /// Register forms: Iced gives (dest, src) as operands 0 and 1, e.g. FSUBP ST(i),ST(0).
    /// </summary>
    private X87Outcome Arithmetic(in Instruction insn, IX87Memory mem)
    {
        var (op, reverse, pop) = Decode(insn.Mnemonic);
        X87Arithmetic env = NewEnvironment();
        int dest;
        Float80 source;
        bool empty;
        if (insn.OpCount == 1 && insn.Op0Kind == OpKind.Memory)
        {
            if (!ReadOperand(insn, mem, ref env, out source, keepSignaling: true))
            {
                return X87Outcome.MemoryFault;
            }
            dest = 0;
            empty = Empty(0);
            if (!empty && env.Unmasked(PreComputation))
            {
                Commit(env);    // SNaN or denormal m32/m64 operand with the exception unmasked: no result
                return X87Outcome.Done;
            }
        }
        else
        {
            dest = insn.OpCount >= 1 ? StackIndex(insn.Op0Register) : 1;
            int src = insn.OpCount >= 2 ? StackIndex(insn.Op1Register) : 0;
            empty = Empty(dest) || Empty(src);
            source = St(src);
        }
        if (empty)
        {
            if (StackUnderflow())
            {
                SetSt(dest, Float80.Indefinite);
                if (pop)
                {
                    Pop();
                }
            }
            return X87Outcome.Done;
        }
        Float80 destination = St(dest);
        Float80 result = reverse ? Apply(op, source, destination, ref env) : Apply(op, destination, source, ref env);
        Commit(env);
        if (env.Unmasked(PreComputation))
        {
            return X87Outcome.Done;      // operands and TOP unchanged (SDM vol.1 8.5.1-8.5.3)
        }
        SetSt(dest, result);
        if (pop)
        {
            Pop();
        }
        return X87Outcome.Done;
    }

    private X87Outcome SignOperation(Mnemonic mnemonic)
    {
        if (Empty(0))
        {
            if (StackUnderflow())
            {
                SetSt(0, Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        Float80 v = St(0);
        SetSt(0, mnemonic == Mnemonic.Fchs ? v.Negate() : v.Abs());
        SetC1(false);
        return X87Outcome.Done;
    }

    private X87Outcome UnaryRounded(Mnemonic mnemonic)
    {
        if (Empty(0))
        {
            if (StackUnderflow())
            {
                SetSt(0, Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        Float80 result = mnemonic == Mnemonic.Fsqrt
            ? ExtendedArithmetic.SquareRoot(St(0), ref env)
            : ExtendedArithmetic.RoundToIntegral(St(0), ref env);
        Commit(env);
        if (!env.Unmasked(PreComputation))
        {
            SetSt(0, result);
        }
        return X87Outcome.Done;
    }

    private X87Outcome ScaleTop()
    {
        if (Empty(0) || Empty(1))
        {
            if (StackUnderflow())
            {
                SetSt(0, Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        Float80 result = ExtendedArithmetic.Scale(St(0), St(1), ref env);
        Commit(env);
        if (!env.Unmasked(PreComputation))
        {
            SetSt(0, result);
        }
        return X87Outcome.Done;
    }

    /// <summary>FXTRACT: ST(0) becomes the exponent, then the significand is pushed.</summary>
    private X87Outcome ExtractTop()
    {
        if (Empty(0))
        {
            if (StackUnderflow())
            {
                SetSt(0, Float80.Indefinite);
                Push(Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        if (PushOverflows)
        {
            if (StackOverflow())
            {
                SetSt(0, Float80.Indefinite);
                Push(Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        ExtendedArithmetic.Extract(St(0), ref env, out Float80 exponent, out Float80 significand);
        Commit(env);
        if (!env.Unmasked(PreComputation))
        {
            SetSt(0, exponent);
            Push(significand);
        }
        return X87Outcome.Done;
    }

    /// <summary>
    /// FPREM/FPREM1: C2 = reduction incomplete; when complete C0 = Q2, C3 = Q1, C1 = Q0
    /// (SDM vol.2A FPREM "FPU Flags Affected").
    /// </summary>
    private X87Outcome PartialRemainderTop(bool ieee)
    {
        if (Empty(0) || Empty(1))
        {
            if (StackUnderflow())
            {
                SetSt(0, Float80.Indefinite);
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        Float80 result = ExtendedArithmetic.PartialRemainder(St(0), St(1), ieee, ref env, out int q, out bool incomplete);
        Raise(env.Flags);
        if (env.Unmasked(PreComputation))
        {
            return X87Outcome.Done;
        }
        SetSt(0, result);
        ushort codes = 0;
        if (incomplete)
        {
            codes |= X87Status.C2;
        }
        else
        {
            if ((q & 4) != 0) codes |= X87Status.C0;
            if ((q & 2) != 0) codes |= X87Status.C3;
            if ((q & 1) != 0) codes |= X87Status.C1;
        }
        SetConditionCodes(codes);
        return X87Outcome.Done;
    }
}
