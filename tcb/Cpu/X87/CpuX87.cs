using Iced.Intel;
using SecureVmm.Tcb.Cpu.X87;

namespace SecureVmm.Tcb.Cpu;

// Wires the x87 unit into the CPU's x87 gate (X87Gate.cs): the gate has already applied the
// CR0.EM/TS/MP checks (SDM vol. 3, table 2-2); here the instruction runs on the unit with the
// memory operand reached through the CPU's segmentation and paging, and its results (AX for
// FNSTSW AX, EFLAGS for FCOMI/FUCOMI) are committed only when it completed.
public sealed partial class Cpu
{
    private readonly X87Unit _x87 = new();
    private X87MemoryAccess? _x87Memory;

    /// <summary>The x87 unit's state (for tests and the debugger).</summary>
    public X87Unit Fpu => _x87;

    partial void X87Available(ref bool present) => present = true;

    partial void ResetX87() => _x87.Reset();

    partial void X87WaitPending(ref bool pendingUnmasked) => pendingUnmasked = _x87.HasPendingUnmaskedException;

    partial void ExecuteX87(ref DecodedInsn d, ref bool handled)
    {
        handled = true;
        _x87Memory ??= new X87MemoryAccess(this);
        var context = new X87CpuContext
        {
            Eflags = Eflags,
            RealMode = !ProtectedMode || V86Mode,
            OperandSize32 = d.I.MemorySize switch
            {
                MemorySize.FpuEnv28 or MemorySize.FpuState108 => true,
                MemorySize.FpuEnv14 or MemorySize.FpuState94 => false,
                _ => _seg[(int)SegReg.Cs].Big,
            },
            Cs = _seg[(int)SegReg.Cs].Selector,
            Eip = d.Eip,
        };
        if (d.I.Op0Kind == OpKind.Memory || (d.I.OpCount > 1 && d.I.Op1Kind == OpKind.Memory))
        {
            _x87Memory.Bind(ref d);
            context.DataSelector = _x87Memory.Selector;
            context.DataOffset = _x87Memory.Offset;
        }
        uint flagsBefore = context.Eflags;
        switch (_x87.Execute(in d.I, _x87Memory, ref context))
        {
            case X87Outcome.Done:
                if (context.AxWritten)
                {
                    _gpr[0] = (_gpr[0] & 0xFFFF_0000) | context.Ax;
                }
                if (context.Eflags != flagsBefore)
                {
                    Eflags = context.Eflags;
                }
                break;
            case X87Outcome.FloatingPointError:
                RaiseX87Error();
                break;
            default:
                break; // MemoryFault: the CPU already raised the fault
        }
    }

    internal sealed partial class X87MemoryAccess : IX87Memory;
}
