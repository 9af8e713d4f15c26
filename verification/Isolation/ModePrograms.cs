using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Verification.Isolation;

/// <summary>One step of a mode-switching program: its text (for counterexamples) and how to emit it.</summary>
/// <param name="Faultable">The step may fault: the builder arms the resume address before it.</param>
/// <param name="Emit">Emits the step; the int is the step's index (for unique labels).</param>
/// <param name="AfterResume">Emitted after the resume label (e.g. restoring DS after a random selector load).</param>
public sealed record ModeStep(string Text, bool Faultable, Action<GuestBuilder, int> Emit, Action<GuestBuilder>? AfterResume = null)
{
    public override string ToString() => Text;
}

/// <summary>
/// A generated program that switches modes — paging on and off over random page tables, CR0.WP, ring 0 to
/// ring 3 (IRETD or RETF to a user segment) and back (INT 0x80 through a DPL-3 gate), real mode and back to
/// protected mode — loads random descriptor tables (LGDT/LIDT/LLDT/LTR, random selectors into DS/ES/FS/GS,
/// software interrupts through random gates), remaps pages (PTE/PDE writes with INVLPG or MOV CR3), and runs
/// the memory, port, CPUID, MSR and control-register operations of <see cref="GuestPrograms"/> in whatever
/// mode it is in. The generator keeps a model of the paging structures, CPL, IOPL and CR0.WP, so each
/// operation's outcome is known in advance: the exits it must cause (physical addresses after translation),
/// the RAM stores it must make, or the fault it must take (then no exit and no store). Faults resume at the
/// next step through handlers that the program installs.
/// </summary>
public sealed class ModeProgram
{
    public required int Seed { get; init; }
    public required IReadOnlyList<ModeStep> Steps { get; init; }
    /// <summary>The exits the steps must cause, in order, ending with the final HLT.</summary>
    public required List<(ExitKind Kind, ushort Port, ulong Address, byte Size, ulong? Value)> ExpectedExits { get; init; }
    /// <summary>The 32-bit stores to the VM's own RAM the steps must make (physical address, value), in order.</summary>
    public required List<(uint Physical, uint Value)> RamStores { get; init; }

    public override string ToString() => $"seed {Seed}: " + string.Join("; ", Steps.Select(s => s.Text));
}

/// <summary>Generates and builds <see cref="ModeProgram"/>s.</summary>
public static class ModePrograms
{
    // Guest-physical layout (all inside the 4 MiB RAM, clear of the image at 1 MiB, its bss and the stack).
    public const uint ResumeVar = 0x002F_0000;
    public const uint PageDirectory = 0x0020_0000;
    public const uint IdentityTable = 0x0020_1000;
    public const uint WindowTables = 0x0020_2000;
    public const uint GdtAddress = 0x0028_0000;
    public const uint GdtrAddress = 0x0028_0F00;
    public const uint LdtAddress = 0x0028_1000;
    public const uint Tss0 = 0x0028_2000;
    public const uint Tss1 = 0x0028_2100;
    public const uint SecondIdt = 0x0029_0000;
    public const uint SecondIdtr = 0x0029_0F00;
    public const uint UserStack = 0x0009_0000;
    public const uint Ring0Stack = 0x0009_E000;
    public const uint RealModeStub = 0x0000_7000;
    public const uint RealModeData = 0x0000_8000;
    /// <summary>Linear windows: page-directory entries 8 to 11 (32 to 48 MiB), randomly mapped.</summary>
    public const int FirstWindowPde = 8;
    public const int Windows = 4;
    public const int WindowPages = 16;

    private const ushort Code0 = 0x08, Data0 = 0x10, Code3 = 0x1B, Data3 = 0x23, TssSel0 = 0x28, TssSel1 = 0x30, LdtSel = 0x38;
    private const ushort Code16 = 0x40, Data16 = 0x48;
    private const int RandomGdtFirst = 10, GdtEntries = 18, LdtEntries = 8;

    public static Gen<ModeProgram> Programs(int maxSteps = 40) =>
        Gen.Choose(0, int.MaxValue).Zip(Gen.Choose(1, maxSteps), (seed, steps) => Generate(seed, steps));

    /// <summary>Generates a program of about <paramref name="steps"/> steps from <paramref name="seed"/> (deterministic).</summary>
    public static ModeProgram Generate(int seed, int steps) => new Model(new Random(seed), seed).Run(steps);

    /// <summary>The first <paramref name="count"/> steps of a program, left in whatever mode they reach (for the
    /// robustness property; the expected exits and stores no longer apply).</summary>
    public static ModeProgram Prefix(ModeProgram program, int count) => new()
    {
        Seed = program.Seed,
        Steps = program.Steps.Take(count).ToList(),
        ExpectedExits = [],
        RamStores = [],
    };

    /// <summary>The state the generator tracks to predict each operation's outcome.</summary>
    private sealed class Model(Random rng, int seed)
    {
        private readonly List<ModeStep> _steps = [];
        private readonly List<(ExitKind, ushort, ulong, byte, ulong?)> _exits = [];
        private readonly List<(uint, uint)> _stores = [];
        private bool _paging;
        private bool _writeProtect;
        private int _cpl;
        private int _iopl;
        private readonly uint[] _windowPdes = new uint[Windows];
        private readonly uint[,] _windowPtes = new uint[Windows, WindowPages];

        public ModeProgram Run(int count)
        {
            _steps.Add(SetUp());
            for (int i = 0; i < count; i++)
            {
                int pick = rng.Next(100);
                if (pick < 55)
                {
                    Operation();
                }
                else
                {
                    ModeChange();
                }
            }
            if (_cpl == 3)
            {
                ToKernel();
            }
            _exits.Add((ExitKind.Hlt, 0, 0, 0, null));
            return new ModeProgram { Seed = seed, Steps = _steps, ExpectedExits = _exits, RamStores = _stores };
        }

        // ---- descriptor tables -------------------------------------------------------------------

        /// <summary>A segment descriptor (SDM vol. 3, 3.4.5, figure 3-8).</summary>
        private static ulong Descriptor(uint baseAddress, uint limit, byte access, byte flags) =>
            (limit & 0xFFFF) | ((ulong)(baseAddress & 0xFFFF) << 16) | ((ulong)((baseAddress >> 16) & 0xFF) << 32)
            | ((ulong)access << 40) | ((ulong)((limit >> 16) & 0xF) << 48) | ((ulong)(flags & 0xF) << 52) | ((ulong)(baseAddress >> 24) << 56);

        /// <summary>Random descriptors, valid and invalid: random bytes, or random base/limit/type/DPL/present bits.</summary>
        private ulong RandomDescriptor()
        {
            ulong descriptor;
            if (rng.Next(3) == 0)
            {
                descriptor = (ulong)rng.NextInt64();
            }
            else
            {
                byte access = (byte)((rng.Next(5) == 0 ? 0 : 0x80) | (rng.Next(4) << 5) | (rng.Next(6) == 0 ? 0 : 0x10) | rng.Next(16));
                descriptor = Descriptor((uint)rng.NextInt64(0, 1L << 32), (uint)rng.Next(1 << 20), access, (byte)(rng.Next(16) & 0xC));
            }
            // A present TSS or LDT descriptor with a random base would let LTR/LLDT install tables the program does
            // not own: the next ring change would take its stack from random memory and triple-fault (legitimately),
            // and descriptor reads outside RAM would be MMIO. Those stay not present (#NP on use).
            uint type = (uint)(descriptor >> 40) & 0x1F;   // S bit and type (SDM vol. 3, 3.5, table 3-2)
            if (type is 0x01 or 0x02 or 0x03 or 0x09 or 0x0B)
            {
                descriptor &= ~(1UL << 47);
            }
            return descriptor;
        }

        private ulong[] FixedGdt(bool tss0Busy)
        {
            var gdt = new ulong[GdtEntries];
            gdt[Code0 >> 3] = Descriptor(0, 0xFFFFF, 0x9A, 0xC);
            gdt[Data0 >> 3] = Descriptor(0, 0xFFFFF, 0x92, 0xC);
            gdt[Code3 >> 3] = Descriptor(0, 0xFFFFF, 0xFA, 0xC);
            gdt[Data3 >> 3] = Descriptor(0, 0xFFFFF, 0xF2, 0xC);
            // 32-bit TSS descriptors (SDM vol. 3, 7.2.2): type 9 available, 0xB busy.
            gdt[TssSel0 >> 3] = Descriptor(Tss0, 0x67, (byte)(tss0Busy ? 0x8B : 0x89), 0);
            gdt[TssSel1 >> 3] = Descriptor(Tss1, 0x67, 0x89, 0);
            gdt[LdtSel >> 3] = Descriptor(LdtAddress, LdtEntries * 8 - 1, 0x82, 0);
            // 16-bit code and data segments (base 0 / the real-mode stub, limit 64 KiB) for the way back to real mode.
            gdt[Code16 >> 3] = Descriptor(RealModeStub, 0xFFFF, 0x9A, 0);
            gdt[Data16 >> 3] = Descriptor(0, 0xFFFF, 0x92, 0);
            for (int i = RandomGdtFirst; i < GdtEntries; i++)
            {
                gdt[i] = RandomDescriptor();
            }
            return gdt;
        }

        private static void WriteQwords(Assembler a, uint address, IReadOnlyList<ulong> values)
        {
            for (int i = 0; i < values.Count; i++)
            {
                a.mov(__dword_ptr[address + (uint)i * 8], (uint)values[i]);
                a.mov(__dword_ptr[address + (uint)i * 8 + 4], (uint)(values[i] >> 32));
            }
        }

        private Action<GuestBuilder, int> LoadTables(ulong[] gdt, ulong[] ldt) => (g, _) =>
        {
            Assembler a = g.A;
            WriteQwords(a, GdtAddress, gdt);
            WriteQwords(a, LdtAddress, ldt);
            a.mov(__word_ptr[GdtrAddress], (ushort)(GdtEntries * 8 - 1));
            a.mov(__dword_ptr[GdtrAddress + 2], GdtAddress);
            a.lgdt(__fword_ptr[GdtrAddress]);
        };

        private ulong[] RandomLdt() => Enumerable.Range(0, LdtEntries).Select(_ => RandomDescriptor()).ToArray();

        /// <summary>The program's own GDT (flat ring-0 and ring-3 segments, two TSSs with ESP0/SS0, an LDT,
        /// 16-bit segments, random entries), TR = the first TSS, IDT gates 0-31 to the resume handlers and a DPL-3
        /// gate 0x80; then the ResumeVar points at the unexpected-fault exit.</summary>
        private ModeStep SetUp()
        {
            ulong[] gdt = FixedGdt(tss0Busy: false);
            ulong[] ldt = RandomLdt();
            Action<GuestBuilder, int> tables = LoadTables(gdt, ldt);
            return new ModeStep("set-up", false, (g, i) =>
            {
                Assembler a = g.A;
                foreach (uint tss in new[] { Tss0, Tss1 })
                {
                    a.mov(__dword_ptr[tss + 4], Ring0Stack);        // ESP0
                    a.mov(__dword_ptr[tss + 8], (uint)Data0);      // SS0
                    a.mov(__word_ptr[tss + 0x66], (ushort)0x68);  // I/O map base past the limit: no bitmap
                }
                tables(g, i);
                a.mov(ax, TssSel0);
                a.ltr(ax);
                a.mov(__dword_ptr[ResumeVar], g.AddressOf("mp_unexpected"));
            });
        }

        private void LoadGdtStep()
        {
            ulong[] gdt = FixedGdt(tss0Busy: true);
            ulong[] ldt = RandomLdt();
            _steps.Add(new ModeStep($"lgdt (random entries {string.Join(',', gdt.Skip(RandomGdtFirst).Select(d => d.ToString("X16")))})", false, LoadTables(gdt, ldt)));
        }

        /// <summary>A copy of the IDT with random gates at 0x81-0x8F: valid 32-bit gates of DPL 0 or 3 to an IRET stub,
        /// not-present gates, bad types, bad selectors (SDM vol. 3, 6.11, 6.12.1).</summary>
        private void LoadIdtStep()
        {
            var gates = new (int Vector, uint Selector, ushort Attributes)[15];
            for (int v = 0; v < gates.Length; v++)
            {
                int kind = rng.Next(4);
                ushort dpl = (ushort)(rng.Next(2) * 3 << 13);
                gates[v] = kind switch
                {
                    0 => (0x81 + v, Code0, (ushort)(0x8E00 | dpl | (rng.Next(2) << 8))),             // interrupt or trap gate
                    1 => (0x81 + v, Code0, (ushort)(0x0E00 | dpl)),                                   // not present
                    2 => (0x81 + v, Code0, (ushort)(0x8000 | dpl | (new[] { 0, 1, 2, 3, 4, 8, 9, 0xA, 0xB, 0xC, 0xD }[rng.Next(11)] << 8))),
                    // Selectors that are never code: null, data, TSS, past the GDT limit, the LDT descriptor. (An LDT
                    // selector would not do: after LLDT the random LDT may hold a code segment with a random base.)
                    _ => (0x81 + v, new uint[] { 0, Data0, TssSel0, 0xFFF8, LdtSel, Data3 }[rng.Next(6)], (ushort)(0x8E00 | dpl)),
                };
            }
            _steps.Add(new ModeStep($"lidt (gates {string.Join(',', gates.Select(x => $"{x.Vector:X}:{x.Selector:X}/{x.Attributes:X}"))})", false, (g, _) =>
            {
                Assembler a = g.A;
                // ESI already points at the runtime's IDT (set by the builder, which knows its address).
                a.mov(edi, SecondIdt);
                a.mov(ecx, 512);
                a.rep.movsd();
                uint stub = g.AddressOf("mp_iret");
                foreach (var (vector, selector, attributes) in gates)
                {
                    uint entry = SecondIdt + (uint)vector * 8;
                    a.mov(__dword_ptr[entry], (selector << 16) | (stub & 0xFFFF));
                    a.mov(__dword_ptr[entry + 4], (stub & 0xFFFF_0000) | attributes);
                }
                a.mov(__word_ptr[SecondIdtr], (ushort)0x7FF);
                a.mov(__dword_ptr[SecondIdtr + 2], SecondIdt);
                a.lidt(__fword_ptr[SecondIdtr]);
            }));
        }

        private ushort RandomSelector() => rng.Next(5) switch
        {
            0 => (ushort)rng.Next(0x10000),
            1 => (ushort)((RandomGdtFirst + rng.Next(GdtEntries - RandomGdtFirst)) << 3 | rng.Next(4)),
            2 => (ushort)(rng.Next(LdtEntries) << 3 | 4 | rng.Next(4)),
            3 => new ushort[] { 0, Code0, Data0, Code3, Data3, TssSel0, LdtSel, Code16, Data16 }[rng.Next(9)],
            _ => (ushort)(GdtEntries << 3 | rng.Next(8)),
        };

        // ---- paging ---------------------------------------------------------------------------------

        /// <summary>A 4 KiB frame inside the scratch area or far outside RAM (no device there).</summary>
        private uint RandomFrame() => rng.Next(2) == 0
            ? GuestPrograms.ScratchBase + ((uint)rng.Next((int)(GuestPrograms.ScratchSize >> 12)) << 12)
            : (uint)rng.NextInt64(GuestPrograms.OutsideBase >> 12, 1L << 20) << 12;

        /// <summary>Random P, RW, US bits (present more often than not) and harmless PWT/PCD/A/D/G/available bits.</summary>
        private uint RandomAttributes() =>
            (rng.Next(5) == 0 ? 0u : 1u) | (uint)(rng.Next(2) << 1) | (uint)(rng.Next(2) << 2) | ((uint)rng.Next(0x1000) & 0xE78u);

        private uint RandomPte() => RandomFrame() | RandomAttributes();

        /// <summary>A window's PDE: a 4 MiB page (PS, SDM vol. 3, 4.3) at frame 0 (RAM) or far outside RAM, or a page table.</summary>
        private uint RandomPde(int window)
        {
            uint attributes = RandomAttributes() & ~0x100u;
            if (rng.Next(3) == 0)
            {
                uint frame = rng.Next(3) == 0 ? 0 : (uint)rng.Next((int)(GuestPrograms.OutsideBase >> 22), 1024) << 22;
                return frame | attributes | 0x80;
            }
            return (WindowTables + (uint)window * 0x1000) | (attributes & ~0x40u);
        }

        private static uint WindowBase(int window) => (uint)(FirstWindowPde + window) << 22;

        /// <summary>
        /// Translates a linear address as the CPU must (SDM vol. 3, 4.3 and 4.6: 32-bit paging, CR4.PSE = 1,
        /// no SMEP/SMAP): returns the physical address, or null for a page fault.
        /// </summary>
        private uint? Translate(uint linear, bool write)
        {
            if (!_paging)
            {
                return linear;
            }
            int pdi = (int)(linear >> 22);
            uint pde = pdi == 0 ? IdentityTable | 7u : pdi is >= FirstWindowPde and < FirstWindowPde + Windows ? _windowPdes[pdi - FirstWindowPde] : 0;
            if ((pde & 1) == 0)
            {
                return null;
            }
            uint entry;
            uint physical;
            uint rw, us;
            if ((pde & 0x80) != 0)
            {
                physical = (pde & 0xFFC0_0000) | (linear & 0x3F_FFFF);
                rw = pde & 2;
                us = pde & 4;
            }
            else
            {
                int pti = (int)((linear >> 12) & 0x3FF);
                entry = pdi == 0 ? ((uint)pti << 12) | 7u : pti < WindowPages ? _windowPtes[pdi - FirstWindowPde, pti] : 0;
                if ((entry & 1) == 0)
                {
                    return null;
                }
                physical = (entry & 0xFFFF_F000) | (linear & 0xFFF);
                rw = pde & entry & 2;
                us = pde & entry & 4;
            }
            bool user = _cpl == 3;
            if (user && us == 0)
            {
                return null;
            }
            if (write && rw == 0 && (user || _writeProtect))
            {
                return null;
            }
            return physical;
        }

        /// <summary>A linear address for a 32-bit access: the identity-mapped scratch area, a window page, or far outside RAM
        /// (never the window range itself, where a 4 MiB page may map the image).</summary>
        private uint AccessAddress()
        {
            int kind = rng.Next(_paging ? 3 : 2);
            if (kind == 2)
            {
                int window = rng.Next(Windows);
                uint pde = _windowPdes[window];
                if ((pde & 0x80) != 0 && (pde & 0xFFC0_0000) == 0)
                {
                    // A 4 MiB page onto RAM: only the scratch area within it.
                    return WindowBase(window) + GuestPrograms.ScratchBase + ((uint)rng.Next((int)(GuestPrograms.ScratchSize / 4)) << 2);
                }
                int page = rng.Next(8) == 0 ? rng.Next(WindowPages, 1024) : rng.Next(WindowPages);
                return WindowBase(window) + ((uint)page << 12) + ((uint)rng.Next(1024) << 2);
            }
            if (kind == 1)
            {
                uint outside;
                do
                {
                    outside = (uint)rng.NextInt64(GuestPrograms.OutsideBase >> 2, 1L << 30) << 2;
                }
                while (outside >= WindowBase(0) && outside < WindowBase(Windows));
                return outside;
            }
            return GuestPrograms.ScratchBase + ((uint)rng.Next((int)(GuestPrograms.ScratchSize / 4)) << 2);
        }

        private void PagingOn()
        {
            for (int w = 0; w < Windows; w++)
            {
                _windowPdes[w] = RandomPde(w);
                for (int p = 0; p < WindowPages; p++)
                {
                    _windowPtes[w, p] = RandomPte();
                }
            }
            uint[] pdes = (uint[])_windowPdes.Clone();
            uint[] ptes = new uint[Windows * WindowPages];
            Buffer.BlockCopy(_windowPtes, 0, ptes, 0, ptes.Length * 4);
            bool wp = rng.Next(2) == 0;
            _paging = true;
            _writeProtect = wp;
            _steps.Add(new ModeStep($"paging on, WP={(wp ? 1 : 0)}, PDEs {string.Join(',', pdes.Select(p => p.ToString("X8")))}, PTEs {string.Join(',', ptes.Select(p => p.ToString("X8")))}", false, (g, i) =>
            {
                Assembler a = g.A;
                // The first 4 MiB identity-mapped through a page table, present, writable, user (the program's own code and data).
                a.mov(edi, IdentityTable);
                a.mov(eax, 7);
                a.mov(ecx, 1024);
                g.Mark($"mp_fill{i}");
                a.stosd();
                a.add(eax, 0x1000);
                a.dec(ecx);
                a.jnz(g.Named($"mp_fill{i}"));
                a.mov(__dword_ptr[PageDirectory], IdentityTable | 7u);
                for (int w = 0; w < Windows; w++)
                {
                    a.mov(__dword_ptr[PageDirectory + (uint)(FirstWindowPde + w) * 4], pdes[w]);
                    for (int p = 0; p < WindowPages; p++)
                    {
                        a.mov(__dword_ptr[WindowTables + (uint)w * 0x1000 + (uint)p * 4], ptes[w * WindowPages + p]);
                    }
                }
                a.mov(eax, PageDirectory);
                a.mov(cr3, eax);
                a.mov(eax, cr4);
                a.or(eax, 0x10);                     // CR4.PSE: 4 MiB pages
                a.mov(cr4, eax);
                a.mov(eax, cr0);
                a.or(eax, wp ? 0x8001_0000u : 0x8000_0000u);
                if (!wp)
                {
                    a.and(eax, ~0x0001_0000u);
                }
                a.mov(cr0, eax);
            }));
        }

        private void PagingOff()
        {
            _paging = false;
            _steps.Add(new ModeStep("paging off", false, (g, _) =>
            {
                g.A.mov(eax, cr0);
                g.A.and(eax, 0x7FFF_FFFFu);
                g.A.mov(cr0, eax);
            }));
        }

        private void SetWriteProtect()
        {
            bool wp = rng.Next(2) == 0;
            _writeProtect = wp;
            _steps.Add(new ModeStep($"CR0.WP={(wp ? 1 : 0)}", false, (g, _) =>
            {
                g.A.mov(eax, cr0);
                if (wp)
                {
                    g.A.or(eax, 0x0001_0000u);
                }
                else
                {
                    g.A.and(eax, ~0x0001_0000u);
                }
                g.A.mov(cr0, eax);
            }));
        }

        /// <summary>Rewrites a window PTE (flushed with INVLPG or MOV CR3) or PDE (flushed with MOV CR3), SDM vol. 3, 4.10.4.1.</summary>
        private void Remap()
        {
            int w = rng.Next(Windows);
            if (rng.Next(4) == 0)
            {
                uint pde = RandomPde(w);
                _windowPdes[w] = pde;
                _steps.Add(new ModeStep($"PDE {FirstWindowPde + w} = {pde:X8}; mov cr3", false, (g, _) =>
                {
                    g.A.mov(__dword_ptr[PageDirectory + (uint)(FirstWindowPde + w) * 4], pde);
                    g.A.mov(eax, cr3);
                    g.A.mov(cr3, eax);
                }));
                return;
            }
            int p = rng.Next(WindowPages);
            uint pte = RandomPte();
            _windowPtes[w, p] = pte;
            bool invlpg = rng.Next(3) != 0;
            uint linear = WindowBase(w) + ((uint)p << 12);
            _steps.Add(new ModeStep($"PTE {w}/{p} = {pte:X8}; {(invlpg ? "invlpg" : "mov cr3")}", false, (g, _) =>
            {
                g.A.mov(__dword_ptr[WindowTables + (uint)w * 0x1000 + (uint)p * 4], pte);
                if (invlpg)
                {
                    g.A.invlpg(__byte_ptr[linear + (uint)rng.Next(0x1000)]);
                }
                else
                {
                    g.A.mov(eax, cr3);
                    g.A.mov(cr3, eax);
                }
            }));
        }

        // ---- privilege levels -----------------------------------------------------------------------

        /// <summary>To CPL 3 with IRETD (EFLAGS from the frame: IOPL 0 or 3) or RETF (EFLAGS unchanged), SDM vol. 2, IRET/RET.</summary>
        private void ToUser()
        {
            bool iret = rng.Next(2) == 0;
            int iopl = iret ? (rng.Next(2) == 0 ? 0 : 3) : _iopl;
            _cpl = 3;
            _iopl = iopl;
            _steps.Add(new ModeStep(iret ? $"iretd to ring 3, IOPL {iopl}" : "retf to ring 3", false, (g, i) =>
            {
                Assembler a = g.A;
                a.push(Data3);
                a.push(UserStack);
                if (iret)
                {
                    a.push(0x2u | ((uint)iopl << 12));
                }
                a.push(Code3);
                a.mov(eax, g.AddressOf($"mp_user{i}"));   // mov r32, imm32: the same size in both passes (push imm would not be)
                a.push(eax);
                if (iret)
                {
                    a.iretd();
                }
                else
                {
                    a.retf();
                }
                g.Mark($"mp_user{i}");
                // Returning to an outer level nulls DS/ES with DPL < CPL (SDM vol. 2, RET/IRET): reload them.
                a.mov(ax, Data3);
                a.mov(ds, ax);
                a.mov(es, ax);
            }));
        }

        /// <summary>Back to CPL 0 through the DPL-3 interrupt gate 0x80 (SDM vol. 3, 6.12.1.1); the handler drops the frame.</summary>
        private void ToKernel()
        {
            _cpl = 0;
            _steps.Add(new ModeStep("int 0x80 to ring 0", true, (g, _) => g.A.@int(0x80), g =>
            {
                g.A.mov(ax, Data0);
                g.A.mov(ds, ax);
                g.A.mov(es, ax);
            }));
        }

        // ---- real mode ------------------------------------------------------------------------------

        /// <summary>
        /// Protected mode to real mode and back (SDM vol. 3, 9.9.2 and 9.9.1): through a 16-bit code segment,
        /// CR0.PE off, a far jump to real-mode code that does port I/O and stores below 64 KiB, CR0.PE on and a far
        /// jump back to the flat 32-bit code segment. Only from CPL 0 with paging off.
        /// </summary>
        private void RealModeTrip()
        {
            int n = rng.Next(1, 6);
            var ops = new List<(bool Io, ushort Port, byte Size, uint Value, ushort Offset, bool In)>();
            for (int k = 0; k < n; k++)
            {
                if (rng.Next(2) == 0)
                {
                    ushort port;
                    do
                    {
                        port = rng.Next(2) == 0 ? GuestPrograms.DevicePorts[rng.Next(GuestPrograms.DevicePorts.Length)] : (ushort)rng.Next(0x10000);
                    }
                    while (GuestPrograms.ForbiddenOutPorts.Contains(port));
                    byte size = new byte[] { 1, 2, 4 }[rng.Next(3)];
                    uint value = (uint)rng.NextInt64(0, 1L << 32);
                    bool isIn = rng.Next(2) == 0;
                    ops.Add((true, port, size, value, 0, isIn));
                    ulong mask = size == 4 ? 0xFFFF_FFFF : (1UL << (size * 8)) - 1;
                    _exits.Add(isIn ? (ExitKind.IoIn, port, 0, size, null) : (ExitKind.IoOut, port, 0, size, value & mask));
                }
                else
                {
                    ushort offset = (ushort)(rng.Next(0x400) << 2);
                    uint value = (uint)rng.NextInt64(0, 1L << 32);
                    ops.Add((false, 0, 4, value, offset, false));
                    _stores.Add((RealModeData + offset, value));
                }
            }
            _steps.Add(new ModeStep($"real mode: {string.Join(", ", ops.Select(o => o.Io ? $"{(o.In ? "in" : "out")} 0x{o.Port:X}/{o.Size}" : $"[0x{RealModeData + o.Offset:X}]=0x{o.Value:X}"))}", false, (g, i) =>
            {
                Assembler a = g.A;
                byte[] stub = RealModeStubBytes(ops, g.AddressOf($"mp_back{i}"));
                uint data = g.Data(stub);
                a.mov(esi, data);
                a.mov(edi, RealModeStub);
                a.mov(ecx, (uint)stub.Length);
                a.rep.movsb();
                // jmp far Code16:0 (EA ptr16:32, SDM vol. 2, JMP), emitted as bytes for a fixed size.
                a.db(0xEA);
                a.dd(0u);
                a.dw(Code16);
                g.Mark($"mp_back{i}");
                a.mov(ax, Data0);
                a.mov(ds, ax);
                a.mov(es, ax);
                a.mov(fs, ax);
                a.mov(gs, ax);
                a.mov(ss, ax);
            }));
        }

        /// <summary>The 16-bit stub, run at CS base <see cref="RealModeStub"/>; its size does not depend on <paramref name="back"/>.</summary>
        private static byte[] RealModeStubBytes(List<(bool Io, ushort Port, byte Size, uint Value, ushort Offset, bool In)> ops, uint back)
        {
            // Two passes: the far jump into real mode needs the offset of the real-mode code, known after the first.
            ushort realOffset = 0;
            byte[] bytes = [];
            for (int pass = 0; pass < 2; pass++)
            {
                var a = new Assembler(16);
                Label real = a.CreateLabel();
                a.mov(ax, Data16);
                a.mov(ds, ax);
                a.mov(es, ax);
                a.mov(ss, ax);
                a.mov(eax, cr0);
                a.and(eax, ~1u);
                a.mov(cr0, eax);
                // jmp far (RealModeStub >> 4):real (EA ptr16:16): real-address mode from here (SDM vol. 3, 9.9.2).
                a.db(0xEA);
                a.dw(realOffset);
                a.dw((ushort)(RealModeStub >> 4));
                a.Label(ref real);
                a.xor(ax, ax);
                a.mov(ds, ax);
                a.mov(es, ax);
                a.mov(ss, ax);
                foreach (var op in ops)
                {
                    if (op.Io)
                    {
                        a.mov(edx, (uint)op.Port);
                        if (!op.In)
                        {
                            a.mov(eax, op.Value);
                        }
                        switch (op.Size, op.In)
                        {
                            case (1, false): a.@out(dx, al); break;
                            case (2, false): a.@out(dx, ax); break;
                            case (_, false): a.@out(dx, eax); break;
                            case (1, true): a.@in(al, dx); break;
                            case (2, true): a.@in(ax, dx); break;
                            default: a.@in(eax, dx); break;
                        }
                    }
                    else
                    {
                        a.mov(__dword_ptr[(RealModeData & 0xFFFF) + op.Offset], op.Value);
                    }
                }
                a.mov(eax, cr0);
                a.or(eax, 1u);
                a.mov(cr0, eax);
                // jmp far dword 0x08:back (66 EA ptr16:32): protected mode again (SDM vol. 3, 9.9.1).
                a.db(0x66, 0xEA);
                a.dd(back);
                a.dw(Code0);
                var stream = new MemoryStream();
                AssemblerResult result = a.Assemble(new StreamCodeWriter(stream), 0, BlockEncoderOptions.ReturnNewInstructionOffsets);
                realOffset = (ushort)result.GetLabelRIP(real);
                bytes = stream.ToArray();
            }
            return bytes;
        }

        // ---- operations -----------------------------------------------------------------------------

        private GuestOp RandomOp()
        {
            int pick = rng.Next(20);
            uint value = (uint)rng.NextInt64(0, 1L << 32);
            ushort RandomPort() => rng.Next(2) == 0 ? GuestPrograms.DevicePorts[rng.Next(GuestPrograms.DevicePorts.Length)] : (ushort)rng.Next(0x10000);
            byte size = new byte[] { 1, 2, 4 }[rng.Next(3)];
            switch (pick)
            {
                case < 4: return new GuestOp(GuestOpKind.Alu, 0, (ushort)rng.Next(8), 4, value);
                case < 8: return new GuestOp(GuestOpKind.StoreRam, AccessAddress(), 0, 4, value);
                case < 11: return new GuestOp(GuestOpKind.LoadRam, AccessAddress(), 0, 4, 0);
                case < 13:
                    ushort port;
                    do
                    {
                        port = RandomPort();
                    }
                    while (GuestPrograms.ForbiddenOutPorts.Contains(port));
                    return new GuestOp(GuestOpKind.Out, 0, port, size, value);
                case < 15: return new GuestOp(GuestOpKind.In, 0, RandomPort(), size, 0);
                case 15: return new GuestOp(GuestOpKind.Cpuid, 0, 0, 0, rng.Next(2) == 0 ? (uint)rng.Next(0x20) : value);
                case 16: return new GuestOp(GuestOpKind.Rdmsr, rng.Next(2) == 0 ? GuestPrograms.InterestingMsrs[rng.Next(GuestPrograms.InterestingMsrs.Length)] : value, 0, 8, 0);
                case 17:
                    uint msr;
                    do
                    {
                        msr = (uint)rng.NextInt64(0, 1L << 32);
                    }
                    while (Array.IndexOf(GuestPrograms.InterestingMsrs, msr) >= 0 || msr is 0xC000_0100 or 0xC000_0101);
                    return new GuestOp(GuestOpKind.Wrmsr, msr, 0, 8, value);
                default: return new GuestOp(GuestOpKind.ReadControl, 0, (ushort)new[] { 0, 2, 3, 4 }[rng.Next(4)], 4, 0);
            }
        }

        /// <summary>Adds an operation and what it must do in the current mode.</summary>
        private void Operation()
        {
            GuestOp op = RandomOp();
            bool user = _cpl == 3;
            ulong mask = op.Size == 4 ? 0xFFFF_FFFF : (1UL << (op.Size * 8)) - 1;
            string outcome;
            switch (op.Kind)
            {
                case GuestOpKind.StoreRam or GuestOpKind.LoadRam:
                    bool write = op.Kind == GuestOpKind.StoreRam;
                    uint? physical = Translate(op.Address, write);
                    if (physical is not uint p)
                    {
                        outcome = "#PF";
                    }
                    else if (p >= GuestPrograms.RamBytes)
                    {
                        _exits.Add(write ? (ExitKind.MmioWrite, 0, p, 4, op.Value) : (ExitKind.MmioRead, 0, p, 4, null));
                        outcome = $"mmio 0x{p:X}";
                    }
                    else
                    {
                        if (write)
                        {
                            _stores.Add((p, op.Value));
                        }
                        outcome = $"ram 0x{p:X}";
                    }
                    break;
                case GuestOpKind.Out or GuestOpKind.In:
                    // CPL > IOPL and no I/O bitmap (the TSS limit ends before it): #GP (SDM vol. 1, 19.5.2).
                    if (user && _iopl < 3)
                    {
                        outcome = "#GP";
                    }
                    else
                    {
                        _exits.Add(op.Kind == GuestOpKind.Out ? (ExitKind.IoOut, op.Port, 0, op.Size, op.Value & mask) : (ExitKind.IoIn, op.Port, 0, op.Size, null));
                        outcome = "exit";
                    }
                    break;
                case GuestOpKind.Cpuid:
                    _exits.Add((ExitKind.Cpuid, 0, 0, 0, null));
                    outcome = "exit";
                    break;
                case GuestOpKind.Rdmsr or GuestOpKind.Wrmsr:
                    // RDMSR/WRMSR at CPL > 0: #GP(0) before anything else (SDM vol. 2B).
                    if (user)
                    {
                        outcome = "#GP";
                    }
                    else
                    {
                        _exits.Add(op.Kind == GuestOpKind.Rdmsr ? (ExitKind.Rdmsr, 0, op.Address, 0, null) : (ExitKind.Wrmsr, 0, op.Address, 0, ((ulong)~op.Value << 32) | op.Value));
                        outcome = "exit";
                    }
                    break;
                case GuestOpKind.ReadControl:
                    outcome = user ? "#GP" : "ok";
                    break;
                default:
                    outcome = "ok";
                    break;
            }
            GuestOp emitted = op;
            _steps.Add(new ModeStep($"{(user ? "u:" : "k:")}{op} -> {outcome}", true, (g, _) => GuestPrograms.Emit(g.A, emitted)));
        }

        private void ModeChange()
        {
            int pick = rng.Next(100);
            if (_cpl == 3)
            {
                // At CPL 3: back to ring 0, or privileged and descriptor operations that must fault or check privilege.
                if (pick < 35)
                {
                    ToKernel();
                }
                else if (pick < 65)
                {
                    LoadSelectorStep();
                }
                else if (pick < 80)
                {
                    SoftIntStep();
                }
                else
                {
                    PrivilegedAtUserStep();
                }
                return;
            }
            switch (pick)
            {
                case < 14: if (_paging) { PagingOff(); } else { PagingOn(); } break;
                case < 20: if (_paging) { SetWriteProtect(); } else { PagingOn(); } break;
                case < 34: if (_paging) { Remap(); } else { PagingOn(); } break;
                case < 50: ToUser(); break;
                case < 58: LoadGdtStep(); break;
                case < 64: LoadIdtStep(); break;
                case < 76: LoadSelectorStep(); break;
                case < 82: LldtOrLtrStep(); break;
                case < 90: SoftIntStep(); break;
                default: if (!_paging) { RealModeTrip(); } else { PagingOff(); } break;
            }
        }

        private void LoadSelectorStep()
        {
            int segment = rng.Next(4);
            ushort selector = RandomSelector();
            ushort flat = _cpl == 3 ? Data3 : Data0;
            string name = new[] { "ds", "es", "fs", "gs" }[segment];
            _steps.Add(new ModeStep($"mov {name}, 0x{selector:X}", true, (g, _) =>
            {
                g.A.mov(ax, selector);
                switch (segment)
                {
                    case 0: g.A.mov(ds, ax); break;
                    case 1: g.A.mov(es, ax); break;
                    case 2: g.A.mov(fs, ax); break;
                    default: g.A.mov(gs, ax); break;
                }
            }, g =>
            {
                // Memory operands use DS and string operations ES: back to the flat segment of this CPL.
                g.A.mov(ax, flat);
                g.A.mov(ds, ax);
                g.A.mov(es, ax);
            }));
        }

        private void LldtOrLtrStep()
        {
            bool ltr = rng.Next(2) == 0;
            ushort selector = rng.Next(3) == 0 ? (ltr ? TssSel1 : LdtSel) : RandomSelector();
            _steps.Add(new ModeStep($"{(ltr ? "ltr" : "lldt")} 0x{selector:X}", true, (g, _) =>
            {
                g.A.mov(ax, selector);
                if (ltr)
                {
                    g.A.ltr(ax);
                }
                else
                {
                    g.A.lldt(ax);
                }
            }));
        }

        private void SoftIntStep()
        {
            byte vector = (byte)(0x81 + rng.Next(15));
            _steps.Add(new ModeStep($"int 0x{vector:X}", true, (g, _) => g.A.@int(vector)));
        }

        /// <summary>Privileged instructions at CPL 3: each must raise #GP and change nothing (SDM vol. 3, 2.8).</summary>
        private void PrivilegedAtUserStep()
        {
            int kind = rng.Next(7);
            uint value = (uint)rng.NextInt64(0, 1L << 32);
            string[] names = ["mov cr0", "mov cr3", "lgdt", "lidt", "invlpg", "hlt", "cli"];
            _steps.Add(new ModeStep($"u:{names[kind]} 0x{value:X} -> {(kind == 6 && _iopl == 3 ? "ok" : "#GP")}", true, (g, _) =>
            {
                Assembler a = g.A;
                switch (kind)
                {
                    case 0: a.mov(eax, value); a.mov(cr0, eax); break;
                    case 1: a.mov(eax, value); a.mov(cr3, eax); break;
                    case 2: a.lgdt(__fword_ptr[GuestPrograms.ScratchBase]); break;
                    case 3: a.lidt(__fword_ptr[GuestPrograms.ScratchBase]); break;
                    case 4: a.invlpg(__byte_ptr[value]); break;
                    case 5: a.hlt(); break;
                    default: a.cli(); break;
                }
            }));
        }
    }

    public const string ProgramStart = "mp_program_start";
    public const string ProgramEnd = "mp_program_end";

    /// <summary>
    /// Builds the bootable image: the runtime prologue, fault handlers for vectors 0-31 that resume at the
    /// address the program armed in <see cref="ResumeVar"/> (SDM vol. 3, 6.13: a fault's saved EIP is the
    /// faulting instruction; the handler replaces it), the INT 0x80 return path, an IRET stub for random gates,
    /// then the steps and CLI; HLT.
    /// </summary>
    public static GuestImage Build(string name, ModeProgram program, ReadOnlySpan<byte> secret = default) =>
        Build(name, program, secret, default);

    /// <summary>As above, with <paramref name="tail"/> (e.g. random bytes) executed after the steps, in whatever mode they left.</summary>
    public static GuestImage Build(string name, ModeProgram program, ReadOnlySpan<byte> secret, ReadOnlySpan<byte> tail)
    {
        byte[] secretCopy = secret.ToArray();
        byte[] tailCopy = tail.ToArray();
        return GuestBuilder.Build(name, g =>
        {
            uint idt = GuestRuntime.Prologue(g);
            Assembler a = g.A;
            for (byte v = 0; v < 32; v++)
            {
                GuestRuntime.SetGate(g, idt, v, $"mp_fault_{v}");
            }
            GuestRuntime.SetGate(g, idt, 0x80, "mp_int80");
            a.mov(__word_ptr[idt + 0x80 * 8 + 4], (ushort)0xEE00);   // DPL 3: reachable by INT from ring 3
            if (secretCopy.Length > 0)
            {
                g.Data(secretCopy);
            }
            g.Mark(ProgramStart);
            for (int i = 0; i < program.Steps.Count; i++)
            {
                ModeStep step = program.Steps[i];
                string resume = $"mp_resume_{i}";
                if (step.Faultable)
                {
                    a.mov(__dword_ptr[ResumeVar], g.AddressOf(resume));
                }
                // The lidt step copies the runtime's IDT: pass its address through the closure's first use.
                if (step.Text.StartsWith("lidt", StringComparison.Ordinal))
                {
                    EmitIdtCopySource(a, idt);
                }
                step.Emit(g, i);
                g.Mark(resume);
                step.AfterResume?.Invoke(g);
                if (step.Faultable)
                {
                    // Disarm (through the flat DS that AfterResume restored): a fault nobody expects now ends the
                    // run with the debug exit 0x7E.
                    a.mov(__dword_ptr[ResumeVar], g.AddressOf("mp_unexpected"));
                }
            }
            if (tailCopy.Length > 0)
            {
                a.db(tailCopy);
            }
            a.cli();
            a.hlt();
            g.Mark(ProgramEnd);
            a.jmp(g.Named(ProgramEnd));

            // Fault handlers: drop the error code where the CPU pushed one, then resume.
            for (int v = 0; v < 32; v++)
            {
                g.Mark($"mp_fault_{v}");
                if (SecureVmm.Tcb.Cpu.Vector.HasErrorCode(v))
                {
                    a.add(esp, 4);
                }
                a.jmp(g.Named("mp_resume"));
            }
            g.Mark("mp_resume");
            a.push(eax);
            a.mov(eax, __dword_ptr[ResumeVar]);
            a.mov(__dword_ptr[esp + 4], eax);
            a.mov(__dword_ptr[ResumeVar], g.AddressOf("mp_unexpected"));
            a.pop(eax);
            a.iretd();
            // INT 0x80 from ring 3: drop the 5-dword frame and continue at the resume address, now at CPL 0.
            g.Mark("mp_int80");
            a.add(esp, 20);
            a.push(eax);
            a.mov(eax, __dword_ptr[ResumeVar]);
            a.mov(__dword_ptr[ResumeVar], g.AddressOf("mp_unexpected"));
            a.xchg(__dword_ptr[esp], eax);
            a.ret();
            g.Mark("mp_iret");
            a.iretd();
            g.Mark("mp_unexpected");
            GuestRuntime.ExitAndHalt(g, 0x7E);
            GuestRuntime.EmitLibrary(g);
        });
    }

    /// <summary>The lidt step copies from ESI: point it at the runtime's IDT (the step then overwrites ESI itself).</summary>
    private static void EmitIdtCopySource(Assembler a, uint idt) => a.mov(esi, idt);

    /// <summary>A readable listing of a program, for counterexamples.</summary>
    public static string Describe(ModeProgram program)
    {
        var sb = new StringBuilder();
        sb.Append("seed ").Append(program.Seed).Append('\n');
        foreach (ModeStep s in program.Steps)
        {
            sb.Append("  ").Append(s.Text).Append('\n');
        }
        return sb.ToString();
    }
}
