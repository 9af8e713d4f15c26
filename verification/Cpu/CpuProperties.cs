using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Memory;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuCore = SecureVmm.Tcb.Cpu.Cpu;

namespace SecureVmm.Verification.Cpu;

/// <summary>
/// Properties of the software CPU: the lazy flags equal a direct computation of the SDM's
/// definitions, and no guest-controlled translation or address reaches outside the VM's RAM.
/// </summary>
public class CpuProperties
{
    private sealed class StopOnDebugExit : IExitHandler
    {
        public readonly List<VmExit> Exits = [];
        public ExitAction OnExit(ref VmExit exit)
        {
            Exits.Add(exit);
            return exit.Kind == ExitKind.IoOut && exit.Port == 0xF4 ? ExitAction.Stop : ExitAction.Continue;
        }
    }

    private static byte[] Assemble(Action<Assembler> build)
    {
        var a = new Assembler(32);
        build(a);
        var s = new MemoryStream();
        a.Assemble(new StreamCodeWriter(s), 0x1000);
        return s.ToArray();
    }

    private static byte[] Assemble3000(Action<Assembler> build)
    {
        var a = new Assembler(32);
        build(a);
        var s = new MemoryStream();
        a.Assemble(new StreamCodeWriter(s), 0x3000);
        return s.ToArray();
    }

    /// <summary>Reference flags for ADD/SUB (with carry in) from wide arithmetic (SDM vol. 1, 3.4.3.1).</summary>
    private static uint ReferenceFlags(bool sub, uint a, uint b, uint carry, int bits)
    {
        ulong mask = (1UL << bits) - 1;
        ulong ua = a & mask, ub = b & mask;
        long sa = (long)(ua << (64 - bits)) >> (64 - bits), sb = (long)(ub << (64 - bits)) >> (64 - bits);
        ulong r = sub ? ua - ub - carry : ua + ub + carry;
        long sr = sub ? sa - sb - carry : sa + sb + carry;
        uint res = (uint)(r & mask);
        bool cf = sub ? ua < ub + carry : r > mask;
        bool of = sr < -(1L << (bits - 1)) || sr >= (1L << (bits - 1));
        bool af = sub ? (ua & 0xF) < (ub & 0xF) + carry : (ua & 0xF) + (ub & 0xF) + carry > 0xF;
        bool zf = res == 0;
        bool sf = (res >> (bits - 1) & 1) != 0;
        bool pf = (System.Numerics.BitOperations.PopCount(res & 0xFF) & 1) == 0;
        return (cf ? 1u : 0) | (pf ? 4u : 0) | (af ? 0x10u : 0) | (zf ? 0x40u : 0) | (sf ? 0x80u : 0) | (of ? 0x800u : 0);
    }

    [Fact]
    public void AddSubFlagsMatchTheDefinition()
    {
        using var ram = new GuestRam(1024 * 1024);
        var map = new PhysicalMemoryMap(ram);
        var exits = new StopOnDebugExit();
        var cpu = new CpuCore(map, exits);
        // Four programs at fixed offsets: adc/sbb with 32 and 8-bit operands, flags into ECX.
        var programs = new (uint At, bool Sub, int Bits)[] { (0x1000, false, 32), (0x1100, true, 32), (0x1200, false, 8), (0x1300, true, 8) };
        foreach (var (at, sub, bits) in programs)
        {
            var code = Assemble(a =>
            {
                if (bits == 32) { if (sub) a.sbb(eax, ebx); else a.adc(eax, ebx); }
                else { if (sub) a.sbb(al, bl); else a.adc(al, bl); }
                a.pushfd();
                a.pop(ecx);
                a.mov(dx, 0xF4);
                a.@out(dx, al);
            });
            map.WriteRam(at, code);
        }
        var gen = from a in ArbMap.Default.GeneratorFor<uint>()
                  from b in Gen.OneOf(ArbMap.Default.GeneratorFor<uint>(), Gen.Elements(0u, 1u, 0x7Fu, 0x80u, 0xFFu, 0x7FFF_FFFFu, 0x8000_0000u, 0xFFFF_FFFFu))
                  from carry in Gen.Elements(0u, 1u)
                  from which in Gen.Choose(0, 3)
                  select (a, b, carry, which);
        Prop.ForAll(Arb.From(gen), t =>
        {
            var (a, b, carry, which) = t;
            var (at, sub, bits) = programs[which];
            cpu.EnterFlatProtectedMode(at);
            cpu.Esp = 0x8_0000;
            cpu.Eax = a;
            cpu.Ebx = b;
            cpu.Eflags = 0x2 | carry;
            cpu.Run(100);
            uint mask = bits == 32 ? 0xFFFF_FFFFu : 0xFFu;
            uint expectedResult = (sub ? a - b - carry : a + b + carry) & mask;
            uint expectedFlags = ReferenceFlags(sub, a, b, carry, bits);
            return (cpu.Ecx & 0x8D5) == expectedFlags && (cpu.Eax & mask) == expectedResult;
        }).QuickCheckThrowOnFailure();
    }

    /// <summary>
    /// Whatever the page tables and addresses, a translated access reaches only this VM's RAM or
    /// an exit: random page-directory contents and random linear addresses never make the CPU
    /// throw, and every physical address it reports in an exit lies outside RAM.
    /// </summary>
    [Fact]
    public void RandomPageTablesNeverEscapeRam()
    {
        const int ramSize = 1024 * 1024;
        var gen = from pdes in Gen.ArrayOf(ArbMap.Default.GeneratorFor<uint>(), 8)
                  from addrs in Gen.ArrayOf(ArbMap.Default.GeneratorFor<uint>(), 8)
                  select (pdes, addrs);
        Prop.ForAll(Arb.From(gen), t =>
        {
            using var ram = new GuestRam(ramSize);
            var map = new PhysicalMemoryMap(ram);
            var exits = new StopOnDebugExit();
            var cpu = new CpuCore(map, exits);
            // Page directory at 0x10000 filled with random entries (and a self-map so the code runs).
            var rng = new Random((int)t.pdes[0]);
            var dir = new byte[4096];
            rng.NextBytes(dir);
            BitConverter.GetBytes(0x0000_0087u).CopyTo(dir, 0); // PDE0: 4 MiB identity, so the code below runs
            for (int i = 1; i < t.pdes.Length; i++)
            {
                BitConverter.GetBytes(t.pdes[i]).CopyTo(dir, (int)((t.addrs[i] >> 22) & 0x3FF) * 4 == 0 ? 4 : (int)((t.addrs[i] >> 22) & 0x3FF) * 4);
            }
            map.WriteRam(0x1_0000, dir);
            // GDT (flat code 0x10, data 0x18 as EnterFlatProtectedMode uses) and an IDT whose
            // 32 exception gates go to a handler that skips the faulting 6-byte MOV, so every
            // access in the list is attempted.
            map.WriteRam(0x2_1010, BitConverter.GetBytes(0x00CF_9B00_0000_FFFFUL));
            map.WriteRam(0x2_1018, BitConverter.GetBytes(0x00CF_9300_0000_FFFFUL));
            for (uint v = 0; v < 32; v++)
            {
                ulong gate = 0x3000 | (0x10UL << 16) | (0x8EUL << 40);
                map.WriteRam(0x2_0000 + v * 8, BitConverter.GetBytes(gate));
            }
            map.WriteRam(0x3000, Assemble3000(a =>
            {
                a.add(esp, 4);
                a.add(__dword_ptr[esp], 6);
                a.iretd();
            }));
            var code = Assemble(a =>
            {
                a.mov(__word_ptr[0x2_2000], (ushort)0x1F);
                a.mov(__dword_ptr[0x2_2002], 0x2_1000u);
                a.lgdt(__[0x2_2000]);
                a.mov(__word_ptr[0x2_2010], (ushort)0xFF);
                a.mov(__dword_ptr[0x2_2012], 0x2_0000u);
                a.lidt(__[0x2_2010]);
                a.mov(eax, cr4);
                a.or(eax, 0x10);
                a.mov(cr4, eax);
                a.mov(eax, 0x1_0000);
                a.mov(cr3, eax);
                a.mov(eax, cr0);
                a.or(eax, 0x8000_0000u);
                a.mov(cr0, eax);
                foreach (uint addr in t.addrs)
                {
                    a.mov(ebx, __dword_ptr[addr]);
                    a.mov(__dword_ptr[addr ^ 0x1000], ebx);
                }
                a.mov(dx, 0xF4);
                a.@out(dx, al);
            });
            map.WriteRam(0x1000, code);
            cpu.EnterFlatProtectedMode(0x1000);
            cpu.Esp = 0x8_0000;
            cpu.Run(10_000);
            // Nothing outside RAM was touched except through an exit. (Random tables may alias the
            // code page and corrupt the program, so reaching the end is not required.)
            return exits.Exits.All(e => e.Kind is not (ExitKind.MmioRead or ExitKind.MmioWrite) || e.Address >= ramSize);
        }).QuickCheckThrowOnFailure();
    }
}
