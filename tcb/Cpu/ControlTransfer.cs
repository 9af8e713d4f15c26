using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Control transfers (SDM vol. 1, 6.3-6.4; vol. 2 JMP, Jcc, JCXZ, LOOPcc, CALL, RET, INT n/INTO/
// INT3, IRET; vol. 3, 5.8 "Privilege level checking when transferring program control", call
// gates 5.8.3-5.8.6, 7.3 task switching).
public sealed partial class Cpu
{
    private static void RegisterControlTransfer()
    {
        foreach (var code in Enum.GetValues<Code>())
        {
            var info = code.ToOpCode();
            if (info.Encoding != EncodingKind.Legacy || (!info.Mode16 && !info.Mode32))
            {
                continue;
            }
            var m = code.Mnemonic();
            int cc = ConditionOf(m);
            if (cc >= 0 && m.ToString().StartsWith('J'))
            {
                On(code, (c, ref d) => Jcc(c, ref d), (byte)cc);
            }
        }
        foreach (var code in s_codesByMnemonic.Value[(int)Mnemonic.Jmp])
        {
            var info = code.ToOpCode();
            On(code, info.Op0Kind switch
            {
                OpCodeOperandKind.br16_1 or OpCodeOperandKind.br16_2 or OpCodeOperandKind.br32_1 or OpCodeOperandKind.br32_4 => (c, ref d) => JmpNear(c, ref d),
                OpCodeOperandKind.farbr2_2 or OpCodeOperandKind.farbr4_2 => (c, ref d) => JmpFarDirect(c, ref d),
                _ => code.ToString().Contains("_m1616", StringComparison.Ordinal) || code.ToString().Contains("_m1632", StringComparison.Ordinal) ? (c, ref d) => JmpFarIndirect(c, ref d) : (c, ref d) => JmpNearIndirect(c, ref d),
            });
        }
        foreach (var code in s_codesByMnemonic.Value[(int)Mnemonic.Call])
        {
            var info = code.ToOpCode();
            On(code, info.Op0Kind switch
            {
                OpCodeOperandKind.br16_2 or OpCodeOperandKind.br32_4 or OpCodeOperandKind.brdisp_2 or OpCodeOperandKind.brdisp_4 => (c, ref d) => CallNear(c, ref d),
                OpCodeOperandKind.farbr2_2 or OpCodeOperandKind.farbr4_2 => (c, ref d) => CallFarDirect(c, ref d),
                _ => code.ToString().Contains("_m1616", StringComparison.Ordinal) || code.ToString().Contains("_m1632", StringComparison.Ordinal) ? (c, ref d) => CallFarIndirect(c, ref d) : (c, ref d) => CallNearIndirect(c, ref d),
            });
        }
        On(Mnemonic.Jcxz, (c, ref d) => JumpIfCountZero(c, ref d));
        On(Mnemonic.Jecxz, (c, ref d) => JumpIfCountZero(c, ref d));
        // LOOPcc: Aux = condition (0 none, 1 ZF=1, 2 ZF=0) + 4 when the counter is CX (Iced's *_CX forms).
        foreach (var (m, cond) in new[] { (Mnemonic.Loop, 0), (Mnemonic.Loope, 1), (Mnemonic.Loopne, 2) })
        {
            foreach (var code in s_codesByMnemonic.Value[(int)m])
            {
                bool cx = code.ToString().EndsWith("_CX", StringComparison.Ordinal);
                On(code, (c, ref d) => Loop(c, ref d), (byte)(cond | (cx ? 4 : 0)));
            }
        }
        On(Mnemonic.Ret, (c, ref d) => RetNear(c, ref d));
        On(Mnemonic.Retf, (c, ref d) => RetFar(c, ref d));
        On(Mnemonic.Int, (c, ref d) => c.SoftwareInterrupt((byte)d.Imm, InterruptKind.Software, ref d));
        On(Mnemonic.Int3, (c, ref d) => c.SoftwareInterrupt(Vector.BP, InterruptKind.SoftwareException, ref d));
        On(Mnemonic.Int1, (c, ref d) => c.SoftwareInterrupt(Vector.DB, InterruptKind.Exception, ref d));
        On(Mnemonic.Into, (c, ref d) =>
        {
            if (c.GetOF()) c.SoftwareInterrupt(Vector.OF, InterruptKind.SoftwareException, ref d);
        });
        On(Mnemonic.Iret, (c, ref d) => Iret(c, ref d));
        On(Mnemonic.Iretd, (c, ref d) => Iret(c, ref d));
    }

    /// <summary>Near branch to <paramref name="target"/> with the CS limit check (#GP(0), SDM vol. 2, JMP).</summary>
    private void BranchNear(uint target, int opSize)
    {
        if (opSize == 2) target &= 0xFFFF;
        if (target > _seg[(int)SegReg.Cs].Limit)
        {
            Fault(Vector.GP, 0);
            return;
        }
        _eip = target;
    }

    private static void Jcc(Cpu c, ref DecodedInsn d)
    {
        if (c.Condition(d.Aux))
        {
            c.BranchNear(d.Imm, 4);
        }
    }

    private static void JmpNear(Cpu c, ref DecodedInsn d) => c.BranchNear(d.Imm, 4);

    private static void JmpNearIndirect(Cpu c, ref DecodedInsn d)
    {
        uint target = c.ReadOp0(ref d);
        if (c.Faulted) return;
        c.BranchNear(target, d.OpSize);
    }

    private static void CallNear(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        uint target = size == 2 ? d.Imm & 0xFFFF : d.Imm;
        if (target > c._seg[(int)SegReg.Cs].Limit)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        c.Push(d.NextEip, size);
        if (c.Faulted) return;
        c._eip = target;
    }

    private static void CallNearIndirect(Cpu c, ref DecodedInsn d)
    {
        uint target = c.ReadOp0(ref d);
        if (c.Faulted) return;
        int size = d.OpSize;
        if (size == 2) target &= 0xFFFF;
        if (target > c._seg[(int)SegReg.Cs].Limit)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        c.Push(d.NextEip, size);
        if (c.Faulted) return;
        c._eip = target;
    }

    private static void JumpIfCountZero(Cpu c, ref DecodedInsn d)
    {
        bool zero = d.I.Code is Code.Jcxz_rel8_16 or Code.Jcxz_rel8_32 ? (c._gpr[1] & 0xFFFF) == 0 : c._gpr[1] == 0;
        if (zero)
        {
            c.BranchNear(d.Imm, 4);
        }
    }

    // LOOP/LOOPE/LOOPNE: the counter is CX or ECX by address size (Iced's *_CX / *_ECX forms).
    private static void Loop(Cpu c, ref DecodedInsn d)
    {
        bool cx = (d.Aux & 4) != 0;
        int cond = d.Aux & 3;
        uint count;
        if (cx)
        {
            count = (c._gpr[1] - 1) & 0xFFFF;
            c._gpr[1] = (c._gpr[1] & 0xFFFF_0000) | count;
        }
        else
        {
            count = --c._gpr[1];
        }
        bool take = count != 0 && (cond == 0 || (cond == 1 ? c.GetZF() : !c.GetZF()));
        if (take)
        {
            c.BranchNear(d.Imm, 4);
        }
    }

    private static void RetNear(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        uint target = c.Pop(size);
        if (c.Faulted) return;
        if (target > c._seg[(int)SegReg.Cs].Limit)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        if (d.Kind0 == OpKindCode.Imm)
        {
            c.SetStackPointer(c.StackPointer + (d.Imm & 0xFFFF));
        }
        c._eip = target;
    }

    private void SoftwareInterrupt(byte vector, InterruptKind kind, ref DecodedInsn d)
    {
        if (V86Mode && kind == InterruptKind.Software && ((_eflags >> 12) & 3) < 3)
        {
            Fault(Vector.GP, 0);
            return;
        }
        // The pushed EIP is the next instruction (INT n is a trap, SDM vol. 3, 6.5).
        DeliverEvent(vector, 0, false, kind, d.NextEip);
    }

    // ---------------------------------------------------------------- far transfers

    private static void JmpFarDirect(Cpu c, ref DecodedInsn d) => c.FarTransfer((ushort)d.Imm2, d.Imm, OperandSizeOf(in d.I), call: false, d.NextEip);

    private static void CallFarDirect(Cpu c, ref DecodedInsn d) => c.FarTransfer((ushort)d.Imm2, d.Imm, OperandSizeOf(in d.I), call: true, d.NextEip);

    private static void JmpFarIndirect(Cpu c, ref DecodedInsn d)
    {
        int size = d.OpSize == 6 || d.I.MemorySize == MemorySize.SegPtr32 ? 4 : 2;
        uint ea = c.EffectiveAddress(ref d);
        uint off = c.ReadSeg(d.Seg, ea, size);
        uint sel = c.ReadSeg(d.Seg, ea + (uint)size, 2);
        if (c.Faulted) return;
        c.FarTransfer((ushort)sel, off, size, call: false, d.NextEip);
    }

    private static void CallFarIndirect(Cpu c, ref DecodedInsn d)
    {
        int size = d.I.MemorySize == MemorySize.SegPtr32 ? 4 : 2;
        uint ea = c.EffectiveAddress(ref d);
        uint off = c.ReadSeg(d.Seg, ea, size);
        uint sel = c.ReadSeg(d.Seg, ea + (uint)size, 2);
        if (c.Faulted) return;
        c.FarTransfer((ushort)sel, off, size, call: true, d.NextEip);
    }

    /// <summary>Far JMP/CALL (SDM vol. 2 JMP/CALL pseudo-code; vol. 3, 5.8).</summary>
    private void FarTransfer(ushort selector, uint offset, int size, bool call, uint returnEip)
    {
        _event |= EvBreak;
        if (size == 2) offset &= 0xFFFF;
        if (!ProtectedMode || V86Mode)
        {
            if (offset > _seg[(int)SegReg.Cs].Limit)
            {
                Fault(Vector.GP, 0);
                return;
            }
            if (call)
            {
                Push(_seg[(int)SegReg.Cs].Selector, size);
                Push(returnEip, size);
                if (Faulted) return;
            }
            LoadRealModeSegment((int)SegReg.Cs, selector);
            _eip = offset;
            return;
        }
        if ((selector & 0xFFFC) == 0)
        {
            Fault(Vector.GP, 0);
            return;
        }
        if (!ReadDescriptor(selector, out ulong desc))
        {
            return;
        }
        var target = DescriptorToCache(selector, desc);
        uint selErr = (uint)(selector & 0xFFFC);
        if (!target.IsSystem)
        {
            if ((target.Type & 8) == 0)
            {
                Fault(Vector.GP, selErr);
                return;
            }
            bool conforming = (target.Type & 4) != 0;
            if (conforming ? target.Dpl > _cpl : ((selector & 3) > _cpl || target.Dpl != _cpl))
            {
                Fault(Vector.GP, selErr);
                return;
            }
            if (!target.Present)
            {
                Fault(Vector.NP, selErr);
                return;
            }
            if (offset > target.Limit)
            {
                Fault(Vector.GP, 0);
                return;
            }
            if (call)
            {
                Push(_seg[(int)SegReg.Cs].Selector, size);
                Push(returnEip, size);
                if (Faulted) return;
            }
            SetAccessedBit(selector, desc);
            target.Selector = (ushort)((selector & 0xFFFC) | _cpl);
            _seg[(int)SegReg.Cs] = target;
            _eip = offset;
            return;
        }
        switch (target.Type)
        {
            case 1:
            case 9:
                // Available TSS: task switch (SDM vol. 3, 7.3).
                if (target.Dpl < _cpl || target.Dpl < (selector & 3))
                {
                    Fault(Vector.GP, selErr);
                    return;
                }
                TaskSwitch(selector, call ? TaskSwitchReason.Call : TaskSwitchReason.Jump, returnEip, 0);
                return;
            case 5:
            {
                if (target.Dpl < _cpl || target.Dpl < (selector & 3))
                {
                    Fault(Vector.GP, selErr);
                    return;
                }
                if (!target.Present)
                {
                    Fault(Vector.NP, selErr);
                    return;
                }
                ushort tss = (ushort)(desc >> 16);
                TaskSwitch(tss, call ? TaskSwitchReason.Call : TaskSwitchReason.Jump, returnEip, 0);
                return;
            }
            case 4:
            case 12:
                CallGate(selector, desc, call, returnEip);
                return;
            default:
                Fault(Vector.GP, selErr);
                return;
        }
    }

    /// <summary>Transfer through a call gate (SDM vol. 3, 5.8.3-5.8.5, figure 5-13 stack switch with parameter copy).</summary>
    private void CallGate(ushort gateSelector, ulong gate, bool call, uint returnEip)
    {
        int gateDpl = (int)(gate >> 45) & 3;
        uint gErr = (uint)(gateSelector & 0xFFFC);
        if (gateDpl < _cpl || gateDpl < (gateSelector & 3))
        {
            Fault(Vector.GP, gErr);
            return;
        }
        if ((gate & (1UL << 47)) == 0)
        {
            Fault(Vector.NP, gErr);
            return;
        }
        bool gate32 = ((gate >> 40) & 0xF) == 12;
        int size = gate32 ? 4 : 2;
        ushort selector = (ushort)(gate >> 16);
        uint offset = (uint)(gate & 0xFFFF) | (gate32 ? (uint)(gate >> 32) & 0xFFFF_0000 : 0);
        int paramCount = (int)(gate >> 32) & 0x1F;
        if ((selector & 0xFFFC) == 0)
        {
            Fault(Vector.GP, 0);
            return;
        }
        if (!ReadDescriptor(selector, out ulong desc))
        {
            return;
        }
        var target = DescriptorToCache(selector, desc);
        uint selErr = (uint)(selector & 0xFFFC);
        if (target.IsSystem || (target.Type & 8) == 0 || target.Dpl > _cpl)
        {
            Fault(Vector.GP, selErr);
            return;
        }
        if (!target.Present)
        {
            Fault(Vector.NP, selErr);
            return;
        }
        if (offset > target.Limit)
        {
            Fault(Vector.GP, 0);
            return;
        }
        bool conforming = (target.Type & 4) != 0;
        if (call && !conforming && target.Dpl < _cpl)
        {
            int newCpl = target.Dpl;
            if (!ReadTssStack(newCpl, out ushort newSs, out uint newEsp, 0))
            {
                return;
            }
            if (!LoadStackForPrivilege(newSs, newCpl, 0, out SegmentCache ssCache))
            {
                return;
            }
            ushort oldSs = _seg[(int)SegReg.Ss].Selector;
            uint oldEsp = _gpr[4];
            bool oldBig = StackBig;
            Span<uint> parameters = stackalloc uint[32];
            for (int i = 0; i < paramCount; i++)
            {
                uint sp = oldBig ? oldEsp + (uint)(i * size) : (oldEsp + (uint)(i * size)) & 0xFFFF;
                parameters[i] = ReadSeg((int)SegReg.Ss, sp, size);
            }
            if (Faulted) return;
            _seg[(int)SegReg.Ss] = ssCache;
            _gpr[4] = newEsp;
            int oldCpl = _cpl;
            _cpl = newCpl;
            UpdatePermissionBits();
            Push(oldSs, size);
            Push(oldEsp, size);
            for (int i = paramCount - 1; i >= 0; i--)
            {
                Push(parameters[i], size);
            }
            Push(_seg[(int)SegReg.Cs].Selector, size);
            Push(returnEip, size);
            if (Faulted)
            {
                _cpl = oldCpl;
                UpdatePermissionBits();
                return;
            }
        }
        else
        {
            if (!conforming && target.Dpl != _cpl)
            {
                Fault(Vector.GP, selErr);
                return;
            }
            if (call)
            {
                Push(_seg[(int)SegReg.Cs].Selector, size);
                Push(returnEip, size);
                if (Faulted) return;
            }
        }
        SetAccessedBit(selector, desc);
        target.Selector = (ushort)((selector & 0xFFFC) | _cpl);
        _seg[(int)SegReg.Cs] = target;
        _eip = offset;
    }

    /// <summary>Far RET, possibly to an outer privilege level (SDM vol. 2, RET pseudo-code).</summary>
    private static void RetFar(Cpu c, ref DecodedInsn d)
    {
        c._event |= EvBreak;
        int size = OperandSizeOf(in d.I);
        uint release = d.Kind0 == OpKindCode.Imm ? d.Imm & 0xFFFF : 0;
        uint eip = c.PeekStack(0, size);
        ushort cs = (ushort)c.PeekStack((uint)size, 2);
        if (c.Faulted) return;
        if (!c.ProtectedMode || c.V86Mode)
        {
            if (eip > c._seg[(int)SegReg.Cs].Limit && c.ProtectedMode)
            {
                c.Fault(Vector.GP, 0);
                return;
            }
            c.SetStackPointer(c.StackPointer + (uint)(2 * size) + release);
            c.LoadRealModeSegment((int)SegReg.Cs, cs);
            c._eip = size == 2 ? eip & 0xFFFF : eip;
            return;
        }
        if (!c.CheckReturnCodeSegment(cs, out SegmentCache target, out ulong desc))
        {
            return;
        }
        int rpl = cs & 3;
        if (rpl == c._cpl)
        {
            if (eip > target.Limit)
            {
                c.Fault(Vector.GP, 0);
                return;
            }
            c.SetStackPointer(c.StackPointer + (uint)(2 * size) + release);
            c.SetAccessedBit(cs, desc);
            c._seg[(int)SegReg.Cs] = target;
            c._eip = eip;
            return;
        }
        // Return to an outer level: SS:ESP follow the immediate-release area.
        uint outerEsp = c.PeekStack((uint)(2 * size) + release, size);
        ushort outerSs = (ushort)c.PeekStack((uint)(3 * size) + release, 2);
        if (c.Faulted) return;
        if (!c.LoadStackForPrivilege(outerSs, rpl, 0, out SegmentCache ssCache))
        {
            return;
        }
        if (eip > target.Limit)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        c.SetAccessedBit(cs, desc);
        c._seg[(int)SegReg.Cs] = target;
        c._seg[(int)SegReg.Ss] = ssCache;
        c._cpl = rpl;
        c.UpdatePermissionBits();
        c.SetStackPointer(size == 2 ? outerEsp & 0xFFFF : outerEsp);
        c.SetStackPointer(c.StackPointer + release);
        c._eip = eip;
        c.InvalidateSegmentsForOuterLevel();
    }

    /// <summary>Return code segment checks shared by RET far and IRET (SDM vol. 2, RET: "RETURN-TO-SAME/OUTER-PRIVILEGE-LEVEL").</summary>
    private bool CheckReturnCodeSegment(ushort cs, out SegmentCache target, out ulong desc)
    {
        target = default;
        desc = 0;
        uint err = (uint)(cs & 0xFFFC);
        if ((cs & 0xFFFC) == 0)
        {
            Fault(Vector.GP, 0);
            return false;
        }
        if (!ReadDescriptor(cs, out desc))
        {
            return false;
        }
        target = DescriptorToCache(cs, desc);
        int rpl = cs & 3;
        if (target.IsSystem || (target.Type & 8) == 0 || rpl < _cpl)
        {
            Fault(Vector.GP, err);
            return false;
        }
        bool conforming = (target.Type & 4) != 0;
        if (conforming ? target.Dpl > rpl : target.Dpl != rpl)
        {
            Fault(Vector.GP, err);
            return false;
        }
        if (!target.Present)
        {
            Fault(Vector.NP, err);
            return false;
        }
        return true;
    }

    /// <summary>IRET/IRETD (SDM vol. 2, IRET pseudo-code): real mode, same level, outer level, nested task.</summary>
    private static void Iret(Cpu c, ref DecodedInsn d)
    {
        c._event |= EvBreak;
        int size = OperandSizeOf(in d.I);
        if (!c.ProtectedMode)
        {
            uint ip = c.PeekStack(0, size);
            uint cs = c.PeekStack((uint)size, size);
            uint fl = c.PeekStack((uint)(2 * size), size);
            if (c.Faulted) return;
            if (ip > c._seg[(int)SegReg.Cs].Limit)
            {
                c.Fault(Vector.GP, 0);
                return;
            }
            c.SetStackPointer(c.StackPointer + (uint)(3 * size));
            c.LoadRealModeSegment((int)SegReg.Cs, (ushort)cs);
            c._eip = ip;
            // Real mode: every flag may change except VM/VIF/VIP (and RF/VM come from a 32-bit frame only).
            uint mask = size == 4 ? EflagsBits.Writable & ~(EflagsBits.VM | EflagsBits.VIF | EflagsBits.VIP) : 0xFFFF & EflagsBits.Writable;
            c.Eflags = (c.Eflags & ~mask) | (fl & mask);
            return;
        }
        if (c.V86Mode)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        if ((c._eflags & EflagsBits.NT) != 0)
        {
            // Return from a nested task: the back link in the current TSS (SDM vol. 3, 7.3).
            ushort link = (ushort)c.ReadLinSystem(c._tr.Base, 2);
            if (c.Faulted) return;
            c.TaskSwitch(link, TaskSwitchReason.Iret, d.NextEip, 0);
            return;
        }
        uint eip = c.PeekStack(0, size);
        ushort csSel = (ushort)c.PeekStack((uint)size, 2);
        uint flags = c.PeekStack((uint)(2 * size), size);
        if (c.Faulted) return;
        if (size == 4 && (flags & EflagsBits.VM) != 0 && c._cpl == 0)
        {
            // Return to virtual-8086 mode: not offered by this model (docs/cpu.md).
            c.Fault(Vector.GP, 0);
            return;
        }
        if (!c.CheckReturnCodeSegment(csSel, out SegmentCache target, out ulong desc))
        {
            return;
        }
        int rpl = csSel & 3;
        int oldCpl = c._cpl;
        if (rpl == c._cpl)
        {
            if (eip > target.Limit)
            {
                c.Fault(Vector.GP, 0);
                return;
            }
            c.SetStackPointer(c.StackPointer + (uint)(3 * size));
            c.SetAccessedBit(csSel, desc);
            c._seg[(int)SegReg.Cs] = target;
            c._eip = eip;
            c.WriteEflagsFromIret(flags, size, oldCpl);
            return;
        }
        uint outerEsp = c.PeekStack((uint)(3 * size), size);
        ushort outerSs = (ushort)c.PeekStack((uint)(4 * size), 2);
        if (c.Faulted) return;
        if (!c.LoadStackForPrivilege(outerSs, rpl, 0, out SegmentCache ssCache))
        {
            return;
        }
        if (eip > target.Limit)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        c.SetAccessedBit(csSel, desc);
        c._seg[(int)SegReg.Cs] = target;
        c._seg[(int)SegReg.Ss] = ssCache;
        c.WriteEflagsFromIret(flags, size, oldCpl);
        c._cpl = rpl;
        c.UpdatePermissionBits();
        c.SetStackPointer(size == 2 ? outerEsp & 0xFFFF : outerEsp);
        c._eip = eip;
        c.InvalidateSegmentsForOuterLevel();
    }

    /// <summary>
    /// EFLAGS from an IRET frame (SDM vol. 2, IRET): IOPL only at CPL 0, IF only when CPL &lt;= IOPL,
    /// VM/VIF/VIP never here (no v86 mode), a 16-bit frame changes only the low word.
    /// </summary>
    private void WriteEflagsFromIret(uint flags, int size, int cpl)
    {
        uint mask = EflagsBits.Arithmetic | EflagsBits.TF | EflagsBits.DF | EflagsBits.NT | EflagsBits.RF | EflagsBits.AC | EflagsBits.ID;
        uint current = Eflags;
        if (cpl == 0) mask |= EflagsBits.IOPL;
        if (cpl <= (int)((current >> 12) & 3)) mask |= EflagsBits.IF;
        if (size == 2) mask &= 0xFFFF;
        Eflags = (current & ~mask) | (flags & mask);
    }
}
