using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Iced.Intel;
using SecureVmm.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Cpu.Differential;

/// <summary>Where a generated image's sequences run.</summary>
public enum GeneratedTier
{
    /// <summary>CPL 0, flat segments, paging off.</summary>
    SystemFlat,
    /// <summary>CPL 0 with paging on: 4 MiB identity pages, the scratch pages through a page table onto
    /// randomly chosen frames with random attribute bits; sequences also remap pages (PTE write + INVLPG)
    /// and reload CR3; the page-table entries (accessed and dirty bits) are compared at the end.</summary>
    SystemPaged,
    /// <summary>CPL 3 under the fixed flat set-up: each case enters ring 3 with IRETD and comes back with INT 0x80.</summary>
    User,
    /// <summary>CPL 3 with paging on, as <see cref="SystemPaged"/>: user-mode sequences through the same random page tables.</summary>
    UserPaged,
}

/// <summary>
/// The generated differential tier: random straight-line sequences of integer instructions
/// (<see cref="SequenceGenerator"/>) from random register, flag and memory states, run on SecureVmm and
/// on qemu-system-i386, many cases per QEMU boot. After each case the guest prints the 64-byte
/// scratch block the case worked on, the general registers and the status flags that the SDM defines
/// after the sequence (<see cref="FlagTable"/>); the two outputs must be equal.
/// Seeds are fixed (CI runs the same sequences every time); SECUREVMM_DIFF_IMAGES=N runs N images per
/// tier (seeds base+0 .. base+N-1), SECUREVMM_DIFF_SEED=S changes the base, SECUREVMM_DIFF_CASES sets
/// the cases per image (default 250).
/// </summary>
public class GeneratedDifferentialTests(ITestOutputHelper output)
{
    private const uint ScratchPages = 16;
    /// <summary>Probe pages (PTEs 16-31): random present/RW/US bits, so a probe access may page-fault.</summary>
    private const uint ProbePages = 16;
    private const uint PageDirectory = 0x0050_0000;
    private const uint PageTable = 0x0050_1000;
    private const uint FramePool = 0x0080_0000;
    private const uint CaseStack = 0x0008_C000;
    private const uint UserStack = 0x0007_0000;
    private const int DefaultCases = 250;
    private const int BaseSeed = 20_261_121;

    private static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : fallback;

    /// <summary>Builds one image of <paramref name="cases"/> generated cases; <paramref name="listings"/> gets each case's program.</summary>
    public static GuestProgram BuildImage(GeneratedTier tier, int seed, int cases, out List<string> listings)
    {
        var rng = new Random(seed);
        var program = new GuestProgram();
        listings = [];
        bool paged = tier is GeneratedTier.SystemPaged or GeneratedTier.UserPaged;
        bool user = tier is GeneratedTier.User or GeneratedTier.UserPaged;
        if (paged)
        {
            AddPagingSetUp(program, rng);
            listings.Add("paging set-up");
        }
        for (int i = 0; i < cases; i++)
        {
            int index = program.CaseCount;
            uint scratch = GuestProgram.ScratchAddress + ((uint)rng.Next((int)ScratchPages) << 12) + ((uint)rng.Next(64) << 6);
            var generator = new SequenceGenerator(rng, scratch);
            if (tier == GeneratedTier.SystemPaged)
            {
                generator.Extras.Add((2, (_, r) => RemapStep(r)));
                generator.Extras.Add((1, (_, r) => ReloadCr3Step(r)));
            }
            generator.Generate(rng.Next(4, 17));
            // Under paging, half the cases end with a probe of a page with random permissions: a fault prints
            // vector, error code and CR2 (SDM vol. 3, 4.7) and the case resumes at CPL 0.
            Instruction? probe = paged && rng.Next(2) == 0 ? ProbeInstruction(rng) : null;
            uint[] memory = Enumerable.Range(0, SequenceGenerator.ScratchBytes / 4).Select(_ => (uint)rng.NextInt64(0, 1L << 32)).ToArray();
            uint[] registers = Enumerable.Range(0, 7).Select(_ => rng.Next(4) == 0 ? new uint[] { 0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x80, 0xFF }[rng.Next(7)] : (uint)rng.NextInt64(0, 1L << 32)).ToArray();
            uint flags = ((uint)rng.Next(0x1000) & (FlagTable.Status | FlagTable.DF)) | 0x2;
            IReadOnlyList<GeneratedStep> steps = generator.Steps;
            uint compared = GuestProgram.ComparedFlags & ~generator.UndefinedFlags;

            var listing = new StringBuilder();
            listing.Append(CultureInfo.InvariantCulture, $"{tier}, seed {seed}: scratch 0x{scratch:X8} = [{string.Join(' ', memory.Select(m => m.ToString("X8", CultureInfo.InvariantCulture)))}]\n");
            listing.Append(CultureInfo.InvariantCulture, $"  eax..edi = {string.Join(' ', registers.Select(r => r.ToString("X8", CultureInfo.InvariantCulture)))}, eflags = 0x{flags:X}, compared flags 0x{compared:X}\n");
            foreach (GeneratedStep s in steps)
            {
                listing.Append("  ").Append(s.Text).Append('\n');
            }
            if (probe is Instruction shown)
            {
                listing.Append("  probe: ").Append(shown.ToString()).Append('\n');
            }
            listings.Add(listing.ToString());

            program.Case("g", (a, g) =>
            {
                a.mov(esp, CaseStack);
                for (int w = 0; w < memory.Length; w++)
                {
                    a.mov(__dword_ptr[scratch + (uint)w * 4], memory[w]);
                }
                if (user)
                {
                    EnterRing3(a, g, index);
                }
                AssemblerRegister32[] order = [eax, ecx, edx, ebx, ebp, esi, edi];
                for (int r = 0; r < order.Length; r++)
                {
                    a.mov(order[r], registers[r]);
                }
                a.push(flags);
                a.popfd();
                foreach (GeneratedStep s in steps)
                {
                    s.Emit(a);
                }
                if (probe is Instruction access)
                {
                    g.ExpectFault(a, $"g{index}probed");
                    a.AddInstruction(access);
                    g.Mark($"g{index}probed");
                }
                if (user)
                {
                    a.@int(0x80);
                    g.Mark($"g{index}back");
                }
                DumpWords(a, g, scratch, memory.Length);
            }, 0x2, compared);   // a probe ADD sets every status flag or faults and leaves them: the mask still holds
        }
        if (paged)
        {
            program.Case("page tables", (a, g) =>
            {
                DumpWords(a, g, PageDirectory, 4);
                DumpWords(a, g, PageTable, (int)(ScratchPages + ProbePages));
                DumpWords(a, g, PageTable + 0x100 * 4, 2);
            });
            listings.Add("page tables: PDE 0-3, PTE 0-15 of the scratch pages, 16-31 of the probe pages, PTEs of the paging structures");
        }
        return program;
    }

    /// <summary>Prints <paramref name="count"/> dwords from <paramref name="address"/>, keeping every register and flag.</summary>
    private static void DumpWords(Assembler a, GuestProgram g, uint address, int count)
    {
        for (int w = 0; w < count; w++)
        {
            a.push(eax);
            a.mov(eax, __dword_ptr[address + (uint)w * 4]);
            a.call(g.AddressOf("printHex"));
            a.pop(eax);
        }
    }

    /// <summary>IRETD to the ring-3 code and stack selectors (0x1B, 0x23) with IF clear; INT 0x80 (a DPL-3
    /// interrupt gate, SDM vol. 3, 6.12.1.1) brings the case back to CPL 0 on the TSS's ring-0 stack.</summary>
    private static void EnterRing3(Assembler a, GuestProgram g, int index)
    {
        g.SetGate(a, 0x80, $"g{index}back", 3);
        a.push(0x23);
        a.push(UserStack);
        a.push(0x2);
        a.push(0x1B);
        a.push(g.AddressOf($"g{index}user"));
        a.iretd();
        g.Mark($"g{index}user");
        // IRET to CPL 3 nulls DS and ES, whose DPL (0) is below the new CPL (SDM vol. 3, IRET operation).
        a.mov(ax, 0x23);
        a.mov(ds, ax);
        a.mov(es, ax);
    }

    /// <summary>Random attribute bits that keep a mapping present, writable and user-accessible:
    /// PWT, PCD, A, D, PAT/PS-free bit 7 for PTEs, G (ignored with CR4.PGE clear) and the available bits.</summary>
    private static uint RandomPteBits(Random rng) => 0x7u | ((uint)rng.Next(0x1000) & 0xFF8u & ~0x80u) | (rng.Next(8) == 0 ? 0x80u : 0);

    private static uint RandomFrame(Random rng) => FramePool + ((uint)rng.Next(1024) << 12);

    private static void AddPagingSetUp(GuestProgram program, Random rng)
    {
        uint[] pdes = new uint[4];
        for (uint i = 0; i < 4; i++)
        {
            // 4 MiB identity pages (PS, SDM vol. 3, 4.3, table 4-4) except entry 1, which points at the page table.
            pdes[i] = i == 1 ? PageTable | (RandomPteBits(rng) & ~0x1C0u) : (i << 22) | 0x80u | (RandomPteBits(rng) & ~0x80u);
        }
        uint[] scratchPtes = Enumerable.Range(0, (int)ScratchPages).Select(_ => RandomFrame(rng) | RandomPteBits(rng)).ToArray();
        // Probe pages: present three times in four, RW and US random.
        uint[] probePtes = Enumerable.Range(0, (int)ProbePages)
            .Select(_ => RandomFrame(rng) | (RandomPteBits(rng) & ~0x7u) | (rng.Next(4) == 0 ? 0u : 1u) | (uint)rng.Next(4) << 1).ToArray();
        program.Case("paging on", (a, g) =>
        {
            g.FillPageTable(a, PageTable, 0x0040_0007u);
            for (uint i = 0; i < 4; i++)
            {
                a.mov(__dword_ptr[PageDirectory + i * 4], pdes[i]);
            }
            for (uint i = 0; i < ScratchPages; i++)
            {
                a.mov(__dword_ptr[PageTable + i * 4], scratchPtes[i]);
            }
            for (uint i = 0; i < ProbePages; i++)
            {
                a.mov(__dword_ptr[PageTable + (ScratchPages + i) * 4], probePtes[i]);
            }
            a.mov(eax, cr4);
            a.or(eax, 0x10);                // CR4.PSE
            a.mov(cr4, eax);
            a.mov(eax, PageDirectory);
            a.mov(cr3, eax);
            a.mov(eax, cr0);
            a.or(eax, 0x8001_0000u);        // CR0.PG, and WP: supervisor writes honour read-only pages (SDM vol. 3, 4.6)
            a.mov(cr0, eax);
        });
    }

    /// <summary>A load, store or read-modify-write of a dword in a probe page (SDM vol. 3, 4.7: a fault reports
    /// P, W/R and U/S in the error code and the address in CR2).</summary>
    private static Instruction ProbeInstruction(Random rng)
    {
        uint address = GuestProgram.ScratchAddress + ((ScratchPages + (uint)rng.Next((int)ProbePages)) << 12) + ((uint)rng.Next(1024) << 2);
        var memory = new MemoryOperand(Register.None, Register.None, 1, address, 4);
        Register[] regs = [Register.EBX, Register.ECX, Register.ESI, Register.EDI];
        Register reg = regs[rng.Next(regs.Length)];
        return rng.Next(3) switch
        {
            0 => Instruction.Create(Code.Mov_r32_rm32, reg, memory),
            1 => Instruction.Create(Code.Mov_rm32_r32, memory, reg),
            _ => Instruction.Create(Code.Add_rm32_r32, memory, reg),
        };
    }

    /// <summary>Points a scratch page at another frame and flushes its translation (SDM vol. 3, 4.10.4.1: INVLPG).</summary>
    private static GeneratedStep RemapStep(Random rng)
    {
        uint page = (uint)rng.Next((int)ScratchPages);
        var write = Instruction.Create(Code.Mov_rm32_imm32, new MemoryOperand(Register.None, Register.None, 1, PageTable + page * 4, 4), RandomFrame(rng) | RandomPteBits(rng));
        var flush = Instruction.Create(Code.Invlpg_m, new MemoryOperand(Register.None, Register.None, 1, GuestProgram.ScratchAddress + (page << 12), 4));
        return new GeneratedStep($"{write}; {flush}", a => { a.AddInstruction(write); a.AddInstruction(flush); });
    }

    /// <summary>MOV CR3 with its own value: flushes every non-global translation (SDM vol. 3, 4.10.4.1).</summary>
    private static GeneratedStep ReloadCr3Step(Random rng)
    {
        Register r = new[] { Register.EAX, Register.EBX, Register.ESI }[rng.Next(3)];
        var read = Instruction.Create(Code.Mov_r32_cr, r, Register.CR3);
        var write = Instruction.Create(Code.Mov_cr_r32, Register.CR3, r);
        return new GeneratedStep($"{read}; {write}", a => { a.AddInstruction(read); a.AddInstruction(write); });
    }

    private void RunTier(GeneratedTier tier)
    {
        int images = EnvInt("SECUREVMM_DIFF_IMAGES", 1);
        int baseSeed = EnvInt("SECUREVMM_DIFF_SEED", BaseSeed + (int)tier * 1000);
        int cases = EnvInt("SECUREVMM_DIFF_CASES", DefaultCases);
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        DifferentialRunner.CompareGenerated(output, qemu, tier.ToString(), baseSeed, images, seed =>
        {
            var program = BuildImage(tier, seed, cases, out List<string> listings);
            return (program, listings);
        }, "scratch dwords, then EAX ECX EDX EBX ESP EBP ESI EDI, flags");
    }

    [Fact]
    public void SystemModeSequencesMatchQemu() => RunTier(GeneratedTier.SystemFlat);

    [Fact]
    public void PagedSystemModeSequencesMatchQemu() => RunTier(GeneratedTier.SystemPaged);

    [Fact]
    public void UserModeSequencesMatchQemu() => RunTier(GeneratedTier.User);

    [Fact]
    public void PagedUserModeSequencesMatchQemu() => RunTier(GeneratedTier.UserPaged);
}
