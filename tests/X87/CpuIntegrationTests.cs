using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Cpu.X87;
using SecureVmm.Tests.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.X87;

/// <summary>The x87 unit driven by the real CPU: guest code, flags, AX, pointers and #MF delivery.</summary>
public class CpuIntegrationTests
{
    [Fact]
    public void GuestComputesWithTheFpuInProtectedMode()
    {
        using var h = new CpuHarness();
        h.Map.WriteRam(0x3000, BitConverter.GetBytes(1.5));
        h.Map.WriteRam(0x3008, BitConverter.GetBytes(2.25));
        h.Load32(0x1000, a =>
        {
            var above = a.CreateLabel();
            a.fninit();
            a.fld(__qword_ptr[0x3000]);
            a.fadd(__qword_ptr[0x3008]);          // 3.75
            a.fld(__qword_ptr[0x3000]);
            a.fmulp(st1, st0);                    // 5.625
            a.fsqrt();
            a.fst(__qword_ptr[0x3010]);
            a.fld1();
            a.fcomip(st0, st1);                   // 1 < sqrt(5.625): CF=1
            a.jb(above);
            a.Exit(1);
            a.Label(ref above);
            a.fistp(__dword_ptr[0x3018]);         // round(2.37...) = 2
            a.fnstsw(ax);
            a.mov(__word_ptr[0x3020], ax);        // Exit() overwrites AL
            a.Exit(2);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(2u, h.DebugExitValue);
        Assert.Equal(Math.Sqrt(5.625), BitConverter.ToDouble(h.Ram.Slice(0x3010, 8)));
        Assert.Equal(2u, h.ReadU32(0x3018));
        ushort sw = BitConverter.ToUInt16(h.Ram.Slice(0x3020, 2));
        Assert.Equal(h.Cpu.X87.StatusWord, sw);
        Assert.True((sw & X87Status.Precision) != 0);
        Assert.Equal(0, h.Cpu.X87.Top);
    }

    [Fact]
    public void UnmaskedExceptionIsDeliveredAsMfAtTheNextWaitingInstructionInRealMode()
    {
        using var h = new CpuHarness();
        h.Map.WriteRam(0x3000, BitConverter.GetBytes((ushort)0x037B));   // ZE unmasked
        h.Map.WriteRam(16 * 4, [0x00, 0x20, 0x00, 0x00]);               // IVT[16] = 0000:2000
        h.Load(0x2000, CpuHarness.Assemble(16, 0x2000, a =>
        {
            a.fnstsw(ax);
            a.mov(__word_ptr[0x3020], ax);
            a.fnclex();
            a.Exit(0x42);
        }));
        h.Load16(0x1000, a =>
        {
            a.mov(eax, cr0);
            a.or(eax, 0x20);                      // CR0.NE: native #MF reporting
            a.mov(cr0, eax);
            a.fninit();
            a.fldcw(__word_ptr[0x3000]);
            a.fld1();
            a.fldz();
            a.fdivp(st1, st0);                    // 1/0: ZE recorded, not signalled
            a.fld1();                             // waiting instruction: #MF here
            a.Exit(1);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x42u, h.DebugExitValue);
        ushort sw = BitConverter.ToUInt16(h.Ram.Slice(0x3020, 2));
        Assert.Equal(X87Status.ZeroDivide | X87Status.ErrorSummary | X87Status.Busy, sw & (X87Status.ExceptionFlags | X87Status.ErrorSummary | X87Status.Busy));
        Assert.False(h.Cpu.X87.HasPendingUnmaskedException);
        Assert.Equal(6, h.Cpu.X87.Top);           // FDIVP did not pop, FLD1 did not push
    }

    [Fact]
    public void RealModeEnvironmentHoldsLinearPointers()
    {
        using var h = new CpuHarness();
        h.Load16(0x1000, a =>
        {
            a.fninit();
            a.fld1();                             // at 0000:xxxx -> linear = offset
            a.fnstenv(__[0x3000]);                // 16-bit operand size: 14-byte real-mode layout
            a.Exit(3);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(3u, h.DebugExitValue);
        ushort ip = BitConverter.ToUInt16(h.Ram.Slice(0x3006, 2));
        ushort opcode = (ushort)(BitConverter.ToUInt16(h.Ram.Slice(0x3008, 2)) & 0x7FF);
        Assert.Equal(0x1000 + 2, ip);             // FNINIT is 2 bytes
        Assert.Equal(0x1E8, opcode);              // D9 E8
    }
}
