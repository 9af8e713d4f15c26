using System.Diagnostics;
using Iced.Intel;
using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Bench;

/// <summary>
/// Guest instructions per second of the software CPU on two workloads:
/// an integer workload (ALU, loads/stores, branches, calls over a 64 KiB buffer, flat protected
/// mode, paging off) and a paging-heavy one (paging on, two address spaces switched with MOV CR3
/// and INVLPG every few hundred instructions, touching many pages).
/// Run: <c>dotnet run -c Release --project bench -- cpu</c>.
/// </summary>
public static class CpuBench
{
    private sealed class NullExits : IExitHandler
    {
        public ExitAction OnExit(ref VmExit exit) => exit.Kind == ExitKind.IoOut && exit.Port == 0xF4 ? ExitAction.Stop : ExitAction.Continue;
    }

    public static int Run(string[] args)
    {
        long budget = args.Length > 0 && long.TryParse(args[0], out long b) ? b : 200_000_000;
        Console.WriteLine($"SecureVmm CPU benchmark ({Environment.ProcessorCount} host cores, {budget:N0} guest instructions per run)");
        Measure("integer", budget, BuildInteger);
        Measure("paging (CR3 switch + INVLPG)", budget / 2, BuildPaging);
        return 0;
    }

    private static void Measure(string name, long budget, Func<Assembler, uint> build)
    {
        using var ram = new GuestRam(32L * 1024 * 1024);
        var map = new PhysicalMemoryMap(ram);
        var cpu = new Cpu(map, new NullExits());
        var asm = new Assembler(32);
        uint entry = build(asm);
        var stream = new MemoryStream();
        asm.Assemble(new StreamCodeWriter(stream), 0x10_0000);
        map.WriteRam(0x10_0000, stream.ToArray());
        cpu.EnterFlatProtectedMode(entry);
        cpu.Esp = 0x9_0000;
        // Warm up (JIT, decoded-block cache), then time.
        cpu.Run(budget / 10);
        long start = cpu.InstructionCount;
        // Process CPU time as well as wall time: on a shared machine the wall figure moves with
        // the load, the per-CPU-second figure much less (the run is single-threaded).
        using var self = Process.GetCurrentProcess();
        TimeSpan cpuBefore = self.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var status = cpu.Run(budget);
        sw.Stop();
        self.Refresh();
        double cpuSeconds = (self.TotalProcessorTime - cpuBefore).TotalSeconds;
        long executed = cpu.InstructionCount - start;
        double mips = executed / sw.Elapsed.TotalSeconds / 1e6;
        Console.WriteLine($"  {name,-32} {executed,14:N0} instr in {sw.Elapsed.TotalSeconds,6:F2} s = {mips,7:F1} million guest instr/s; {executed / cpuSeconds / 1e6,7:F1} million per CPU-second ({status})");
    }

    /// <summary>
    /// One pass of the integer checksum over the 64 KiB buffer at EBX (16384 elements: loads,
    /// stores, ALU, rotates, LEA, a conditional call of <paramref name="mix"/>). Shared by this
    /// benchmark and the QEMU comparison guest, so both measure the same work.
    /// </summary>
    public static void EmitChecksumPass(Assembler a, Label mix)
    {
        var inner = a.CreateLabel();
        var skip = a.CreateLabel();
        a.xor(esi, esi);
        a.mov(ecx, 0x4000);
        a.Label(ref inner);
        a.mov(eax, __dword_ptr[ebx + esi * 4]);
        a.add(edx, eax);
        a.xor(edx, ecx);
        a.rol(edx, 3);
        a.lea(edi, __[edx + eax * 2 + 7]);
        a.test(edi, 1);
        a.jz(skip);
        a.call(mix);
        a.Label(ref skip);
        a.mov(__dword_ptr[ebx + esi * 4], edi);
        a.inc(esi);
        a.dec(ecx);
        a.jnz(inner);
    }

    /// <summary>The subroutine the checksum pass calls.</summary>
    public static void EmitMix(Assembler a, ref Label mix)
    {
        a.Label(ref mix);
        a.imul(edi, edi, 31);
        a.sub(edi, edx);
        a.ret();
    }

    /// <summary>An endless integer loop: checksum a 64 KiB buffer with adds, xors, shifts, loads, stores and a call.</summary>
    private static uint BuildInteger(Assembler a)
    {
        var outer = a.CreateLabel();
        var mix = a.CreateLabel();
        a.mov(ebx, 0x20_0000);
        a.Label(ref outer);
        EmitChecksumPass(a, mix);
        a.jmp(outer);
        EmitMix(a, ref mix);
        return 0x10_0000;
    }

    /// <summary>Two page directories (4 KiB pages over 0-8 MiB) alternated with MOV CR3 every 256 pages touched, plus INVLPG.</summary>
    private static uint BuildPaging(Assembler a)
    {
        EmitPagingSetup(a, 0x100_0000);
        var loop = a.CreateLabel();
        a.Label(ref loop);
        EmitPagingRound(a);
        a.jmp(loop);
        return 0x10_0000;
    }

    /// <summary>
    /// Page tables for 0-8 MiB (two tables, at <paramref name="pd0"/> + 0x2000) shared by two page
    /// directories at <paramref name="pd0"/> and <paramref name="pd0"/> + 0x1000 (a different CR3
    /// value means a flush); turns paging on with directory 0 and leaves pd0 ^ pd1 in EBP for
    /// <see cref="EmitPagingRound"/>. Used by this benchmark and the QEMU comparison.
    /// </summary>
    public static void EmitPagingSetup(Assembler a, uint pd0)
    {
        uint pd1 = pd0 + 0x1000, pt = pd0 + 0x2000;
        var fill = a.CreateLabel();
        a.mov(edi, pt);
        a.mov(eax, 0x7u);
        a.mov(ecx, 2048);
        a.Label(ref fill);
        a.stosd();
        a.add(eax, 0x1000);
        a.dec(ecx);
        a.jnz(fill);
        a.mov(__dword_ptr[pd0], pt | 7u);
        a.mov(__dword_ptr[pd0 + 4], (pt + 0x1000) | 7u);
        a.mov(__dword_ptr[pd1], pt | 7u);
        a.mov(__dword_ptr[pd1 + 4], (pt + 0x1000) | 7u);
        a.mov(eax, pd0);
        a.mov(cr3, eax);
        a.mov(eax, cr0);
        a.or(eax, 0x8000_0000u);
        a.mov(cr0, eax);
        a.mov(ebp, pd0 ^ pd1);
    }

    /// <summary>One round: touch 256 pages of the 4-8 MiB window (read, write, INVLPG each), then switch CR3.</summary>
    public static void EmitPagingRound(Assembler a)
    {
        var touch = a.CreateLabel();
        a.mov(esi, 0x40_0000);
        a.mov(ecx, 256);
        a.Label(ref touch);
        a.mov(eax, __dword_ptr[esi]);
        a.add(eax, ecx);
        a.mov(__dword_ptr[esi + 4], eax);
        a.invlpg(__[esi]);
        a.add(esi, 0x1000);
        a.dec(ecx);
        a.jnz(touch);
        a.mov(eax, cr3);
        a.xor(eax, ebp);
        a.mov(cr3, eax);
    }
}
