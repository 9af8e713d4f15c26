using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Exits;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Cpu;

/// <summary>
/// Compiled blocks (BlockCompiler.cs) against the interpreter: the same random program runs on two
/// CPUs, one with <see cref="SecureVmm.Tcb.Cpu.Cpu.CompileThreshold"/> 0 (every block interpreted,
/// the reference) and one that compiles blocks after 1, 2 or 3 runs; the program loops so that
/// its blocks run interpreted first and compiled afterwards. Everything observable must be equal:
/// registers, EFLAGS, EIP, the instruction count, memory, every exit (in order, with its
/// instruction count), every fault a handler saw (CR2, error code, saved EIP/EFLAGS/ESP, the
/// registers and the TSC at delivery), interrupt delivery points, and the state after each
/// <see cref="SecureVmm.Tcb.Cpu.Cpu.Run"/> call when small budgets split blocks.
/// </summary>
public class CompiledBlockTests
{
    private const uint CodeAddress = 0x10_0000;
    private const uint DataAddress = 0x20_0000;
    private const int DataBytes = 256;
    private const uint FlagLog = DataAddress + DataBytes;          // 64 EFLAGS values
    private const uint Counter = DataAddress + 0x200;              // loop iterations left
    private const uint Divisor = DataAddress + 0x204;              // DIV's memory operand
    private const int StringArea = 0x300;                          // REP STOS/MOVS target (0x300..0x3FF)
    private const uint FaultPage = DataAddress + 0x1000;           // the page made not present
    private const uint FaultLog = DataAddress + 0x2000;            // 64 entries of 64 bytes
    private const uint FaultCount = DataAddress + 0x3000;
    private const uint TickCount = DataAddress + 0x3004;
    private const uint TickLog = DataAddress + 0x3100;             // 64 entries of 16 bytes
    private const int WindowBytes = 0x3500;
    private const uint PageDirectory = 0x5_0000;
    private const uint PageTable = 0x5_1000;
    private const uint FaultPte = PageTable + (FaultPage >> 12) * 4;
    private const ushort SmallFs = 0x38;                           // data segment at DataAddress, limit 0xFF
    private const byte TickVector = 0x20;
    private const uint StackWindow = SystemFixture.KernelStack - 0x200;

    // EBX holds the data window's address and ESP the stack; the others are free.
    private static readonly AssemblerRegister32[] Free = [eax, ecx, edx, esi, edi, ebp];
    private static readonly AssemblerRegister8[] Bytes = [al, cl, dl, ah, ch, dh];
    private static readonly AssemblerRegister16[] Words = [ax, cx, dx, si, di, bp];
    private static readonly byte[] Ports = [0x80, 0x60, 0x70, 0x61];

    // ------------------------------------------------------------------ the op mixes

    /// <summary>Register, memory and flag-reading instructions (fast forms and generic ones).</summary>
    private const int AluOps = 95;
    /// <summary>Port I/O and CPUID: exits in the middle of a block.</summary>
    private static readonly int[] ExitOps = [100, 101, 102, 103, 104, 105];
    /// <summary>Instructions that #PF on <see cref="FaultPage"/>, #GP on the small FS limit, #DE on DIV.</summary>
    private static readonly int[] FaultOps = [200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215];

    /// <summary>Ops translated whole (Translator.cs): a loop of only these is one block that branches to its own start.</summary>
    private static readonly int[] TranslatedOps =
        [.. Enumerable.Range(0, 30), 32, 33, .. Enumerable.Range(34, 7), 43, 44, 45, 46, 48, 49, 50, 51, 52, 53, 54, 55, 62, 63, 64, .. Enumerable.Range(66, AluOps - 66)];
    /// <summary>Translated instructions that leave by a side exit: #PF on a TLB miss, #GP on the small FS limit.</summary>
    private static readonly int[] SideExitOps = [200, 201, 202, 206, 207, 208, 212, 213, 214, 215];

    private readonly record struct Step(int Op, int R1, int R2, uint Imm, int Disp);

    private static void Emit(Assembler a, Step s)
    {
        if (s.Op < SpecializedFormTests.SharedOps)
        {
            // The specialized forms' mix (every fast form and generic flag readers after them).
            SpecializedFormTests.Emit(a, s.Op, s.R1, s.R2, s.Imm, s.Disp);
            return;
        }
        var d = Free[s.R1];
        var r = Free[s.R2];
        int disp = s.Disp & 0xFC;
        var m = __dword_ptr[ebx + disp];
        uint imm = s.Imm;
        int faultDisp = 0x1000 + (int)(imm & 0xFFC);
        switch (s.Op)
        {
            case 49: a.inc(Words[s.R1]); break;
            case 50: a.cmovl(d, r); break;
            case 51: a.cmovbe(d, m); break;
            case 52: a.movzx(d, __word_ptr[ebx + (s.Disp & 0xFE)]); break;
            case 53: a.mov(__word_ptr[ebx + s.Disp], Words[s.R2]); break;
            case 54: a.sub(Words[s.R1], Words[s.R2]); break;
            case 55: a.neg(d); break;
            case 56: a.bt(d, r); break;
            case 57: a.xchg(d, r); break;
            case 58:
            {
                // DIV that cannot fault: a non-zero divisor other than EDX and EDX cleared.
                var divisor = s.R2 == 2 ? esi : r;
                a.or(divisor, 1);
                a.xor(edx, edx);
                a.div(divisor);
                break;
            }
            case 59: a.push(unchecked((int)imm)); a.pop(m); break;
            case 60:
                a.mov(ecx, imm % 24);
                a.lea(edi, __[ebx + StringArea + (s.Disp & 0x7F)]);
                a.rep.stosb();
                break;
            case 61:
                a.mov(ecx, imm % 24);
                a.lea(esi, __[ebx + (s.Disp & 0x7F)]);
                a.lea(edi, __[ebx + StringArea + (s.Disp & 0x3F)]);
                a.rep.movsd();
                break;
            case 62: a.rdtsc(); break;
            case 63: a.sbb(Bytes[s.R1], (byte)imm); break;
            case 64: a.adc(Words[s.R1], Words[s.R2]); break;
            case 65:
                a.mov(ecx, imm % 16);
                a.lea(edi, __[ebx + (s.Disp & 0x7F)]);
                a.repne.scasb();
                break;
            // Operand shapes of the translated instructions (Translator.cs): memory destinations,
            // 8/16-bit registers and memory (AH..DH included), sign extension, SETcc to memory.
            case 66: a.add(m, r); break;
            case 67: a.sub(__byte_ptr[ebx + s.Disp], Bytes[s.R2]); break;
            case 68: a.adc(Words[s.R1], __word_ptr[ebx + s.Disp]); break;
            case 69: a.xor(m, unchecked((int)imm)); break;
            case 70: a.and(Bytes[s.R1], (byte)imm); break;
            case 71: a.or(Words[s.R1], unchecked((short)imm)); break;
            case 72: a.test(m, r); break;
            case 73: a.cmp(__word_ptr[ebx + s.Disp], (int)(imm & 0xFFFF)); break;
            case 74: a.inc(m); break;
            case 75: a.dec(__byte_ptr[ebx + s.Disp]); break;
            case 76: a.neg(__word_ptr[ebx + s.Disp]); break;
            case 77: a.not(d); break;
            case 78: a.not(m); break;
            case 79: a.movsx(d, __byte_ptr[ebx + s.Disp]); break;
            case 80: a.movsx(d, Words[s.R2]); break;
            case 81: a.seta(__byte_ptr[ebx + s.Disp]); break;
            case 82: a.cmovg(d, m); break;
            case 83: a.mov(__byte_ptr[ebx + s.Disp], (int)(imm & 0xFF)); break;
            case 84: a.mov(Bytes[s.R1], __byte_ptr[ebx + s.Disp]); break;
            case 85: a.mov(Words[s.R1], unchecked((ushort)imm)); break;
            case 86: a.sbb(d, m); break;
            case 87: a.test(Words[s.R1], Words[s.R2]); a.setne(Bytes[s.R2]); break;
            // Shifts by CL (counts 0-31 from ECX), of 8/16-bit registers and of memory.
            case 88: a.shl(d, cl); break;
            case 89: a.sar(Words[s.R1], cl); break;
            case 90: a.shr(m, (byte)(imm % 33)); break;
            case 91: a.sar(__byte_ptr[ebx + s.Disp], 1); break;
            case 92: a.shr(Bytes[s.R1], cl); break;
            case 93: a.pause(); a.nop(__dword_ptr[eax]); break;
            case 94:
            {
                // A near CALL to a subroutine on the same page and its RET (one with a release).
                var sub = a.CreateLabel();
                var over = a.CreateLabel();
                bool release = (imm & 1) != 0;
                if (release)
                {
                    a.push(r);
                }
                a.call(sub);
                a.jmp(over);
                a.Label(ref sub);
                a.add(d, r);
                if (release)
                {
                    a.ret(4);
                }
                else
                {
                    a.ret();
                }
                a.Label(ref over);
                a.nop();
                break;
            }

            // Exits.
            case 100: a.mov(dx, (ushort)Ports[imm % 4]); a.@out(dx, al); break;
            case 101: a.@out(Ports[imm % 4], eax); break;
            case 102: a.@in(al, Ports[imm % 4]); break;
            case 103: a.mov(dx, (ushort)Ports[imm % 4]); a.@in(eax, dx); break;
            case 104: a.push(ebx); a.mov(eax, imm % 2); a.cpuid(); a.pop(ebx); break;
            case 105:
                a.mov(ecx, imm % 5);
                a.lea(esi, __[ebx + (s.Disp & 0x7F)]);
                a.mov(dx, (ushort)Ports[imm % 4]);
                a.rep.outsb();
                break;

            // Faults (the handlers record them and fix the cause up, so the instruction restarts).
            case 200: a.mov(d, __dword_ptr[ebx + faultDisp]); break;
            case 201: a.mov(__dword_ptr[ebx + faultDisp], r); break;
            case 202: a.add(__dword_ptr[ebx + faultDisp], r); break;
            case 203: a.push(__dword_ptr[ebx + faultDisp]); a.pop(d); break;
            case 204:
                // A fault with ESP moved by a register-only instruction just before it.
                a.sub(esp, 8);
                a.movzx(d, __word_ptr[ebx + faultDisp]);
                a.add(esp, 8);
                break;
            case 205:
                // Unmap the fault page again (clear P in its PTE, SDM vol. 3, 4.3; INVLPG drops the TLB entry).
                a.and(__dword_ptr[FaultPte], unchecked((int)0xFFFF_FFFE));
                a.invlpg(__[FaultPage]);
                break;
            case 206: a.mov(d, __dword_ptr.fs[(int)(imm & 0x1FC)]); break;
            case 207: a.add(d, __dword_ptr.fs[(int)(imm & 0x1FF)]); break;
            case 208: a.mov(__dword_ptr.fs[(int)(imm & 0x1FC)], r); break;
            case 209: a.push(SmallFs); a.pop(fs); break;
            case 210: a.mov(__dword_ptr[Divisor], r); break;
            case 211: a.div(__dword_ptr[Divisor]); break;
            case 212: a.cmp(__dword_ptr[ebx + faultDisp], unchecked((int)imm)); break;
            // Accesses that cross from the data page into the fault page (the fast path stops at a page's end).
            case 214: a.mov(d, __dword_ptr[ebx + 0xFFE]); break;
            case 215: a.add(__word_ptr[ebx + 0xFFF], Words[s.R2]); break;
            default: a.mov(__byte_ptr[ebx + faultDisp + 1], Bytes[s.R2]); break;
        }
    }

    // ------------------------------------------------------------------ the machine

    /// <summary>An interrupt line that asserts every <paramref name="period"/> instructions (by the CPU's own count).</summary>
    private sealed class TickSource(SecureVmm.Tcb.Cpu.Cpu cpu, long firstAt) : IInterruptSource
    {
        private readonly long _period = firstAt;
        private long _next = firstAt;

        public bool HasPending => cpu.InstructionCount >= _next;

        public byte Acknowledge()
        {
            _next = cpu.InstructionCount + _period;
            return TickVector;
        }
    }

    private sealed record Case(uint[] Init, int Iterations, Step[] Body, long TickPeriod)
    {
        // FsCheck prints the failing case: show the values, not the array types.
        public override string ToString() =>
            $"Case(init [{string.Join(", ", Init.Select(v => $"0x{v:X}"))}], iterations {Iterations}, ticks {TickPeriod}, body [{string.Join(", ", Body)}])";
    }

    /// <summary>
    /// A handler for <paramref name="vector"/> that logs the vector, CR2, the three stack dwords
    /// above the error code or return address, ESP at entry, the interrupted registers (PUSHAD) and
    /// the TSC (the instruction count), then fixes the cause up so that the instruction restarts.
    /// </summary>
    private static void FaultHandler(CpuHarness h, int vector)
    {
        SystemFixture.Handler(h, vector, a =>
        {
            a.pushad();
            a.mov(esi, __dword_ptr[FaultCount]);
            a.and(esi, 63);
            a.shl(esi, 6);
            a.add(esi, FaultLog);
            a.mov(__dword_ptr[esi], (uint)vector);
            a.mov(eax, cr2);
            a.mov(__dword_ptr[esi + 4], eax);
            for (int i = 0; i < 3; i++)
            {
                a.mov(eax, __dword_ptr[esp + 32 + i * 4]);
                a.mov(__dword_ptr[esi + 8 + i * 4], eax);
            }
            a.lea(eax, __[esp + 32]);
            a.mov(__dword_ptr[esi + 20], eax);
            for (int i = 0; i < 8; i++)
            {
                a.mov(eax, __dword_ptr[esp + i * 4]);
                a.mov(__dword_ptr[esi + 24 + i * 4], eax);
            }
            a.rdtsc();
            a.mov(__dword_ptr[esi + 56], eax);
            a.inc(__dword_ptr[FaultCount]);
            switch (vector)
            {
                case Vector.DE:
                    // Divisor 1 and EDX 0 (PUSHAD slot at +20): the DIV cannot overflow when it restarts.
                    a.mov(__dword_ptr[Divisor], 1);
                    a.mov(__dword_ptr[esp + 20], 0);
                    break;
                case Vector.GP:
                    a.mov(ax, SystemFixture.KernelData);
                    a.mov(fs, ax);
                    break;
                case Vector.PF:
                    a.or(__dword_ptr[FaultPte], 1);
                    a.invlpg(__[FaultPage]);
                    break;
            }
            a.popad();
            if (vector != Vector.DE)
            {
                a.add(esp, 4); // the error code
            }
            a.iretd();
        });
    }

    private static void TickHandler(CpuHarness h)
    {
        uint addr = SystemFixture.HandlerBase + TickVector * 0x100u;
        SystemFixture.WriteU64(h, SystemFixture.Idt + TickVector * 8u, SystemFixture.Gate(SystemFixture.KernelCode, addr, 0xE, 0));
        h.Load(addr, CpuHarness.Assemble(32, addr, a =>
        {
            a.push(eax);
            a.push(edx);
            a.push(esi);
            a.mov(esi, __dword_ptr[TickCount]);
            a.and(esi, 63);
            a.shl(esi, 4);
            a.add(esi, TickLog);
            a.mov(eax, __dword_ptr[esp + 12]);   // the interrupted EIP
            a.mov(__dword_ptr[esi], eax);
            a.rdtsc();
            a.mov(__dword_ptr[esi + 4], eax);
            a.mov(__dword_ptr[esi + 8], ecx);
            a.inc(__dword_ptr[TickCount]);
            a.pop(esi);
            a.pop(edx);
            a.pop(eax);
            a.iretd();
        }));
    }

    /// <summary>Prologue (GDT, IDT, TSS, paging on), the registers, then the body in a loop; HLT with IF=0 at the end.</summary>
    private static void EmitProgram(Assembler a, Case c, Action<Assembler> body)
    {
        SystemFixture.Prologue(a);
        a.mov(ax, SmallFs);
        a.mov(fs, ax);
        a.mov(eax, PageDirectory);
        a.mov(cr3, eax);
        a.mov(eax, cr0);
        a.or(eax, unchecked((int)0x8000_0000));
        a.mov(cr0, eax);
        a.cld();
        if (c.TickPeriod > 0)
        {
            a.sti();
        }
        a.mov(ebx, DataAddress);
        for (int i = 0; i < Free.Length; i++)
        {
            a.mov(Free[i], c.Init[i]);
        }
        // Start from flags set by an add of two of the initial values.
        a.add(eax, c.Init[6]);
        var top = a.CreateLabel();
        a.Label(ref top);
        body(a);
        a.dec(__dword_ptr[Counter]);
        a.jnz(top);
        a.cli();
        a.hlt();
    }

    private static void EmitBody(Assembler a, Step[] body, bool logFlags = true)
    {
        int step = 0;
        foreach (var s in body)
        {
            Emit(a, s);
            if (logFlags && (s.Disp & 1) == 0)
            {
                // About one step in two logs all of EFLAGS (PUSHFD settles the lazy flags; the other
                // steps leave lazy chains intact across the block ends).
                a.pushfd();
                a.pop(__dword_ptr[FlagLog + (uint)(step % 64) * 4]);
            }
            step++;
        }
    }

    private static byte[] Assemble(Action<Assembler> build)
    {
        var asm = new Assembler(32);
        build(asm);
        var stream = new MemoryStream();
        asm.Assemble(new StreamCodeWriter(stream), CodeAddress);
        return stream.ToArray();
    }

    private static CpuHarness Build(byte[] code, Case c, int threshold)
    {
        var h = new CpuHarness(ramMiB: 4);
        h.Cpu.CompileThreshold = threshold;
        h.PortValues[0x60] = 0x1234_5678;
        h.PortValues[0x61] = c.Init[7];
        SystemFixture.Install(h);
        // A data segment for the #GP tests: base DataAddress, byte-granular limit 0xFF (SDM vol. 3, 5.3).
        SystemFixture.WriteU64(h, SystemFixture.Gdt + SmallFs, SystemFixture.Descriptor(DataAddress, 0xFF, 0x92, 0x4));
        FaultHandler(h, Vector.DE);
        FaultHandler(h, Vector.GP);
        FaultHandler(h, Vector.PF);
        TickHandler(h);
        // Identity-map the first 4 MiB with 4-KiB pages (SDM vol. 3, 4.3).
        h.WriteU32(PageDirectory, PageTable | 3);
        var table = new byte[4096];
        for (uint i = 0; i < 1024; i++)
        {
            BitConverter.TryWriteBytes(table.AsSpan((int)i * 4), (i << 12) | 3);
        }
        // The fault page starts not present: its first access faults (the #PF handler maps it).
        BitConverter.TryWriteBytes(table.AsSpan((int)(FaultPte - PageTable)), FaultPage | 2);
        h.Load(PageTable, table);
        h.Load(CodeAddress, code);
        var data = new byte[0x1000];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(c.Init[7] * (uint)(i + 1) >> 8);
        }
        h.Load(DataAddress, data);
        h.Load(FaultPage, data);
        h.WriteU32(Counter, (uint)c.Iterations);
        h.WriteU32(Divisor, c.Init[6]);
        if (c.TickPeriod > 0)
        {
            h.Cpu.Interrupts = new TickSource(h.Cpu, c.TickPeriod);
        }
        h.Cpu.EnterFlatProtectedMode(CodeAddress);
        h.Cpu.Esp = SystemFixture.KernelStack;
        return h;
    }

    private sealed record Outcome(
        RunStatus Status, uint[] Regs, uint Eflags, uint Eip, long Count, uint Cr2, int Cpl,
        byte[] Data, byte[] Stack, string[] Exits);

    private static Outcome Observe(CpuHarness h, RunStatus status)
    {
        var regs = new uint[8];
        for (int i = 0; i < 8; i++)
        {
            regs[i] = h.Cpu.GetGpr((Gpr)i);
        }
        var exits = h.Exits.Select(e => $"{e.Kind} port={e.Port:X} size={e.Size} value={e.Value:X} eip={e.Eip:X8} count={e.InstructionCount}").ToArray();
        return new Outcome(status, regs, h.Cpu.Eflags, h.Cpu.Eip, h.Cpu.InstructionCount, h.Cpu.Cr2, h.Cpu.Cpl,
            h.Ram.Slice(DataAddress, WindowBytes).ToArray(), h.Ram.Slice(StackWindow, 0x200).ToArray(), exits);
    }

    private static void AssertSame(Outcome interpreted, Outcome compiled)
    {
        Assert.Equal(interpreted.Exits, compiled.Exits);
        Assert.Equal(interpreted.Count, compiled.Count);
        Assert.Equal(interpreted.Status, compiled.Status);
        Assert.Equal(interpreted.Eip.ToString("X8"), compiled.Eip.ToString("X8"));
        Assert.Equal(interpreted.Regs, compiled.Regs);
        Assert.Equal(interpreted.Eflags.ToString("X8"), compiled.Eflags.ToString("X8"));
        Assert.Equal(interpreted.Cr2.ToString("X8"), compiled.Cr2.ToString("X8"));
        Assert.Equal(interpreted.Cpl, compiled.Cpl);
        AssertBytes("data window", DataAddress, interpreted.Data, compiled.Data);
        AssertBytes("stack", StackWindow, interpreted.Stack, compiled.Stack);
    }

    /// <summary>Byte arrays compared with the first differing guest address in the message.</summary>
    private static void AssertBytes(string what, uint address, byte[] expected, byte[] actual)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            if (expected[i] != actual[i])
            {
                Assert.Fail($"{what} differs first at {address + (uint)i:X8}: interpreted {expected[i]:X2}, compiled {actual[i]:X2}");
            }
        }
    }

    /// <summary>Runs to the end with one budget; returns the outcome and how many blocks were compiled.</summary>
    private static (Outcome Outcome, long Compiled) RunWhole(byte[] code, Case c, int threshold)
    {
        using var h = Build(code, c, threshold);
        var status = h.Run(2_000_000);
        Assert.Equal(0, h.Cpu.CompileFailures);
        return (Observe(h, status), h.Cpu.CompiledBlocks);
    }

    /// <summary>What the interpreted run went through, summed over a property's cases so that a fact can require it happened.</summary>
    private sealed class Coverage
    {
        public long Cases, CasesCompiled, Exits, Ticks;
        public readonly long[] FaultsByVector = new long[32];
    }

    private static void CheckWhole(byte[] code, Case c, int threshold, Coverage? coverage = null)
    {
        var (interpreted, noneCompiled) = RunWhole(code, c, 0);
        var (compiled, compiledBlocks) = RunWhole(code, c, threshold);
        Assert.Equal(0, noneCompiled);
        Assert.Equal(RunStatus.Halted, interpreted.Status);
        AssertSame(interpreted, compiled);
        if (coverage is not null)
        {
            coverage.Cases++;
            coverage.CasesCompiled += compiledBlocks > 0 ? 1 : 0;
            coverage.Exits += interpreted.Exits.Length;
            coverage.Ticks += BitConverter.ToUInt32(interpreted.Data, (int)(TickCount - DataAddress));
            uint faults = BitConverter.ToUInt32(interpreted.Data, (int)(FaultCount - DataAddress));
            for (uint i = 0; i < Math.Min(faults, 64u); i++)
            {
                coverage.FaultsByVector[BitConverter.ToUInt32(interpreted.Data, (int)(FaultLog - DataAddress + i * 64)) & 31]++;
            }
        }
    }

    // ------------------------------------------------------------------ generators

    private static readonly uint[] Interesting = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFE, 0xFFFF_FFFF];

    private static Gen<uint> Value =>
        Gen.OneOf(Gen.Elements(Interesting), ArbMap.Default.GeneratorFor<uint>());

    private static Gen<Step> StepOf(Gen<int> op) =>
        from o in op
        from r1 in Gen.Choose(0, Free.Length - 1)
        from r2 in Gen.Choose(0, Free.Length - 1)
        from imm in Value
        from disp in Gen.Choose(0, DataBytes - 4)
        select new Step(o, r1, r2, imm, disp);

    private static Gen<int> Alu => Gen.Choose(0, AluOps - 1);

    /// <summary>Mostly <see cref="Alu"/> with <paramref name="extraPercent"/>% drawn from <paramref name="extra"/>.</summary>
    private static Gen<int> Mix(int extraPercent, params int[][] extra)
    {
        var all = extra.SelectMany(x => x).ToArray();
        return all.Length == 0 ? Alu : Gen.Frequency((100 - extraPercent, Alu), (extraPercent, Gen.Elements(all)));
    }

    private static Gen<Case> Cases(Gen<int> op, int minLength, int maxLength, bool ticks) =>
        from init in Gen.ArrayOf(Value, 8)
        from iterations in Gen.Choose(4, 6)
        from length in Gen.Choose(minLength, maxLength)
        from body in StepOf(op).ArrayOf(length)
        from period in ticks ? Gen.Choose(20, 120).Select(p => (long)p) : Gen.Constant(0L)
        select new Case(init, iterations, body, period);

    private static Gen<int> Threshold => Gen.Elements(1, 2, 3);

    /// <summary>Shrinks a failing case to fewer steps (halves, then one step less), for a short report.</summary>
    private static IEnumerable<Case> ShrinkCase(Case c)
    {
        int n = c.Body.Length;
        if (n > 1)
        {
            yield return c with { Body = c.Body[..(n / 2)] };
            yield return c with { Body = c.Body[(n / 2)..] };
        }
        for (int i = 0; i < n; i++)
        {
            yield return c with { Body = [.. c.Body[..i], .. c.Body[(i + 1)..]] };
        }
    }

    private static Coverage Property(Gen<Case> cases, int maxTest)
    {
        var coverage = new Coverage();
        var property = Prop.ForAll(Arb.From(cases, ShrinkCase), Threshold.ToArbitrary(), (c, threshold) =>
        {
            byte[] code = Assemble(a => EmitProgram(a, c, x => EmitBody(x, c.Body)));
            CheckWhole(code, c, threshold, coverage);
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(maxTest), property);
        AssertMostlyCompiled(coverage);
        return coverage;
    }

    /// <summary>
    /// The loops run more times than the threshold, so blocks ran compiled in most cases (a block
    /// the compiler declines to compile is allowed; a property where nothing compiles tests nothing).
    /// </summary>
    private static void AssertMostlyCompiled(Coverage coverage) =>
        Assert.True(coverage.CasesCompiled * 2 >= coverage.Cases, $"blocks were compiled in only {coverage.CasesCompiled} of {coverage.Cases} cases");

    // ------------------------------------------------------------------ properties

    /// <summary>
    /// A REP string instruction (ECX=10) inside a looping block: every iteration counts as one
    /// instruction (Strings.cs adds them to the count, SDM vol. 2 REP: each iteration is
    /// interruptible like an instruction), so a compiled block must keep them in the count and in
    /// the budget instead of renumbering its instructions from the block's start. The smallest
    /// program the properties shrink a REP mismatch to.
    /// </summary>
    [Theory]
    [InlineData(60, 1)]
    [InlineData(61, 1)]
    [InlineData(65, 1)]
    [InlineData(60, 2)]
    public void RepeatedStringInstructionsInACompiledBlockCountEveryIteration(int op, int threshold)
    {
        var c = new Case([1, 2, 3, 4, 5, 6, 7, 8], 4, [new Step(op, 0, 0, 10, 1), new Step(5, 0, 1, 0, 1)], 0);
        CheckWhole(Assemble(a => EmitProgram(a, c, x => EmitBody(x, c.Body))), c, threshold);
    }

    [Fact]
    public void StraightLineLoopsMatchTheInterpreter() =>
        Property(Cases(Alu, 8, 50, ticks: false), 120);

    [Fact]
    public void ExitsInTheMiddleOfCompiledBlocksMatchTheInterpreter()
    {
        var coverage = Property(Cases(Mix(15, ExitOps), 8, 40, ticks: false), 80);
        Assert.True(coverage.Exits > 100, $"only {coverage.Exits} exits");
    }

    [Fact]
    public void FaultsInTheMiddleOfCompiledBlocksMatchTheInterpreter()
    {
        var coverage = Property(Cases(Mix(25, FaultOps), 8, 40, ticks: false), 100);
        Assert.True(coverage.FaultsByVector[Vector.DE] > 0, "no #DE");
        Assert.True(coverage.FaultsByVector[Vector.GP] > 0, "no #GP");
        Assert.True(coverage.FaultsByVector[Vector.PF] > 0, "no #PF");
    }

    [Fact]
    public void InterruptDeliveryPointsMatchTheInterpreter()
    {
        var coverage = Property(Cases(Mix(15, ExitOps, FaultOps), 8, 40, ticks: true), 80);
        Assert.True(coverage.Ticks > 100, $"only {coverage.Ticks} interrupts delivered");
    }

    /// <summary>
    /// The same program run by <see cref="SecureVmm.Tcb.Cpu.Cpu.Run"/> calls with small random
    /// budgets (1..50) that end inside blocks: after every call the status, instruction count and
    /// EIP must match, and the final state too.
    /// </summary>
    [Fact]
    public void SmallBudgetsSplittingBlocksMatchTheInterpreter()
    {
        var cases = from c in Cases(Mix(20, ExitOps, FaultOps), 8, 30, ticks: false)
                    from budgets in Gen.ArrayOf(Gen.Choose(1, 50), 64)
                    from ticks in Gen.Elements(0L, 45L)
                    select (c: c with { TickPeriod = ticks }, budgets);
        long compiledInAll = 0;
        var property = Prop.ForAll(cases.ToArbitrary(), Threshold.ToArbitrary(), (x, threshold) =>
            compiledInAll += RunInSlices(x.c, threshold, x.budgets));
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(100), property);
        // Budgets shorter than a block keep it interpreted; over all cases blocks did run compiled.
        Assert.True(compiledInAll > 0, "no block was compiled in any case");
    }

    /// <summary>
    /// A REP STOSB (ECX=10) followed by three instructions in a looping block, run in slices of
    /// every budget from 1 to 40: where the REP's last iteration is the last instruction of the
    /// budget, the run must stop right after it, as the interpreter does, and not finish the block.
    /// </summary>
    [Fact]
    public void RepeatedStringInstructionsEndingAtTheBudgetEndStopThere()
    {
        var c = new Case([1, 2, 3, 4, 5, 6, 7, 8], 5,
            [new Step(60, 0, 0, 10, 1), new Step(5, 0, 1, 0, 1), new Step(5, 2, 1, 0, 1), new Step(5, 3, 1, 0, 1)], 0);
        for (int budget = 1; budget <= 40; budget++)
        {
            RunInSlices(c, 1, [budget]);
        }
    }

    /// <summary>
    /// Runs the case on both CPUs in <see cref="SecureVmm.Tcb.Cpu.Cpu.Run"/> calls with the given
    /// budgets (cycled), comparing status, count and EIP after every call and the whole state at
    /// the end; returns how many blocks the compiling CPU compiled.
    /// </summary>
    private static long RunInSlices(Case c, int threshold, int[] budgets, bool logFlags = true)
    {
        byte[] code = Assemble(a => EmitProgram(a, c, y => EmitBody(y, c.Body, logFlags)));
        using var interpreted = Build(code, c, 0);
        using var compiled = Build(code, c, threshold);
        RunStatus si = RunStatus.BudgetExhausted, sc = RunStatus.BudgetExhausted;
        for (int call = 0; call < 100_000 && si == RunStatus.BudgetExhausted; call++)
        {
            int budget = budgets[call % budgets.Length];
            si = interpreted.Run(budget);
            sc = compiled.Run(budget);
            Assert.True(si == sc && interpreted.Cpu.InstructionCount == compiled.Cpu.InstructionCount && interpreted.Cpu.Eip == compiled.Cpu.Eip,
                $"after Run call {call} (budget {budget}): interpreted {si} count {interpreted.Cpu.InstructionCount} eip {interpreted.Cpu.Eip:X8}, "
                + $"compiled {sc} count {compiled.Cpu.InstructionCount} eip {compiled.Cpu.Eip:X8}");
        }
        Assert.Equal(RunStatus.Halted, si);
        Assert.Equal(0, compiled.Cpu.CompileFailures);
        AssertSame(Observe(interpreted, si), Observe(compiled, sc));
        return compiled.Cpu.CompiledBlocks;
    }

    /// <summary>
    /// Loops of translated instructions only (no flag logging), so that the loop is one block
    /// ending with a branch to its own start, which runs its turns inside the compiled method with
    /// the registers in locals: with interrupts arriving between turns, side exits (#PF on the
    /// page that starts unmapped, #GP on FS's small limit) in the middle of a turn, and Run calls
    /// whose budgets end mid-loop, everything must match the interpreter after every call.
    /// </summary>
    [Fact]
    public void SelfLoopingTranslatedBlocksMatchTheInterpreter()
    {
        var op = Gen.Frequency((92, Gen.Elements(TranslatedOps)), (8, Gen.Elements(SideExitOps)));
        var cases = from c in Cases(op, 1, 24, ticks: false)
                    from iterations in Gen.Choose(8, 40)
                    from ticks in Gen.Elements(0L, 0L, 37L, 150L)
                    from budgets in Gen.ArrayOf(Gen.Choose(1, 600), 16)
                    select (c: c with { Iterations = iterations, TickPeriod = ticks }, budgets);
        var coverage = new Coverage();
        var property = Prop.ForAll(cases.ToArbitrary(), Threshold.ToArbitrary(), (x, threshold) =>
        {
            CheckWhole(Assemble(a => EmitProgram(a, x.c, y => EmitBody(y, x.c.Body, logFlags: false))), x.c, threshold, coverage);
            RunInSlices(x.c, threshold, x.budgets, logFlags: false);
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(150), property);
        AssertMostlyCompiled(coverage);
        Assert.True(coverage.Ticks > 100, $"only {coverage.Ticks} interrupts delivered");
        Assert.True(coverage.FaultsByVector[Vector.PF] > 0 && coverage.FaultsByVector[Vector.GP] > 0, "no #PF or no #GP");
    }

    // ------------------------------------------------------------------ self-modifying code

    /// <summary>
    /// A loop body of random instructions with <c>MOV reg, imm32</c> targets whose immediates
    /// other instructions of the body rewrite (before or after the target, in the same block or
    /// another one) in the last two iterations, after the blocks have run compiled; the rewritten
    /// code must run as the interpreter runs it, from the next instruction on (SDM vol. 3, 11.6:
    /// a write to code takes effect for the next instruction).
    /// </summary>
    [Fact]
    public void SelfModifyingCodeMatchesTheInterpreter()
    {
        var piece = from kind in Gen.Frequency((6, Gen.Constant(0)), (2, Gen.Constant(1)), (2, Gen.Constant(2)), (1, Gen.Constant(3)))
                    from step in StepOf(Alu)
                    from target in Gen.Choose(0, 3)
                    select (kind, step, target);
        var cases = from c in Cases(Alu, 0, 0, ticks: false)
                    from pieces in piece.ArrayOf().Select(p => p.Take(60).ToArray())
                    from iterations in Gen.Choose(5, 7)
                    select (c: c with { Iterations = iterations }, pieces);
        var coverage = new Coverage();
        var property = Prop.ForAll(cases.ToArbitrary(), Threshold.ToArbitrary(), (x, threshold) =>
        {
            var (c, pieces) = x;
            // kind 0: a random instruction; 1: target k (MOV reg, imm32); 2: rewrite target k's
            // immediate with a register; 3: a jump to the next instruction (a block boundary).
            void Body(Assembler a, uint[] targetAddresses, Label?[] placed)
            {
                int step = 0;
                foreach (var (kind, s, target) in pieces)
                {
                    switch (kind)
                    {
                        case 0:
                            Emit(a, s);
                            break;
                        case 1:
                            a.nop(); // a label of its own (the previous piece may have ended on one)
                            if (placed[target] is null)
                            {
                                // The first occurrence of target k is the one the rewrites address.
                                var label = a.CreateLabel();
                                a.Label(ref label);
                                placed[target] = label;
                            }
                            a.mov(Free[s.R1], s.Imm);
                            a.add(__dword_ptr[ebx + (s.Disp & 0xFC)], Free[s.R1]);
                            break;
                        case 2:
                        {
                            // Rewrite only in the last two iterations: the earlier ones let the
                            // blocks become hot and compiled first (any write to the code page
                            // drops every block decoded from it).
                            var skip = a.CreateLabel();
                            a.cmp(__dword_ptr[Counter], 2);
                            a.ja(skip);
                            a.mov(__dword_ptr[targetAddresses[target] + 1], Free[s.R2]);
                            a.Label(ref skip);
                            a.nop();
                            break;
                        }
                        default:
                        {
                            var next = a.CreateLabel();
                            a.jmp(next);
                            a.Label(ref next);
                            break;
                        }
                    }
                    if ((s.Disp & 1) == 0)
                    {
                        a.pushfd();
                        a.pop(__dword_ptr[FlagLog + (uint)(step % 64) * 4]);
                    }
                    step++;
                }
            }
            // Pass 1 finds where the targets land; pass 2 writes their addresses (the encodings do
            // not depend on the address values: absolute operands are always disp32). A target
            // that does not occur points at a scratch dword in the data window.
            uint[] addresses = Enumerable.Repeat(DataAddress + 0x2F0u, 4).ToArray();
            for (int pass = 0; pass < 2; pass++)
            {
                var asm = new Assembler(32);
                var labels = new Label?[4];
                EmitProgram(asm, c, a => Body(a, addresses, labels));
                var stream = new MemoryStream();
                var result = asm.Assemble(new StreamCodeWriter(stream), CodeAddress, BlockEncoderOptions.ReturnNewInstructionOffsets);
                if (pass == 1)
                {
                    CheckWhole(stream.ToArray(), c, threshold, coverage);
                    break;
                }
                for (int k = 0; k < 4; k++)
                {
                    if (labels[k] is { } placedLabel)
                    {
                        addresses[k] = (uint)result.GetLabelRIP(placedLabel);
                    }
                }
            }
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(100), property);
        AssertMostlyCompiled(coverage);
    }
}
