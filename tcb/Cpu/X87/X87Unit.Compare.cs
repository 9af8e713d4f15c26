using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

// Comparison and classification (SDM vol.1 8.3.6, 8.1.4; vol.2A FCOM/FCOMP/FCOMPP,
// FUCOM/FUCOMP/FUCOMPP, FICOM/FICOMP, FTST, FCOMI/FCOMIP/FUCOMI/FUCOMIP, FXAM).
public sealed partial class X87Unit
{
    /// <summary>C3, C2, C0 per comparison result (SDM vol.1 table 8-6): &gt; 000, &lt; 001, = 100, unordered 111.</summary>
    private static ushort ConditionCodesFor(X87Comparison c) => c switch
    {
        X87Comparison.Greater => 0,
        X87Comparison.Less => X87Status.C0,
        X87Comparison.Equal => X87Status.C3,
        _ => X87Status.C3 | X87Status.C2 | X87Status.C0,
    };

    /// <summary>ZF, PF, CF per comparison result (SDM vol.1 table 8-7), same pattern as C3, C2, C0.</summary>
    private static uint EflagsFor(X87Comparison c) => c switch
    {
        X87Comparison.Greater => 0,
        X87Comparison.Less => 0x01,
        X87Comparison.Equal => 0x40,
        _ => 0x45,
    };

    private const uint ZfPfCf = 0x45;
    private const uint OfSfAf = 0x800 | 0x80 | 0x10;

    private X87Outcome CompareToConditionCodes(in Instruction insn, IX87Memory mem)
    {
        Mnemonic m = insn.Mnemonic;
        bool quiet = m is Mnemonic.Fucom or Mnemonic.Fucomp or Mnemonic.Fucompp;
        int pops = m switch
        {
            Mnemonic.Fcompp or Mnemonic.Fucompp => 2,
            Mnemonic.Fcomp or Mnemonic.Fucomp or Mnemonic.Ficomp => 1,
            _ => 0,
        };
        X87Arithmetic env = NewEnvironment();
        Float80 source;
        bool empty;
        if (m == Mnemonic.Ftst)
        {
            source = Float80.PositiveZero;
            empty = Empty(0);
        }
        else if (insn.OpCount >= 1 && insn.Op0Kind == OpKind.Memory)
        {
            if (!ReadOperand(insn, mem, ref env, out source, keepSignaling: true))
            {
                return X87Outcome.MemoryFault;
            }
            empty = Empty(0);
        }
        else
        {
            // FCOM ST(i) is decoded as (ST0, ST(i)); FCOMPP/FUCOMPP compare with ST(1).
            int i = insn.OpCount >= 2 ? StackIndex(insn.Op1Register) : 1;
            empty = Empty(0) || Empty(i);
            source = St(i);
        }
        if (empty)
        {
            if (StackUnderflow())
            {
                SetConditionCodes(ConditionCodesFor(X87Comparison.Unordered));
                PopTimes(pops);
            }
            return X87Outcome.Done;
        }
        X87Comparison result = ExtendedArithmetic.Compare(St(0), source, quiet, ref env);
        Raise(env.Flags);
        if (env.Unmasked(PreComputation))
        {
            return X87Outcome.Done;    // condition codes not set, nothing popped
        }
        SetConditionCodes(ConditionCodesFor(result));
        PopTimes(pops);
        return X87Outcome.Done;
    }

    private void PopTimes(int count)
    {
        for (int k = 0; k < count; k++)
        {
            Pop();
        }
    }

    private X87Outcome CompareToEflags(in Instruction insn, ref uint eflags)
    {
        Mnemonic m = insn.Mnemonic;
        bool quiet = m is Mnemonic.Fucomi or Mnemonic.Fucomip;
        bool pop = m is Mnemonic.Fcomip or Mnemonic.Fucomip;
        int i = StackIndex(insn.Op1Register);
        if (Empty(0) || Empty(i))
        {
            if (StackUnderflow())
            {
                eflags = (eflags & ~(ZfPfCf | OfSfAf)) | EflagsFor(X87Comparison.Unordered);
                if (pop)
                {
                    Pop();
                }
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        X87Comparison result = ExtendedArithmetic.Compare(St(0), St(i), quiet, ref env);
        Raise(env.Flags);
        SetC1(false);
        if (env.Unmasked(PreComputation))
        {
            return X87Outcome.Done;
        }
        eflags = (eflags & ~(ZfPfCf | OfSfAf)) | EflagsFor(result);
        if (pop)
        {
            Pop();
        }
        return X87Outcome.Done;
    }

    /// <summary>FXAM (SDM vol.2A FXAM, "FXAM Results" table): C1 = sign; C3,C2,C0 = class.</summary>
    private X87Outcome Examine()
    {
        Float80 v = St(0);
        ushort codes = v.IsNegative ? X87Status.C1 : (ushort)0;
        if (Empty(0))
        {
            codes |= X87Status.C3 | X87Status.C0;
        }
        else
        {
            codes |= v.Class switch
            {
                Float80Class.Unsupported => 0,
                Float80Class.QuietNaN or Float80Class.SignalingNaN => X87Status.C0,
                Float80Class.Normal => X87Status.C2,
                Float80Class.Infinity => X87Status.C2 | X87Status.C0,
                Float80Class.Zero => X87Status.C3,
                _ => X87Status.C3 | X87Status.C2,     // denormal
            };
        }
        SetConditionCodes(codes);
        return X87Outcome.Done;
    }
}
