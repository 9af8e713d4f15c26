using System.Runtime.CompilerServices;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Cpu;

// Memory access: segmentation (SDM vol. 3, ch. 5 "Protection"), 32-bit paging (SDM vol. 3, 4.3
// "32-bit paging", 4.6 "Access rights", 4.7 "Page-fault exceptions", 4.8 "Accessed and dirty
// flags") and a soft TLB (SDM vol. 3, 4.10 "Caching translation information").
//
// The soft TLB is direct-mapped by linear page number. An entry caches a linear page that maps
// to a page of plain RAM; its permission bits say which accesses may take the fast path:
// supervisor/user read and supervisor/user write. Write bits are granted only once the page's
// dirty bit is set and only while the physical page holds no decoded code, so the first write
// (D-bit update) and every write to a code page (decoded-block invalidation) take the slow path.
public sealed partial class Cpu
{
    private const int TlbBits = 12;
    private const int TlbSize = 1 << TlbBits;
    private const uint TlbMask = TlbSize - 1;
    private const uint TlbInvalid = 0xFFFF_FFFF;

    private const byte PermReadSup = 1, PermWriteSup = 2, PermReadUser = 4, PermWriteUser = 8, PermGlobal = 16, PermLarge = 32;

    /// <summary>A soft-TLB entry: linear page number (tag), physical page base and permission bits, kept in one cache line's worth of neighbours.</summary>
    private struct TlbEntry
    {
        public uint Tag;
        public uint Page;
        public byte Perm;
    }

    private readonly TlbEntry[] _tlb = new TlbEntry[TlbSize];

    // Permission bits required for the current privilege level's data accesses (CPL 3 = user).
    private byte _permRead = PermReadSup, _permWrite = PermWriteSup;

    // One bit per 4 MiB linear region that may hold TLB entries from a large page (for INVLPG).
    private readonly ulong[] _largeRegions = new ulong[1024 / 64];

    private void InitTlb() => InvalidateAllTlbEntries();

    private void InvalidateAllTlbEntries()
    {
        var tlb = _tlb;
        for (int i = 0; i < tlb.Length; i++)
        {
            tlb[i].Tag = TlbInvalid;
        }
    }

    private void UpdatePermissionBits()
    {
        _fetchEpoch++;
        bool user = _cpl == 3;
        _permRead = user ? PermReadUser : PermReadSup;
        _permWrite = user ? PermWriteUser : PermWriteSup;
    }

    private bool PagingEnabled => (_cr0 & ControlBits.Cr0PG) != 0;

    /// <summary>Drops cached translations: all of them, or all but global pages (MOV CR3, SDM vol. 3, 4.10.4.1).</summary>
    internal void FlushTlb(bool includeGlobal)
    {
        _fetchEpoch++;
        if (includeGlobal)
        {
            InvalidateAllTlbEntries();
            return;
        }
        for (int i = 0; i < TlbSize; i++)
        {
            if ((_tlb[i].Perm & PermGlobal) == 0)
            {
                _tlb[i].Tag = TlbInvalid;
            }
        }
    }

    /// <summary>INVLPG: drops the translation for the page holding <paramref name="linear"/>, and the whole 4 MiB page if it was large.</summary>
    internal void InvalidatePage(uint linear)
    {
        _fetchEpoch++;
        uint lpn = linear >> 12;
        int idx = (int)(lpn & TlbMask);
        _tlb[idx].Tag = TlbInvalid;
        // A 4 MiB page is cached as up to 1024 4 KiB entries; drop them all (SDM vol. 3, 4.10.4.1:
        // INVLPG invalidates all entries for the page, whatever its size). A bitmap of the 4 MiB
        // regions that may have large-page entries keeps the common 4 KiB case to one slot.
        uint region = linear >> 22;
        ulong regionBit = 1UL << (int)(region & 63);
        if ((_largeRegions[region >> 6] & regionBit) == 0)
        {
            return;
        }
        _largeRegions[region >> 6] &= ~regionBit;
        for (int i = 0; i < TlbSize; i++)
        {
            if ((_tlb[i].Perm & PermLarge) != 0 && _tlb[i].Tag != TlbInvalid && (_tlb[i].Tag >> 10) == region)
            {
                _tlb[i].Tag = TlbInvalid;
            }
        }
    }

    // ---------------------------------------------------------------- segment-level access

    /// <summary>
    /// Checks a data access of <paramref name="size"/> bytes at <paramref name="offset"/> in
    /// segment <paramref name="seg"/> and returns the linear address; on a violation raises #GP(0)
    /// or, for SS, #SS(0) (SDM vol. 3, 5.3 "Limit checking", 5.4 "Type checking") and returns false.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool SegCheck(int seg, uint offset, int size, bool write, out uint linear) =>
        SegCheckFast(seg, offset, size, write, out linear) || SegCheckSlow(seg, offset, size, write, out linear);

    /// <summary>The common case of <see cref="SegCheck"/>: a usable expand-up segment with the right access; raises nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool SegCheckFast(int seg, uint offset, int size, bool write, out uint linear)
    {
        ref SegmentCache s = ref _seg[seg];
        byte need = write ? (byte)(SegmentRights.Write | SegmentRights.Usable) : (byte)(SegmentRights.Read | SegmentRights.Usable);
        linear = s.Base + offset;
        return (s.Rights & (need | SegmentRights.ExpandDown)) == need && (ulong)offset + (uint)(size - 1) <= s.Limit;
    }

    private bool SegCheckSlow(int seg, uint offset, int size, bool write, out uint linear)
    {
        ref SegmentCache s = ref _seg[seg];
        linear = s.Base + offset;
        byte need = write ? (byte)(SegmentRights.Write | SegmentRights.Usable) : (byte)(SegmentRights.Read | SegmentRights.Usable);
        bool ok = (s.Rights & need) == need;
        if (ok)
        {
            if ((s.Rights & SegmentRights.ExpandDown) != 0)
            {
                // Expand-down: valid offsets are limit+1 .. 0xFFFF or 0xFFFFFFFF (B bit).
                ulong upper = s.Big ? 0xFFFF_FFFFUL : 0xFFFFUL;
                ok = offset > s.Limit && (ulong)offset + (uint)(size - 1) <= upper;
            }
            else
            {
                ok = (ulong)offset + (uint)(size - 1) <= s.Limit;
            }
        }
        if (!ok)
        {
            Fault(seg == (int)SegReg.Ss ? Vector.SS : Vector.GP, 0);
        }
        return ok;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint ReadSeg(int seg, uint offset, int size)
    {
        if (!SegCheck(seg, offset, size, false, out uint lin))
        {
            return 0;
        }
        return ReadLin(lin, size);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteSeg(int seg, uint offset, int size, uint value)
    {
        if (SegCheck(seg, offset, size, true, out uint lin))
        {
            WriteLin(lin, size, value);
        }
    }

    // ---------------------------------------------------------------- linear access

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint ReadLin(uint lin, int size) => TryReadRam(lin, size, out uint v) ? v : ReadLinSlow(lin, size, _cpl == 3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteLin(uint lin, int size, uint value)
    {
        if (!TryWriteRam(lin, size, value))
        {
            WriteLinSlow(lin, size, value, _cpl == 3);
        }
    }

    /// <summary>
    /// The soft-TLB fast path of a read: a hit with read permission on a page wholly inside RAM
    /// (checked at fill) and not crossing its end. Has no side effects; false leaves it to the slow path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryReadRam(uint lin, int size, out uint value)
    {
        uint lpn = lin >> 12;
        uint off = lin & 0xFFF;
        ref TlbEntry e = ref _tlb[(int)(lpn & TlbMask)];
        if (e.Tag == lpn && (e.Perm & _permRead) != 0 && off <= 4096u - (uint)size)
        {
            ref byte p = ref _ram[(int)(e.Page | off)];
            value = size == 4 ? Unsafe.ReadUnaligned<uint>(ref p) : size == 2 ? Unsafe.ReadUnaligned<ushort>(ref p) : p;
            return true;
        }
        value = 0;
        return false;
    }

    /// <summary>
    /// The soft-TLB fast path of a write. Pages holding decoded code have no fast-path write
    /// permission (CodeCache.cs), so a write done here never needs the code cache told.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryWriteRam(uint lin, int size, uint value)
    {
        uint lpn = lin >> 12;
        uint off = lin & 0xFFF;
        ref TlbEntry e = ref _tlb[(int)(lpn & TlbMask)];
        if (e.Tag == lpn && (e.Perm & _permWrite) != 0 && off <= 4096u - (uint)size)
        {
            ref byte p = ref _ram[(int)(e.Page | off)];
            if (size == 4) Unsafe.WriteUnaligned(ref p, value);
            else if (size == 2) Unsafe.WriteUnaligned(ref p, (ushort)value);
            else p = (byte)value;
            return true;
        }
        return false;
    }

    /// <summary>A supervisor-mode (implicit) access: descriptor tables, TSS, interrupt stacks at CPL 0.</summary>
    internal uint ReadLinSystem(uint lin, int size) => ReadLinSlow(lin, size, user: false);

    internal void WriteLinSystem(uint lin, int size, uint value) => WriteLinSlow(lin, size, value, user: false);

    internal uint ReadLinSlow(uint lin, int size, bool user)
    {
        if ((lin & 0xFFF) + (uint)size > 4096)
        {
            // Page-crossing access: translate both pages first so a fault on either leaves nothing done.
            if (!Translate(lin, false, user, out uint p0) || !Translate((lin | 0xFFF) + 1, false, user, out _))
            {
                return 0;
            }
            _ = p0;
            uint v = 0;
            for (int i = 0; i < size; i++)
            {
                Translate(lin + (uint)i, false, user, out uint pb);
                v |= ReadPhys(pb, 1) << (8 * i);
            }
            return v;
        }
        if (!Translate(lin, false, user, out uint phys))
        {
            return 0;
        }
        return ReadPhys(phys, size);
    }

    internal void WriteLinSlow(uint lin, int size, uint value, bool user)
    {
        if ((lin & 0xFFF) + (uint)size > 4096)
        {
            if (!Translate(lin, true, user, out _) || !Translate((lin | 0xFFF) + 1, true, user, out _))
            {
                return;
            }
            for (int i = 0; i < size; i++)
            {
                Translate(lin + (uint)i, true, user, out uint pb);
                WritePhys(pb, 1, (value >> (8 * i)) & 0xFF);
            }
            return;
        }
        if (Translate(lin, true, user, out uint phys))
        {
            WritePhys(phys, size, value);
        }
    }

    /// <summary>Reads bytes at a linear address for an instruction's memory operand (x87 state, CMPXCHG8B ...).</summary>
    internal bool ReadLinBytes(uint lin, Span<byte> dest)
    {
        for (int i = 0; i < dest.Length; i++)
        {
            dest[i] = (byte)ReadLin(lin + (uint)i, 1);
            if ((_event & EvFault) != 0)
            {
                return false;
            }
        }
        return true;
    }

    // ---------------------------------------------------------------- paging walker

    /// <summary>
    /// Translates a linear address (SDM vol. 3, 4.3), checking U/S and R/W (4.6, with CR0.WP),
    /// setting accessed/dirty bits (4.8) and filling the soft TLB. On a violation sets CR2 and
    /// raises #PF with the error code of 4.7 (P, W/R, U/S) and returns false.
    /// </summary>
    internal bool Translate(uint lin, bool write, bool user, out uint phys)
    {
        uint lpn = lin >> 12;
        int idx = (int)(lpn & TlbMask);
        if (_tlb[idx].Tag == lpn)
        {
            byte need = write ? (user ? PermWriteUser : PermWriteSup) : (user ? PermReadUser : PermReadSup);
            if ((_tlb[idx].Perm & need) != 0)
            {
                phys = _tlb[idx].Page | (lin & 0xFFF);
                return true;
            }
        }
        if (!PagingEnabled)
        {
            phys = lin;
            FillTlb(lin, lin & 0xFFFF_F000, PermReadSup | PermWriteSup | PermReadUser | PermWriteUser, write);
            return true;
        }
        uint pdeAddr = (_cr3 & 0xFFFF_F000) | ((lin >> 20) & 0xFFC);
        uint pde = ReadPhysTable(pdeAddr);
        uint errUser = user ? 4u : 0u;
        uint errWrite = write ? 2u : 0u;
        if ((pde & 1) == 0)
        {
            return PageFault(lin, errUser | errWrite, out phys);
        }
        bool wp = (_cr0 & ControlBits.Cr0WP) != 0;
        if ((pde & 0x80) != 0 && (_cr4 & ControlBits.Cr4PSE) != 0)
        {
            // 4 MiB page (SDM vol. 3, 4.3 with CR4.PSE=1, table 4-4).
            bool userOk = (pde & 4) != 0;
            bool rw = (pde & 2) != 0;
            if ((user && !userOk) || (write && !rw && (user || wp)))
            {
                return PageFault(lin, 1 | errUser | errWrite, out phys);
            }
            uint newPde = pde | 0x20 | (write ? 0x40u : 0u);
            if (newPde != pde)
            {
                WritePhysTable(pdeAddr, newPde);
            }
            phys = (pde & 0xFFC0_0000) | (lin & 0x003F_FFFF);
            byte perm = PermReadSup | PermLarge;
            bool dirty = (newPde & 0x40) != 0;
            if (userOk) perm |= PermReadUser;
            if (dirty && (rw || !wp)) perm |= PermWriteSup;
            if (dirty && rw && userOk) perm |= PermWriteUser;
            if ((pde & 0x100) != 0 && (_cr4 & ControlBits.Cr4PGE) != 0) perm |= PermGlobal;
            FillTlb(lin, phys & 0xFFFF_F000, perm, write);
            return true;
        }
        uint pteAddr = (pde & 0xFFFF_F000) | ((lin >> 10) & 0xFFC);
        uint pte = ReadPhysTable(pteAddr);
        if ((pte & 1) == 0)
        {
            return PageFault(lin, errUser | errWrite, out phys);
        }
        {
            bool userOk = (pde & pte & 4) != 0;
            bool rw = (pde & pte & 2) != 0;
            if ((user && !userOk) || (write && !rw && (user || wp)))
            {
                return PageFault(lin, 1 | errUser | errWrite, out phys);
            }
            if ((pde & 0x20) == 0)
            {
                WritePhysTable(pdeAddr, pde | 0x20);
            }
            uint newPte = pte | 0x20 | (write ? 0x40u : 0u);
            if (newPte != pte)
            {
                WritePhysTable(pteAddr, newPte);
            }
            phys = (pte & 0xFFFF_F000) | (lin & 0xFFF);
            byte perm = PermReadSup;
            bool dirty = (newPte & 0x40) != 0;
            if (userOk) perm |= PermReadUser;
            if (dirty && (rw || !wp)) perm |= PermWriteSup;
            if (dirty && rw && userOk) perm |= PermWriteUser;
            if ((pte & 0x100) != 0 && (_cr4 & ControlBits.Cr4PGE) != 0) perm |= PermGlobal;
            FillTlb(lin, phys & 0xFFFF_F000, perm, write);
            return true;
        }
    }

    private bool PageFault(uint lin, uint error, out uint phys)
    {
        phys = 0;
        _cr2 = lin;
        Fault(Vector.PF, error);
        return false;
    }

    private void FillTlb(uint lin, uint physPage, byte perm, bool write)
    {
        if (!_map.IsPlainRamPage(physPage))
        {
            return; // ROM, MMIO and unmapped pages always take the slow path.
        }
        uint page = physPage >> 12;
        if ((_codePages[page >> 6] & (1UL << (int)(page & 63))) != 0)
        {
            perm &= unchecked((byte)~(PermWriteSup | PermWriteUser));
        }
        _ = write;
        if ((perm & PermLarge) != 0)
        {
            _largeRegions[lin >> 28] |= 1UL << (int)((lin >> 22) & 63);
        }
        int idx = (int)((lin >> 12) & TlbMask);
        _tlb[idx].Tag = lin >> 12;
        _tlb[idx].Page = physPage;
        _tlb[idx].Perm = perm;
    }

    // Page-table entries are read and written as physical memory (SDM vol. 3, 4.3); tables outside
    // RAM read as all-ones (not a valid table) and A/D updates to them are dropped.
    private uint ReadPhysTable(uint addr)
    {
        if (addr <= _ramSize - 4)
        {
            return Unsafe.ReadUnaligned<uint>(ref _ram[(int)addr]);
        }
        return ReadPhys(addr, 4);
    }

    private void WritePhysTable(uint addr, uint value)
    {
        if (addr <= _ramSize - 4)
        {
            Unsafe.WriteUnaligned(ref _ram[(int)addr], value);
            NoteRamWrite(addr);
        }
    }

    // ---------------------------------------------------------------- physical access

    /// <summary>Reads guest-physical memory: RAM or ROM directly; MMIO and unmapped addresses through an exit.</summary>
    internal uint ReadPhys(uint addr, int size)
    {
        if ((ulong)addr + (uint)size <= _ramSize && _map.IsPlainRamPage(addr))
        {
            ref byte p = ref _ram[(int)addr];
            return size == 4 ? Unsafe.ReadUnaligned<uint>(ref p) : size == 2 ? Unsafe.ReadUnaligned<ushort>(ref p) : p;
        }
        var kind = _map.Decode(addr, out var device, out uint offset, out byte[]? rom);
        switch (kind)
        {
            case PhysicalRegionKind.Ram:
            case PhysicalRegionKind.Rom:
            {
                uint v = 0;
                for (int i = 0; i < size; i++)
                {
                    v |= (uint)ReadPhysByte(addr + (uint)i) << (8 * i);
                }
                return v;
            }
            default:
            {
                _exit.Address = addr;
                _exit.Size = (byte)size;
                _exit.Value = SizeMask(size);
                RaiseExit(ExitKind.MmioRead);
                ulong value = _exit.Value;
                if (kind == PhysicalRegionKind.Mmio && device is not null)
                {
                    value = device.Read(offset, size);
                }
                return (uint)value & SizeMask(size);
            }
        }
    }

    private byte ReadPhysByte(uint addr)
    {
        var kind = _map.Decode(addr, out _, out uint offset, out byte[]? rom);
        return kind switch
        {
            PhysicalRegionKind.Ram => _ram[(int)offset],
            PhysicalRegionKind.Rom => rom![offset],
            _ => 0xFF,
        };
    }

    /// <summary>Writes guest-physical memory: RAM directly (dropping decoded code on the page); ROM, MMIO and unmapped through an exit.</summary>
    internal void WritePhys(uint addr, int size, uint value)
    {
        if ((ulong)addr + (uint)size <= _ramSize && _map.IsPlainRamPage(addr))
        {
            ref byte p = ref _ram[(int)addr];
            if (size == 4) Unsafe.WriteUnaligned(ref p, value);
            else if (size == 2) Unsafe.WriteUnaligned(ref p, (ushort)value);
            else p = (byte)value;
            NoteRamWrite(addr);
            if (((addr + (uint)size - 1) >> 12) != (addr >> 12))
            {
                NoteRamWrite(addr + (uint)size - 1);
            }
            return;
        }
        var kind = _map.Decode(addr, out var device, out uint offset, out _);
        if (kind == PhysicalRegionKind.Ram)
        {
            for (int i = 0; i < size; i++)
            {
                WritePhys(addr + (uint)i, 1, value >> (8 * i));
            }
            return;
        }
        _exit.Address = addr;
        _exit.Size = (byte)size;
        _exit.Value = value & SizeMask(size);
        bool go = RaiseExit(ExitKind.MmioWrite);
        if (kind == PhysicalRegionKind.Mmio && device is not null && go)
        {
            device.Write(offset, size, value & SizeMask(size));
        }
    }

    // ---------------------------------------------------------------- public debugging/loader access

    /// <summary>Reads guest-linear memory with the current translation, as a supervisor access, without side effects on failure.</summary>
    public bool TryReadLinear(uint linear, Span<byte> dest)
    {
        int saved = _event;
        uint savedCr2 = _cr2;
        for (int i = 0; i < dest.Length; i++)
        {
            if (!Translate(linear + (uint)i, false, false, out uint phys))
            {
                _event = saved;
                _cr2 = savedCr2;
                _pendingFault = false;
                return false;
            }
            dest[i] = ReadPhysByte(phys);
        }
        return true;
    }
}
