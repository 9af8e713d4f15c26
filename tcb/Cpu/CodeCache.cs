using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

/// <summary>A handler for one decoded instruction (one entry of the dispatch table).</summary>
internal delegate void InsnHandler(Cpu cpu, ref DecodedInsn d);

/// <summary>Operand kinds the handlers distinguish.</summary>
internal static class OpKindCode
{
    public const byte None = 0, Reg = 1, Mem = 2, Imm = 3;
}

/// <summary>
/// An instruction decoded once by Iced plus what the handlers need pre-digested: operand kinds,
/// register numbers, the effective-address recipe, immediates and the branch target. Cached in
/// a <see cref="Block"/> until the guest-physical page it came from is written.
/// </summary>
internal struct DecodedInsn
{
    public Instruction I;
    public InsnHandler Handler;
    public uint Eip;
    public uint NextEip;
    public uint Imm;
    public uint Imm2;
    public uint Disp;
    public byte Kind0, Kind1, Kind2;
    public byte Reg0, Reg1, Reg2;
    public byte Base, Index, Scale, Seg;
    public bool Addr16;
    public byte OpSize;
    public byte SrcSize;
    public byte Aux;
    public byte Length;
    /// <summary>The specialized form the run loop executes inline (<see cref="FastOp"/>), or 0.</summary>
    public byte Fast;
}

/// <summary>A run of decoded instructions from one guest-physical page, ending at a control transfer.</summary>
internal sealed class Block
{
    public DecodedInsn[] Insns = [];
    public int Count;
    public uint Phys;
    public uint StartEip;
    public uint EndEip;
    public uint Generation;
    public bool Big;
    public bool Cached;
    // Successor links (block chaining): the blocks that followed this one, valid while the
    // CPU's fetch epoch (bumped by every TLB flush and CPL change) and CS base are unchanged.
    public Block? Succ0, Succ1;
    public uint Succ0Epoch, Succ1Epoch;
    public uint Succ0CsBase, Succ1CsBase;
    // Runs of the interpreted block, and its compiled form once it is hot (BlockCompiler.cs).
    public int Runs;
    public bool Queued;
    public CompiledBlock? Compiled;
}

// The decoded-instruction cache (DESIGN.md "decode once"): blocks are looked up by
// guest-physical address and code size in a direct-mapped table and validated against the
// page's write generation; a write to a page holding decoded code bumps the generation (and
// ends the running block), so self-modifying code is re-decoded before it runs.
public sealed partial class Cpu
{
    private const int BlockTableBits = 14;
    private const int MaxBlockInsns = 64;
    internal const byte NoReg = 0xFF;

    private readonly uint[] _pageGeneration;
    private readonly ulong[] _codePages;
    private Block?[] _blockTable = [];
    private readonly byte[] _fetchBuffer = new byte[4096 + 16];
    private readonly DecodedInsn[] _scratchInsns = new DecodedInsn[MaxBlockInsns];
    private readonly Block _uncachedBlock = new() { Insns = new DecodedInsn[1] };
    private FetchReader _reader = null!;
    private Decoder _decoder16 = null!, _decoder32 = null!;

    private sealed class FetchReader(byte[] buffer) : CodeReader
    {
        public int Position;
        public int End;
        public override int ReadByte() => Position < End ? buffer[Position++] : -1;
    }

    private void InitCodeCache()
    {
        _blockTable = new Block?[1 << BlockTableBits];
        _reader = new FetchReader(_fetchBuffer);
        _decoder16 = Decoder.Create(16, _reader);
        _decoder32 = Decoder.Create(32, _reader);
    }

    /// <summary>Called for every CPU write that reaches RAM through the slow path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteRamWrite(uint addr)
    {
        uint page = addr >> 12;
        if (page < (uint)_pageGeneration.Length && (_codePages[page >> 6] & (1UL << (int)(page & 63))) != 0)
        {
            InvalidateCodePage(page);
        }
    }

    private void InvalidateCodePage(uint page)
    {
        _codePages[page >> 6] &= ~(1UL << (int)(page & 63));
        _pageGeneration[page]++;
        _event |= EvBreak;
    }

    /// <summary>Drops decoded code for RAM written by a device or loader.</summary>
    public void InvalidateCodeRange(uint address, int length)
    {
        if (length <= 0)
        {
            return;
        }
        ulong end = (ulong)address + (ulong)length - 1;
        for (ulong page = address >> 12; page <= end >> 12 && page < (ulong)_pageGeneration.Length; page++)
        {
            if ((_codePages[page >> 6] & (1UL << (int)(page & 63))) != 0)
            {
                InvalidateCodePage((uint)page);
            }
        }
    }

    private void MarkCodePage(uint page)
    {
        ulong bit = 1UL << (int)(page & 63);
        if ((_codePages[page >> 6] & bit) != 0)
        {
            return;
        }
        _codePages[page >> 6] |= bit;
        // Revoke fast-path write permission for every TLB entry that maps this page, so writes
        // to it reach NoteRamWrite.
        uint pageBase = page << 12;
        for (int i = 0; i < TlbSize; i++)
        {
            if (_tlb[i].Page == pageBase && _tlb[i].Tag != TlbInvalid)
            {
                _tlb[i].Perm &= unchecked((byte)~(PermWriteSup | PermWriteUser));
            }
        }
    }

    private Block? _lastBlock;
    private uint _fetchEpoch;

    /// <summary>
    /// Finds or builds the block at CS:EIP, first among the successors of <paramref name="last"/>
    /// (the block that ran before, if cached); null when fetching raised a fault.
    /// </summary>
    private Block? FetchBlock(Block? last)
    {
        ref SegmentCache cs = ref _seg[(int)SegReg.Cs];
        uint eip = _eip;
        if (last is not null)
        {
            Block? s = last.Succ0;
            if (s is not null && s.StartEip == eip && last.Succ0Epoch == _fetchEpoch && last.Succ0CsBase == cs.Base
                && s.Big == cs.Big && s.Generation == _pageGeneration[s.Phys >> 12] && s.EndEip - 1 <= cs.Limit && eip <= cs.Limit)
            {
                return s;
            }
            s = last.Succ1;
            if (s is not null && s.StartEip == eip && last.Succ1Epoch == _fetchEpoch && last.Succ1CsBase == cs.Base
                && s.Big == cs.Big && s.Generation == _pageGeneration[s.Phys >> 12] && s.EndEip - 1 <= cs.Limit && eip <= cs.Limit)
            {
                return s;
            }
        }
        Block? found = FetchBlockByTranslation(ref cs, eip);
        if (last is not null && found is not null && found.Cached)
        {
            if (last.Succ0 is null || last.Succ0Epoch != _fetchEpoch || last.Succ1 is not null)
            {
                last.Succ0 = found;
                last.Succ0Epoch = _fetchEpoch;
                last.Succ0CsBase = cs.Base;
            }
            else
            {
                last.Succ1 = found;
                last.Succ1Epoch = _fetchEpoch;
                last.Succ1CsBase = cs.Base;
            }
        }
        return found;
    }

    private Block? FetchBlockByTranslation(ref SegmentCache cs, uint eip)
    {
        if (eip > cs.Limit)
        {
            _currentInsnEip = eip;
            Fault(Vector.GP, 0);
            return null;
        }
        uint lin = cs.Base + eip;
        uint lpn = lin >> 12;
        int idx = (int)(lpn & TlbMask);
        uint phys;
        if (_tlb[idx].Tag == lpn && (_tlb[idx].Perm & _permRead) != 0)
        {
            phys = _tlb[idx].Page | (lin & 0xFFF);
        }
        else
        {
            _currentInsnEip = eip;
            if (!Translate(lin, false, _cpl == 3, out phys))
            {
                return null;
            }
        }
        bool big = cs.Big;
        int slot = (int)((phys ^ (phys >> BlockTableBits) ^ (big ? 0x2A5u : 0u)) & ((1u << BlockTableBits) - 1));
        Block? b = _blockTable[slot];
        // A cached block exists only for plain RAM, so a hit needs no region check.
        if (b is not null && b.Phys == phys && b.StartEip == eip && b.Big == big
            && b.Generation == _pageGeneration[phys >> 12] && b.EndEip - 1 <= cs.Limit)
        {
            return b;
        }
        uint page = phys >> 12;
        if (page < (uint)_pageGeneration.Length && _map.IsPlainRamPage(phys))
        {
            b = BuildBlock(lin, phys, eip, big, cacheable: true);
            if (b is not null && b.Cached)
            {
                _blockTable[slot] = b;
            }
            return b;
        }
        return BuildBlock(lin, phys, eip, big, cacheable: false);
    }

    private Block? BuildBlock(uint lin, uint phys, uint eip, bool big, bool cacheable)
    {
        ref SegmentCache cs = ref _seg[(int)SegReg.Cs];
        int pageOff = (int)(phys & 0xFFF);
        int avail = 4096 - pageOff;
        // Fetch the rest of the page (RAM directly; ROM/MMIO/unmapped byte by byte, never with exits).
        if (cacheable)
        {
            Buffer.BlockCopy(_ram, (int)phys, _fetchBuffer, 0, avail);
        }
        else
        {
            avail = Math.Min(avail, 16 * MaxBlockInsns);
            for (int i = 0; i < avail; i++)
            {
                _fetchBuffer[i] = ReadPhysByte(phys + (uint)i);
            }
        }
        Decoder decoder = big ? _decoder32 : _decoder16;
        int count = 0;
        uint ip = eip;
        int pos = 0;
        bool crossed = false;
        while (count < MaxBlockInsns)
        {
            _reader.Position = pos;
            _reader.End = avail;
            decoder.IP = ip;
            decoder.Decode(out Instruction insn);
            if (decoder.LastError == DecoderError.NoMoreBytes)
            {
                if (count > 0)
                {
                    break;
                }
                // The first instruction crosses into the next page: fetch up to 15 more bytes from
                // there (which may #PF with CR2 in the next page, SDM vol. 3, 4.7) and decode it
                // uncached.
                uint nextLin = (lin | 0xFFF) + 1;
                _currentInsnEip = eip;
                if (!Translate(nextLin, false, _cpl == 3, out uint phys2))
                {
                    return null;
                }
                for (int i = 0; i < 15; i++)
                {
                    _fetchBuffer[avail + i] = ReadPhysByte(phys2 + (uint)i);
                }
                _reader.Position = pos;
                _reader.End = avail + 15;
                decoder.IP = ip;
                decoder.Decode(out insn);
                crossed = true;
            }
            uint next = big ? (uint)insn.NextIP : (uint)(insn.NextIP & 0xFFFF);
            uint lastByte = ip + (uint)insn.Length - 1;
            if (!big && ip + (uint)insn.Length > 0x10000)
            {
                lastByte = 0xFFFF + 1;
            }
            if (lastByte > cs.Limit)
            {
                // Part of the instruction lies beyond the CS limit: #GP(0) when we get there (SDM vol. 3, 5.3).
                if (count > 0)
                {
                    break;
                }
                _currentInsnEip = eip;
                Fault(Vector.GP, 0);
                return null;
            }
            ref DecodedInsn d = ref _scratchInsns[count];
            Digest(ref d, in insn, ip, next, _specializedForms);
            count++;
            pos += insn.Length;
            ip = next;
            if (crossed || insn.FlowControl != FlowControl.Next || d.Handler == s_undefined || EndsBlock(insn.Code) || pos >= avail)
            {
                break;
            }
        }
        if (!cacheable || crossed)
        {
            _uncachedBlock.Insns = count <= _uncachedBlock.Insns.Length ? _uncachedBlock.Insns : new DecodedInsn[MaxBlockInsns];
            Array.Copy(_scratchInsns, _uncachedBlock.Insns, count);
            _uncachedBlock.Count = count;
            _uncachedBlock.Cached = false;
            return _uncachedBlock;
        }
        var block = new Block
        {
            Insns = _scratchInsns.AsSpan(0, count).ToArray(),
            Count = count,
            Phys = phys,
            StartEip = eip,
            EndEip = ip,
            Big = big,
            Cached = true,
        };
        uint page = phys >> 12;
        MarkCodePage(page);
        block.Generation = _pageGeneration[page];
        return block;
    }

    /// <summary>Fills a <see cref="DecodedInsn"/> from Iced's decoding.</summary>
    private static void Digest(ref DecodedInsn d, in Instruction insn, uint ip, uint next, bool specialize)
    {
        d = default;
        d.I = insn;
        d.Eip = ip;
        d.NextEip = next;
        d.Length = (byte)insn.Length;
        d.Handler = s_handlers[(int)insn.Code] ?? s_undefined;
        d.Aux = s_aux[(int)insn.Code];
        d.Base = NoReg;
        d.Index = NoReg;
        d.Reg0 = d.Reg1 = d.Reg2 = NoReg;
        int opCount = Math.Min(insn.OpCount, 3);
        for (int i = 0; i < opCount; i++)
        {
            var kind = insn.GetOpKind(i);
            byte k = OpKindCode.None;
            byte reg = NoReg;
            int size = 0;
            switch (kind)
            {
                case OpKind.Register:
                    k = OpKindCode.Reg;
                    var r = insn.GetOpRegister(i);
                    reg = EncodeRegister(r);
                    size = r.GetSize();
                    break;
                case OpKind.Memory:
                    k = OpKindCode.Mem;
                    size = insn.MemorySize.GetSize();
                    DigestMemory(ref d, in insn);
                    break;
                case OpKind.Immediate8:
                case OpKind.Immediate16:
                case OpKind.Immediate32:
                case OpKind.Immediate8to16:
                case OpKind.Immediate8to32:
                    k = OpKindCode.Imm;
                    d.Imm = (uint)insn.GetImmediate(i);
                    break;
                case OpKind.Immediate8_2nd:
                    d.Imm2 = insn.Immediate8_2nd;
                    break;
                case OpKind.NearBranch16:
                case OpKind.NearBranch32:
                    d.Imm = (uint)insn.NearBranchTarget;
                    break;
                case OpKind.FarBranch16:
                    d.Imm = insn.FarBranch16;
                    d.Imm2 = insn.FarBranchSelector;
                    break;
                case OpKind.FarBranch32:
                    d.Imm = insn.FarBranch32;
                    d.Imm2 = insn.FarBranchSelector;
                    break;
                case OpKind.MemorySegSI:
                case OpKind.MemoryESDI:
                case OpKind.MemorySegDI:
                    d.Addr16 = true;
                    d.Seg = (byte)(insn.MemorySegment - Register.ES);
                    break;
                case OpKind.MemorySegESI:
                case OpKind.MemoryESEDI:
                case OpKind.MemorySegEDI:
                    d.Seg = (byte)(insn.MemorySegment - Register.ES);
                    break;
            }
            if (i == 0) { d.Kind0 = k; d.Reg0 = reg; d.OpSize = (byte)size; }
            else if (i == 1) { d.Kind1 = k; d.Reg1 = reg; d.SrcSize = (byte)size; }
            else { d.Kind2 = k; d.Reg2 = reg; }
        }
        if (d.OpSize == 0)
        {
            d.OpSize = (byte)OperandSizeOf(in insn);
        }
        if (d.SrcSize == 0)
        {
            d.SrcSize = d.OpSize;
        }
        if (specialize)
        {
            Specialize(ref d, opCount);
        }
        // String instructions: element size from the memory operand (MOVSB/W/D ...).
        if (insn.IsStringInstruction)
        {
            d.OpSize = (byte)insn.MemorySize.GetSize();
            if (d.OpSize == 0) d.OpSize = 1;
            d.Aux = insn.HasRepePrefix ? (byte)1 : insn.HasRepnePrefix ? (byte)2 : (byte)0;
        }
    }

    /// <summary>Operand size (bytes) of instructions without a register/memory first operand (PUSH imm, IRET, ...).</summary>
    private static int OperandSizeOf(in Instruction insn)
    {
        int bits = s_operandSizeBits[(int)insn.Code];
        if (bits == 0)
        {
            bits = insn.CodeSize == CodeSize.Code16 ? 16 : 32;
        }
        return bits / 8;
    }

    private static void DigestMemory(ref DecodedInsn d, in Instruction insn)
    {
        var b = insn.MemoryBase;
        var x = insn.MemoryIndex;
        d.Disp = insn.MemoryDisplacement32;
        d.Seg = (byte)(insn.MemorySegment - Register.ES);
        d.Scale = (byte)(insn.MemoryIndexScale switch { 1 => 0, 2 => 1, 4 => 2, _ => 3 });
        if (b != Register.None)
        {
            d.Base = (byte)(EncodeRegister(b) & 7);
        }
        if (x != Register.None)
        {
            d.Index = (byte)(EncodeRegister(x) & 7);
        }
        if (b != Register.None)
        {
            d.Addr16 = b.GetSize() == 2;
        }
        else if (x != Register.None)
        {
            d.Addr16 = x.GetSize() == 2;
        }
        else
        {
            d.Addr16 = insn.MemoryDisplSize == 2;
        }
    }

    /// <summary>
    /// Register encoding used by the handlers: GPRs as index | width class << 3 (0: 32-bit,
    /// 1: 16-bit, 2: low byte, 3: high byte), segment registers 0x20 + sreg, CRn 0x40 + n,
    /// DRn 0x48 + n, anything else (x87, MMX, SSE ...) 0xFE.
    /// </summary>
    private static byte EncodeRegister(Register r)
    {
        if (r >= Register.EAX && r <= Register.EDI) return (byte)(r - Register.EAX);
        if (r >= Register.AX && r <= Register.DI) return (byte)(8 | (r - Register.AX));
        if (r >= Register.AL && r <= Register.BL) return (byte)(16 | (r - Register.AL));
        if (r >= Register.AH && r <= Register.BH) return (byte)(24 | (r - Register.AH));
        if (r >= Register.ES && r <= Register.GS) return (byte)(0x20 | (r - Register.ES));
        if (r >= Register.CR0 && r <= Register.CR15) return (byte)(0x40 | (r - Register.CR0));
        if (r >= Register.DR0 && r <= Register.DR7) return (byte)(0x48 | (r - Register.DR0));
        return 0xFE;
    }
}
