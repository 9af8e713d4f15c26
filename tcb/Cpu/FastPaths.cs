using System.Numerics;
using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

/// <summary>
/// Numbers of the specialized forms the run loop executes inline (see <see cref="Cpu"/>'s
/// ExecuteBlock): R = 32-bit general register, I = immediate, M = memory operand of 32 bits
/// unless the name says otherwise. 0 = none: the instruction goes through its handler delegate.
/// </summary>
internal static class FastOp
{
    public const byte None = 0;
    public const byte MovRR = 1, MovRI = 2, MovRM = 3, MovMR = 4, MovMI = 5;
    public const byte AddRR = 6, AddRI = 7, AddRM = 8;
    public const byte SubRR = 9, SubRI = 10, SubRM = 11;
    public const byte CmpRR = 12, CmpRI = 13, CmpRM = 14, CmpMR = 15, CmpMI = 16;
    public const byte AndRR = 17, AndRI = 18, OrRR = 19, OrRI = 20, XorRR = 21, XorRI = 22;
    public const byte TestRR = 23, TestRI = 24;
    public const byte IncR = 25, DecR = 26, LeaR = 27;
    public const byte Jcc = 28, JmpNear = 29;
    public const byte ShlRI = 30, ShrRI = 31, SarRI = 32, RolRI = 33, RorRI = 34;
    public const byte PushR = 35, PopR = 36;
    public const byte MovzxRM = 37, ImulRRI = 38, ImulRR = 39;
    public const byte Count = 40;
}

// Specialized handlers for the commonest operand shapes, chosen once when an instruction is
// decoded: 32-bit register/register, register/immediate, register/memory and memory/register
// forms of the everyday ALU, MOV, shift and stack instructions, and the near branches. They
// compute exactly what the generic handlers in Arithmetic.cs/Logic.cs/DataTransfer.cs/Shifts.cs/
// ControlTransfer.cs compute (the differential tests run through both), without the
// per-execution operand-kind and width dispatch. The run loop executes them inline through a
// switch on DecodedInsn.Fast (a jump table: no delegate call, no call stub), and each also has a
// handler delegate built from the same method. The body of a form is its parametric Op* method
// (operands as arguments): the Fast* method calls it with the decoded instruction's fields and a
// compiled block (BlockCompiler.cs) calls it with them as constants, so every path runs one body.
// Register numbers here are below 8 (checked in Specialize); the "& 7" only lets the JIT drop the
// bounds check.
public sealed partial class Cpu
{
    private static readonly byte[] s_fastRegReg = new byte[CodeCount];
    private static readonly byte[] s_fastRegImm = new byte[CodeCount];
    private static readonly byte[] s_fastRegMem = new byte[CodeCount];
    private static readonly byte[] s_fastMemReg = new byte[CodeCount];
    private static readonly byte[] s_fastMemImm = new byte[CodeCount];
    private static readonly byte[] s_fastNearBranch = new byte[CodeCount];
    private static readonly InsnHandler[] s_fastHandlers = new InsnHandler[FastOp.Count];
    private bool _specializedForms = true;

    /// <summary>
    /// Whether instructions are decoded into their specialized forms (the default). False sends
    /// every instruction through its generic handler: the reference the fast forms are tested
    /// against. Set it before running; blocks already decoded keep their forms.
    /// </summary>
    public bool SpecializedForms
    {
        get => _specializedForms;
        set => _specializedForms = value;
    }

    private static void RegisterFastPaths()
    {
        Fast(Mnemonic.Mov, FastOp.MovRR, FastOp.MovRI, FastOp.MovRM, FastOp.MovMR, FastOp.MovMI);
        Fast(Mnemonic.Add, FastOp.AddRR, FastOp.AddRI, FastOp.AddRM, 0, 0);
        Fast(Mnemonic.Sub, FastOp.SubRR, FastOp.SubRI, FastOp.SubRM, 0, 0);
        Fast(Mnemonic.Cmp, FastOp.CmpRR, FastOp.CmpRI, FastOp.CmpRM, FastOp.CmpMR, FastOp.CmpMI);
        Fast(Mnemonic.And, FastOp.AndRR, FastOp.AndRI, 0, 0, 0);
        Fast(Mnemonic.Or, FastOp.OrRR, FastOp.OrRI, 0, 0, 0);
        Fast(Mnemonic.Xor, FastOp.XorRR, FastOp.XorRI, 0, 0, 0);
        Fast(Mnemonic.Test, FastOp.TestRR, FastOp.TestRI, 0, 0, 0);
        // One-operand forms (INC/DEC/PUSH/POP r32) use the register/register slot.
        Fast(Mnemonic.Inc, FastOp.IncR, 0, 0, 0, 0);
        Fast(Mnemonic.Dec, FastOp.DecR, 0, 0, 0, 0);
        Fast(Mnemonic.Push, FastOp.PushR, 0, 0, 0, 0);
        Fast(Mnemonic.Pop, FastOp.PopR, 0, 0, 0, 0);
        Fast(Mnemonic.Lea, 0, 0, FastOp.LeaR, 0, 0);
        // Shifts by an immediate (the D1 forms give Iced's implicit 1 as an immediate too).
        Fast(Mnemonic.Shl, 0, FastOp.ShlRI, 0, 0, 0);
        Fast(Mnemonic.Sal, 0, FastOp.ShlRI, 0, 0, 0);
        Fast(Mnemonic.Shr, 0, FastOp.ShrRI, 0, 0, 0);
        Fast(Mnemonic.Sar, 0, FastOp.SarRI, 0, 0, 0);
        Fast(Mnemonic.Rol, 0, FastOp.RolRI, 0, 0, 0);
        Fast(Mnemonic.Ror, 0, FastOp.RorRI, 0, 0, 0);
        Fast(Mnemonic.Movzx, FastOp.MovzxRM, 0, FastOp.MovzxRM, 0, 0);
        Fast(Mnemonic.Imul, FastOp.ImulRR, 0, 0, 0, 0);
        foreach (var code in Enum.GetValues<Code>())
        {
            var info = code.ToOpCode();
            if (info.Encoding != EncodingKind.Legacy || (!info.Mode16 && !info.Mode32))
            {
                continue;
            }
            bool rel = info.Op0Kind is OpCodeOperandKind.br16_1 or OpCodeOperandKind.br16_2 or OpCodeOperandKind.br32_1 or OpCodeOperandKind.br32_4;
            var m = code.Mnemonic();
            if (rel && m == Mnemonic.Jmp)
            {
                s_fastNearBranch[(int)code] = FastOp.JmpNear;
            }
            else if (rel && ConditionOf(m) >= 0 && m.ToString().StartsWith('J'))
            {
                s_fastNearBranch[(int)code] = FastOp.Jcc;
            }
        }

        s_fastHandlers[FastOp.None] = s_undefined;
        s_fastHandlers[FastOp.MovRR] = (c, ref d) => c.FastMovRR(ref d);
        s_fastHandlers[FastOp.MovRI] = (c, ref d) => c.FastMovRI(ref d);
        s_fastHandlers[FastOp.MovRM] = (c, ref d) => c.FastMovRM(ref d);
        s_fastHandlers[FastOp.MovMR] = (c, ref d) => c.FastMovMR(ref d);
        s_fastHandlers[FastOp.MovMI] = (c, ref d) => c.FastMovMI(ref d);
        s_fastHandlers[FastOp.AddRR] = (c, ref d) => c.FastAddRR(ref d);
        s_fastHandlers[FastOp.AddRI] = (c, ref d) => c.FastAddRI(ref d);
        s_fastHandlers[FastOp.AddRM] = (c, ref d) => c.FastAddRM(ref d);
        s_fastHandlers[FastOp.SubRR] = (c, ref d) => c.FastSubRR(ref d);
        s_fastHandlers[FastOp.SubRI] = (c, ref d) => c.FastSubRI(ref d);
        s_fastHandlers[FastOp.SubRM] = (c, ref d) => c.FastSubRM(ref d);
        s_fastHandlers[FastOp.CmpRR] = (c, ref d) => c.FastCmpRR(ref d);
        s_fastHandlers[FastOp.CmpRI] = (c, ref d) => c.FastCmpRI(ref d);
        s_fastHandlers[FastOp.CmpRM] = (c, ref d) => c.FastCmpRM(ref d);
        s_fastHandlers[FastOp.CmpMR] = (c, ref d) => c.FastCmpMR(ref d);
        s_fastHandlers[FastOp.CmpMI] = (c, ref d) => c.FastCmpMI(ref d);
        s_fastHandlers[FastOp.AndRR] = (c, ref d) => c.FastAndRR(ref d);
        s_fastHandlers[FastOp.AndRI] = (c, ref d) => c.FastAndRI(ref d);
        s_fastHandlers[FastOp.OrRR] = (c, ref d) => c.FastOrRR(ref d);
        s_fastHandlers[FastOp.OrRI] = (c, ref d) => c.FastOrRI(ref d);
        s_fastHandlers[FastOp.XorRR] = (c, ref d) => c.FastXorRR(ref d);
        s_fastHandlers[FastOp.XorRI] = (c, ref d) => c.FastXorRI(ref d);
        s_fastHandlers[FastOp.TestRR] = (c, ref d) => c.FastTestRR(ref d);
        s_fastHandlers[FastOp.TestRI] = (c, ref d) => c.FastTestRI(ref d);
        s_fastHandlers[FastOp.IncR] = (c, ref d) => c.FastIncR(ref d);
        s_fastHandlers[FastOp.DecR] = (c, ref d) => c.FastDecR(ref d);
        s_fastHandlers[FastOp.LeaR] = (c, ref d) => c.FastLeaR(ref d);
        s_fastHandlers[FastOp.Jcc] = (c, ref d) => c.FastJcc(ref d);
        s_fastHandlers[FastOp.JmpNear] = (c, ref d) => c.FastJmpNear(ref d);
        s_fastHandlers[FastOp.ShlRI] = (c, ref d) => c.FastShlRI(ref d);
        s_fastHandlers[FastOp.ShrRI] = (c, ref d) => c.FastShrRI(ref d);
        s_fastHandlers[FastOp.SarRI] = (c, ref d) => c.FastSarRI(ref d);
        s_fastHandlers[FastOp.RolRI] = (c, ref d) => c.FastRolRI(ref d);
        s_fastHandlers[FastOp.RorRI] = (c, ref d) => c.FastRorRI(ref d);
        s_fastHandlers[FastOp.PushR] = (c, ref d) => c.FastPushR(ref d);
        s_fastHandlers[FastOp.PopR] = (c, ref d) => c.FastPopR(ref d);
        s_fastHandlers[FastOp.MovzxRM] = (c, ref d) => c.FastMovzxRM(ref d);
        s_fastHandlers[FastOp.ImulRRI] = (c, ref d) => c.FastImulRRI(ref d);
        s_fastHandlers[FastOp.ImulRR] = (c, ref d) => c.FastImulRR(ref d);
    }

    private static void Fast(Mnemonic m, byte regReg, byte regImm, byte regMem, byte memReg, byte memImm)
    {
        foreach (var code in s_codesByMnemonic.Value[(int)m])
        {
            s_fastRegReg[(int)code] = regReg;
            s_fastRegImm[(int)code] = regImm;
            s_fastRegMem[(int)code] = regMem;
            s_fastMemReg[(int)code] = memReg;
            s_fastMemImm[(int)code] = memImm;
        }
    }

    /// <summary>Picks a specialized form when the digested operands have a fast shape.</summary>
    private static void Specialize(ref DecodedInsn d, int opCount)
    {
        int code = (int)d.I.Code;
        byte fast = s_fastNearBranch[code];
        if (fast == FastOp.None && d.OpSize == 4)
        {
            if (d.Kind0 == OpKindCode.Reg && d.Reg0 < 8)
            {
                if (opCount == 1)
                {
                    // Only INC/DEC/PUSH/POP r32 (not the one-operand MUL/IMUL forms of the same table).
                    fast = s_fastRegReg[code];
                    bool oneOperandForm = fast is FastOp.IncR or FastOp.DecR
                        || ((fast is FastOp.PushR or FastOp.PopR) && OperandSizeOf(in d.I) == 4);
                    if (!oneOperandForm)
                    {
                        fast = FastOp.None;
                    }
                }
                else if (opCount == 2)
                {
                    if (d.Kind1 == OpKindCode.Reg && d.Reg1 < 8 && d.SrcSize == 4) fast = s_fastRegReg[code];
                    else if (d.Kind1 == OpKindCode.Imm) fast = s_fastRegImm[code];
                    else if (d.Kind1 == OpKindCode.Mem && (d.SrcSize == 4 || d.I.Mnemonic == Mnemonic.Lea)) fast = s_fastRegMem[code];
                    if (d.I.Mnemonic == Mnemonic.Movzx)
                    {
                        // Zero-extension from an 8/16-bit register (AH..BH included) or memory.
                        fast = d.Kind1 == OpKindCode.Mem || (d.Kind1 == OpKindCode.Reg && d.Reg1 < 32) ? FastOp.MovzxRM : FastOp.None;
                    }
                    else if (fast == FastOp.ImulRR && d.Kind1 != OpKindCode.Reg)
                    {
                        fast = FastOp.None;
                    }
                }
                else if (opCount == 3 && d.I.Mnemonic == Mnemonic.Imul && d.Kind1 == OpKindCode.Reg && d.Reg1 < 8 && d.Kind2 == OpKindCode.Imm)
                {
                    fast = FastOp.ImulRRI;
                }
            }
            else if (d.Kind0 == OpKindCode.Mem && opCount == 2)
            {
                if (d.Kind1 == OpKindCode.Reg && d.Reg1 < 8 && d.SrcSize == 4) fast = s_fastMemReg[code];
                else if (d.Kind1 == OpKindCode.Imm) fast = s_fastMemImm[code];
            }
        }
        if (fast != FastOp.None)
        {
            d.Fast = fast;
            d.Handler = s_fastHandlers[fast];
        }
    }

    /// <summary>Runs a specialized form (the run loop's inline dispatch; see FastOp).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ExecuteFast(ref DecodedInsn d)
    {
        switch (d.Fast)
        {
            case FastOp.MovRR: FastMovRR(ref d); break;
            case FastOp.MovRI: FastMovRI(ref d); break;
            case FastOp.MovRM: FastMovRM(ref d); break;
            case FastOp.MovMR: FastMovMR(ref d); break;
            case FastOp.MovMI: FastMovMI(ref d); break;
            case FastOp.AddRR: FastAddRR(ref d); break;
            case FastOp.AddRI: FastAddRI(ref d); break;
            case FastOp.AddRM: FastAddRM(ref d); break;
            case FastOp.SubRR: FastSubRR(ref d); break;
            case FastOp.SubRI: FastSubRI(ref d); break;
            case FastOp.SubRM: FastSubRM(ref d); break;
            case FastOp.CmpRR: FastCmpRR(ref d); break;
            case FastOp.CmpRI: FastCmpRI(ref d); break;
            case FastOp.CmpRM: FastCmpRM(ref d); break;
            case FastOp.CmpMR: FastCmpMR(ref d); break;
            case FastOp.CmpMI: FastCmpMI(ref d); break;
            case FastOp.AndRR: FastAndRR(ref d); break;
            case FastOp.AndRI: FastAndRI(ref d); break;
            case FastOp.OrRR: FastOrRR(ref d); break;
            case FastOp.OrRI: FastOrRI(ref d); break;
            case FastOp.XorRR: FastXorRR(ref d); break;
            case FastOp.XorRI: FastXorRI(ref d); break;
            case FastOp.TestRR: FastTestRR(ref d); break;
            case FastOp.TestRI: FastTestRI(ref d); break;
            case FastOp.IncR: FastIncR(ref d); break;
            case FastOp.DecR: FastDecR(ref d); break;
            case FastOp.LeaR: FastLeaR(ref d); break;
            case FastOp.Jcc: FastJcc(ref d); break;
            case FastOp.JmpNear: FastJmpNear(ref d); break;
            case FastOp.ShlRI: FastShlRI(ref d); break;
            case FastOp.ShrRI: FastShrRI(ref d); break;
            case FastOp.SarRI: FastSarRI(ref d); break;
            case FastOp.RolRI: FastRolRI(ref d); break;
            case FastOp.RorRI: FastRorRI(ref d); break;
            case FastOp.PushR: FastPushR(ref d); break;
            case FastOp.PopR: FastPopR(ref d); break;
            case FastOp.MovzxRM: FastMovzxRM(ref d); break;
            case FastOp.ImulRRI: FastImulRRI(ref d); break;
            case FastOp.ImulRR: FastImulRR(ref d); break;
            default: d.Handler(this, ref d); break;
        }
    }

    // ---------------------------------------------------------------- MOV / MOVZX / LEA

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastMovRR(ref DecodedInsn d) => OpMovRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpMovRR(int r0, int r1) => _gpr[r0] = _gpr[r1];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastMovRI(ref DecodedInsn d) => OpMovRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpMovRI(int r0, uint imm) => _gpr[r0] = imm;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastMovRM(ref DecodedInsn d) => OpMovRM(d.Reg0 & 7, d.Seg, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpMovRM(int r0, int seg, uint ea)
    {
        uint v = ReadSeg(seg, ea, 4);
        if (!Faulted) _gpr[r0] = v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastMovMR(ref DecodedInsn d) => OpMovMR(d.Reg1 & 7, d.Seg, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpMovMR(int r1, int seg, uint ea) => WriteSeg(seg, ea, 4, _gpr[r1]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastMovMI(ref DecodedInsn d) => OpMovMI(d.Seg, EffectiveAddress(ref d), d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpMovMI(int seg, uint ea, uint imm) => WriteSeg(seg, ea, 4, imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastMovzxRM(ref DecodedInsn d)
    {
        // The generic MOVZX: the source (8 or 16 bits, register or memory) zero-extended into r32.
        uint v = ReadOp1(ref d);
        if (!Faulted) _gpr[d.Reg0 & 7] = v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastLeaR(ref DecodedInsn d) => OpLeaR(d.Reg0 & 7, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpLeaR(int r0, uint ea) => _gpr[r0] = ea;

    // ---------------------------------------------------------------- ALU

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastAddRR(ref DecodedInsn d) => OpAddRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpAddRR(int r0, int r1) { uint a = _gpr[r0], b = _gpr[r1], r = a + b; _gpr[r0] = r; FlagsAdd(a, b, r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastAddRI(ref DecodedInsn d) => OpAddRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpAddRI(int r0, uint imm) { uint a = _gpr[r0], b = imm, r = a + b; _gpr[r0] = r; FlagsAdd(a, b, r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastAddRM(ref DecodedInsn d) => OpAddRM(d.Reg0 & 7, d.Seg, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpAddRM(int r0, int seg, uint ea)
    {
        uint b = ReadSeg(seg, ea, 4);
        if (Faulted) return;
        uint a = _gpr[r0], r = a + b;
        _gpr[r0] = r;
        FlagsAdd(a, b, r, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastSubRR(ref DecodedInsn d) => OpSubRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpSubRR(int r0, int r1) { uint a = _gpr[r0], b = _gpr[r1], r = a - b; _gpr[r0] = r; FlagsSub(a, b, r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastSubRI(ref DecodedInsn d) => OpSubRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpSubRI(int r0, uint imm) { uint a = _gpr[r0], b = imm, r = a - b; _gpr[r0] = r; FlagsSub(a, b, r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastSubRM(ref DecodedInsn d) => OpSubRM(d.Reg0 & 7, d.Seg, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpSubRM(int r0, int seg, uint ea)
    {
        uint b = ReadSeg(seg, ea, 4);
        if (Faulted) return;
        uint a = _gpr[r0], r = a - b;
        _gpr[r0] = r;
        FlagsSub(a, b, r, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastCmpRR(ref DecodedInsn d) => OpCmpRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpCmpRR(int r0, int r1) { uint a = _gpr[r0], b = _gpr[r1]; FlagsSub(a, b, a - b, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastCmpRI(ref DecodedInsn d) => OpCmpRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpCmpRI(int r0, uint imm) { uint a = _gpr[r0], b = imm; FlagsSub(a, b, a - b, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastCmpRM(ref DecodedInsn d) => OpCmpRM(d.Reg0 & 7, d.Seg, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpCmpRM(int r0, int seg, uint ea)
    {
        uint b = ReadSeg(seg, ea, 4);
        if (Faulted) return;
        uint a = _gpr[r0];
        FlagsSub(a, b, a - b, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastCmpMR(ref DecodedInsn d) => OpCmpMR(d.Reg1 & 7, d.Seg, EffectiveAddress(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpCmpMR(int r1, int seg, uint ea)
    {
        uint a = ReadSeg(seg, ea, 4);
        if (Faulted) return;
        uint b = _gpr[r1];
        FlagsSub(a, b, a - b, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastCmpMI(ref DecodedInsn d) => OpCmpMI(d.Seg, EffectiveAddress(ref d), d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpCmpMI(int seg, uint ea, uint imm)
    {
        uint a = ReadSeg(seg, ea, 4);
        if (Faulted) return;
        uint b = imm;
        FlagsSub(a, b, a - b, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastAndRR(ref DecodedInsn d) => OpAndRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpAndRR(int r0, int r1) { uint r = _gpr[r0] & _gpr[r1]; _gpr[r0] = r; FlagsLogic(r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastAndRI(ref DecodedInsn d) => OpAndRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpAndRI(int r0, uint imm) { uint r = _gpr[r0] & imm; _gpr[r0] = r; FlagsLogic(r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastOrRR(ref DecodedInsn d) => OpOrRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpOrRR(int r0, int r1) { uint r = _gpr[r0] | _gpr[r1]; _gpr[r0] = r; FlagsLogic(r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastOrRI(ref DecodedInsn d) => OpOrRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpOrRI(int r0, uint imm) { uint r = _gpr[r0] | imm; _gpr[r0] = r; FlagsLogic(r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastXorRR(ref DecodedInsn d) => OpXorRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpXorRR(int r0, int r1) { uint r = _gpr[r0] ^ _gpr[r1]; _gpr[r0] = r; FlagsLogic(r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastXorRI(ref DecodedInsn d) => OpXorRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpXorRI(int r0, uint imm) { uint r = _gpr[r0] ^ imm; _gpr[r0] = r; FlagsLogic(r, 4); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastTestRR(ref DecodedInsn d) => OpTestRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpTestRR(int r0, int r1) => FlagsLogic(_gpr[r0] & _gpr[r1], 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastTestRI(ref DecodedInsn d) => OpTestRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpTestRI(int r0, uint imm) => FlagsLogic(_gpr[r0] & imm, 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastIncR(ref DecodedInsn d) => OpIncR(d.Reg0 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpIncR(int r0) { uint a = _gpr[r0], r = a + 1; _gpr[r0] = r; FlagsIncDec(a, r, 4, dec: false); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastDecR(ref DecodedInsn d) => OpDecR(d.Reg0 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpDecR(int r0) { uint a = _gpr[r0], r = a - 1; _gpr[r0] = r; FlagsIncDec(a, r, 4, dec: true); }

    // IMUL r32, r/m32 (register source) and IMUL r32, r32, imm: CF = OF = the product does not fit
    // in 32 bits; SF/ZF/PF from the low half, AF cleared, as the generic Imul (Arithmetic.cs).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastImulRR(ref DecodedInsn d) => OpImulRR(d.Reg0 & 7, d.Reg1 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpImulRR(int r0, int r1)
    {
        long p = (long)(int)_gpr[r0] * (int)_gpr[r1];
        _gpr[r0] = (uint)p;
        SetLazyFlags((uint)p, ImulCarries(p), 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastImulRRI(ref DecodedInsn d) => OpImulRRI(d.Reg0 & 7, d.Reg1 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpImulRRI(int r0, int r1, uint imm)
    {
        long p = (long)(int)_gpr[r1] * (int)imm;
        _gpr[r0] = (uint)p;
        SetLazyFlags((uint)p, ImulCarries(p), 31);
    }

    // ---------------------------------------------------------------- shifts and rotates by an immediate (Shifts.cs)

    // IMUL's flags as a carry vector (a pure function, shared with translated code); the shifts'
    // come from the generic Shift's own ShiftCarries (Shifts.cs).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint ImulCarries(long p) => ExplicitCarries(31, p != (int)p, p != (int)p, false);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastShlRI(ref DecodedInsn d) => OpShlRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpShlRI(int r0, uint imm)
    {
        int n = (int)(imm & 0x1F);
        if (n == 0) return;
        uint v = _gpr[r0], r = v << n;
        _gpr[r0] = r;
        SetLazyFlags(r, ShiftCarries(ShiftShl, v, (uint)n, 4), 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastShrRI(ref DecodedInsn d) => OpShrRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpShrRI(int r0, uint imm)
    {
        int n = (int)(imm & 0x1F);
        if (n == 0) return;
        uint v = _gpr[r0], r = v >> n;
        _gpr[r0] = r;
        SetLazyFlags(r, ShiftCarries(ShiftShr, v, (uint)n, 4), 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastSarRI(ref DecodedInsn d) => OpSarRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpSarRI(int r0, uint imm)
    {
        int n = (int)(imm & 0x1F);
        if (n == 0) return;
        uint v = _gpr[r0], r = (uint)((int)v >> n);
        _gpr[r0] = r;
        SetLazyFlags(r, ShiftCarries(ShiftSar, v, (uint)n, 4), 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastRolRI(ref DecodedInsn d) => OpRolRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpRolRI(int r0, uint imm)
    {
        int n = (int)(imm & 0x1F);
        if (n == 0) return;
        uint r = BitOperations.RotateLeft(_gpr[r0], n);
        _gpr[r0] = r;
        bool cf = (r & 1) != 0;
        FlagsRotate(cf, ((r >> 31) != 0) ^ cf);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastRorRI(ref DecodedInsn d) => OpRorRI(d.Reg0 & 7, d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpRorRI(int r0, uint imm)
    {
        int n = (int)(imm & 0x1F);
        if (n == 0) return;
        uint r = BitOperations.RotateRight(_gpr[r0], n);
        _gpr[r0] = r;
        FlagsRotate((r >> 31) != 0, (((r << 1) ^ r) >> 31) != 0);
    }

    // ---------------------------------------------------------------- stack and near branches

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastPushR(ref DecodedInsn d) => OpPushR(d.Reg0 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpPushR(int r0) => Push(_gpr[r0], 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastPopR(ref DecodedInsn d) => OpPopR(d.Reg0 & 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpPopR(int r0)
    {
        // As the generic POP: ESP moves before the destination is written (POP ESP loads the value).
        uint v = PeekStack(0, 4);
        if (Faulted) return;
        SetStackPointer(StackPointer + 4);
        _gpr[r0] = v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastJcc(ref DecodedInsn d) => OpJcc(d.Imm, d.Aux);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpJcc(uint imm, int aux)
    {
        if (Condition(aux))
        {
            BranchNear(imm, 4);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FastJmpNear(ref DecodedInsn d) => OpJmpNear(d.Imm);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void OpJmpNear(uint imm) => BranchNear(imm, 4);
}
