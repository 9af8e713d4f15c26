namespace SecureVmm.Tcb.Cpu;

// Segment descriptors and segment-register loads (SDM vol. 3, 3.4.5 "Segment descriptors",
// 5.5-5.8 privilege checks; vol. 2 MOV/POP/LDS pseudo-code).
public sealed partial class Cpu
{
    /// <summary>
    /// Reads the 8-byte descriptor for <paramref name="selector"/> from the GDT or LDT. Raises
    /// #GP(selector | ext) when the selector indexes past the table limit.
    /// </summary>
    internal bool ReadDescriptor(ushort selector, out ulong desc, uint ext = 0)
    {
        desc = 0;
        uint index = (uint)selector & 0xFFF8;
        uint tableBase;
        uint tableLimit;
        if ((selector & 4) != 0)
        {
            if ((_ldtr.Rights & SegmentRights.Usable) == 0)
            {
                Fault(Vector.GP, (uint)(selector & 0xFFFC) | ext);
                return false;
            }
            tableBase = _ldtr.Base;
            tableLimit = _ldtr.Limit;
        }
        else
        {
            tableBase = _gdtrBase;
            tableLimit = _gdtrLimit;
        }
        if (index + 7 > tableLimit)
        {
            Fault(Vector.GP, (uint)(selector & 0xFFFC) | ext);
            return false;
        }
        uint lo = ReadLinSystem(tableBase + index, 4);
        uint hi = ReadLinSystem(tableBase + index + 4, 4);
        if (Faulted) return false;
        desc = lo | ((ulong)hi << 32);
        return true;
    }

    /// <summary>Builds a hidden descriptor cache from a raw descriptor (SDM vol. 3, figure 3-8).</summary>
    internal static SegmentCache DescriptorToCache(ushort selector, ulong desc)
    {
        uint limit = (uint)(desc & 0xFFFF) | (uint)((desc >> 32) & 0xF_0000);
        uint baseAddr = (uint)((desc >> 16) & 0xFF_FFFF) | (uint)((desc >> 32) & 0xFF00_0000);
        ushort attr = (ushort)((desc >> 40) & 0xF0FF);
        if ((attr & 0x8000) != 0)
        {
            limit = (limit << 12) | 0xFFF;
        }
        var c = new SegmentCache { Selector = selector, Base = baseAddr, Limit = limit, Attributes = attr };
        c.Rights = RightsFor(attr);
        return c;
    }

    private static byte RightsFor(ushort attr)
    {
        if ((attr & 0x10) == 0)
        {
            return 0; // system descriptors are never data/code segments
        }
        int type = attr & 0xF;
        byte r = SegmentRights.Usable;
        if ((type & 8) == 0)
        {
            r |= SegmentRights.Read;
            if ((type & 2) != 0) r |= SegmentRights.Write;
            if ((type & 4) != 0) r |= SegmentRights.ExpandDown;
        }
        else if ((type & 2) != 0)
        {
            r |= SegmentRights.Read;
        }
        return r;
    }

    /// <summary>Sets the descriptor's accessed bit in memory if clear (SDM vol. 3, 3.4.5.1).</summary>
    internal void SetAccessedBit(ushort selector, ulong desc)
    {
        if ((desc & (1UL << 40)) != 0 || (desc & (1UL << 44)) == 0)
        {
            return;
        }
        uint tableBase = (selector & 4) != 0 ? _ldtr.Base : _gdtrBase;
        uint addr = tableBase + ((uint)selector & 0xFFF8) + 5;
        uint b = ReadLinSystem(addr, 1);
        if (!Faulted)
        {
            WriteLinSystem(addr, 1, b | 1);
        }
    }

    internal void LoadRealModeSegment(int seg, ushort selector)
    {
        ref SegmentCache s = ref _seg[seg];
        s.Selector = selector;
        s.Base = (uint)selector << 4;
        if (V86Mode)
        {
            s.Limit = 0xFFFF;
            s.Attributes = (ushort)(seg == (int)SegReg.Cs ? 0xFB : 0xF3);
        }
        s.Rights = SegmentRights.Read | SegmentRights.Write | SegmentRights.Usable;
        if (seg == (int)SegReg.Cs && !V86Mode)
        {
            // Real-mode code: keep 16-bit default size (the D bit of the cache is what decodes).
            s.Attributes = (ushort)(s.Attributes & ~0x4000);
        }
    }

    /// <summary>
    /// Loads a data or stack segment register (MOV/POP Sreg, LDS ...) with the checks of the SDM's
    /// MOV pseudo-code. Returns false after raising #GP/#SS/#NP.
    /// </summary>
    internal bool LoadSegment(int seg, ushort selector)
    {
        if (!ProtectedMode || V86Mode)
        {
            LoadRealModeSegment(seg, selector);
            return true;
        }
        if (seg == (int)SegReg.Ss)
        {
            if (!LoadStackForPrivilege(selector, _cpl, 0, out SegmentCache cache))
            {
                return false;
            }
            _seg[seg] = cache;
            return true;
        }
        if ((selector & 0xFFFC) == 0)
        {
            // A null selector may be loaded into DS/ES/FS/GS; using it faults (SDM vol. 3, 3.4.2).
            _seg[seg] = new SegmentCache { Selector = selector };
            return true;
        }
        if (!ReadDescriptor(selector, out ulong desc))
        {
            return false;
        }
        var c = DescriptorToCache(selector, desc);
        int type = c.Type;
        bool isCode = (type & 8) != 0;
        if (c.IsSystem || (isCode && (type & 2) == 0))
        {
            Fault(Vector.GP, (uint)(selector & 0xFFFC));
            return false;
        }
        bool conformingCode = isCode && (type & 4) != 0;
        if (!conformingCode && ((selector & 3) > c.Dpl || _cpl > c.Dpl))
        {
            Fault(Vector.GP, (uint)(selector & 0xFFFC));
            return false;
        }
        if (!c.Present)
        {
            Fault(Vector.NP, (uint)(selector & 0xFFFC));
            return false;
        }
        SetAccessedBit(selector, desc);
        if (Faulted) return false;
        _seg[seg] = c;
        return true;
    }

    /// <summary>
    /// Validates and builds a stack segment for privilege level <paramref name="level"/>: non-null,
    /// RPL = DPL = level, writable data, present (SDM vol. 3, 6.12.1 and MOV SS pseudo-code;
    /// #TS for TSS-supplied stacks carries the EXT bit).
    /// </summary>
    internal bool LoadStackForPrivilege(ushort selector, int level, uint ext, out SegmentCache cache)
    {
        cache = default;
        bool fromTss = ext != 0 || level != _cpl;
        byte errVector = fromTss ? Vector.TS : Vector.GP;
        if ((selector & 0xFFFC) == 0)
        {
            Fault(errVector, fromTss ? ext : 0);
            return false;
        }
        if (!ReadDescriptor(selector, out ulong desc, ext))
        {
            return false;
        }
        var c = DescriptorToCache(selector, desc);
        if (c.IsSystem || (c.Type & 0xA) != 2 || (selector & 3) != level || c.Dpl != level)
        {
            Fault(errVector, (uint)(selector & 0xFFFC) | ext);
            return false;
        }
        if (!c.Present)
        {
            Fault(fromTss ? Vector.TS : Vector.SS, (uint)(selector & 0xFFFC) | ext);
            return false;
        }
        SetAccessedBit(selector, desc);
        if (Faulted) return false;
        cache = c;
        return true;
    }

    /// <summary>Reads the inner-level stack pointer from the current TSS (SDM vol. 3, 7.2.1 figure 7-2, 7.6 figure 7-11).</summary>
    internal bool ReadTssStack(int level, out ushort ss, out uint esp, uint ext)
    {
        ss = 0;
        esp = 0;
        bool tss32 = (_tr.Type & 8) != 0;
        uint offset = tss32 ? (uint)(4 + level * 8) : (uint)(2 + level * 4);
        uint span = tss32 ? 8u : 4u;
        if ((_tr.Rights & SegmentRights.Usable) == 0 && _tr.Selector == 0 || offset + span - 1 > _tr.Limit)
        {
            Fault(Vector.TS, (uint)(_tr.Selector & 0xFFFC) | ext);
            return false;
        }
        if (tss32)
        {
            esp = ReadLinSystem(_tr.Base + offset, 4);
            ss = (ushort)ReadLinSystem(_tr.Base + offset + 4, 2);
        }
        else
        {
            esp = ReadLinSystem(_tr.Base + offset, 2);
            ss = (ushort)ReadLinSystem(_tr.Base + offset + 2, 2);
        }
        return !Faulted;
    }

    /// <summary>Sets segment caches for the CPU's new CPL after a privilege change: data segments the new level may not use become null (SDM vol. 3, RET/IRET pseudo-code).</summary>
    internal void InvalidateSegmentsForOuterLevel()
    {
        foreach (int s in (ReadOnlySpan<int>)[(int)SegReg.Es, (int)SegReg.Ds, (int)SegReg.Fs, (int)SegReg.Gs])
        {
            ref SegmentCache c = ref _seg[s];
            bool dataOrNonConforming = (c.Type & 8) == 0 || (c.Type & 4) == 0;
            if ((c.Rights & SegmentRights.Usable) != 0 && dataOrNonConforming && c.Dpl < _cpl)
            {
                c = new SegmentCache { Selector = 0 };
            }
        }
    }
}
