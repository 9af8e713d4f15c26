using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using Iced.Intel;
using Label = System.Reflection.Emit.Label;

namespace SecureVmm.Tcb.Cpu;

// Translated instructions inside a compiled block (BlockCompiler.cs). The everyday integer
// instructions (MOV/MOVZX/MOVSX/LEA, the ALU group, INC/DEC/NEG/NOT, SHL/SHR/SAR, IMUL of the
// specialized forms, SETcc, CMOVcc, PUSH/POP r32, NOP/PAUSE, RDTSC, and closing near branches,
// CALLs and RETs) become IL on locals: the eight guest registers and the lazy flags (result and
// carry vector; the sign bit's index is known when the code is emitted) are loaded into locals
// when the block starts and stored back only where something else needs them: before any other
// instruction (which then runs as before, through its handler), at the block's end, and on a side
// exit. The semantics are the interpreter's own: the same operand reads and writes as
// ReadOp0/ReadOp1/WriteOp0, the same flag formulas (Flags.cs; the carry vectors of ADD/SUB and the
// conditions are emitted in place, the others called), the same shift functions (Shifts.cs).
//
// Memory operands use only the soft TLB's fast path, emitted in place with exactly the checks of
// SegCheckFast and TryReadRam/TryWriteRam (Mmu.cs), which have no side effects. Anything else (a
// TLB miss, MMIO, a segment violation, a write to a page holding code, a 16-bit stack, a branch
// target beyond CS's limit) is a side exit: the registers and flags as they were before the
// instruction are stored, the count is brought up to it, and the run loop interprets the rest of
// the block from that instruction, so the slow path, fault or exit happens exactly as in the
// interpreter. An instruction's memory accesses all come before its register and flag updates,
// so a side exit never needs to undo anything.
//
// A block translated whole that branches back to its own start (a loop) runs its next turn
// inside the compiled method, registers still in locals, after the checks the run loop makes
// between two runs of a block (JitLoopAgain: budget, events, pending interrupts, TF, the
// interrupt shadow, the block's page not rewritten).
public sealed partial class Cpu
{
    private enum Native : byte { None, Mov, Extend, Lea, Alu, Unary, Shift, Imul, Setcc, Cmovcc, Push, Pop, Nop, Rdtsc }

    private const byte RegCl = 16 | 1; // the register code of CL

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
            case Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar:
                return n == 2 && IsGprOrMem(d.Kind0, d.Reg0) && (d.Kind1 == OpKindCode.Imm || (d.Kind1 == OpKindCode.Reg && d.Reg1 == RegCl))
                    ? Native.Shift : Native.None;
            case Mnemonic.Nop or Mnemonic.Pause:
                return Native.Nop;
            case Mnemonic.Rdtsc:
                return Native.Rdtsc;
        }
        if (d.Fast == FastOp.PushR)
        {
            return Native.Push;
        }
        if (d.Fast == FastOp.PopR)
        {
            return Native.Pop;
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

    /// <summary>Side exit: the count up to the instruction the run loop goes on with.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void JitRetired(int retired) => _icount += retired;

    /// <summary>
    /// The end of one run of a block that branches back to its own start: counts it, and says
    /// whether the run loop would run the same compiled block again right away (ExecuteBlock and
    /// FetchBlock: no event, budget left for a whole run, no interrupt to take, no TF or shadow,
    /// the block's page not rewritten since it was decoded).
    /// </summary>
    private bool JitLoopAgain(int count, uint page, uint generation)
    {
        _icount += count;
        return _event == 0 && _icount + count <= _budgetEnd && !_halted && _compileThreshold > 0
            && (_eflags & EflagsBits.TF) == 0 && _shadowAt != _icount && _pageGeneration[page] == generation
            && !((_eflags & EflagsBits.IF) != 0 && Interrupts is { HasPending: true });
    }

    /// <summary>Whether the stack is ESP-addressed (SS.B): translated PUSH/POP/CALL/RET handle only that stack.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool JitStackBig() => _seg[(int)SegReg.Ss].Big;

    /// <summary>Whether RDTSC may run (else it raises #GP, which the interpreter delivers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool JitRdtscAllowed() => !((_cr4 & ControlBits.Cr4TSD) != 0 && _cpl != 0 && ProtectedMode);

    /// <summary>RDTSC's value with <paramref name="pending"/> instructions retired but not yet counted.</summary>
    private ulong JitTsc(int pending) => TscAt(_icount + pending);

    /// <summary>Whether a near branch's target is within CS's limit (else BranchNear raises #GP).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool JitTargetOk(uint target) => target <= _seg[(int)SegReg.Cs].Limit;

    private static readonly FieldInfo s_segField = Field(nameof(_seg));
    private static readonly FieldInfo s_tlbField = Field(nameof(_tlb));
    private static readonly FieldInfo s_ramField = Field(nameof(_ram));
    private static readonly FieldInfo s_permReadField = Field(nameof(_permRead));
    private static readonly FieldInfo s_permWriteField = Field(nameof(_permWrite));
    private static readonly FieldInfo s_rightsField = typeof(SegmentCache).GetField(nameof(SegmentCache.Rights), BindingFlags.Instance | BindingFlags.NonPublic)!;
    private static readonly FieldInfo s_limitField = typeof(SegmentCache).GetField(nameof(SegmentCache.Limit))!;
    private static readonly FieldInfo s_baseField = typeof(SegmentCache).GetField(nameof(SegmentCache.Base))!;
    private static readonly FieldInfo s_tagField = typeof(TlbEntry).GetField(nameof(TlbEntry.Tag))!;
    private static readonly FieldInfo s_pageField = typeof(TlbEntry).GetField(nameof(TlbEntry.Page))!;
    private static readonly FieldInfo s_permField = typeof(TlbEntry).GetField(nameof(TlbEntry.Perm))!;
    private static readonly MethodInfo s_popCount = typeof(System.Numerics.BitOperations).GetMethod(nameof(System.Numerics.BitOperations.PopCount), [typeof(uint)])!;
    private static readonly FieldInfo s_gprField = Field(nameof(_gpr));
    private static readonly FieldInfo s_lfResultField = Field(nameof(_lfResult));
    private static readonly FieldInfo s_lfCarriesField = Field(nameof(_lfCarries));
    private static readonly FieldInfo s_lfTopField = Field(nameof(_lfTop));
    private static readonly FieldInfo s_lfLazyField = Field(nameof(_lfLazy));
    private static readonly MethodInfo s_condition = Method(nameof(Condition));
    private static readonly MethodInfo s_jitRetired = Method(nameof(JitRetired));
    private static readonly MethodInfo s_jitLoopAgain = Method(nameof(JitLoopAgain));
    private static readonly MethodInfo s_jitTargetOk = Method(nameof(JitTargetOk));
    private static readonly MethodInfo s_jitStackBig = Method(nameof(JitStackBig));
    private static readonly MethodInfo s_jitRdtscAllowed = Method(nameof(JitRdtscAllowed));
    private static readonly MethodInfo s_jitTsc = Method(nameof(JitTsc));
    private static readonly MethodInfo s_shiftResult = Static(nameof(ShiftResult));
    private static readonly MethodInfo s_shiftCarries = Static(nameof(ShiftCarries));
    private static readonly MethodInfo s_incDecCarries = Static(nameof(IncDecCarries));
    private static readonly MethodInfo s_imulCarries = Static(nameof(ImulCarries));

    private static FieldInfo Field(string name) =>
        typeof(Cpu).GetField(name, BindingFlags.Instance | BindingFlags.NonPublic)
        ?? throw new InvalidOperationException($"Cpu.{name} not found");

    private static MethodInfo Static(string name) =>
        typeof(Cpu).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)
        ?? throw new InvalidOperationException($"Cpu.{name} not found");

    /// <summary>The emitter's state for one block: where registers and flags live at this point of the code.</summary>
    private sealed class Translation
    {
        private readonly ILGenerator _il;
        private readonly LocalBuilder[] _reg = new LocalBuilder[8];
        private readonly LocalBuilder _a, _b, _res, _ea, _linear, _segment, _entry, _product, _flagResult, _flagCarries;
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
            _linear = il.DeclareLocal(typeof(uint));
            _segment = il.DeclareLocal(typeof(SegmentCache).MakeByRefType());
            _entry = il.DeclareLocal(typeof(TlbEntry).MakeByRefType());
            _product = il.DeclareLocal(typeof(long));
            _flagResult = il.DeclareLocal(typeof(uint));
            _flagCarries = il.DeclareLocal(typeof(uint));
        }

        /// <summary>Loads the guest registers into the locals (they then match the CPU's).</summary>
        public void LoadRegisters()
        {
            for (int r = 0; r < 8; r++)
            {
                GprAddress(r);
                _il.Emit(OpCodes.Ldind_U4);
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
                    GprAddress(r);
                    _il.Emit(OpCodes.Ldloc, _reg[r]);
                    _il.Emit(OpCodes.Stind_I4);
                }
            }
            if (flagsLocal)
            {
                // SetLazyFlags, field by field.
                StoreField(s_lfResultField, () => _il.Emit(OpCodes.Ldloc, _flagResult));
                StoreField(s_lfCarriesField, () => _il.Emit(OpCodes.Ldloc, _flagCarries));
                StoreField(s_lfTopField, () => _il.Emit(OpCodes.Ldc_I4, top));
                StoreField(s_lfLazyField, () => _il.Emit(OpCodes.Ldc_I4_1));
            }
        }

        private void StoreField(FieldInfo field, Action value)
        {
            _il.Emit(OpCodes.Ldarg_1);
            value();
            _il.Emit(OpCodes.Stfld, field);
        }

        /// <summary>Pushes a reference to guest register <paramref name="r"/> (0-7) in the CPU's register file.</summary>
        private void GprAddress(int r)
        {
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldflda, s_gprField);
            if (r != 0)
            {
                _il.Emit(OpCodes.Ldc_I4, r * sizeof(uint));
                _il.Emit(OpCodes.Add);
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
                _il.Emit(OpCodes.Ldarg_1);
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
        private void ReadMemory(int seg, int size, int index)
        {
            RamAddress(seg, size, write: false, index);
            if (size > 1)
            {
                _il.Emit(OpCodes.Unaligned, (byte)1);
            }
            _il.Emit(size == 4 ? OpCodes.Ldind_U4 : size == 2 ? OpCodes.Ldind_U2 : OpCodes.Ldind_U1);
        }

        /// <summary>Writes a local to the effective address, or leaves by the side exit of <paramref name="index"/>.</summary>
        private void WriteMemory(int seg, int size, LocalBuilder value, int index)
        {
            RamAddress(seg, size, write: true, index);
            _il.Emit(OpCodes.Ldloc, value);
            if (size > 1)
            {
                _il.Emit(OpCodes.Unaligned, (byte)1);
            }
            _il.Emit(size == 4 ? OpCodes.Stind_I4 : size == 2 ? OpCodes.Stind_I2 : OpCodes.Stind_I1);
        }

        /// <summary>
        /// The soft TLB's fast path, emitted in place (so that it does not depend on the JIT
        /// inlining a helper): exactly SegCheckFast and then TryReadRam/TryWriteRam (Mmu.cs) for the
        /// effective address in segment <paramref name="seg"/>, pushing a reference to the bytes in
        /// guest RAM (a bounds-checked array element); anything else leaves by the side exit.
        /// </summary>
        private void RamAddress(int seg, int size, bool write, int index)
        {
            var exit = SideExit(index);
            byte need = write ? (byte)(SegmentRights.Write | SegmentRights.Usable) : (byte)(SegmentRights.Read | SegmentRights.Usable);
            // ref SegmentCache s = ref _seg[seg] (a constant index below 6).
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldflda, s_segField);
            if (seg != 0)
            {
                _il.Emit(OpCodes.Sizeof, typeof(SegmentCache));
                _il.Emit(OpCodes.Ldc_I4, seg);
                _il.Emit(OpCodes.Mul);
                _il.Emit(OpCodes.Add);
            }
            _il.Emit(OpCodes.Stloc, _segment);
            // (s.Rights & (need | ExpandDown)) == need
            _il.Emit(OpCodes.Ldloc, _segment);
            _il.Emit(OpCodes.Ldfld, s_rightsField);
            And((uint)(need | SegmentRights.ExpandDown));
            _il.Emit(OpCodes.Ldc_I4, (int)need);
            _il.Emit(OpCodes.Bne_Un, exit);
            // (ulong)offset + (size - 1) <= s.Limit
            _il.Emit(OpCodes.Ldloc, _ea);
            _il.Emit(OpCodes.Conv_U8);
            _il.Emit(OpCodes.Ldc_I8, (long)(size - 1));
            _il.Emit(OpCodes.Add);
            _il.Emit(OpCodes.Ldloc, _segment);
            _il.Emit(OpCodes.Ldfld, s_limitField);
            _il.Emit(OpCodes.Conv_U8);
            _il.Emit(OpCodes.Bgt_Un, exit);
            // lin = s.Base + offset; ref TlbEntry e = ref _tlb[(lin >> 12) & TlbMask]
            _il.Emit(OpCodes.Ldloc, _segment);
            _il.Emit(OpCodes.Ldfld, s_baseField);
            _il.Emit(OpCodes.Ldloc, _ea);
            _il.Emit(OpCodes.Add);
            _il.Emit(OpCodes.Stloc, _linear);
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldfld, s_tlbField);
            _il.Emit(OpCodes.Ldloc, _linear);
            _il.Emit(OpCodes.Ldc_I4, 12);
            _il.Emit(OpCodes.Shr_Un);
            And(TlbMask);
            _il.Emit(OpCodes.Ldelema, typeof(TlbEntry));
            _il.Emit(OpCodes.Stloc, _entry);
            // e.Tag == lin >> 12 && (e.Perm & perm) != 0 && (lin & 0xFFF) <= 4096 - size
            _il.Emit(OpCodes.Ldloc, _entry);
            _il.Emit(OpCodes.Ldfld, s_tagField);
            _il.Emit(OpCodes.Ldloc, _linear);
            _il.Emit(OpCodes.Ldc_I4, 12);
            _il.Emit(OpCodes.Shr_Un);
            _il.Emit(OpCodes.Bne_Un, exit);
            _il.Emit(OpCodes.Ldloc, _entry);
            _il.Emit(OpCodes.Ldfld, s_permField);
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldfld, write ? s_permWriteField : s_permReadField);
            _il.Emit(OpCodes.And);
            _il.Emit(OpCodes.Brfalse, exit);
            if (size > 1)
            {
                _il.Emit(OpCodes.Ldloc, _linear);
                And(0xFFF);
                _il.Emit(OpCodes.Ldc_I4, 4096 - size);
                _il.Emit(OpCodes.Bgt_Un, exit);
            }
            // ref _ram[e.Page | (lin & 0xFFF)]: the page lies wholly inside RAM (checked at fill).
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldfld, s_ramField);
            _il.Emit(OpCodes.Ldloc, _entry);
            _il.Emit(OpCodes.Ldfld, s_pageField);
            _il.Emit(OpCodes.Ldloc, _linear);
            And(0xFFF);
            _il.Emit(OpCodes.Or);
            _il.Emit(OpCodes.Ldelema, typeof(byte));
        }

        /// <summary>Pushes operand 0 (register or memory, OpSize) as ReadOp0.</summary>
        private void ReadOp0(ref DecodedInsn d, int index)
        {
            if (d.Kind0 == OpKindCode.Mem)
            {
                ReadMemory(d.Seg, d.OpSize, index);
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
                ReadMemory(d.Seg, d.SrcSize, index);
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
                WriteMemory(d.Seg, d.OpSize, value, index);
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
                // Condition (Flags.cs) for this condition, on the local lazy flags, as 0 or 1.
                switch (cc >> 1)
                {
                    case 0: Flag('O'); break;
                    case 1: Flag('C'); break;
                    case 2: Flag('Z'); break;
                    case 3: Flag('C'); Flag('Z'); _il.Emit(OpCodes.Or); break;
                    case 4: Flag('S'); break;
                    case 5: Flag('P'); break;
                    case 6: Flag('S'); Flag('O'); _il.Emit(OpCodes.Xor); break;
                    default: Flag('Z'); Flag('S'); Flag('O'); _il.Emit(OpCodes.Xor); _il.Emit(OpCodes.Or); break;
                }
                if ((cc & 1) != 0)
                {
                    _il.Emit(OpCodes.Ldc_I4_1);
                    _il.Emit(OpCodes.Xor);
                }
            }
            else
            {
                _il.Emit(OpCodes.Ldarg_1);
                _il.Emit(OpCodes.Ldc_I4, cc);
                _il.Emit(OpCodes.Call, s_condition);
            }
        }

        private const int ConditionCarry = 2; // "B": CF

        /// <summary>Pushes one status flag (0 or 1) of the local lazy flags, as GetCF/GetZF/... read them.</summary>
        private void Flag(char flag)
        {
            switch (flag)
            {
                case 'C' or 'S':
                    _il.Emit(OpCodes.Ldloc, flag == 'C' ? _flagCarries : _flagResult);
                    _il.Emit(OpCodes.Ldc_I4, Top);
                    _il.Emit(OpCodes.Shr_Un);
                    break;
                case 'O':
                    _il.Emit(OpCodes.Ldloc, _flagCarries);
                    _il.Emit(OpCodes.Ldc_I4, Top);
                    _il.Emit(OpCodes.Shr_Un);
                    _il.Emit(OpCodes.Ldloc, _flagCarries);
                    _il.Emit(OpCodes.Ldc_I4, Top - 1);
                    _il.Emit(OpCodes.Shr_Un);
                    _il.Emit(OpCodes.Xor);
                    break;
                case 'Z':
                    _il.Emit(OpCodes.Ldloc, _flagResult);
                    _il.Emit(OpCodes.Ldc_I4_0);
                    _il.Emit(OpCodes.Ceq);
                    return;
                default:
                    // PF: even parity of the low byte.
                    _il.Emit(OpCodes.Ldloc, _flagResult);
                    And(0xFF);
                    _il.Emit(OpCodes.Call, s_popCount);
                    _il.Emit(OpCodes.Ldc_I4_1);
                    _il.Emit(OpCodes.Xor);
                    break;
            }
            _il.Emit(OpCodes.Ldc_I4_1);
            _il.Emit(OpCodes.And);
        }

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

        /// <summary>FlagsAdd/FlagsSub's carry vector (AddCarries/SubCarries in Flags.cs), emitted in place.</summary>
        private void Arithmetic(bool subtract, LocalBuilder a, LocalBuilder b, int size) => SetFlags(size, () =>
        {
            if (subtract)
            {
                // (~a & b) | (~(a ^ b) & r)
                _il.Emit(OpCodes.Ldloc, a);
                _il.Emit(OpCodes.Not);
                _il.Emit(OpCodes.Ldloc, b);
                _il.Emit(OpCodes.And);
                _il.Emit(OpCodes.Ldloc, a);
                _il.Emit(OpCodes.Ldloc, b);
                _il.Emit(OpCodes.Xor);
                _il.Emit(OpCodes.Not);
                MaskedResult(size);
                _il.Emit(OpCodes.And);
                _il.Emit(OpCodes.Or);
            }
            else
            {
                // (a & b) | ((a | b) & ~r)
                _il.Emit(OpCodes.Ldloc, a);
                _il.Emit(OpCodes.Ldloc, b);
                _il.Emit(OpCodes.And);
                _il.Emit(OpCodes.Ldloc, a);
                _il.Emit(OpCodes.Ldloc, b);
                _il.Emit(OpCodes.Or);
                MaskedResult(size);
                _il.Emit(OpCodes.Not);
                _il.Emit(OpCodes.And);
                _il.Emit(OpCodes.Or);
            }
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
                case Native.Shift: Shift(ref d, index); return true;
                case Native.Push: Push(ref d, index); return true;
                case Native.Pop: Pop(ref d, index); return true;
                case Native.Nop: return true;
                case Native.Rdtsc: Rdtsc(index); return true;
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
                _il.Emit(m == Mnemonic.Adc ? OpCodes.Add : OpCodes.Sub);
            }
            _il.Emit(OpCodes.Stloc, _res);
            if (m is not (Mnemonic.Cmp or Mnemonic.Test))
            {
                WriteOp0(ref d, _res, index);
            }
            switch (m)
            {
                case Mnemonic.Add or Mnemonic.Adc: Arithmetic(subtract: false, _a, _b, size); break;
                case Mnemonic.Sub or Mnemonic.Sbb or Mnemonic.Cmp: Arithmetic(subtract: true, _a, _b, size); break;
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
                    Arithmetic(subtract: true, _b, _a, size);
                    break;
            }
        }

        private void Shift(ref DecodedInsn d, int index)
        {
            // As the generic Shift: the count is masked to 5 bits, and 0 changes nothing (the
            // operand is not even read). A count from CL is known only when the code runs; the
            // flags then go to the CPU on both paths, so that they are in one place afterwards.
            int kind = d.Aux, size = d.OpSize;
            bool dynamic = d.Kind1 == OpKindCode.Reg;
            if (!dynamic && (d.Imm & 0x1F) == 0)
            {
                return;
            }
            var skip = _il.DefineLabel();
            if (dynamic)
            {
                Store(0, FlagsLocal, Top);
                FlagsLocal = false;
                _il.Emit(OpCodes.Ldloc, _reg[1]);
                And(0x1F);
                _il.Emit(OpCodes.Stloc, _b);
                _il.Emit(OpCodes.Ldloc, _b);
                _il.Emit(OpCodes.Brfalse, skip);
            }
            else
            {
                _il.Emit(OpCodes.Ldc_I4, (int)(d.Imm & 0x1F));
                _il.Emit(OpCodes.Stloc, _b);
            }
            if (d.Kind0 == OpKindCode.Mem)
            {
                EffectiveAddress(ref d);
            }
            ReadOp0(ref d, index);
            And(SizeMask(size));
            _il.Emit(OpCodes.Stloc, _a);
            _il.Emit(OpCodes.Ldc_I4, kind);
            _il.Emit(OpCodes.Ldloc, _a);
            _il.Emit(OpCodes.Ldloc, _b);
            _il.Emit(OpCodes.Ldc_I4, size);
            _il.Emit(OpCodes.Call, s_shiftResult);
            _il.Emit(OpCodes.Stloc, _res);
            WriteOp0(ref d, _res, index);
            SetFlags(size, () =>
            {
                _il.Emit(OpCodes.Ldc_I4, kind);
                _il.Emit(OpCodes.Ldloc, _a);
                _il.Emit(OpCodes.Ldloc, _b);
                _il.Emit(OpCodes.Ldc_I4, size);
                _il.Emit(OpCodes.Call, s_shiftCarries);
            });
            if (dynamic)
            {
                Store(0, FlagsLocal, Top);
                FlagsLocal = false;
                _il.MarkLabel(skip);
            }
        }

        /// <summary>Leaves by the side exit of <paramref name="index"/> unless the stack is ESP-addressed.</summary>
        private void RequireBigStack(int index)
        {
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Call, s_jitStackBig);
            _il.Emit(OpCodes.Brfalse, SideExit(index));
        }

        private const int Ss = (int)SegReg.Ss;
        private const byte Esp = 4;

        /// <summary>PUSH r32 as Push(value, 4): the value (ESP's own before the push), written below ESP, then ESP moves.</summary>
        private void Push(ref DecodedInsn d, int index)
        {
            RequireBigStack(index);
            LoadReg((byte)(d.Reg0 & 7));
            _il.Emit(OpCodes.Stloc, _res);
            PushLocal(_res, index);
        }

        private void PushLocal(LocalBuilder value, int index)
        {
            _il.Emit(OpCodes.Ldloc, _reg[Esp]);
            _il.Emit(OpCodes.Ldc_I4_4);
            _il.Emit(OpCodes.Sub);
            _il.Emit(OpCodes.Stloc, _ea);
            WriteMemory(Ss, 4, value, index);
            _il.Emit(OpCodes.Ldloc, _ea);
            StoreReg(Esp);
        }

        /// <summary>POP r32 as OpPopR: read at ESP, ESP moves, then the register is written (POP ESP loads the value).</summary>
        private void Pop(ref DecodedInsn d, int index)
        {
            RequireBigStack(index);
            PopToResult(index);
            _il.Emit(OpCodes.Ldloc, _res);
            StoreReg((byte)(d.Reg0 & 7));
        }

        /// <summary>Reads the dword at ESP into the result local (side exit before anything changes), then moves ESP.</summary>
        private void PopToResult(int index)
        {
            _il.Emit(OpCodes.Ldloc, _reg[Esp]);
            _il.Emit(OpCodes.Stloc, _ea);
            ReadMemory(Ss, 4, index);
            _il.Emit(OpCodes.Stloc, _res);
            _il.Emit(OpCodes.Ldloc, _reg[Esp]);
            _il.Emit(OpCodes.Ldc_I4_4);
            _il.Emit(OpCodes.Add);
            StoreReg(Esp);
        }

        /// <summary>RDTSC as its handler: #GP cases go to the interpreter; the count is the instruction's own.</summary>
        private void Rdtsc(int index)
        {
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Call, s_jitRdtscAllowed);
            _il.Emit(OpCodes.Brfalse, SideExit(index));
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldc_I4, index - Synced);
            _il.Emit(OpCodes.Call, s_jitTsc);
            _il.Emit(OpCodes.Stloc, _product);
            _il.Emit(OpCodes.Ldloc, _product);
            _il.Emit(OpCodes.Conv_U4);
            StoreReg(0);
            _il.Emit(OpCodes.Ldloc, _product);
            _il.Emit(OpCodes.Ldc_I4, 32);
            _il.Emit(OpCodes.Shr_Un);
            _il.Emit(OpCodes.Conv_U4);
            StoreReg(2);
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

        /// <summary>The state at a loop head: registers in locals (all counted changed: a second run starts with the first's), flags in the CPU.</summary>
        public void StartLoopHead()
        {
            Dirty = 0xFF;
            FlagsLocal = false;
        }

        /// <summary>
        /// The end of a block translated whole: its closing branch, CALL or RET (or none: the block
        /// goes on at the next instruction). Going to the block's own start loops to
        /// <paramref name="head"/> when JitLoopAgain allows; anything else ends the compiled run
        /// with the state stored and EIP set. Whatever the interpreter would fault on (a target
        /// beyond CS's limit, a stack access off the fast path) leaves by the side exit of the
        /// closing instruction.
        /// </summary>
        public void EndWhole(Block block, BlockEnd end, Label head)
        {
            int index = block.Count - 1;
            ref DecodedInsn last = ref block.Insns[index];
            switch (end)
            {
                case BlockEnd.None:
                    Edge(block, last.NextEip, taken: false, index, head);
                    break;
                case BlockEnd.Jmp:
                    Edge(block, last.Imm, taken: true, index, head);
                    break;
                case BlockEnd.Jcc:
                {
                    var notTaken = _il.DefineLabel();
                    Condition(last.Aux);
                    _il.Emit(OpCodes.Brfalse, notTaken);
                    bool flagsLocal = FlagsLocal;
                    int top = Top;
                    Edge(block, last.Imm, taken: true, index, head);
                    _il.MarkLabel(notTaken);
                    FlagsLocal = flagsLocal;
                    Top = top;
                    Edge(block, last.NextEip, taken: false, index, head);
                    break;
                }
                case BlockEnd.Call:
                    // CallNear: the target's limit check, then the push of the return address.
                    TargetCheck(last.Imm, index);
                    RequireBigStack(index);
                    _il.Emit(OpCodes.Ldc_I4, unchecked((int)last.NextEip));
                    _il.Emit(OpCodes.Stloc, _res);
                    PushLocal(_res, index);
                    Edge(block, last.Imm, taken: false, index, head);
                    break;
                default:
                {
                    // RetNear: the pop, the target's limit check, then ESP (with RET imm16's release).
                    RequireBigStack(index);
                    _il.Emit(OpCodes.Ldloc, _reg[Esp]);
                    _il.Emit(OpCodes.Stloc, _ea);
                    ReadMemory(Ss, 4, index);
                    _il.Emit(OpCodes.Stloc, _res);
                    _il.Emit(OpCodes.Ldarg_1);
                    _il.Emit(OpCodes.Ldloc, _res);
                    _il.Emit(OpCodes.Call, s_jitTargetOk);
                    _il.Emit(OpCodes.Brfalse, SideExit(index));
                    _il.Emit(OpCodes.Ldloc, _reg[Esp]);
                    _il.Emit(OpCodes.Ldc_I4, unchecked((int)(4 + (last.Kind0 == OpKindCode.Imm ? last.Imm & 0xFFFF : 0))));
                    _il.Emit(OpCodes.Add);
                    StoreReg(Esp);
                    Store(Dirty, FlagsLocal, Top);
                    _il.Emit(OpCodes.Ldarg_1);
                    _il.Emit(OpCodes.Ldc_I4, block.Count);
                    _il.Emit(OpCodes.Ldloc, _res);
                    _il.Emit(OpCodes.Call, s_jitEnd);
                    _il.Emit(OpCodes.Ldc_I4, BlockDone);
                    _il.Emit(OpCodes.Ret);
                    break;
                }
            }
        }

        /// <summary>BranchNear's limit check: beyond it, the interpreter runs the instruction (and raises #GP).</summary>
        private void TargetCheck(uint target, int index)
        {
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)target));
            _il.Emit(OpCodes.Call, s_jitTargetOk);
            _il.Emit(OpCodes.Brfalse, SideExit(index));
        }

        private void Edge(Block block, uint target, bool taken, int index, Label head)
        {
            if (taken)
            {
                TargetCheck(target, index);
            }
            int retired = block.Count;
            if (target == block.StartEip)
            {
                // The loop head expects the flags in the CPU.
                Store(0, FlagsLocal, Top);
                FlagsLocal = false;
                _il.Emit(OpCodes.Ldarg_1);
                _il.Emit(OpCodes.Ldc_I4, retired);
                _il.Emit(OpCodes.Ldc_I4, unchecked((int)(block.Phys >> 12)));
                _il.Emit(OpCodes.Ldc_I4, unchecked((int)block.Generation));
                _il.Emit(OpCodes.Call, s_jitLoopAgain);
                _il.Emit(OpCodes.Brtrue, head);
                retired = 0; // counted by JitLoopAgain
            }
            Store(Dirty, FlagsLocal, Top);
            _il.Emit(OpCodes.Ldarg_1);
            _il.Emit(OpCodes.Ldc_I4, retired);
            _il.Emit(OpCodes.Ldc_I4, unchecked((int)target));
            _il.Emit(OpCodes.Call, s_jitEnd);
            _il.Emit(OpCodes.Ldc_I4, BlockDone);
            _il.Emit(OpCodes.Ret);
        }
    }
}
