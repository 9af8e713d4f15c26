namespace SecureVmm.Tcb.Cpu;

internal enum TaskSwitchReason : byte { Jump, Call, Interrupt, Iret }

// Hardware task switching (SDM vol. 3, 7.3 "Task switching", figure 7-2 32-bit TSS, figure 7-11
// 16-bit TSS): through JMP/CALL to a TSS or task gate, through a task gate in the IDT (Linux's
// #DF handler) and IRET with NT=1. The outgoing state is saved in the current TSS, the busy bits
// and back link are maintained, CR0.TS is set, and the incoming state is loaded (CR3 included).
// Simplification (docs/cpu.md): a bad segment selector in the incoming TSS raises the same
// fault a MOV to that register would (#GP/#SS/#NP) rather than #TS.
public sealed partial class Cpu
{
    internal bool TaskSwitch(ushort selector, TaskSwitchReason reason, uint returnEip, uint ext)
    {
        _event |= EvBreak;
        uint selErr = (uint)(selector & 0xFFFC) | ext;
        if ((selector & 4) != 0 || (selector & 0xFFFC) == 0)
        {
            Fault(reason == TaskSwitchReason.Iret ? Vector.TS : Vector.GP, selErr);
            return false;
        }
        if (!ReadDescriptor(selector, out ulong desc, ext)) return false;
        var next = DescriptorToCache(selector, desc);
        int type = next.Type;
        bool wantBusy = reason == TaskSwitchReason.Iret;
        bool typeOk = next.IsSystem && (wantBusy ? type is 3 or 11 : type is 1 or 9);
        if (!typeOk)
        {
            Fault(reason == TaskSwitchReason.Iret ? Vector.TS : Vector.GP, selErr);
            return false;
        }
        if (!next.Present)
        {
            Fault(Vector.NP, selErr);
            return false;
        }
        bool next32 = (type & 8) != 0;
        if (next.Limit < (next32 ? 0x67u : 0x2Bu))
        {
            Fault(Vector.TS, selErr);
            return false;
        }
        bool cur32 = (_tr.Type & 8) != 0;
        uint flags = Eflags;
        if (reason == TaskSwitchReason.Iret) flags &= ~EflagsBits.NT;
        // Save the outgoing task's dynamic state.
        uint t = _tr.Base;
        if (cur32)
        {
            WriteLinSystem(t + 32, 4, returnEip);
            WriteLinSystem(t + 36, 4, flags);
            for (int r = 0; r < 8; r++) WriteLinSystem(t + 40 + (uint)r * 4, 4, _gpr[r]);
            for (int s = 0; s < 6; s++) WriteLinSystem(t + 72 + (uint)s * 4, 2, _seg[s].Selector);
        }
        else
        {
            WriteLinSystem(t + 14, 2, returnEip);
            WriteLinSystem(t + 16, 2, flags);
            for (int r = 0; r < 8; r++) WriteLinSystem(t + 18 + (uint)r * 2, 2, _gpr[r]);
            for (int s = 0; s < 4; s++) WriteLinSystem(t + 34 + (uint)s * 2, 2, _seg[s].Selector);
        }
        if (Faulted) return false;
        // Read the incoming state before changing anything else.
        uint n = next.Base;
        uint newCr3 = 0, newEip, newFlags, newLdt;
        Span<uint> regs = stackalloc uint[8];
        Span<ushort> sels = stackalloc ushort[6];
        if (next32)
        {
            newCr3 = ReadLinSystem(n + 28, 4);
            newEip = ReadLinSystem(n + 32, 4);
            newFlags = ReadLinSystem(n + 36, 4);
            for (int r = 0; r < 8; r++) regs[r] = ReadLinSystem(n + 40 + (uint)r * 4, 4);
            for (int s = 0; s < 6; s++) sels[s] = (ushort)ReadLinSystem(n + 72 + (uint)s * 4, 2);
            newLdt = ReadLinSystem(n + 96, 2);
        }
        else
        {
            newEip = ReadLinSystem(n + 14, 2);
            newFlags = ReadLinSystem(n + 16, 2) | (flags & 0xFFFF_0000 & ~EflagsBits.VM);
            for (int r = 0; r < 8; r++) regs[r] = ReadLinSystem(n + 18 + (uint)r * 2, 2) | (_gpr[r] & 0xFFFF_0000);
            for (int s = 0; s < 4; s++) sels[s] = (ushort)ReadLinSystem(n + 34 + (uint)s * 2, 2);
            newLdt = ReadLinSystem(n + 42, 2);
        }
        if (Faulted) return false;
        if (reason is TaskSwitchReason.Call or TaskSwitchReason.Interrupt)
        {
            WriteLinSystem(n, 2, _tr.Selector);
            newFlags |= EflagsBits.NT;
        }
        // Busy bits: the old task stays busy on CALL/INT (it is nested), is freed on JMP/IRET.
        if (reason is TaskSwitchReason.Jump or TaskSwitchReason.Iret)
        {
            uint oldAccess = _gdtrBase + ((uint)_tr.Selector & 0xFFF8) + 5;
            WriteLinSystem(oldAccess, 1, ReadLinSystem(oldAccess, 1) & ~2u);
        }
        if (reason != TaskSwitchReason.Iret)
        {
            uint newAccess = _gdtrBase + ((uint)selector & 0xFFF8) + 5;
            WriteLinSystem(newAccess, 1, ReadLinSystem(newAccess, 1) | 2);
        }
        if (Faulted) return false;
        next.Attributes |= 2;
        next.Rights = SegmentRights.Usable;
        _tr = next;
        _cr0 |= ControlBits.Cr0TS;
        if (next32 && PagingEnabled)
        {
            _cr3 = newCr3 & 0xFFFF_F018;
            FlushTlb(includeGlobal: false);
        }
        else if (next32)
        {
            _cr3 = newCr3 & 0xFFFF_F018;
        }
        Eflags = newFlags;
        _eip = newEip;
        for (int r = 0; r < 8; r++) _gpr[r] = regs[r];
        // The incoming task's segments: LDT first (selectors may refer to it), then CS sets CPL.
        if ((newLdt & 0xFFFC) == 0)
        {
            _ldtr = new SegmentCache { Selector = (ushort)newLdt };
        }
        else
        {
            if (!ReadDescriptor((ushort)newLdt, out ulong ldtDesc, ext)) return false;
            var ldt = DescriptorToCache((ushort)newLdt, ldtDesc);
            if (!ldt.IsSystem || ldt.Type != 2 || !ldt.Present)
            {
                Fault(Vector.TS, (uint)(newLdt & 0xFFFC) | ext);
                return false;
            }
            ldt.Rights = SegmentRights.Usable;
            _ldtr = ldt;
        }
        if ((newFlags & EflagsBits.VM) != 0)
        {
            Fault(Vector.TS, selErr); // virtual-8086 tasks are not offered
            return false;
        }
        ushort cs = sels[(int)SegReg.Cs];
        if ((cs & 0xFFFC) == 0 || !ReadDescriptor(cs, out ulong csDesc, ext))
        {
            if (!Faulted) Fault(Vector.TS, (uint)(cs & 0xFFFC) | ext);
            return false;
        }
        var csCache = DescriptorToCache(cs, csDesc);
        if (csCache.IsSystem || (csCache.Type & 8) == 0 || !csCache.Present)
        {
            Fault(Vector.TS, (uint)(cs & 0xFFFC) | ext);
            return false;
        }
        _seg[(int)SegReg.Cs] = csCache;
        _cpl = cs & 3;
        UpdatePermissionBits();
        if (!LoadSegment((int)SegReg.Ss, sels[(int)SegReg.Ss])) return false;
        foreach (int s in (ReadOnlySpan<int>)[(int)SegReg.Ds, (int)SegReg.Es, (int)SegReg.Fs, (int)SegReg.Gs])
        {
            if (!next32 && s >= (int)SegReg.Fs)
            {
                continue;
            }
            if (!LoadSegment(s, sels[s])) return false;
        }
        if (_eip > _seg[(int)SegReg.Cs].Limit)
        {
            Fault(Vector.GP, 0);
            return false;
        }
        return true;
    }
}
