using Iced.Intel;
using SecureVmm.Tcb.Cpu.X87;

namespace SecureVmm.Tcb.Cpu;

// Plugs the x87 unit (tcb/Cpu/X87/) into the CPU's x87 gate (X87Gate.cs), which has already done
// the CR0.EM/TS/MP checks of SDM vol.3 table 2-2. Nothing here allocates per instruction: the
// memory adapter (X87Memory) is created once, the context is a stack struct.
public sealed partial class Cpu
{
    private readonly X87Unit _x87 = new();

    /// <summary>The FPU state, for debuggers, tests and state images.</summary>
    public X87Unit X87 => _x87;

    partial void X87Available(ref bool present) => present = true;

    partial void ResetX87() => _x87.Reset();

    partial void X87WaitPending(ref bool pendingUnmasked) => pendingUnmasked = _x87.HasPendingUnmaskedException;

    partial void ExecuteX87(ref DecodedInsn d, ref bool handled)
    {
        Mnemonic mnemonic = d.I.Mnemonic;
        if (!X87Unit.Implements(mnemonic))
        {
            return;     // the gate raises #UD
        }
        handled = true;
        X87MemoryAccess memory = X87Memory;
        bool readsFlags = mnemonic is Mnemonic.Fcmovb or Mnemonic.Fcmove or Mnemonic.Fcmovbe or Mnemonic.Fcmovu
            or Mnemonic.Fcmovnb or Mnemonic.Fcmovne or Mnemonic.Fcmovnbe or Mnemonic.Fcmovnu;
        bool writesFlags = mnemonic is Mnemonic.Fcomi or Mnemonic.Fcomip or Mnemonic.Fucomi or Mnemonic.Fucomip;
        var ctx = new X87CpuContext
        {
            Eflags = readsFlags || writesFlags ? Eflags : 0,
            RealMode = !ProtectedMode || V86Mode,
            // FNSTENV/FLDENV/FNSAVE/FRSTOR: Iced already resolved the operand size into the image size.
            OperandSize32 = d.I.MemorySize is not (MemorySize.FpuEnv14 or MemorySize.FpuState94),
            Cs = _seg[(int)SegReg.Cs].Selector,
            Eip = d.Eip,
        };
        if (d.I.OpCount > 0 && d.I.Op0Kind == OpKind.Memory)
        {
            memory.Bind(ref d);
            ctx.DataSelector = memory.Selector;
            ctx.DataOffset = memory.Offset;
        }
        switch (_x87.Execute(d.I, memory, ref ctx))
        {
            case X87Outcome.MemoryFault:
                return;         // the fault was raised by the memory adapter; FPU state is unchanged
            case X87Outcome.FloatingPointError:
                RaiseX87Error();
                return;
        }
        if (ctx.AxWritten)
        {
            _gpr[0] = (_gpr[0] & 0xFFFF_0000) | ctx.Ax;
        }
        if (writesFlags)
        {
            Eflags = ctx.Eflags;
        }
    }

    internal sealed partial class X87MemoryAccess : IX87Memory;
}
