using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Segment-register loads and stores (SDM vol. 2 MOV Sreg, POP Sreg, LDS/LES/LFS/LGS/LSS; vol. 3,
// 3.4 and 5.5-5.6). Loading SS (MOV/POP) opens a one-instruction interrupt shadow (vol. 3, 6.8.3).
public sealed partial class Cpu
{
    private static void RegisterSegments()
    {
        foreach (var code in s_codesByMnemonic.Value[(int)Mnemonic.Mov])
        {
            var info = code.ToOpCode();
            if (info.Op0Kind == OpCodeOperandKind.seg_reg)
            {
                On(code, (c, ref d) => MovToSreg(c, ref d));
            }
            else if (info.Op1Kind == OpCodeOperandKind.seg_reg)
            {
                On(code, (c, ref d) => MovFromSreg(c, ref d));
            }
        }
        foreach (var code in s_codesByMnemonic.Value[(int)Mnemonic.Pop])
        {
            var info = code.ToOpCode();
            if (info.Op0Kind is OpCodeOperandKind.es or OpCodeOperandKind.ss or OpCodeOperandKind.ds or OpCodeOperandKind.fs or OpCodeOperandKind.gs)
            {
                On(code, (c, ref d) => PopSreg(c, ref d));
            }
        }
        On(Mnemonic.Lds, (c, ref d) => LoadFarPointer(c, ref d), (byte)SegReg.Ds);
        On(Mnemonic.Les, (c, ref d) => LoadFarPointer(c, ref d), (byte)SegReg.Es);
        On(Mnemonic.Lfs, (c, ref d) => LoadFarPointer(c, ref d), (byte)SegReg.Fs);
        On(Mnemonic.Lgs, (c, ref d) => LoadFarPointer(c, ref d), (byte)SegReg.Gs);
        On(Mnemonic.Lss, (c, ref d) => LoadFarPointer(c, ref d), (byte)SegReg.Ss);
    }

    private static void MovToSreg(Cpu c, ref DecodedInsn d)
    {
        int seg = d.Reg0 & 7;
        if (seg == (int)SegReg.Cs || seg > 5)
        {
            c.Fault(Vector.UD);
            return;
        }
        uint v = d.Kind1 == OpKindCode.Mem ? c.ReadSeg(d.Seg, c.EffectiveAddress(ref d), 2) : c.ReadReg(d.Reg1);
        if (c.Faulted) return;
        if (c.LoadSegment(seg, (ushort)v) && seg == (int)SegReg.Ss)
        {
            c._shadowAt = c._icount + 1;
            c._event |= EvBreak;
        }
    }

    private static void MovFromSreg(Cpu c, ref DecodedInsn d)
    {
        int seg = d.Reg1 & 7;
        if (seg > 5)
        {
            c.Fault(Vector.UD);
            return;
        }
        uint sel = c._seg[seg].Selector;
        if (d.Kind0 == OpKindCode.Mem)
        {
            // A memory destination is always 16 bits (SDM vol. 2, MOV "segment register").
            c.WriteSeg(d.Seg, c.EffectiveAddress(ref d), 2, sel);
        }
        else
        {
            // 32-bit register destination: P6 family zero-extends the selector.
            c.WriteReg(d.Reg0, sel);
        }
    }

    private static void PopSreg(Cpu c, ref DecodedInsn d)
    {
        int seg = d.Reg0 & 7;
        int size = OperandSizeOf(in d.I);
        uint v = c.PeekStack(0, size);
        if (c.Faulted) return;
        if (!c.LoadSegment(seg, (ushort)v)) return;
        c.SetStackPointer(c.StackPointer + (uint)size);
        if (seg == (int)SegReg.Ss)
        {
            c._shadowAt = c._icount + 1;
            c._event |= EvBreak;
        }
    }

    private static void LoadFarPointer(Cpu c, ref DecodedInsn d)
    {
        if (d.Kind1 != OpKindCode.Mem)
        {
            c.Fault(Vector.UD);
            return;
        }
        int size = d.OpSize;
        uint ea = c.EffectiveAddress(ref d);
        uint off = c.ReadSeg(d.Seg, ea, size);
        uint sel = c.ReadSeg(d.Seg, d.Addr16 ? (ea + (uint)size) & 0xFFFF : ea + (uint)size, 2);
        if (c.Faulted) return;
        if (!c.LoadSegment(d.Aux, (ushort)sel)) return;
        c.WriteReg(d.Reg0, off);
    }
}
