using Xunit;
using Iced.Intel;
using SecureVmm.Tcb.Cpu.X87;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.X87;

/// <summary>The hot-path rule: executing x87 instructions allocates nothing (measured, not timed).</summary>
public class AllocationTests
{
    [Fact]
    public void ExecutingInstructionsAllocatesNothing()
    {
        var asm = new Assembler(32);
        asm.fld(__qword_ptr[eax]);
        asm.fldpi();
        asm.fadd(st0, st1);
        asm.fmul(__qword_ptr[eax]);
        asm.fdivrp(st1, st0);
        asm.fsqrt();
        asm.fsin();
        asm.fprem();
        asm.fld1();
        asm.fpatan();
        asm.fld1();
        asm.fyl2x();
        asm.fld1();
        asm.fyl2xp1();
        asm.f2xm1();
        asm.fptan();
        asm.fstp(st0);
        asm.fucomi(st0, st0);
        asm.fcom(__dword_ptr[eax]);
        asm.fxam();
        asm.fnstsw(ax);
        asm.fist(__dword_ptr[eax]);
        asm.fstp(__qword_ptr[eax]);
        asm.fnstenv(__[eax]);
        asm.fldenv(__[eax]);
        asm.fnsave(__[eax]);
        asm.frstor(__[eax]);
        Instruction[] body = [.. asm.Instructions];
        var h = new X87Harness();
        BitConverter.TryWriteBytes(h.Memory.Bytes, 2.75);
        int notDone = 0;
        for (int warm = 0; warm < 200; warm++)
        {
            notDone += Run(h, body);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int round = 0; round < 2000; round++)
        {
            notDone += Run(h, body);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, notDone);
        Assert.Equal(0, allocated);
    }

    private static int Run(X87Harness h, Instruction[] body)
    {
        int notDone = 0;
        foreach (Instruction insn in body)
        {
            if (h.Unit.Execute(insn, h.Memory, ref h.Context) != X87Outcome.Done)
            {
                notDone++;
            }
        }
        h.Unit.Reset();
        return notDone;
    }
}
