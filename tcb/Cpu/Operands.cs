using System.Runtime.CompilerServices;

namespace SecureVmm.Tcb.Cpu;

// Operand access shared by all instruction groups: registers by the encoding of
// CodeCache.EncodeRegister, memory operands by the digested effective-address recipe
// (SDM vol. 2, 2.1.5 ModR/M and SIB addressing; 16-bit forms wrap at 64 KiB), the stack.
public sealed partial class Cpu
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint ReadReg(byte code)
    {
        uint v = _gpr[code & 7];
        return (code >> 3) switch
        {
            0 => v,
            1 => v & 0xFFFF,
            2 => v & 0xFF,
            _ => (v >> 8) & 0xFF,
        };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteReg(byte code, uint value)
    {
        ref uint r = ref _gpr[code & 7];
        switch (code >> 3)
        {
            case 0: r = value; break;
            case 1: r = (r & 0xFFFF_0000) | (value & 0xFFFF); break;
            case 2: r = (r & 0xFFFF_FF00) | (value & 0xFF); break;
            default: r = (r & 0xFFFF_00FF) | ((value & 0xFF) << 8); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint EffectiveAddress(ref DecodedInsn d)
    {
        uint ea = d.Disp;
        // Base and Index are 0-7 or NoReg; "& 7" only lets the JIT drop the bounds check.
        if (d.Base != NoReg) ea += _gpr[d.Base & 7];
        if (d.Index != NoReg) ea += _gpr[d.Index & 7] << d.Scale;
        return d.Addr16 ? ea & 0xFFFF : ea;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint ReadOp0(ref DecodedInsn d)
    {
        if (d.Kind0 == OpKindCode.Reg) return ReadReg(d.Reg0);
        if (d.Kind0 == OpKindCode.Mem) return ReadSeg(d.Seg, EffectiveAddress(ref d), d.OpSize);
        return d.Imm;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint ReadOp1(ref DecodedInsn d)
    {
        if (d.Kind1 == OpKindCode.Reg) return ReadReg(d.Reg1);
        if (d.Kind1 == OpKindCode.Mem) return ReadSeg(d.Seg, EffectiveAddress(ref d), d.SrcSize);
        return d.Imm;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteOp0(ref DecodedInsn d, uint value)
    {
        if (d.Kind0 == OpKindCode.Reg) WriteReg(d.Reg0, value);
        else WriteSeg(d.Seg, EffectiveAddress(ref d), d.OpSize, value);
    }

    internal bool Faulted => (_event & EvFault) != 0;

    // ---------------------------------------------------------------- stack (SDM vol. 1, 6.2; SS.B selects ESP or SP)

    internal bool StackBig => _seg[(int)SegReg.Ss].Big;

    internal uint StackPointer => StackBig ? _gpr[4] : _gpr[4] & 0xFFFF;

    internal void SetStackPointer(uint value)
    {
        if (StackBig) _gpr[4] = value;
        else _gpr[4] = (_gpr[4] & 0xFFFF_0000) | (value & 0xFFFF);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Push(uint value, int size)
    {
        uint sp = StackPointer - (uint)size;
        if (!StackBig) sp &= 0xFFFF;
        WriteSeg((int)SegReg.Ss, sp, size, value);
        if (!Faulted) SetStackPointer(sp);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint Pop(int size)
    {
        uint sp = StackPointer;
        uint v = ReadSeg((int)SegReg.Ss, sp, size);
        if (!Faulted) SetStackPointer(sp + (uint)size);
        return v;
    }

    /// <summary>Reads the stack at SP + <paramref name="offset"/> without moving SP.</summary>
    internal uint PeekStack(uint offset, int size)
    {
        uint sp = StackPointer + offset;
        if (!StackBig) sp &= 0xFFFF;
        return ReadSeg((int)SegReg.Ss, sp, size);
    }
}
