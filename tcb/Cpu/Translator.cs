using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using Iced.Intel;
using Label = System.Reflection.Emit.Label;

namespace SecureVmm.Tcb.Cpu;

// Translated instructions inside a compiled block (BlockCompiler.cs). The everyday integer
// instructions (MOV/MOVZX/MOVSX/LEA, the ALU group, INC/DEC/NEG/NOT, shifts and IMUL of the
// specialized forms, SETcc, CMOVcc) become IL on locals: the eight guest registers and the lazy
// flags (result and carry vector; the sign bit's index is known when the code is emitted) are
// loaded into locals when the block starts and stored back only where something else needs
// them: before any other instruction (which then runs as before, through its handler), at the
// block's end, and on a side exit. The semantics are the interpreter's own: the same operand
// reads and writes as ReadOp0/ReadOp1/WriteOp0, and the flag functions of Flags.cs and
// FastPaths.cs, which both share.
//
// Memory operands use only the soft TLB's fast path (SegCheckFast + TryReadRam/TryWriteRam),
// which has no side effects. Anything else (a TLB miss, MMIO, a segment violation, a write to a
// page holding code) is a side exit: the registers and flags as they were before the instruction
// are stored, the count is brought up to it, and the run loop interprets the rest of the block
// from that instruction, so the slow path, fault or exit happens exactly as in the interpreter.
// An instruction's memory accesses all come before its register and flag updates, so a side exit
// never needs to undo anything.
//
// A block that is translated whole and ends with a branch back to its own start loops inside the
// compiled method, with the registers still in locals, after making the checks the run loop
// makes between two runs of a block (budget, events, pending interrupts, TF, the interrupt
// shadow, and the block's page not rewritten).
public sealed partial class Cpu
{
    private enum Native : byte { None, Mov, Extend, Lea, Alu, Unary, Shift, Imul, Setcc, Cmovcc }

    private static readonly bool[] s_setcc = MnemonicSet("Set");
    private static readonly bool[] s_cmovcc = MnemonicSet("Cmov");

    private static bool[] MnemonicSet(string prefix)
    {
        var set = new bool[Enum.GetValues<Mnemonic>().Length];
        foreach (var m in Enum.GetValues<Mnemonic>())
        {
            set[(int)m] = ConditionOf(m) >= 0 && m.ToString().StartsWith(prefix, StringComparison.Ordinal);
        }
        return set;
    }

    private static bool IsGpr(byte kind, byte reg) => kind == OpKindCode.Reg && reg < 32;

    private static bool IsGprOrMem(byte kind, byte reg) => IsGpr(kind, reg) || kind == OpKindCode.Mem;

    /// <summary>How an instruction is translated, or <see cref="Native.None"/> for a handler call.</summary>
    private static Native Classify(ref DecodedInsn d)
    {
        if (d.I.IsStringInstruction || d.OpSize is not (1 or 2 or 4))
        {
            return Native.None;
        }
        int n = d.I.OpCount;
        bool twoOperands = n == 2 && IsGprOrMem(d.Kind0, d.Reg0)
            && (IsGprOrMem(d.Kind1, d.Reg1) || d.Kind1 == OpKindCode.Imm)
            && !(d.Kind0 == OpKindCode.Mem && d.Kind1 == OpKindCode.Mem);
        var m = d.I.Mnemonic;
        switch (m)
        {
            case Mnemonic.Mov:
                return twoOperands ? Native.Mov : Native.None;
            case Mnemonic.Movzx or Mnemonic.Movsx:
                return n == 2 && IsGpr(d.Kind0, d.Reg0) && IsGprOrMem(d.Kind1, d.Reg1) && d.SrcSize is 1 or 2 ? Native.Extend : Native.None;
            case Mnemonic.Lea:
                return d.Fast == FastOp.LeaR ? Native.Lea : Native.None;
            case Mnemonic.Add or Mnemonic.Adc or Mnemonic.Sub or Mnemonic.Sbb or Mnemonic.Cmp
                or Mnemonic.And or Mnemonic.Or or Mnemonic.Xor or Mnemonic.Test:
                return twoOperands ? Native.Alu : Native.None;
            case Mnemonic.Inc or Mnemonic.Dec or Mnemonic.Neg or Mnemonic.Not:
                return n == 1 && IsGprOrMem(d.Kind0, d.Reg0) ? Native.Unary : Native.None;
        }
        if (d.Fast is FastOp.ShlRI or FastOp.ShrRI or FastOp.SarRI)
        {
            return Native.Shift;
        }
        if (d.Fast is FastOp.ImulRR or FastOp.ImulRRI)
        {
            return Native.Imul;
        }
        if (s_setcc[(int)m] && n == 1 && IsGprOrMem(d.Kind0, d.Reg0) && d.OpSize == 1)
        {
            return Native.Setcc;
        }
        if (s_cmovcc[(int)m] && n == 2 && IsGpr(d.Kind0, d.Reg0) && IsGprOrMem(d.Kind1, d.Reg1))
        {
            return Native.Cmovcc;
        }
        return Native.None;
    }

    /// <summary>The side-exit sentinel of <see cref="JitRead"/> (no 32-bit value has it).</summary>
    internal const ulong JitMiss = 1UL << 32;

    /// <summary>A read on the fast path only: the value, or <see cref="JitMiss"/> with nothing done.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong JitRead(int seg, uint offset, int size) =>
        SegCheckFast(seg, offset, size, false, out uint lin) && TryReadRam(lin, size, out uint v) ? v : JitMiss;

    /// <summary>A write on the fast path only: false with nothing done.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool JitWrite(int seg, uint offset, int size, uint value) =>
        SegCheckFast(seg, offset, size, true, out uint lin) && TryWriteRam(lin, size, value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetGprValue(int r, uint value) => _gpr[r] = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Bit(bool b) => b ? 1u : 0u;

    /// <summary>Side exit: the count up to the instruction the run loop goes on with.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void JitRetired(int retired) => _icount += retired;

    /// <summary>
    /// The end of one run of a self-looping block, taken branch: counts it, and says whether the
    /// run loop would run the same compiled block again right away (ExecuteBlock and FetchBlock:
    /// no event, budget left for a whole run, no interrupt to take, no TF or shadow, page unchanged).
    /// </summary>
    private bool JitLoopAgain(int count, uint page, uint generation)
    {
        _icount += count;
        return _event == 0 && _icount + count <= _budgetEnd && !_halted && _compileThreshold > 0
            && (_eflags & EflagsBits.TF) == 0 && _shadowAt != _icount && _pageGeneration[page] == generation
            && !((_eflags & EflagsBits.IF) != 0 && Interrupts is { HasPending: true });
    }

    private static readonly MethodInfo s_jitRead = Method(nameof(JitRead));
    private static readonly MethodInfo s_jitWrite = Method(nameof(JitWrite));
    private static readonly MethodInfo s_setGpr = Method(nameof(SetGprValue));
    private static readonly MethodInfo s_setLazyFlags = Method(nameof(SetLazyFlags));
    private static readonly MethodInfo s_condition = Method(nameof(Condition));
    private static readonly MethodInfo s_jitRetired = Method(nameof(JitRetired));
    private static readonly MethodInfo s_jitLoopAgain = Method(nameof(JitLoopAgain));
    private static readonly MethodInfo s_lazyCondition = Static(nameof(LazyCondition));
    private static readonly MethodInfo s_bit = Static(nameof(Bit));
    private static readonly MethodInfo s_addCarries = Static(nameof(AddCarries));
    private static readonly MethodInfo s_subCarries = Static(nameof(SubCarries));
    private static readonly MethodInfo s_incDecCarries = Static(nameof(IncDecCarries));
    private static readonly MethodInfo s_imulCarries = Static(nameof(ImulCarries));
    private static readonly MethodInfo s_shlCarries = Static(nameof(ShlCarries));
    private static readonly MethodInfo s_shrCarries = Static(nameof(ShrCarries));
    private static readonly MethodInfo s_sarCarries = Static(nameof(SarCarries));

    private static MethodInfo Static(string name) =>
        typeof(Cpu).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)
        ?? throw new InvalidOperationException($"Cpu.{name} not found");

    /// <summary>The emitter's state for one block: where registers and flags live at this point of the code.</summary>
    private sealed class Translation
    {
        private readonly ILGenerator _il;
        private readonly LocalBuilder[] _reg = new LocalBuilder[8];
        private readonly LocalBuilder _a, _b, _res, _ea, _wide, _product, _flagResult, _flagCarries;
        private readonly List<(Label Label, int Index, uint Dirty, bool FlagsLocal, int Top, int Synced)> _exits = [];

        /// <summary>Registers whose locals may differ from the CPU's copy.</summary>
        public uint Dirty;
        /// <summary>Whether the lazy flags live in the locals (with sign bit <see cref="Top"/>) rather than in the CPU.</summary>
        public bool FlagsLocal;
        public int Top;
        /// <summary>Instructions before this index are counted in the CPU's count.</summary>
        public int Synced;

        public Translation(ILGenerator il)
        {
            _il = il;
            for (int r = 0; r < 8; r++)
            {
                _reg[r] = il.DeclareLocal(typeof(uint));
            }
            _a = il.DeclareLocal(typeof(uint));
            _b = il.DeclareLocal(typeof(uint));
            _res = il.DeclareLocal(typeof(uint));
            _ea = il.DeclareLocal(typeof(uint));
            _wide = il.DeclareLocal(typeof(ulong));
            _product = il.DeclareLocal(typeof(long));
            _flagResult = il.DeclareLocal(typeof(uint));
            _flagCarries = il.DeclareLocal(typeof(uint));
        }

        /// <summary>Loads the guest registers into the locals (they then match the CPU's).</summary>
        public void LoadRegisters()
        {
            for (int r = 0; r < 8; r++)
            {
                _il.Emit(OpCodes.Ldarg_0);
                _il.Emit(OpCodes.Ldc_I4, r);
                _il.Emit(OpCodes.Call, s_gpr);
                _il.Emit(OpCodes.Stloc, _reg[r]);
            }
            Dirty = 0;
        }

        /// <summary>Stores what the locals hold that the CPU lacks; afterwards the CPU is current.</summary>
        public void Sync()
        {
            Store(Dirty, FlagsLocal, Top);
            Dirty = 0;
            FlagsLocal = false;
        }

        private void Store(uint dirty, bool flagsLocal, int top)
        {
            for (int r = 0; r < 8; r++)
            {
                if ((dirty & (1u << r)) != 0)
                {
                    _il.Emit(OpCodes.Ldarg_0);
                    _il.Emit(OpCodes.Ldc_I4, r);
                    _il.Emit(OpCodes.Ldloc, _reg[r]);
                    _il.Emit(OpCodes.Call, s_setGpr);
                }
            }
            if (flagsLocal)
            {
                _il.Emit(OpCodes.Ldarg_0);
                _il.Emit(OpCodes.Ldloc, _flagResult);
                _il.Emit(OpCodes.Ldloc, _flagCarries);
                _il.Emit(OpCodes.Ldc_I4, top);
                _il.Emit(OpCodes.Call, s_setLazyFlags);
            }
        }

        /// <summary>A side exit before instruction <paramref name="index"/>, with the state as it is now.</summary>
        private Label SideExit(int index)
        {
            var label = _il.DefineLabel();
            _exits.Add((label, index, Dirty, FlagsLocal, Top, Synced));
            return label;
        }

        /// <summary>The side exits' code, after the block's: store, count, hand the instruction to the run loop.</summary>
        public void EmitSideExits()
        {
            foreach (var e in _exits)
            {
                _il.MarkLabel(e.Label);
                Store(e.Dirty, e.FlagsLocal, e.Top);
                _il.Emit(OpCodes.Ldarg_0);
                _il.Emit(OpCodes.Ldc_I4, e.Index - e.Synced);
                _il.Emit(OpCodes.Call, s_jitRetired);
                _il.Emit(OpCodes.Ldc_I4, e.Index);
                _il.Emit(OpCodes.Ret);
            }
        }

        // ------------------------------------------------------------ operands

        /// <summary>Pushes a register operand as ReadReg reads it (register code: number | width &lt;&lt; 3).</summary>
        private void LoadReg(byte code)
        {
            _il.Emit(OpCodes.Ldloc, _reg[code & 7]);
            switch (code >> 3)
            {
                case 1: And(0xFFFF); break;
                case 2: And(0xFF); break;
                case 3:
                    _il.Emit(OpCodes.Ldc_I4_8);
                    _il.Emit(OpCodes.Shr_Un);
                    And(0xFF);
                    break;
            }
        }

        /// <summary>Pops a value into a register as WriteReg writes it.</summary>
        private void StoreReg(byte code)
        {
            var r = _reg[code & 7];
            Dirty |= 1u << (code & 7);
            if (code >> 3 == 0)
            {
                _il.Emit(OpCodes.Stloc, r);
                return;
            }
            (uint keep, uint mask, int shift) = (code >> 3) switch
            {
                1 => (0xFFFF_0000u, 0xFFFFu, 0),
                2 => (0xFFFF_FF00u, 0xFFu, 0),
                _ => (0xFFFF_00FFu, 0xFFu, 8),
            };
            And(mask);
            if (shift != 0)
            {
                _il.Emit(OpCodes.Ldc_I4, shift);
                _il.Emit(OpCodes.Shl);
            }
            _il.Emit(OpCodes.Ldloc, r);
            And(keep);
            _il.Emit(OpCodes.Or);
            _il.Emit(OpCodes.Stloc, r);
        }

        private void And(uint mask)
        {
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)mask));
            _il.Emit(OpCodes.And);
        }

        /// <summary>Computes the effective address (as EffectiveAddress) into the address local.</summary>
        private void EffectiveAddress(ref DecodedInsn d)
        {
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)d.Disp));
            if (d.Base != NoReg)
            {
                _il.Emit(OpCodes.Ldloc, _reg[d.Base & 7]);
                _il.Emit(OpCodes.Add);
            }
            if (d.Index != NoReg)
            {
                _il.Emit(OpCodes.Ldloc, _reg[d.Index & 7]);
                _il.Emit(OpCodes.Ldc_I4, (int)d.Scale);
                _il.Emit(OpCodes.Shl);
                _il.Emit(OpCodes.Add);
            }
            if (d.Addr16)
            {
                And(0xFFFF);
            }
            _il.Emit(OpCodes.Stloc, _ea);
        }

        /// <summary>Pushes the value at the effective address, or leaves by the side exit of <paramref name="index"/>.</summary>
        private void ReadMemory(ref DecodedInsn d, int size, int index)
        {
            _il.Emit(OpCodes.Ldarg_0);
            _il.Emit(OpCodes.Ldc_I4, (int)d.Seg);
            _il.Emit(OpCodes.Ldloc, _ea);
            _il.Emit(OpCodes.Ldc_I4, size);
            _il.Emit(OpCodes.Call, s_jitRead);
            _il.Emit(OpCodes.Stloc, _wide);
            _il.Emit(OpCodes.Ldloc, _wide);
            _il.Emit(OpCodes.Ldc_I8, (long)uint.MaxValue);
            _il.Emit(OpCodes.Bgt_Un, SideExit(index));
            _il.Emit(OpCodes.Ldloc, _wide);
            _il.Emit(OpCodes.Conv_U4);
        }

        /// <summary>Writes a local to the effective address, or leaves by the side exit of <paramref name="index"/>.</summary>
        private void WriteMemory(ref DecodedInsn d, int size, LocalBuilder value, int index)
        {
            _il.Emit(OpCodes.Ldarg_0);
            _il.Emit(OpCodes.Ldc_I4, (int)d.Seg);
            _il.Emit(OpCodes.Ldloc, _ea);
            _il.Emit(OpCodes.Ldc_I4, size);
            _il.Emit(OpCodes.Ldloc, value);
            _il.Emit(OpCodes.Call, s_jitWrite);
            _il.Emit(OpCodes.Brfalse, SideExit(index));
        }

        /// <summary>Pushes operand 0 (register or memory, OpSize) as ReadOp0.</summary>
        private void ReadOp0(ref DecodedInsn d, int index)
        {
            if (d.Kind0 == OpKindCode.Mem)
            {
                ReadMemory(ref d, d.OpSize, index);
            }
            else
            {
                LoadReg(d.Reg0);
            }
        }

        /// <summary>Pushes operand 1 (register, memory of SrcSize, or the immediate) as ReadOp1.</summary>
        private void ReadOp1(ref DecodedInsn d, int index)
        {
            if (d.Kind1 == OpKindCode.Mem)
            {
                ReadMemory(ref d, d.SrcSize, index);
            }
            else if (d.Kind1 == OpKindCode.Reg)
            {
                LoadReg(d.Reg1);
            }
            else
            {
                _il.Emit(OpCodes.Ldc_I4, unchecked((int)d.Imm));
            }
        }

        /// <summary>Writes a local to operand 0 as WriteOp0.</summary>
        private void WriteOp0(ref DecodedInsn d, LocalBuilder value, int index)
        {
            if (d.Kind0 == OpKindCode.Mem)
            {
                WriteMemory(ref d, d.OpSize, value, index);
            }
            else
            {
                _il.Emit(OpCodes.Ldloc, value);
                StoreReg(d.Reg0);
            }
        }

        /// <summary>Pushes condition <paramref name="cc"/> (as Condition) from wherever the flags are.</summary>
        private void Condition(int cc)
        {
            if (FlagsLocal)
            {
                _il.Emit(OpCodes.Ldc_I4, cc);
                _il.Emit(OpCodes.Ldloc, _flagResult);
                _il.Emit(OpCodes.Ldloc, _flagCarries);
                _il.Emit(OpCodes.Ldc_I4, Top);
                _il.Emit(OpCodes.Call, s_lazyCondition);
            }
            else
            {
                _il.Emit(OpCodes.Ldarg_0);
                _il.Emit(OpCodes.Ldc_I4, cc);
                _il.Emit(OpCodes.Call, s_condition);
            }
        }

        private const int ConditionCarry = 2; // "B": CF

        /// <summary>Sets the local flags to the masked result local and a carry vector computed by <paramref name="carries"/>.</summary>
        private void SetFlags(int size, Action carries)
        {
            // The carry vector first: it may read the flags as they were (INC/DEC keep CF).
            carries();
            _il.Emit(OpCodes.Stloc, _flagCarries);
            _il.Emit(OpCodes.Ldloc, _res);
            And(SizeMask(size));
            _il.Emit(OpCodes.Stloc, _flagResult);
            FlagsLocal = true;
            Top = size * 8 - 1;
        }

        /// <summary>Pushes the masked result (the carry vectors of FlagsAdd/FlagsSub take it masked).</summary>
        private void MaskedResult(int size)
        {
            _il.Emit(OpCodes.Ldloc, _res);
            And(SizeMask(size));
        }

        private void Arithmetic(MethodInfo carries, LocalBuilder a, LocalBuilder b, int size) => SetFlags(size, () =>
        {
            _il.Emit(OpCodes.Ldloc, a);
            _il.Emit(OpCodes.Ldloc, b);
            MaskedResult(size);
            _il.Emit(OpCodes.Call, carries);
        });

        private void Logic(int size) => SetFlags(size, () => _il.Emit(OpCodes.Ldc_I4_0));

        // ------------------------------------------------------------ instructions

        /// <summary>Emits instruction <paramref name="index"/> of the block if it is translated; false if it needs its handler.</summary>
        public bool TryEmit(ref DecodedInsn d, int index)
        {
            switch (Classify(ref d))
            {
                case Native.Mov: Mov(ref d, index); return true;
                case Native.Extend: Extend(ref d, index); return true;
                case Native.Lea:
                    EffectiveAddress(ref d);
                    _il.Emit(OpCodes.Ldloc, _ea);
                    StoreReg(d.Reg0);
                    return true;
                case Native.Alu: Alu(ref d, index); return true;
                case Native.Unary: Unary(ref d, index); return true;
                case Native.Shift: Shift(ref d); return true;
                case Native.Imul: Imul(ref d); return true;
                case Native.Setcc: Setcc(ref d, index); return true;
                case Native.Cmovcc: Cmovcc(ref d, index); return true;
                default: return false;
            }
        }

        private void Mov(ref DecodedInsn d, int index)
        {
            if (d.Kind0 == OpKindCode.Mem || d.Kind1 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            ReadOp1(ref d, index);
            _il.Emit(OpCodes.Stloc, _res);
            WriteOp0(ref d, _res, index);
        }

        private void Extend(ref DecodedInsn d, int index)
        {
            if (d.Kind1 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            ReadOp1(ref d, index);
            if (d.I.Mnemonic == Mnemonic.Movsx)
            {
                _il.Emit(d.SrcSize == 1 ? OpCodes.Conv_I1 : OpCodes.Conv_I2);
            }
            StoreReg(d.Reg0);
        }

        private void Alu(ref DecodedInsn d, int index)
        {
            var m = d.I.Mnemonic;
            int size = d.OpSize;
            if (d.Kind0 == OpKindCode.Mem || d.Kind1 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            ReadOp0(ref d, index);
            _il.Emit(OpCodes.Stloc, _a);
            ReadOp1(ref d, index);
            _il.Emit(OpCodes.Stloc, _b);
            _il.Emit(OpCodes.Ldloc, _a);
            _il.Emit(OpCodes.Ldloc, _b);
            _il.Emit(m switch
            {
                Mnemonic.Add or Mnemonic.Adc => OpCodes.Add,
                Mnemonic.Sub or Mnemonic.Sbb or Mnemonic.Cmp => OpCodes.Sub,
                Mnemonic.And or Mnemonic.Test => OpCodes.And,
                Mnemonic.Or => OpCodes.Or,
                _ => OpCodes.Xor,
            });
            if (m is Mnemonic.Adc or Mnemonic.Sbb)
            {
                Condition(ConditionCarry);
                _il.Emit(OpCodes.Call, s_bit);
                _il.Emit(m == Mnemonic.Adc ? OpCodes.Add : OpCodes.Sub);
            }
            _il.Emit(OpCodes.Stloc, _res);
            if (m is not (Mnemonic.Cmp or Mnemonic.Test))
            {
                WriteOp0(ref d, _res, index);
            }
            switch (m)
            {
                case Mnemonic.Add or Mnemonic.Adc: Arithmetic(s_addCarries, _a, _b, size); break;
                case Mnemonic.Sub or Mnemonic.Sbb or Mnemonic.Cmp: Arithmetic(s_subCarries, _a, _b, size); break;
                default: Logic(size); break;
            }
        }

        private void Unary(ref DecodedInsn d, int index)
        {
            var m = d.I.Mnemonic;
            int size = d.OpSize;
            if (d.Kind0 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            ReadOp0(ref d, index);
            _il.Emit(OpCodes.Stloc, _a);
            switch (m)
            {
                case Mnemonic.Inc or Mnemonic.Dec:
                    _il.Emit(OpCodes.Ldloc, _a);
                    _il.Emit(OpCodes.Ldc_I4_1);
                    _il.Emit(m == Mnemonic.Inc ? OpCodes.Add : OpCodes.Sub);
                    break;
                case Mnemonic.Neg:
                    _il.Emit(OpCodes.Ldc_I4_0);
                    _il.Emit(OpCodes.Ldloc, _a);
                    _il.Emit(OpCodes.Sub);
                    break;
                default:
                    _il.Emit(OpCodes.Ldloc, _a);
                    _il.Emit(OpCodes.Not);
                    break;
            }
            _il.Emit(OpCodes.Stloc, _res);
            WriteOp0(ref d, _res, index);
            switch (m)
            {
                case Mnemonic.Inc or Mnemonic.Dec:
                    SetFlags(size, () =>
                    {
                        _il.Emit(OpCodes.Ldloc, _a);
                        MaskedResult(size);
                        _il.Emit(OpCodes.Ldc_I4, size * 8 - 1);
                        _il.Emit(m == Mnemonic.Dec ? OpCodes.Ldc_I4_1 : OpCodes.Ldc_I4_0);
                        Condition(ConditionCarry);
                        _il.Emit(OpCodes.Call, s_incDecCarries);
                    });
                    break;
                case Mnemonic.Neg:
                    // FlagsSub(0, a, r): the subtrahend is the operand.
                    _il.Emit(OpCodes.Ldc_I4_0);
                    _il.Emit(OpCodes.Stloc, _b);
                    Arithmetic(s_subCarries, _b, _a, size);
                    break;
            }
        }

        private void Shift(ref DecodedInsn d)
        {
            int n = (int)(d.Imm & 0x1F);
            if (n == 0)
            {
                return; // no change, flags included (as OpShlRI and the others)
            }
            var r = _reg[d.Reg0 & 7];
            _il.Emit(OpCodes.Ldloc, r);
            _il.Emit(OpCodes.Stloc, _a);
            _il.Emit(OpCodes.Ldloc, _a);
            _il.Emit(OpCodes.Ldc_I4, n);
            _il.Emit(d.Fast switch { FastOp.ShlRI => OpCodes.Shl, FastOp.ShrRI => OpCodes.Shr_Un, _ => OpCodes.Shr });
            _il.Emit(OpCodes.Stloc, _res);
            _il.Emit(OpCodes.Ldloc, _res);
            StoreReg((byte)(d.Reg0 & 7));
            var carries = d.Fast switch { FastOp.ShlRI => s_shlCarries, FastOp.ShrRI => s_shrCarries, _ => s_sarCarries };
            SetFlags(4, () =>
            {
                _il.Emit(OpCodes.Ldloc, _a);
                _il.Emit(OpCodes.Ldc_I4, n);
                _il.Emit(OpCodes.Call, carries);
            });
        }

        private void Imul(ref DecodedInsn d)
        {
            if (d.Fast == FastOp.ImulRR)
            {
                _il.Emit(OpCodes.Ldloc, _reg[d.Reg0 & 7]);
                _il.Emit(OpCodes.Conv_I8);
                _il.Emit(OpCodes.Ldloc, _reg[d.Reg1 & 7]);
                _il.Emit(OpCodes.Conv_I8);
            }
            else
            {
                _il.Emit(OpCodes.Ldloc, _reg[d.Reg1 & 7]);
                _il.Emit(OpCodes.Conv_I8);
                _il.Emit(OpCodes.Ldc_I8, (long)(int)d.Imm);
            }
            _il.Emit(OpCodes.Mul);
            _il.Emit(OpCodes.Stloc, _product);
            _il.Emit(OpCodes.Ldloc, _product);
            _il.Emit(OpCodes.Conv_U4);
            _il.Emit(OpCodes.Stloc, _res);
            _il.Emit(OpCodes.Ldloc, _res);
            StoreReg((byte)(d.Reg0 & 7));
            SetFlags(4, () =>
            {
                _il.Emit(OpCodes.Ldloc, _product);
                _il.Emit(OpCodes.Call, s_imulCarries);
            });
        }

        private void Setcc(ref DecodedInsn d, int index)
        {
            Condition(d.Aux);
            _il.Emit(OpCodes.Call, s_bit);
            _il.Emit(OpCodes.Stloc, _res);
            if (d.Kind0 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            WriteOp0(ref d, _res, index);
        }

        private void Cmovcc(ref DecodedInsn d, int index)
        {
            // The source is read whatever the condition (a bad memory operand faults either way).
            if (d.Kind1 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            ReadOp1(ref d, index);
            _il.Emit(OpCodes.Stloc, _res);
            var skip = _il.DefineLabel();
            Condition(d.Aux);
            _il.Emit(OpCodes.Brfalse, skip);
            _il.Emit(OpCodes.Ldloc, _res);
            StoreReg(d.Reg0);
            _il.MarkLabel(skip);
        }

        /// <summary>
        /// The end of a self-looping block: the branch back (condition <paramref name="cc"/>, or
        /// always when negative) loops to <paramref name="head"/> while JitLoopAgain allows; the
        /// block then ends with the state stored and EIP at the target or the next instruction.
        /// </summary>
        public void LoopEnd(Block block, ref DecodedInsn branch, int cc, Label head)
        {
            int count = block.Count;
            var notTaken = _il.DefineLabel();
            if (cc >= 0)
            {
                Condition(cc);
                _il.Emit(OpCodes.Brfalse, notTaken);
            }
            // Taken: the flags go back to the CPU at each turn (the loop head expects them there;
            // the registers stay in locals, all counted dirty from the start).
            bool flagsLocal = FlagsLocal;
            int top = Top;
            Store(0, flagsLocal, top);
            _il.Emit(OpCodes.Ldarg_0);
            _il.Emit(OpCodes.Ldc_I4, count);
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)(block.Phys >> 12)));
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)block.Generation));
            _il.Emit(OpCodes.Call, s_jitLoopAgain);
            _il.Emit(OpCodes.Brtrue, head);
            Store(Dirty, false, top);
            EndAt(branch.Imm, 0);
            _il.MarkLabel(notTaken);
            Store(Dirty, flagsLocal, top);
            EndAt(branch.NextEip, count);
        }

        private void EndAt(uint eip, int retired)
        {
            _il.Emit(OpCodes.Ldarg_0);
            _il.Emit(OpCodes.Ldc_I4, retired);
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)eip));
            _il.Emit(OpCodes.Call, s_jitEnd);
            _il.Emit(OpCodes.Ldc_I4, BlockDone);
            _il.Emit(OpCodes.Ret);
        }
    }
}
