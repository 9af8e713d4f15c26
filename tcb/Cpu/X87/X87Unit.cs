using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// The x87 floating-point unit (SDM vol.1 chapter 8): eight 80-bit data registers used as a
/// stack, control/status/tag words, the last-instruction and last-operand pointers, and the
/// instruction set "sufficient for Linux and ordinary programs". The CPU checks CR0.EM/TS
/// before calling <see cref="Execute"/> and turns <see cref="X87Outcome.FloatingPointError"/>
/// into #MF or IRQ13.
///
/// The instruction groups live in partial files: loads/stores, arithmetic, comparisons,
/// transcendentals, control/environment.
/// </summary>
public sealed partial class X87Unit
{
    private readonly Float80[] _registers = new Float80[8];   // physical R0..R7
    private int _validMask;                                   // bit p set = physical register p is not empty
    private int _top;
    private ushort _control;
    private ushort _status;                                   // TOP kept in _top, not in these bits
    private ushort _lastOpcode;                               // 11-bit FOP, unless _lastOpcodePending
    private Instruction _lastInstruction;                     // FOP is derived from it only when read
    private bool _lastOpcodePending;
    private ushort _instructionSelector;
    private uint _instructionOffset;
    private ushort _dataSelector;
    private uint _dataOffset;

    public X87Unit()
    {
        Reset();
    }

    /// <summary>
    /// Power-on state, as the VMM defines it: the FNINIT state (SDM vol.1 8.1.5, 8.1.7: FCW 037FH,
    /// FSW 0, FTW all empty, pointers 0) with the data registers cleared. Hardware RESET leaves
    /// FCW 0040H and tags 5555H instead (SDM vol.3A table 9-1), but firmware and every OS execute
    /// FNINIT before using the FPU, so starting from the FNINIT state is indistinguishable to them.
    /// </summary>
    public void Reset()
    {
        Array.Clear(_registers);
        Initialize();
    }

    /// <summary>FNINIT (SDM vol.2A FINIT/FNINIT): data registers keep their contents but are all tagged empty.</summary>
    private void Initialize()
    {
        _control = X87Control.Default;
        _status = 0;
        _top = 0;
        _validMask = 0;
        SetLastOpcode(0);
        _instructionSelector = 0;
        _instructionOffset = 0;
        _dataSelector = 0;
        _dataOffset = 0;
    }

    // ------------------------------------------------------------------------------------
    // Architectural state, for the CPU, debuggers and tests
    // ------------------------------------------------------------------------------------

    public ushort ControlWord => _control;

    /// <summary>The status word with TOP in bits 13..11.</summary>
    public ushort StatusWord => (ushort)((_status & ~X87Status.TopMask) | (_top << X87Status.TopShift));

    public int Top => _top;

    /// <summary>Full tag word (SDM vol.1 8.1.7): 00 valid, 01 zero, 10 special, 11 empty, two bits per physical register.</summary>
    public ushort TagWord
    {
        get
        {
            int tags = 0;
            for (int p = 0; p < 8; p++)
            {
                tags |= TagOf(p) << (2 * p);
            }
            return (ushort)tags;
        }
    }

    /// <summary>The 11-bit FOP of the last non-control instruction (rebuilt lazily: few guests ever read it).</summary>
    public ushort LastOpcode
    {
        get
        {
            if (_lastOpcodePending)
            {
                _lastOpcode = X87Opcode.Compute(_lastInstruction);
                _lastOpcodePending = false;
            }
            return _lastOpcode;
        }
    }

    private void SetLastOpcode(ushort fop)
    {
        _lastOpcode = (ushort)(fop & 0x7FF);
        _lastOpcodePending = false;
    }

    public ushort InstructionSelector => _instructionSelector;
    public uint InstructionOffset => _instructionOffset;
    public ushort DataSelector => _dataSelector;
    public uint DataOffset => _dataOffset;

    /// <summary>An unmasked exception is pending (ES set): the next waiting instruction signals it (SDM vol.1 8.7).</summary>
    public bool HasPendingUnmaskedException => (_status & X87Status.ErrorSummary) != 0;

    /// <summary>ST(i) (whatever its tag).</summary>
    public Float80 ReadStack(int i) => _registers[Physical(i)];

    public bool IsStackEmpty(int i) => (_validMask & (1 << Physical(i))) == 0;

    private int TagOf(int physical)
    {
        if ((_validMask & (1 << physical)) == 0)
        {
            return 3;
        }
        return _registers[physical].Class switch
        {
            Float80Class.Zero => 1,
            Float80Class.Normal => 0,
            _ => 2,
        };
    }

    // ------------------------------------------------------------------------------------
    // Dispatch
    // ------------------------------------------------------------------------------------

    /// <summary>
    /// Executes one x87 instruction. Waiting instructions first deliver a pending unmasked
    /// exception (returned as <see cref="X87Outcome.FloatingPointError"/> without executing);
    /// the non-waiting forms never do (SDM vol.1 8.7, 8.3.12).
    /// </summary>
    public X87Outcome Execute(in Instruction insn, IX87Memory mem, ref X87CpuContext ctx)
    {
        Mnemonic mnemonic = insn.Mnemonic;
        ctx.AxWritten = false;
        if (!IsNonWaiting(mnemonic) && HasPendingUnmaskedException)
        {
            return X87Outcome.FloatingPointError;
        }
        bool control = false;
        X87Outcome outcome;
        switch (mnemonic)
        {
            // Control (SDM vol.1 8.3.12): these do not update the instruction/data pointers.
            case Mnemonic.Wait:
                // FWAIT only checks for a pending exception, done above.
                return X87Outcome.Done;
            case Mnemonic.Fneni:
            case Mnemonic.Fndisi:
            case Mnemonic.Fnsetpm:
            case Mnemonic.Frstpm:
                // 8087/80287 mode switches are no-ops on the 80387 and later.
                return X87Outcome.Done;
            case Mnemonic.Fninit:
            case Mnemonic.Finit:
                Initialize();
                return X87Outcome.Done;
            case Mnemonic.Fnclex:
            case Mnemonic.Fclex:
                _status &= unchecked((ushort)~(X87Status.ExceptionFlags | X87Status.StackFault | X87Status.ErrorSummary | X87Status.Busy));
                return X87Outcome.Done;
            case Mnemonic.Fnstsw:
            case Mnemonic.Fstsw:
            case Mnemonic.Fnstcw:
            case Mnemonic.Fstcw:
            case Mnemonic.Fldcw:
            case Mnemonic.Fnstenv:
            case Mnemonic.Fstenv:
            case Mnemonic.Fldenv:
            case Mnemonic.Fnsave:
            case Mnemonic.Fsave:
            case Mnemonic.Frstor:
                control = true;
                outcome = ExecuteControl(mnemonic, insn, mem, ref ctx);
                break;

            case Mnemonic.Fld:
                outcome = Load(insn, mem);
                break;
            case Mnemonic.Fild:
                outcome = LoadInteger(insn, mem);
                break;
            case Mnemonic.Fbld:
                outcome = LoadBcd(mem);
                break;
            case Mnemonic.Fst:
                outcome = Store(insn, mem, pop: false);
                break;
            case Mnemonic.Fstp:
            case Mnemonic.Fstpnce:
                outcome = Store(insn, mem, pop: true);
                break;
            case Mnemonic.Fist:
                outcome = StoreInteger(insn, mem, pop: false);
                break;
            case Mnemonic.Fistp:
                outcome = StoreInteger(insn, mem, pop: true);
                break;
            case Mnemonic.Fbstp:
                outcome = StoreBcd(mem);
                break;
            case Mnemonic.Fisttp:
                // SSE3's truncating store; harmless to provide, the CPU decides whether CPUID advertises it.
                outcome = StoreInteger(insn, mem, pop: true, truncate: true);
                break;
            case Mnemonic.Fld1:
            case Mnemonic.Fldz:
            case Mnemonic.Fldpi:
            case Mnemonic.Fldl2e:
            case Mnemonic.Fldl2t:
            case Mnemonic.Fldlg2:
            case Mnemonic.Fldln2:
                outcome = LoadConstant(mnemonic);
                break;
            case Mnemonic.Fxch:
                outcome = Exchange(insn);
                break;
            case Mnemonic.Ffree:
                outcome = Free(insn, pop: false);
                break;
            case Mnemonic.Ffreep:
                outcome = Free(insn, pop: true);
                break;
            case Mnemonic.Fincstp:
                _top = (_top + 1) & 7;
                SetC1(false);
                outcome = X87Outcome.Done;
                break;
            case Mnemonic.Fdecstp:
                _top = (_top - 1) & 7;
                SetC1(false);
                outcome = X87Outcome.Done;
                break;
            case Mnemonic.Fnop:
                outcome = X87Outcome.Done;
                break;
            case Mnemonic.Fcmovb:
            case Mnemonic.Fcmove:
            case Mnemonic.Fcmovbe:
            case Mnemonic.Fcmovu:
            case Mnemonic.Fcmovnb:
            case Mnemonic.Fcmovne:
            case Mnemonic.Fcmovnbe:
            case Mnemonic.Fcmovnu:
                outcome = ConditionalMove(insn, ctx.Eflags);
                break;

            case Mnemonic.Fadd:
            case Mnemonic.Faddp:
            case Mnemonic.Fiadd:
            case Mnemonic.Fsub:
            case Mnemonic.Fsubp:
            case Mnemonic.Fisub:
            case Mnemonic.Fsubr:
            case Mnemonic.Fsubrp:
            case Mnemonic.Fisubr:
            case Mnemonic.Fmul:
            case Mnemonic.Fmulp:
            case Mnemonic.Fimul:
            case Mnemonic.Fdiv:
            case Mnemonic.Fdivp:
            case Mnemonic.Fidiv:
            case Mnemonic.Fdivr:
            case Mnemonic.Fdivrp:
            case Mnemonic.Fidivr:
                outcome = Arithmetic(insn, mem);
                break;
            case Mnemonic.Fchs:
            case Mnemonic.Fabs:
                outcome = SignOperation(mnemonic);
                break;
            case Mnemonic.Fsqrt:
            case Mnemonic.Frndint:
                outcome = UnaryRounded(mnemonic);
                break;
            case Mnemonic.Fscale:
                outcome = ScaleTop();
                break;
            case Mnemonic.Fxtract:
                outcome = ExtractTop();
                break;
            case Mnemonic.Fprem:
            case Mnemonic.Fprem1:
                outcome = PartialRemainderTop(mnemonic == Mnemonic.Fprem1);
                break;

            case Mnemonic.Fcom:
            case Mnemonic.Fcomp:
            case Mnemonic.Fcompp:
            case Mnemonic.Fucom:
            case Mnemonic.Fucomp:
            case Mnemonic.Fucompp:
            case Mnemonic.Ficom:
            case Mnemonic.Ficomp:
            case Mnemonic.Ftst:
                outcome = CompareToConditionCodes(insn, mem);
                break;
            case Mnemonic.Fcomi:
            case Mnemonic.Fcomip:
            case Mnemonic.Fucomi:
            case Mnemonic.Fucomip:
                outcome = CompareToEflags(insn, ref ctx.Eflags);
                break;
            case Mnemonic.Fxam:
                outcome = Examine();
                break;

            case Mnemonic.Fsin:
            case Mnemonic.Fcos:
            case Mnemonic.Fptan:
            case Mnemonic.Fsincos:
            case Mnemonic.F2xm1:
                outcome = TranscendentalUnary(mnemonic);
                break;
            case Mnemonic.Fpatan:
            case Mnemonic.Fyl2x:
            case Mnemonic.Fyl2xp1:
                outcome = TranscendentalBinary(mnemonic);
                break;

            default:
                // The CPU only routes x87 mnemonics here (see Implements); anything else is a VMM bug.
                throw new ArgumentException($"not an implemented x87 instruction: {mnemonic}", nameof(insn));
        }
        if (outcome == X87Outcome.Done && !control)
        {
            RecordPointers(insn, ctx);
        }
        return outcome;
    }

    /// <summary>Every mnemonic <see cref="Execute"/> accepts: the x87 instructions Iced decodes in 16/32-bit code.</summary>
    private static readonly Mnemonic[] SupportedMnemonics =
    [
        Mnemonic.Wait, Mnemonic.Fneni, Mnemonic.Fndisi, Mnemonic.Fnsetpm, Mnemonic.Frstpm,
        Mnemonic.Fninit, Mnemonic.Finit, Mnemonic.Fnclex, Mnemonic.Fclex,
        Mnemonic.Fnstsw, Mnemonic.Fstsw, Mnemonic.Fnstcw, Mnemonic.Fstcw, Mnemonic.Fldcw,
        Mnemonic.Fnstenv, Mnemonic.Fstenv, Mnemonic.Fldenv, Mnemonic.Fnsave, Mnemonic.Fsave, Mnemonic.Frstor,
        Mnemonic.Fld, Mnemonic.Fild, Mnemonic.Fbld, Mnemonic.Fst, Mnemonic.Fstp, Mnemonic.Fstpnce,
        Mnemonic.Fist, Mnemonic.Fistp, Mnemonic.Fisttp, Mnemonic.Fbstp,
        Mnemonic.Fld1, Mnemonic.Fldz, Mnemonic.Fldpi, Mnemonic.Fldl2e, Mnemonic.Fldl2t, Mnemonic.Fldlg2, Mnemonic.Fldln2,
        Mnemonic.Fxch, Mnemonic.Ffree, Mnemonic.Ffreep, Mnemonic.Fincstp, Mnemonic.Fdecstp, Mnemonic.Fnop,
        Mnemonic.Fcmovb, Mnemonic.Fcmove, Mnemonic.Fcmovbe, Mnemonic.Fcmovu,
        Mnemonic.Fcmovnb, Mnemonic.Fcmovne, Mnemonic.Fcmovnbe, Mnemonic.Fcmovnu,
        Mnemonic.Fadd, Mnemonic.Faddp, Mnemonic.Fiadd, Mnemonic.Fsub, Mnemonic.Fsubp, Mnemonic.Fisub,
        Mnemonic.Fsubr, Mnemonic.Fsubrp, Mnemonic.Fisubr, Mnemonic.Fmul, Mnemonic.Fmulp, Mnemonic.Fimul,
        Mnemonic.Fdiv, Mnemonic.Fdivp, Mnemonic.Fidiv, Mnemonic.Fdivr, Mnemonic.Fdivrp, Mnemonic.Fidivr,
        Mnemonic.Fchs, Mnemonic.Fabs, Mnemonic.Fsqrt, Mnemonic.Frndint, Mnemonic.Fscale, Mnemonic.Fxtract,
        Mnemonic.Fprem, Mnemonic.Fprem1,
        Mnemonic.Fcom, Mnemonic.Fcomp, Mnemonic.Fcompp, Mnemonic.Fucom, Mnemonic.Fucomp, Mnemonic.Fucompp,
        Mnemonic.Ficom, Mnemonic.Ficomp, Mnemonic.Ftst, Mnemonic.Fcomi, Mnemonic.Fcomip, Mnemonic.Fucomi,
        Mnemonic.Fucomip, Mnemonic.Fxam,
        Mnemonic.Fsin, Mnemonic.Fcos, Mnemonic.Fptan, Mnemonic.Fsincos, Mnemonic.F2xm1,
        Mnemonic.Fpatan, Mnemonic.Fyl2x, Mnemonic.Fyl2xp1,
    ];

    private static readonly bool[] SupportedTable = BuildSupportedTable();

    private static bool[] BuildSupportedTable()
    {
        var table = new bool[Enum.GetValues<Mnemonic>().Length];
        foreach (Mnemonic m in SupportedMnemonics)
        {
            table[(int)m] = true;
        }
        return table;
    }

    /// <summary>
    /// True for the mnemonics <see cref="Execute"/> accepts. The CPU raises #UD for anything else
    /// (e.g. the 287XL/Cyrix extras Iced can decode with special options).
    /// </summary>
    public static bool Implements(Mnemonic mnemonic) => (uint)mnemonic < (uint)SupportedTable.Length && SupportedTable[(int)mnemonic];

    /// <summary>The "no-wait" forms that never signal a pending exception (SDM vol.1 8.3.12, 8.7).</summary>
    private static bool IsNonWaiting(Mnemonic m) =>
        m is Mnemonic.Fninit or Mnemonic.Fnclex or Mnemonic.Fnstsw or Mnemonic.Fnstcw or Mnemonic.Fnstenv
            or Mnemonic.Fnsave or Mnemonic.Fneni or Mnemonic.Fndisi or Mnemonic.Fnsetpm;

    /// <summary>
    /// Last instruction/operand pointers and opcode (SDM vol.1 8.1.8, 8.1.9): recorded by every
    /// non-control instruction; the data pointer only when there is a memory operand.
    /// </summary>
    private void RecordPointers(in Instruction insn, in X87CpuContext ctx)
    {
        _instructionSelector = ctx.Cs;
        _instructionOffset = ctx.Eip;
        _lastInstruction = insn;
        _lastOpcodePending = true;
        if (insn.OpCount > 0 && insn.Op0Kind == OpKind.Memory)
        {
            _dataSelector = ctx.DataSelector;
            _dataOffset = ctx.DataOffset;
        }
    }

    // ------------------------------------------------------------------------------------
    // Stack and status helpers
    // ------------------------------------------------------------------------------------

    private int Physical(int i) => (_top + i) & 7;

    private bool Empty(int i) => (_validMask & (1 << Physical(i))) == 0;

    private Float80 St(int i) => _registers[Physical(i)];

    private void SetSt(int i, Float80 value)
    {
        int p = Physical(i);
        _registers[p] = value;
        _validMask |= 1 << p;
    }

    private void Push(Float80 value)
    {
        _top = (_top - 1) & 7;
        _registers[_top] = value;
        _validMask |= 1 << _top;
    }

    private void Pop()
    {
        _validMask &= ~(1 << _top);
        _top = (_top + 1) & 7;
    }

    /// <summary>A push would overwrite a non-empty register (stack overflow, SDM vol.1 8.5.1.1).</summary>
    private bool PushOverflows => !Empty(7);

    private static int StackIndex(Register register) => register - Register.ST0;

    private void SetC1(bool value) =>
        _status = (ushort)(value ? _status | X87Status.C1 : _status & ~X87Status.C1);

    private void SetConditionCodes(ushort codes) =>
        _status = (ushort)((_status & ~X87Status.ConditionCodes) | codes);

    /// <summary>Records raised flags; ES and B follow "some flag is set whose mask is clear" (SDM vol.1 8.1.3.1).</summary>
    private void Raise(ushort flags)
    {
        _status |= (ushort)(flags & (X87Status.ExceptionFlags | X87Status.StackFault));
        UpdateErrorSummary();
    }

    private void UpdateErrorSummary()
    {
        if ((_status & ~_control & X87Status.ExceptionFlags) != 0)
        {
            _status |= X87Status.ErrorSummary | X87Status.Busy;
        }
        else
        {
            _status &= unchecked((ushort)~(X87Status.ErrorSummary | X87Status.Busy));
        }
    }

    /// <summary>Stack underflow (SDM vol.1 8.5.1.1): IE and SF set, C1 cleared. Returns true when masked.</summary>
    private bool StackUnderflow()
    {
        SetC1(false);
        Raise(X87Status.InvalidOperation | X87Status.StackFault);
        return (_control & X87Status.InvalidOperation) != 0;
    }

    /// <summary>Stack overflow: IE and SF set, C1 set. Returns true when masked.</summary>
    private bool StackOverflow()
    {
        Raise(X87Status.InvalidOperation | X87Status.StackFault);
        SetC1(true);
        return (_control & X87Status.InvalidOperation) != 0;
    }

    private X87Arithmetic NewEnvironment() => new(_control);

    /// <summary>Commits an operation's flags and C1.</summary>
    private void Commit(in X87Arithmetic env)
    {
        Raise(env.Flags);
        SetC1(env.RoundedUp);
    }

    /// <summary>Invalid, denormal and zero-divide exceptions, when unmasked, suppress the result (SDM vol.1 8.5).</summary>
    private const ushort PreComputation = X87Status.InvalidOperation | X87Status.DenormalOperand | X87Status.ZeroDivide;
}
