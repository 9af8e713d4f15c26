using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Exits;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using F = SecureVmm.Tests.Cpu.SystemFixture;

namespace SecureVmm.Tests.Cpu;

/// <summary>Exception vectors, error codes, pushed frames, double and triple faults (SDM vol. 3, ch. 6).</summary>
public class ExceptionTests
{
    private static CpuHarness Boot(Action<Iced.Intel.Assembler> body)
    {
        var h = new CpuHarness();
        F.Install(h);
        for (int v = 0; v < 32; v++)
        {
            F.RecordingHandler(h, v);
        }
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            body(a);
            a.Exit(0x7F);
        });
        return h;
    }

    [Fact]
    public void GeneralProtectionPushesErrorCodeEipCsEflags()
    {
        using var h = Boot(a =>
        {
            a.mov(ax, 0x38); // selector past the GDT limit
            a.mov(ds, ax);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x40u, h.DebugExitValue);
        Assert.Equal(13u, F.Rec(h, 0));
        Assert.Equal(0x38u, F.Rec(h, 1));               // error code: selector index, TI=0, EXT=0
        uint faultingEip = F.Rec(h, 2);
        Assert.Equal((uint)F.KernelCode, F.Rec(h, 3));  // CS
        Assert.Equal(0x2u, F.Rec(h, 4) & 0x2);          // EFLAGS image (bit 1 always set)
        Assert.Equal(F.KernelStack - 16, F.Rec(h, 6));  // error code, EIP, CS, EFLAGS
        // The saved EIP is the MOV DS itself (a fault), not the next instruction.
        var bytes = h.Ram.Slice(faultingEip, 3).ToArray();
        Assert.Equal(new byte[] { 0x66, 0x8E, 0xD8 }, bytes);
    }

    [Fact]
    public void DivideErrorHasNoErrorCodeAndPointsAtTheDiv()
    {
        using var h = Boot(a =>
        {
            a.xor(ecx, ecx);
            a.div(ecx);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0u, F.Rec(h, 0));
        uint eip = F.Rec(h, 1);
        Assert.Equal(new byte[] { 0xF7, 0xF1 }, h.Ram.Slice(eip, 2).ToArray());
        Assert.Equal((uint)F.KernelCode, F.Rec(h, 2));
        Assert.Equal(F.KernelStack - 12, F.Rec(h, 6));
    }

    [Fact]
    public void PageFaultSetsCr2AndErrorCode()
    {
        using var h = Boot(a =>
        {
            // Identity-map the first 4 MiB with a page table; page 0x300000 is not present.
            a.mov(edi, 0x5_1000u);
            a.mov(eax, 0x7u);
            a.mov(ecx, 1024);
            var fill = a.CreateLabel();
            a.Label(ref fill);
            a.stosd();
            a.add(eax, 0x1000);
            a.dec(ecx);
            a.jnz(fill);
            a.mov(__dword_ptr[0x5_1000 + 0x300 * 4], 0u);
            a.mov(__dword_ptr[0x5_0000], 0x5_1007u);
            a.mov(eax, 0x5_0000u);
            a.mov(cr3, eax);
            a.mov(eax, cr0);
            a.or(eax, 0x8000_0000u);
            a.mov(cr0, eax);
            a.mov(__dword_ptr[0x30_0ABC], eax);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(14u, F.Rec(h, 0));
        Assert.Equal(2u, F.Rec(h, 1));        // not present, write, supervisor
        Assert.Equal(0x30_0ABCu, h.Cpu.Cr2);
        // Accessed and dirty bits were set on the pages written before the fault.
        Assert.Equal(0x20u, h.ReadU32(0x5_0000) & 0x20);
    }

    [Fact]
    public void FaultWhileDeliveringContributoryFaultIsDoubleFault()
    {
        using var h = Boot(a =>
        {
            // Make the #GP gate not present: delivering #GP raises #NP -> #DF (SDM vol. 3, table 6-5).
            a.mov(__byte_ptr[F.Idt + 13 * 8 + 5], 0x0E);
            a.mov(ax, 0x38);
            a.mov(ds, ax);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(8u, F.Rec(h, 0));
        Assert.Equal(0u, F.Rec(h, 1)); // #DF error code is 0
    }

    [Fact]
    public void TripleFaultIsAShutdownExit()
    {
        using var h = Boot(a =>
        {
            a.mov(__word_ptr[F.Gdt + 0xF10], (ushort)0);  // IDT limit 0: every delivery faults
            a.lidt(__[F.Gdt + 0xF10]);
            a.ud2();
        });
        Assert.Equal(RunStatus.Shutdown, h.Run());
        Assert.Equal(ExitKind.Shutdown, h.Exits[^1].Kind);
        Assert.True(h.Cpu.IsShutdown);
        Assert.Equal(RunStatus.Shutdown, h.Run());   // stays in shutdown
    }

    [Fact]
    public void DoubleFaultThroughTaskGateSwitchesTasks()
    {
        using var h = new CpuHarness();
        F.Install(h);
        // Double-fault TSS (as Linux sets it up): own stack, EIP of the handler, flat segments.
        h.WriteU32(F.DfTss + 28, 0);                       // CR3
        h.WriteU32(F.DfTss + 32, F.HandlerBase + 8 * 0x100);
        h.WriteU32(F.DfTss + 36, 0x2);
        h.WriteU32(F.DfTss + 56, F.DfStack);
        h.WriteU32(F.DfTss + 72, F.KernelData);
        h.WriteU32(F.DfTss + 76, F.KernelCode);
        h.WriteU32(F.DfTss + 80, F.KernelData);
        h.WriteU32(F.DfTss + 84, F.KernelData);
        F.WriteU64(h, F.Idt + 8 * 8, F.Gate(F.DfTssSel, 0, 0x5, 0));
        F.Handler(h, 8, a =>
        {
            a.str(ax);
            a.movzx(ebp, ax);
            a.pop(ebx);             // error code pushed on the new task's stack
            a.mov(ecx, esp);
            a.movzx(edx, __word_ptr[F.DfTss]); // back link to the interrupted task
            a.pushfd();
            a.pop(esi);
            a.Exit(0x41);
        });
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.mov(__byte_ptr[F.Idt + 13 * 8 + 5], 0x0E);  // #GP gate not present
            a.mov(ax, 0x38);
            a.mov(ds, ax);
            a.Exit(0x7F);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x41u, h.DebugExitValue);
        Assert.Equal((uint)F.DfTssSel, h.Cpu.Ebp);
        Assert.Equal(0u, h.Cpu.Ebx);
        Assert.Equal(F.DfStack, h.Cpu.Ecx);
        Assert.Equal((uint)F.TssSel, h.Cpu.Edx);
        Assert.NotEqual(0u, h.Cpu.Esi & EflagsBits.NT);     // nested task
        Assert.NotEqual(0u, h.Cpu.Cr0 & ControlBits.Cr0TS); // task switch sets TS
        // The outgoing state was saved in the first TSS (EIP of the faulting MOV DS).
        uint savedEip = h.ReadU32(F.Tss + 32);
        Assert.Equal(new byte[] { 0x66, 0x8E, 0xD8 }, h.Ram.Slice(savedEip, 3).ToArray());
    }

    [Fact]
    public void RealModeInterruptUsesTheIvt()
    {
        using var h = new CpuHarness();
        // IVT entry 0x21 -> 0000:0500
        h.Map.WriteRam(0x21 * 4, [0x00, 0x05, 0x00, 0x00]);
        h.Load(0x500, CpuHarness.Assemble(16, 0x500, a =>
        {
            a.mov(bp, sp);
            a.mov(di, __word_ptr[bp]);        // IP
            a.mov(bx, __word_ptr[bp + 2]);    // CS
            a.mov(cx, __word_ptr[bp + 4]);    // FLAGS
            a.pushf();
            a.pop(dx);
            a.iret();
        }));
        h.Load16(0x7C00, a =>
        {
            a.sti();
            a.@int(0x21);
            a.pushf();
            a.pop(si);
            a.mov(al, 0);
            a.@out(0xF4, al);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x7C03u, h.Cpu.Edi & 0xFFFF);      // return IP (after INT 21h)
        Assert.Equal(0u, h.Cpu.Ebx & 0xFFFF);
        Assert.NotEqual(0u, h.Cpu.Ecx & EflagsBits.IF); // pushed FLAGS had IF
        Assert.Equal(0u, h.Cpu.Edx & EflagsBits.IF);    // handler runs with IF clear
        Assert.NotEqual(0u, h.Cpu.Esi & EflagsBits.IF); // IRET restored IF
    }
}

public class TaskSwitchTests
{
    [Fact]
    public void CallToTssNestsAndIretReturns()
    {
        using var h = new CpuHarness();
        F.Install(h);
        for (int v = 0; v < 32; v++)
        {
            F.RecordingHandler(h, v);
        }
        // Second task (the #DF TSS slot reused): runs at HandlerBase + 0x9000, then IRETs back.
        h.WriteU32(F.DfTss + 32, F.HandlerBase + 0x9000);
        h.WriteU32(F.DfTss + 36, 0x2);
        h.WriteU32(F.DfTss + 40, 0x1111);                 // EAX of the new task
        h.WriteU32(F.DfTss + 56, F.DfStack);
        h.WriteU32(F.DfTss + 72, F.KernelData);
        h.WriteU32(F.DfTss + 76, F.KernelCode);
        h.WriteU32(F.DfTss + 80, F.KernelData);
        h.WriteU32(F.DfTss + 84, F.KernelData);
        h.Load(F.HandlerBase + 0x9000, CpuHarness.Assemble(32, F.HandlerBase + 0x9000, a =>
        {
            a.mov(__dword_ptr[0x9600], eax);
            a.str(ax);
            a.mov(__word_ptr[0x9604], ax);
            a.pushfd();
            a.pop(__dword_ptr[0x9608]);
            a.iretd();                                    // NT=1: back to the caller task
        }));
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.mov(eax, 0x2222);
            a.call(F.DfTssSel, 0);
            a.mov(ebx, eax);                              // restored EAX of the first task
            a.str(cx);
            a.Exit(0x42);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x42u, h.DebugExitValue);
        Assert.Equal(0x1111u, h.ReadU32(0x9600));
        Assert.Equal((uint)F.DfTssSel, h.ReadU32(0x9604) & 0xFFFF);
        Assert.NotEqual(0u, h.ReadU32(0x9608) & EflagsBits.NT);
        Assert.Equal(0x2222u, h.Cpu.Ebx);
        Assert.Equal((uint)F.TssSel, h.Cpu.Ecx & 0xFFFF);
        // The nested task's descriptor is free again, the caller's stays busy.
        Assert.Equal(0x89u, h.Ram.Slice(F.Gdt + F.DfTssSel + 5, 1)[0] & 0x8Fu);
        Assert.Equal(0x8Bu, h.Ram.Slice(F.Gdt + F.TssSel + 5, 1)[0] & 0x8Fu);
    }
}
