using SecureVmm.Tcb.Cpu.X87;
using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Exits;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using F = SecureVmm.Tests.Cpu.SystemFixture;

namespace SecureVmm.Tests.Cpu;

/// <summary>What the machine sees: interrupts and HLT, exits (CPUID, MSR, MMIO, ROM), determinism, code caching.</summary>
public class MachineInterfaceTests
{
    private sealed class FakePic : IInterruptSource
    {
        public int Pending;
        public byte Vector = 0x20;
        public int Acks;
        public bool HasPending => Pending > 0;
        public byte Acknowledge()
        {
            Pending--;
            Acks++;
            return Vector;
        }
    }

    private sealed class Scratchpad : IMmioDevice
    {
        public readonly List<(ulong Offset, int Size, ulong Value)> Writes = [];
        public ulong Read(ulong offset, int size) => 0xA0 + offset;
        public void Write(ulong offset, int size, ulong value) => Writes.Add((offset, size, value));
    }

    private static CpuHarness BootWithTimerHandler(Action<Iced.Intel.Assembler> body)
    {
        var h = new CpuHarness();
        F.Install(h);
        F.WriteU64(h, F.Idt + 0x20 * 8, F.Gate(F.KernelCode, F.HandlerBase + 0x20 * 0x100, 0xE, 0));
        F.Handler(h, 0x20, a =>
        {
            a.inc(__dword_ptr[0x9300]);
            a.iretd();
        });
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            body(a);
        });
        return h;
    }

    [Fact]
    public void HaltReturnsHaltedAndAnInterruptResumes()
    {
        var pic = new FakePic();
        using var h = BootWithTimerHandler(a =>
        {
            a.sti();
            a.hlt();
            a.mov(ebx, __dword_ptr[0x9300]);
            a.Exit(1);
        });
        h.Cpu.Interrupts = pic;
        Assert.Equal(RunStatus.Halted, h.Run());
        Assert.True(h.Cpu.IsHalted);
        Assert.Equal(ExitKind.Hlt, h.Exits[^1].Kind);
        Assert.Equal(RunStatus.Halted, h.Run());          // still nothing pending
        pic.Pending = 1;
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(1u, h.Cpu.Ebx);
        Assert.Equal(1, pic.Acks);
    }

    [Fact]
    public void InterruptsWaitForIfAndTheStiShadow()
    {
        var pic = new FakePic { Pending = 1 };
        using var h = BootWithTimerHandler(a =>
        {
            a.mov(ecx, 100);
            var spin = a.CreateLabel();
            a.Label(ref spin);
            a.dec(ecx);
            a.jnz(spin);
            a.mov(ebx, __dword_ptr[0x9300]);   // IF=0 so far: no interrupt taken
            a.sti();
            a.mov(esi, __dword_ptr[0x9300]);   // STI shadow: still none before this instruction
            a.nop();
            a.mov(edi, __dword_ptr[0x9300]);
            a.Exit(1);
        });
        h.Cpu.Interrupts = pic;
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0u, h.Cpu.Ebx);
        Assert.Equal(0u, h.Cpu.Esi);
        Assert.Equal(1u, h.Cpu.Edi);
    }

    [Fact]
    public void CpuidExitCarriesTheFixedModel()
    {
        using var h = new CpuHarness();
        h.Load32(0x1000, a =>
        {
            a.mov(eax, 1);
            a.cpuid();
            a.mov(esi, edx);
            a.xor(eax, eax);
            a.cpuid();
            a.Exit();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        var leaf1 = h.Exits.First(e => e.Kind == ExitKind.Cpuid);
        Assert.Equal(1u, leaf1.Leaf);
        Assert.Equal(CpuidModel.Signature, leaf1.Eax);
        Assert.Equal(CpuidModel.BaseFeatures | 1u, h.Cpu.Esi); // the x87 unit is wired: FPU; no PAE/APIC
        Assert.Equal(0u, h.Cpu.Esi & (1u << 6));             // PAE never advertised
        Assert.Equal(0x756E_6547u, h.Cpu.Ebx);               // "Genu"
    }

    [Fact]
    public void MsrsAreExitsAndUnknownOnesFault()
    {
        using var h = new CpuHarness();
        F.Install(h);
        F.RecordingHandler(h, 13);
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.mov(ecx, 0x176);
            a.mov(eax, 0xC000_1234u);
            a.xor(edx, edx);
            a.wrmsr();
            a.xor(eax, eax);
            a.rdmsr();
            a.mov(__dword_ptr[0x9400], eax);
            a.mov(ecx, 0x1B);                 // IA32_APIC_BASE: no APIC in this model
            a.rdmsr();
            a.Exit(0x7F);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0xC000_1234u, h.ReadU32(0x9400));
        Assert.Equal(13u, F.Rec(h, 0));
        Assert.Contains(h.Exits, e => e.Kind == ExitKind.Wrmsr && e.Address == 0x176 && e.Value == 0xC000_1234u);
        Assert.Contains(h.Exits, e => e.Kind == ExitKind.Rdmsr && e.Address == 0x1B);
    }

    [Fact]
    public void UnmappedMemoryReadsAllOnesMmioAndRomDispatch()
    {
        using var h = new CpuHarness(ramMiB: 4);
        var dev = new Scratchpad();
        h.Map.AddMmio(0xFEC0_0000, 0x1000, dev);
        byte[] rom = new byte[0x1000];
        rom[0x10] = 0x5A;
        h.Map.AddRom(0xFFFF_F000, rom);
        h.Load32(0x1000, a =>
        {
            a.mov(ebp, __dword_ptr[0x0800_0000]);       // unmapped (beyond 4 MiB RAM)
            a.mov(__dword_ptr[0x0800_0000], 0x1234u);   // ignored
            a.mov(ebx, __dword_ptr[0xFEC0_0004]);       // MMIO read
            a.mov(__word_ptr[0xFEC0_0008], 0xBEEF);     // MMIO write
            a.movzx(ecx, __byte_ptr[0xFFFF_F010]);      // ROM read
            a.mov(__byte_ptr[0xFFFF_F010], 0x00);       // ROM write: ignored, but an exit
            a.movzx(edx, __byte_ptr[0xFFFF_F010]);
            a.Exit();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0xFFFF_FFFFu, h.Cpu.Ebp);
        Assert.Equal(0xA4u, h.Cpu.Ebx);
        Assert.Equal(0x5Au, h.Cpu.Ecx);
        Assert.Equal(0x5Au, h.Cpu.Edx);
        Assert.Equal([(8UL, 2, 0xBEEFUL)], dev.Writes);
        var kinds = h.Exits.Where(e => e.Kind is ExitKind.MmioRead or ExitKind.MmioWrite).Select(e => (e.Kind, e.Address)).ToList();
        Assert.Equal(
        [
            (ExitKind.MmioRead, 0x0800_0000UL), (ExitKind.MmioWrite, 0x0800_0000UL),
            (ExitKind.MmioRead, 0xFEC0_0004UL), (ExitKind.MmioWrite, 0xFEC0_0008UL),
            (ExitKind.MmioWrite, 0xFFFF_F010UL),
        ], kinds);
    }

    [Fact]
    public void SelfModifyingCodeIsReDecoded()
    {
        using var h = new CpuHarness();
        h.Load32(0x1000, a =>
        {
            var loop = a.CreateLabel();
            a.mov(ecx, 2);
            a.xor(ebx, ebx);
            a.Label(ref loop);
            a.mov(eax, 1);                                  // B8 01 00 00 00: the immediate is patched
            a.add(ebx, eax);
            a.mov(__dword_ptr[0x1000 + 7 + 1], 100u);      // patch the imm32 of the MOV above (same page)
            a.dec(ecx);
            a.jnz(loop);
            a.Exit();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(101u, h.Cpu.Ebx);
    }

    [Fact]
    public void TheTscFollowsTheMachinesClockWhenOneIsGivenAndKeepsItsOffset()
    {
        using var h = new CpuHarness();
        ulong clock = 1_000_000;
        h.Cpu.TscClock = () => clock;
        h.Cpu.Reset(); // RESET zeroes the TSC against the clock (SDM vol. 3, 17.17)
        clock += 5_000;
        h.Load32(0x1000, a =>
        {
            a.rdtsc();
            a.mov(ebx, eax);
            a.mov(ecx, 0x10);
            a.mov(eax, 100);
            a.xor(edx, edx);
            a.wrmsr();
            a.rdtsc();
            a.mov(esi, eax);
            a.Exit();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(5_000u, h.Cpu.Ebx); // clock time since reset, however few instructions ran
        Assert.Equal(100u, h.Cpu.Esi); // WRMSR 0x10 sets the count; the clock has not moved since
    }

    [Fact]
    public void SameProgramGivesSameCountAndExits()
    {
        static (long, string) RunOnce()
        {
            using var h = new CpuHarness();
            h.Load32(0x1000, a =>
            {
                var loop = a.CreateLabel();
                a.mov(ecx, 300);
                a.Label(ref loop);
                a.rdtsc();
                a.mov(edx, 0x3F8);
                a.and(al, 0x3F);
                a.add(al, 0x30);
                a.@out(dx, al);
                a.@in(al, dx);
                a.dec(ecx);
                a.jnz(loop);
                a.Exit();
            });
            h.Run();
            var trace = string.Join(";", h.Exits.Select(e => $"{e.Kind}:{e.Port:X}:{e.Value:X}:{e.InstructionCount}:{e.Eip:X}"));
            return (h.Cpu.InstructionCount, trace + h.Serial);
        }
        var first = RunOnce();
        var second = RunOnce();
        Assert.Equal(first, second);
        Assert.True(first.Item1 > 2400);
    }

    [Fact]
    public void X87OpcodesRaiseNmWithEmOrTsAndRunOtherwise()
    {
        using var h = new CpuHarness();
        F.Install(h);
        F.RecordingHandler(h, 6);
        F.RecordingHandler(h, 7);
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.mov(eax, cr0);
            a.or(eax, 8);            // TS
            a.mov(cr0, eax);
            a.fninit();
            a.Exit(0x7F);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(7u, F.Rec(h, 0));
        using var h2 = new CpuHarness();
        F.Install(h2);
        F.RecordingHandler(h2, 6);
        F.RecordingHandler(h2, 7);
        h2.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.mov(eax, cr0);
            a.or(eax, 4);            // EM
            a.mov(cr0, eax);
            a.fld1();
            a.Exit(0x7F);
        });
        Assert.Equal(RunStatus.Stopped, h2.Run());
        Assert.Equal(7u, F.Rec(h2, 0));
        using var h3 = new CpuHarness();
        F.Install(h3);
        F.RecordingHandler(h3, 6);
        F.RecordingHandler(h3, 7);
        h3.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.fld1();                // EM=0, TS=0: the x87 unit executes it
            a.Exit(0x7F);
        });
        Assert.Equal(RunStatus.Stopped, h3.Run());
        Assert.Equal(0u, F.Rec(h3, 0));
        Assert.Equal(Float80.FromDouble(1.0), h3.Cpu.X87.ReadStack(0));
    }

    [Fact]
    public void UnrealModeKeepsProtectedModeLimits()
    {
        using var h = new CpuHarness(ramMiB: 4);
        F.Install(h);
        h.WriteU32(0x20_0000, 0xFEED_F00D);
        h.Load16(0x7C00, a =>
        {
            a.cli();
            a.mov(__word_ptr[0x500], (ushort)(7 * 8 - 1));
            a.mov(__dword_ptr[0x502], F.Gdt);
            a.lgdt(__[0x500]);
            a.mov(eax, cr0);
            a.or(al, 1);
            a.mov(cr0, eax);
            a.mov(bx, F.KernelData);
            a.mov(ds, bx);                  // 4 GiB limit into the DS cache
            a.and(al, 0xFE);
            a.mov(cr0, eax);
            a.xor(bx, bx);
            a.mov(ds, bx);                  // real-mode load: base 0, limit kept
            a.mov(esi, 0x20_0000);
            a.mov(edx, __dword_ptr[esi]);   // above 1 MiB through DS
            a.mov(al, 0);
            a.@out(0xF4, al);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0xFEED_F00Du, h.Cpu.Edx);
    }

    [Fact]
    public void StaleTranslationUntilInvlpgAndGlobalPagesSurviveCr3()
    {
        using var h = new CpuHarness(ramMiB: 8);
        h.WriteU32(0x40_0000, 0xAAAA_AAAA);
        h.WriteU32(0x40_1000, 0xBBBB_BBBB);
        h.Load32(0x1000, a =>
        {
            // PD at 0x10000: PDE0 -> PT at 0x11000 (identity 0-4 MiB), PDE1 -> PT at 0x12000.
            a.mov(edi, 0x1_1000u);
            a.mov(eax, 0x3u);
            a.mov(ecx, 1024);
            var fill = a.CreateLabel();
            a.Label(ref fill);
            a.stosd();
            a.add(eax, 0x1000);
            a.dec(ecx);
            a.jnz(fill);
            a.mov(__dword_ptr[0x1_0000], 0x1_1003u);
            a.mov(__dword_ptr[0x1_0004], 0x1_2003u);
            a.mov(__dword_ptr[0x1_2000], 0x40_0103u);       // 0x400000 -> 0x400000, global
            a.mov(eax, cr4);
            a.or(eax, 0x80);                                // PGE
            a.mov(cr4, eax);
            a.mov(eax, 0x1_0000u);
            a.mov(cr3, eax);
            a.mov(eax, cr0);
            a.or(eax, 0x8000_0000u);
            a.mov(cr0, eax);
            a.mov(ebx, __dword_ptr[0x40_0000]);             // AAAA: fills the TLB
            a.mov(__dword_ptr[0x1_2000], 0x40_1103u);       // remap without INVLPG
            a.mov(ecx, __dword_ptr[0x40_0000]);             // still AAAA (stale TLB entry, as on hardware)
            a.mov(eax, cr3);
            a.mov(cr3, eax);                                // CR3 reload keeps global entries
            a.mov(edx, __dword_ptr[0x40_0000]);             // still AAAA
            a.invlpg(__[0x40_0000]);
            a.mov(esi, __dword_ptr[0x40_0000]);             // BBBB
            a.Exit();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0xAAAA_AAAAu, h.Cpu.Ebx);
        Assert.Equal(0xAAAA_AAAAu, h.Cpu.Ecx);
        Assert.Equal(0xAAAA_AAAAu, h.Cpu.Edx);
        Assert.Equal(0xBBBB_BBBBu, h.Cpu.Esi);
    }

    [Fact]
    public void GarbageInstructionStreamNeverCrashesTheVmm()
    {
        var rng = new Random(1234);
        for (int round = 0; round < 20; round++)
        {
            using var h = new CpuHarness();
            var junk = new byte[4096];
            rng.NextBytes(junk);
            h.Load(0x1000, junk);
            h.Cpu.EnterFlatProtectedMode(0x1000);
            h.Cpu.Esp = 0x8_0000;
            var status = h.Run(20_000);
            Assert.True(Enum.IsDefined(status));
        }
    }
}

/// <summary>The hot path allocates nothing per instruction, memory access or exit (DESIGN.md performance rules).</summary>
public class AllocationTests
{
    [Fact]
    public void SteadyStateExecutionAllocatesNothing()
    {
        using var h = new CpuHarness();
        h.RecordExits = false;
        h.Load32(0x1000, a =>
        {
            var top = a.CreateLabel();
            var sub = a.CreateLabel();
            a.Label(ref top);
            a.mov(ecx, 16);
            a.mov(esi, 0x10_0000);
            a.mov(edi, 0x10_1000);
            a.rep.movsd();
            a.mov(eax, __dword_ptr[0x10_0000]);
            a.add(eax, 3);
            a.shl(eax, 2);
            a.mov(__word_ptr[0x10_2000], ax);
            a.bt(eax, 3);
            a.call(sub);
            a.mov(dx, 0x80);
            a.@in(al, dx);                      // an IoIn exit every iteration
            a.mov(ecx, 5);
            var l = a.CreateLabel();
            a.Label(ref l);
            a.loop(l);
            a.jmp(top);
            a.Label(ref sub);
            a.push(ebx);
            a.pop(ebx);
            a.ret();
        });
        // Warm up: decode the blocks, JIT the run loop, and run the loop's blocks past the compile
        // threshold (an iteration is under 100 instructions) so that their compiled forms exist too.
        h.Run(Math.Max(200_000, 100L * (h.Cpu.CompileThreshold + 1)));
        long before = GC.GetAllocatedBytesForCurrentThread();
        h.Run(1_000_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // A million instructions with 50 000 exits: the only allocation allowed is a decoded block
        // for a new entry point where the previous Run's budget ended mid-block (per Run, not per
        // instruction): well under one byte per thousand instructions.
        Assert.True(allocated < 2048, $"{allocated} bytes allocated in 1,000,000 guest instructions");
    }
}
