using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// The x87 gate: every x87 opcode (escape opcodes D8-DF, SDM vol. 2, A.5) and WAIT/FWAIT (9B)
// comes here. The CR0.EM/TS/MP checks are done here, per SDM vol. 3, table 2-2 ("Action taken by
// x87 FPU instructions for different combinations of EM, MP and TS"):
//   EM=1            -> #NM for x87 instructions (WAIT is not affected by EM);
//   TS=1            -> #NM for x87 instructions;
//   MP=1 and TS=1   -> #NM for WAIT/FWAIT.
// The x87 unit itself lives in tcb/Cpu/X87/ (its own owner). It plugs in by implementing the
// partial methods below in a file of that folder: ExecuteX87 runs one instruction, X87Available
// reports that the unit exists (CPUID then sets the FPU bit), ResetX87 is called on RESET, and
// X87WaitPending says whether FWAIT must raise #MF. Without it, x87 instructions that pass the
// EM/TS checks raise #UD, WAIT is a no-op, and CPUID leaves the FPU bit clear.
//
// Wiring, in a file of tcb/Cpu/X87/ (sketch):
//   public sealed partial class Cpu
//   {
//       private readonly X87Unit _x87 = new();
//       partial void X87Available(ref bool present) => present = true;
//       partial void ResetX87() => _x87.Reset();
//       partial void X87WaitPending(ref bool pending) => pending = _x87.HasPendingUnmaskedException;
//       partial void ExecuteX87(ref DecodedInsn d, ref bool handled)
//       {
//           handled = true;
//           var mem = X87Memory;
//           if (d.Kind0 == OpKindCode.Mem || d.Kind1 == OpKindCode.Mem) mem.Bind(ref d);
//           var ctx = new X87CpuContext { Eflags = Eflags, RealMode = !ProtectedMode || V86Mode,
//               OperandSize32 = _seg[(int)SegReg.Cs].Big ^ d.I.HasOperandSizePrefix..., Cs = _seg[1].Selector,
//               Eip = d.Eip, DataSelector = mem.Selector, DataOffset = mem.Offset };
//           switch (_x87.Execute(in d.I, mem, ref ctx))
//           {
//               case X87Outcome.MemoryFault: return;               // the fault is already raised
//               case X87Outcome.FloatingPointError: RaiseX87Error(); return;
//           }
//           if (ctx.AxWritten) WriteReg(8, ctx.Ax);                 // AX
//           Eflags = ctx.Eflags;                                    // FCOMI/FUCOMI set ZF/PF/CF
//       }
//       internal sealed partial class X87MemoryAccess : IX87Memory { }
//   }
public sealed partial class Cpu
{
    private static void RegisterX87Gate()
    {
        foreach (var code in Enum.GetValues<Code>())
        {
            var info = code.ToOpCode();
            // Iced stores two-byte x87 opcodes (D9 E8 ...) as one number: take the first byte.
            uint first = info.OpCodeLength == 2 ? info.OpCode >> 8 : info.OpCode;
            if (info.Encoding == EncodingKind.Legacy && info.Table == OpCodeTableKind.Normal
                && first >= 0xD8 && first <= 0xDF && (info.Mode16 || info.Mode32))
            {
                On(code, (c, ref d) => X87Escape(c, ref d));
            }
        }
        On(Code.Wait, (c, ref d) => Wait(c, ref d));
    }

    /// <summary>True when an x87 unit is wired in (CPUID's FPU bit).</summary>
    internal bool X87Present
    {
        get
        {
            bool present = false;
            X87Available(ref present);
            return present;
        }
    }

    private X87MemoryAccess? _x87Memory;

    /// <summary>The reusable memory adapter handed to the x87 unit (allocated once).</summary>
    internal X87MemoryAccess X87Memory => _x87Memory ??= new X87MemoryAccess(this);

    partial void X87Available(ref bool present);

    partial void ResetX87();

    /// <summary>Executes one x87 instruction; sets <paramref name="handled"/> when a unit exists.</summary>
    partial void ExecuteX87(ref DecodedInsn d, ref bool handled);

    partial void X87WaitPending(ref bool pendingUnmasked);

    private static void X87Escape(Cpu c, ref DecodedInsn d)
    {
        if ((c._cr0 & (ControlBits.Cr0EM | ControlBits.Cr0TS)) != 0)
        {
            c.Fault(Vector.NM);
            return;
        }
        bool handled = false;
        c.ExecuteX87(ref d, ref handled);
        if (!handled)
        {
            c.Fault(Vector.UD);
        }
    }

    private static void Wait(Cpu c, ref DecodedInsn d)
    {
        if ((c._cr0 & (ControlBits.Cr0MP | ControlBits.Cr0TS)) == (ControlBits.Cr0MP | ControlBits.Cr0TS))
        {
            c.Fault(Vector.NM);
            return;
        }
        bool pending = false;
        c.X87WaitPending(ref pending);
        if (pending)
        {
            c.RaiseX87Error();
        }
    }

    /// <summary>
    /// An unmasked x87 exception at an x87 instruction or WAIT: #MF (vector 16) when CR0.NE=1; with
    /// NE=0 the PC's FERR#/IRQ 13 path is not modelled and the error is dropped (docs/cpu.md).
    /// </summary>
    internal void RaiseX87Error()
    {
        if ((_cr0 & ControlBits.Cr0NE) != 0)
        {
            Fault(Vector.MF);
        }
    }

    /// <summary>
    /// Memory access for the x87 unit: reads and writes at the memory operand's effective address
    /// plus an offset, with the CPU's segmentation and paging checks; false means a guest fault was
    /// raised and the instruction must be abandoned. (The x87 owner adds its IX87Memory interface
    /// to this class with a partial declaration.)
    /// </summary>
    internal sealed partial class X87MemoryAccess(Cpu cpu)
    {
        private int _seg;
        private uint _ea;
        private bool _addr16;

        internal void Bind(ref DecodedInsn d)
        {
            _seg = d.Seg;
            _ea = cpu.EffectiveAddress(ref d);
            _addr16 = d.Addr16;
        }

        /// <summary>Offset of the operand in its segment (the FPU data pointer).</summary>
        public uint Offset => _ea;
        public ushort Selector => cpu._seg[_seg].Selector;

        public bool Read(int offset, Span<byte> dest)
        {
            for (int i = 0; i < dest.Length; i++)
            {
                uint off = _ea + (uint)offset + (uint)i;
                if (_addr16) off &= 0xFFFF;
                dest[i] = (byte)cpu.ReadSeg(_seg, off, 1);
                if (cpu.Faulted) return false;
            }
            return true;
        }

        public bool Write(int offset, ReadOnlySpan<byte> src)
        {
            // Probe the whole destination first so a fault leaves memory unchanged.
            for (int i = 0; i < src.Length; i++)
            {
                uint off = _ea + (uint)offset + (uint)i;
                if (_addr16) off &= 0xFFFF;
                if (!cpu.SegCheck(_seg, off, 1, true, out uint lin) || !cpu.Translate(lin, true, cpu._cpl == 3, out _)) return false;
            }
            for (int i = 0; i < src.Length; i++)
            {
                uint off = _ea + (uint)offset + (uint)i;
                if (_addr16) off &= 0xFFFF;
                cpu.WriteSeg(_seg, off, 1, src[i]);
                if (cpu.Faulted) return false;
            }
            return true;
        }
    }
}
