using Iced.Intel;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Cpu;

// System instructions (SDM vol. 3, 2.8 "System instruction summary"; vol. 2 for each): descriptor
// table registers, control and debug registers, INVLPG, cache control, LAR/LSL/VERR/VERW/ARPL,
// SYSENTER/SYSEXIT, RDTSC, RDMSR/WRMSR, CPUID, HLT, CLI/STI, PUSHF/POPF.
public sealed partial class Cpu
{
    private static void RegisterSystem()
    {
        On(Mnemonic.Lgdt, (c, ref d) => c.LoadTableRegister(ref d, gdt: true));
        On(Mnemonic.Lidt, (c, ref d) => c.LoadTableRegister(ref d, gdt: false));
        On(Mnemonic.Sgdt, (c, ref d) => c.StoreTableRegister(ref d, c._gdtrBase, c._gdtrLimit));
        On(Mnemonic.Sidt, (c, ref d) => c.StoreTableRegister(ref d, c._idtrBase, c._idtrLimit));
        On(Mnemonic.Lldt, (c, ref d) => Lldt(c, ref d));
        On(Mnemonic.Ltr, (c, ref d) => Ltr(c, ref d));
        On(Mnemonic.Sldt, (c, ref d) => c.StoreSystemSelector(ref d, c._ldtr.Selector));
        On(Mnemonic.Str, (c, ref d) => c.StoreSystemSelector(ref d, c._tr.Selector));
        On(Mnemonic.Lmsw, (c, ref d) => Lmsw(c, ref d));
        On(Mnemonic.Smsw, (c, ref d) => c.WriteOp0(ref d, d.Kind0 == OpKindCode.Mem ? c._cr0 & 0xFFFF : c._cr0));
        On(Mnemonic.Clts, (c, ref d) =>
        {
            if (c.RequireCpl0()) c._cr0 &= ~ControlBits.Cr0TS;
        });
        On(Mnemonic.Invlpg, (c, ref d) =>
        {
            if (!c.RequireCpl0()) return;
            c.InvalidatePage(c._seg[d.Seg].Base + c.EffectiveAddress(ref d));
            c._event |= EvBreak;
        });
        On(Mnemonic.Wbinvd, (c, ref d) => c.RequireCpl0());
        On(Mnemonic.Invd, (c, ref d) => c.RequireCpl0());
        On(Mnemonic.Lar, (c, ref d) => c.LarLsl(ref d, lar: true));
        On(Mnemonic.Lsl, (c, ref d) => c.LarLsl(ref d, lar: false));
        On(Mnemonic.Verr, (c, ref d) => c.VerifySegment(ref d, write: false));
        On(Mnemonic.Verw, (c, ref d) => c.VerifySegment(ref d, write: true));
        On(Mnemonic.Arpl, (c, ref d) => Arpl(c, ref d));
        On(Mnemonic.Sysenter, (c, ref d) => Sysenter(c, ref d));
        On(Mnemonic.Sysexit, (c, ref d) => Sysexit(c, ref d));
        On(Mnemonic.Rdtsc, (c, ref d) =>
        {
            if ((c._cr4 & ControlBits.Cr4TSD) != 0 && c._cpl != 0 && c.ProtectedMode)
            {
                c.Fault(Vector.GP, 0);
                return;
            }
            ulong tsc = c.ReadTsc();
            c._gpr[0] = (uint)tsc;
            c._gpr[2] = (uint)(tsc >> 32);
        });
        On(Mnemonic.Rdmsr, (c, ref d) => Rdmsr(c, ref d));
        On(Mnemonic.Wrmsr, (c, ref d) => Wrmsr(c, ref d));
        On(Mnemonic.Cpuid, (c, ref d) => Cpuid(c, ref d));
        On(Mnemonic.Hlt, (c, ref d) => Hlt(c, ref d));
        On(Mnemonic.Cli, (c, ref d) =>
        {
            if (c.IoplAllows()) c._eflags &= ~EflagsBits.IF;
            else c.Fault(Vector.GP, 0);
        });
        On(Mnemonic.Sti, (c, ref d) =>
        {
            if (!c.IoplAllows())
            {
                c.Fault(Vector.GP, 0);
                return;
            }
            if ((c._eflags & EflagsBits.IF) == 0)
            {
                // STI shadow: no interrupt before the next instruction completes (SDM vol. 2, STI).
                c._eflags |= EflagsBits.IF;
                c._shadowAt = c._icount + 1;
            }
            c._event |= EvBreak;
        });
        On(Mnemonic.Pushf, (c, ref d) => Pushf(c, ref d));
        On(Mnemonic.Pushfd, (c, ref d) => Pushf(c, ref d));
        On(Mnemonic.Popf, (c, ref d) => Popf(c, ref d));
        On(Mnemonic.Popfd, (c, ref d) => Popf(c, ref d));
        foreach (var code in s_codesByMnemonic.Value[(int)Mnemonic.Mov])
        {
            var info = code.ToOpCode();
            if (info.Op0Kind == OpCodeOperandKind.cr_reg) On(code, (c, ref d) => MovToCr(c, ref d));
            else if (info.Op1Kind == OpCodeOperandKind.cr_reg) On(code, (c, ref d) => MovFromCr(c, ref d));
            else if (info.Op0Kind == OpCodeOperandKind.dr_reg) On(code, (c, ref d) => MovToDr(c, ref d));
            else if (info.Op1Kind == OpCodeOperandKind.dr_reg) On(code, (c, ref d) => MovFromDr(c, ref d));
            else if (info.Op0Kind == OpCodeOperandKind.tr_reg || info.Op1Kind == OpCodeOperandKind.tr_reg) On(code, s_undefined);
        }
    }

    /// <summary>CPL 0 required (real mode counts as CPL 0); otherwise #GP(0).</summary>
    private bool RequireCpl0()
    {
        if (_cpl != 0)
        {
            Fault(Vector.GP, 0);
            return false;
        }
        return true;
    }

    /// <summary>CLI/STI/IN/OUT sensitivity: allowed in real mode or when CPL &lt;= IOPL (SDM vol. 1, 3.4.3.3 IOPL).</summary>
    private bool IoplAllows() => !ProtectedMode || (!V86Mode && _cpl <= (int)((_eflags >> 12) & 3));

    private bool RequireProtectedMode()
    {
        if (!ProtectedMode || V86Mode)
        {
            Fault(Vector.UD);
            return false;
        }
        return true;
    }

    private void LoadTableRegister(ref DecodedInsn d, bool gdt)
    {
        if (!RequireCpl0()) return;
        if (d.Kind0 != OpKindCode.Mem)
        {
            Fault(Vector.UD);
            return;
        }
        uint ea = EffectiveAddress(ref d);
        uint limit = ReadSeg(d.Seg, ea, 2);
        uint baseAddr = ReadSeg(d.Seg, d.Addr16 ? (ea + 2) & 0xFFFF : ea + 2, 4);
        if (Faulted) return;
        // A 16-bit operand size loads a 24-bit base (SDM vol. 2, LGDT/LIDT).
        if (OperandSizeOf(in d.I) == 2) baseAddr &= 0x00FF_FFFF;
        if (gdt) { _gdtrBase = baseAddr; _gdtrLimit = (ushort)limit; }
        else { _idtrBase = baseAddr; _idtrLimit = (ushort)limit; }
    }

    private void StoreTableRegister(ref DecodedInsn d, uint baseAddr, ushort limit)
    {
        if (d.Kind0 != OpKindCode.Mem)
        {
            Fault(Vector.UD);
            return;
        }
        uint ea = EffectiveAddress(ref d);
        if (!SegCheck(d.Seg, ea, 6, true, out _)) return;
        WriteSeg(d.Seg, ea, 2, limit);
        WriteSeg(d.Seg, d.Addr16 ? (ea + 2) & 0xFFFF : ea + 2, 4, baseAddr);
    }

    private void StoreSystemSelector(ref DecodedInsn d, ushort selector)
    {
        if (!RequireProtectedMode()) return;
        if (d.Kind0 == OpKindCode.Mem) WriteSeg(d.Seg, EffectiveAddress(ref d), 2, selector);
        else WriteReg(d.Reg0, selector);
    }

    private static void Lldt(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireProtectedMode() || !c.RequireCpl0()) return;
        ushort sel = (ushort)(d.Kind0 == OpKindCode.Mem ? c.ReadSeg(d.Seg, c.EffectiveAddress(ref d), 2) : c.ReadReg(d.Reg0));
        if (c.Faulted) return;
        if ((sel & 0xFFFC) == 0)
        {
            c._ldtr = new SegmentCache { Selector = sel };
            return;
        }
        if ((sel & 4) != 0)
        {
            c.Fault(Vector.GP, (uint)(sel & 0xFFFC));
            return;
        }
        if (!c.ReadDescriptor(sel, out ulong desc)) return;
        var cache = DescriptorToCache(sel, desc);
        if (!cache.IsSystem || cache.Type != 2)
        {
            c.Fault(Vector.GP, (uint)(sel & 0xFFFC));
            return;
        }
        if (!cache.Present)
        {
            c.Fault(Vector.NP, (uint)(sel & 0xFFFC));
            return;
        }
        cache.Rights = SegmentRights.Usable;
        c._ldtr = cache;
    }

    private static void Ltr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireProtectedMode() || !c.RequireCpl0()) return;
        ushort sel = (ushort)(d.Kind0 == OpKindCode.Mem ? c.ReadSeg(d.Seg, c.EffectiveAddress(ref d), 2) : c.ReadReg(d.Reg0));
        if (c.Faulted) return;
        if ((sel & 0xFFFC) == 0 || (sel & 4) != 0)
        {
            c.Fault(Vector.GP, (uint)(sel & 0xFFFC));
            return;
        }
        if (!c.ReadDescriptor(sel, out ulong desc)) return;
        var cache = DescriptorToCache(sel, desc);
        if (!cache.IsSystem || (cache.Type != 1 && cache.Type != 9))
        {
            c.Fault(Vector.GP, (uint)(sel & 0xFFFC));
            return;
        }
        if (!cache.Present)
        {
            c.Fault(Vector.NP, (uint)(sel & 0xFFFC));
            return;
        }
        // Mark the TSS busy in its descriptor (SDM vol. 3, 7.2.4).
        uint addr = c._gdtrBase + ((uint)sel & 0xFFF8) + 5;
        uint access = c.ReadLinSystem(addr, 1);
        c.WriteLinSystem(addr, 1, access | 2);
        if (c.Faulted) return;
        cache.Attributes |= 2;
        cache.Rights = SegmentRights.Usable;
        c._tr = cache;
    }

    private static void Lmsw(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        uint v = c.ReadOp0(ref d);
        if (c.Faulted) return;
        // LMSW loads PE, MP, EM, TS; it can set PE but never clear it (SDM vol. 2, LMSW).
        uint newCr0 = (c._cr0 & ~0xEu) | (v & 0xF);
        newCr0 |= c._cr0 & ControlBits.Cr0PE;
        c.WriteCr0(newCr0);
    }

    private static void MovToCr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        uint v = c.ReadReg(d.Reg1);
        switch (d.Reg0 & 0xF)
        {
            case 0: c.WriteCr0(v); break;
            case 2: c._cr2 = v; break;
            case 3:
                c._cr3 = v & 0xFFFF_F018;
                c.FlushTlb(includeGlobal: false);
                c._event |= EvBreak;
                break;
            case 4:
                if ((v & ~ControlBits.Cr4Supported) != 0)
                {
                    c.Fault(Vector.GP, 0);
                    return;
                }
                if (((c._cr4 ^ v) & (ControlBits.Cr4PSE | ControlBits.Cr4PGE | ControlBits.Cr4PAE)) != 0)
                {
                    c.FlushTlb(includeGlobal: true);
                }
                c._cr4 = v;
                c._event |= EvBreak;
                break;
            default:
                c.Fault(Vector.UD);
                break;
        }
    }

    /// <summary>MOV to CR0 / LMSW (SDM vol. 3, 2.5; 9.9 mode switching): checks, TLB flush on PG/PE/WP change.</summary>
    internal void WriteCr0(uint v)
    {
        if ((v & ControlBits.Cr0PG) != 0 && (v & ControlBits.Cr0PE) == 0 || (v & ControlBits.Cr0NW) != 0 && (v & ControlBits.Cr0CD) == 0)
        {
            Fault(Vector.GP, 0);
            return;
        }
        const uint defined = ControlBits.Cr0PE | ControlBits.Cr0MP | ControlBits.Cr0EM | ControlBits.Cr0TS | ControlBits.Cr0NE
            | ControlBits.Cr0WP | ControlBits.Cr0AM | ControlBits.Cr0NW | ControlBits.Cr0CD | ControlBits.Cr0PG;
        v = (v & defined) | ControlBits.Cr0ET;
        uint changed = _cr0 ^ v;
        _cr0 = v;
        if ((changed & (ControlBits.Cr0PG | ControlBits.Cr0PE | ControlBits.Cr0WP)) != 0)
        {
            FlushTlb(includeGlobal: true);
        }
        if ((changed & ControlBits.Cr0PE) != 0 && (v & ControlBits.Cr0PE) == 0)
        {
            // Back to real mode: segment caches keep base and limit ("unreal mode"), access is R/W.
            for (int s = 0; s < 6; s++)
            {
                _seg[s].Rights = SegmentRights.Read | SegmentRights.Write | SegmentRights.Usable;
            }
            _cpl = 0;
            UpdatePermissionBits();
        }
        _event |= EvBreak;
    }

    private static void MovFromCr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        uint v;
        switch (d.Reg1 & 0xF)
        {
            case 0: v = c._cr0; break;
            case 2: v = c._cr2; break;
            case 3: v = c._cr3; break;
            case 4: v = c._cr4; break;
            default: c.Fault(Vector.UD); return;
        }
        c.WriteReg(d.Reg0, v);
    }

    private int DebugRegisterIndex(int n)
    {
        if (n is 4 or 5)
        {
            if ((_cr4 & ControlBits.Cr4DE) != 0)
            {
                Fault(Vector.UD);
                return -1;
            }
            return n + 2;
        }
        return n;
    }

    // Debug registers are stored and read back; breakpoints in DR7 are not armed (docs/cpu.md).
    private static void MovToDr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        int n = c.DebugRegisterIndex(d.Reg0 & 7);
        if (n < 0) return;
        uint v = c.ReadReg(d.Reg1);
        c._dr[n] = n switch
        {
            6 => (v & 0xE00F) | 0xFFFF0FF0,
            7 => (v & 0xFFFF_2BFF) | 0x400,
            _ => v,
        };
    }

    private static void MovFromDr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        int n = c.DebugRegisterIndex(d.Reg1 & 7);
        if (n < 0) return;
        c.WriteReg(d.Reg0, c._dr[n]);
    }

    private void LarLsl(ref DecodedInsn d, bool lar)
    {
        if (!RequireProtectedMode()) return;
        ushort sel = (ushort)(d.Kind1 == OpKindCode.Mem ? ReadSeg(d.Seg, EffectiveAddress(ref d), 2) : ReadReg(d.Reg1));
        if (Faulted) return;
        bool ok = ProbeDescriptor(sel, out ulong desc, out SegmentCache cache);
        if (ok)
        {
            // LAR accepts code/data and the system types of SDM vol. 2 LAR table; LSL only those with a limit.
            if (cache.IsSystem)
            {
                int t = cache.Type;
                ok = lar ? t is 1 or 2 or 3 or 4 or 5 or 9 or 11 or 12 : t is 1 or 2 or 3 or 9 or 11;
            }
            if (ok && !(!cache.IsSystem && (cache.Type & 0xC) == 0xC))
            {
                ok = cache.Dpl >= _cpl && cache.Dpl >= (sel & 3);
            }
        }
        if (ok)
        {
            uint v = lar ? (uint)(desc >> 32) & 0x00F0_FF00 : cache.Limit;
            WriteReg(d.Reg0, v);
        }
        SetFlagBits(EflagsBits.ZF, ok);
    }

    private void VerifySegment(ref DecodedInsn d, bool write)
    {
        if (!RequireProtectedMode()) return;
        ushort sel = (ushort)ReadOp0(ref d);
        if (Faulted) return;
        bool ok = ProbeDescriptor(sel, out _, out SegmentCache cache) && !cache.IsSystem;
        if (ok)
        {
            bool code = (cache.Type & 8) != 0;
            bool conforming = code && (cache.Type & 4) != 0;
            if (!conforming && (cache.Dpl < _cpl || cache.Dpl < (sel & 3))) ok = false;
            else if (write) ok = !code && (cache.Type & 2) != 0;
            else ok = !code || (cache.Type & 2) != 0;
        }
        SetFlagBits(EflagsBits.ZF, ok);
    }

    /// <summary>Reads a descriptor for LAR/LSL/VERR/VERW without faulting on a bad selector (they report through ZF).</summary>
    private bool ProbeDescriptor(ushort sel, out ulong desc, out SegmentCache cache)
    {
        desc = 0;
        cache = default;
        if ((sel & 0xFFFC) == 0)
        {
            return false;
        }
        uint tableLimit = (sel & 4) != 0 ? ((_ldtr.Rights & SegmentRights.Usable) != 0 ? _ldtr.Limit : 0) : _gdtrLimit;
        if (((uint)sel & 0xFFF8) + 7 > tableLimit || ((sel & 4) != 0 && (_ldtr.Rights & SegmentRights.Usable) == 0))
        {
            return false;
        }
        if (!ReadDescriptor(sel, out desc)) return false;
        cache = DescriptorToCache(sel, desc);
        return true;
    }

    private static void Arpl(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireProtectedMode()) return;
        uint dest = c.ReadOp0(ref d);
        uint src = c.ReadReg(d.Reg1);
        if (c.Faulted) return;
        if ((dest & 3) < (src & 3))
        {
            c.WriteOp0(ref d, (dest & ~3u) | (src & 3));
            if (c.Faulted) return;
            c.SetFlagBits(EflagsBits.ZF, true);
        }
        else
        {
            c.SetFlagBits(EflagsBits.ZF, false);
        }
    }

    // SYSENTER/SYSEXIT (SDM vol. 2, SYSENTER/SYSEXIT): flat segments derived from IA32_SYSENTER_CS.
    private static void Sysenter(Cpu c, ref DecodedInsn d)
    {
        if (!c.ProtectedMode || (c._sysenterCs & 0xFFFC) == 0)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        c._eflags &= ~(EflagsBits.VM | EflagsBits.IF | EflagsBits.RF);
        ushort cs = (ushort)(c._sysenterCs & 0xFFFC);
        c._seg[(int)SegReg.Cs] = new SegmentCache { Selector = cs, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xC09B, Rights = SegmentRights.Read | SegmentRights.Usable };
        c._seg[(int)SegReg.Ss] = new SegmentCache { Selector = (ushort)(cs + 8), Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xC093, Rights = SegmentRights.Read | SegmentRights.Write | SegmentRights.Usable };
        c._cpl = 0;
        c.UpdatePermissionBits();
        c._gpr[4] = c._sysenterEsp;
        c._eip = c._sysenterEip;
        c._event |= EvBreak;
    }

    private static void Sysexit(Cpu c, ref DecodedInsn d)
    {
        if (!c.ProtectedMode || c._cpl != 0 || (c._sysenterCs & 0xFFFC) == 0)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        ushort cs = (ushort)((c._sysenterCs + 16) | 3);
        c._seg[(int)SegReg.Cs] = new SegmentCache { Selector = cs, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xC0FB, Rights = SegmentRights.Read | SegmentRights.Usable };
        c._seg[(int)SegReg.Ss] = new SegmentCache { Selector = (ushort)((c._sysenterCs + 24) | 3), Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xC0F3, Rights = SegmentRights.Read | SegmentRights.Write | SegmentRights.Usable };
        c._cpl = 3;
        c.UpdatePermissionBits();
        c._gpr[4] = c._gpr[1];
        c._eip = c._gpr[2];
        c._event |= EvBreak;
    }

    private static void Rdmsr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        uint msr = c._gpr[1];
        bool known = c.TryReadMsr(msr, out ulong value);
        c._exit.Address = msr;
        c._exit.Value = value;
        c.RaiseExit(ExitKind.Rdmsr);
        if (!known)
        {
            c.Fault(Vector.GP, 0);
            return;
        }
        value = c._exit.Value;
        c._gpr[0] = (uint)value;
        c._gpr[2] = (uint)(value >> 32);
    }

    private static void Wrmsr(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        uint msr = c._gpr[1];
        ulong value = ((ulong)c._gpr[2] << 32) | c._gpr[0];
        c._exit.Address = msr;
        c._exit.Value = value;
        c.RaiseExit(ExitKind.Wrmsr);
        if (!c.TryWriteMsr(msr, value))
        {
            c.Fault(Vector.GP, 0);
        }
    }

    // The model-specific registers this model has (docs/cpu.md); any other MSR is #GP(0).
    private bool TryReadMsr(uint msr, out ulong value)
    {
        switch (msr)
        {
            case 0x10: value = ReadTsc(); return true;                 // IA32_TIME_STAMP_COUNTER
            case 0x17: value = 0; return true;                         // IA32_PLATFORM_ID
            case 0x8B: value = 0; return true;                         // IA32_BIOS_SIGN_ID (no microcode)
            case 0x174: value = _sysenterCs; return true;
            case 0x175: value = _sysenterEsp; return true;
            case 0x176: value = _sysenterEip; return true;
            default: value = 0; return false;
        }
    }

    private bool TryWriteMsr(uint msr, ulong value)
    {
        switch (msr)
        {
            case 0x10:
                // Writing the TSC sets the offset from virtual time (SDM vol. 3, 17.17).
                _tscOffset = value - TscBase;
                return true;
            case 0x8B: return true;
            case 0x174: _sysenterCs = (uint)value & 0xFFFF; return true;
            case 0x175: _sysenterEsp = (uint)value; return true;
            case 0x176: _sysenterEip = (uint)value; return true;
            default: return false;
        }
    }

    private static void Cpuid(Cpu c, ref DecodedInsn d)
    {
        uint leaf = c._gpr[0], subleaf = c._gpr[1];
        CpuidModel.Query(leaf, subleaf, c.X87Present, out uint a, out uint b, out uint cc, out uint dd);
        c._exit.Leaf = leaf;
        c._exit.Subleaf = subleaf;
        c._exit.Eax = a;
        c._exit.Ebx = b;
        c._exit.Ecx = cc;
        c._exit.Edx = dd;
        c.RaiseExit(ExitKind.Cpuid);
        c._gpr[0] = c._exit.Eax;
        c._gpr[3] = c._exit.Ebx;
        c._gpr[1] = c._exit.Ecx;
        c._gpr[2] = c._exit.Edx;
    }

    private static void Hlt(Cpu c, ref DecodedInsn d)
    {
        if (!c.RequireCpl0()) return;
        if (c.RaiseExit(ExitKind.Hlt))
        {
            c._halted = true;
        }
    }

    private static void Pushf(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        // The pushed image has VM and RF clear (SDM vol. 2, PUSHF).
        uint f = c.Eflags & ~(EflagsBits.VM | EflagsBits.RF);
        c.Push(size == 2 ? f & 0xFFFF : f, size);
    }

    /// <summary>
    /// POPF (SDM vol. 2, POPF table): at CPL 0 every flag but VM/VIP/VIF (RF cleared); at CPL &gt; 0
    /// IOPL is kept; IF changes only when CPL &lt;= IOPL, silently otherwise; 16-bit form: low word.
    /// </summary>
    private static void Popf(Cpu c, ref DecodedInsn d)
    {
        int size = OperandSizeOf(in d.I);
        uint v = c.Pop(size);
        if (c.Faulted) return;
        uint mask = EflagsBits.Arithmetic | EflagsBits.TF | EflagsBits.DF | EflagsBits.NT | EflagsBits.AC | EflagsBits.ID;
        if (!c.ProtectedMode || c._cpl == 0) mask |= EflagsBits.IOPL;
        if (!c.ProtectedMode || c._cpl <= (int)((c._eflags >> 12) & 3)) mask |= EflagsBits.IF;
        if (size == 2) mask &= 0xFFFF;
        uint current = c.Eflags & ~EflagsBits.RF;
        c.Eflags = (current & ~mask) | (v & mask);
        c._event |= EvBreak;
    }
}
