using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Cpu.Differential;

/// <summary>
/// Builds a differential-test guest: a Multiboot v1 image (a.out kludge, header flag bit 16) that
/// loads at 1 MiB, installs its own GDT and an IDT whose handlers print the vector, error code
/// and CR2 on the serial port, runs a list of cases that each start from a known register state
/// and print the final registers and flags in hex, and ends with a write to port 0xF4.
/// The same bytes run on QEMU (-kernel) and on SecureVmm, and the serial outputs must match.
/// </summary>
public sealed class GuestProgram
{
    public const uint LoadAddress = 0x0010_0000;
    public const uint EntryAddress = LoadAddress + 32;
    public const uint GdtAddress = 0x0030_0000;
    public const uint IdtAddress = 0x0030_1000;
    public const uint ResumeEip = 0x0030_2000;  // where a fault handler resumes
    public const uint ResumeEsp = 0x0030_2004;
    public const uint ScratchAddress = 0x0040_0000; // data area for cases
    public const uint StackTop = 0x0009_0000;
    public const uint TssAddress = 0x0030_3000;
    public const uint Ring0Stack = 0x0008_F000;

    /// <summary>Installs IDT gate <paramref name="vector"/> (32-bit interrupt gate, given DPL) pointing at a label.</summary>
    public void SetGate(Assembler a, int vector, string handlerLabel, int dpl)
    {
        uint handler = AddressOf(handlerLabel);
        a.mov(__dword_ptr[IdtAddress + (uint)vector * 8], (0x08u << 16) | (handler & 0xFFFF));
        a.mov(__dword_ptr[IdtAddress + (uint)vector * 8 + 4], (handler & 0xFFFF_0000) | 0x8E00u | ((uint)dpl << 13));
    }
    /// <summary>Status flags and DF compared after each case (CF PF AF ZF SF DF OF).</summary>
    public const uint ComparedFlags = 0x0CD5;

    private readonly List<(string Name, Action<Assembler, GuestProgram> Body, uint Flags, uint Compared)> _cases = [];
    private Dictionary<string, uint> _resolved = [];
    private readonly Dictionary<string, Label> _labels = [];
    private Assembler _asm = null!;

    /// <summary>Adds a case. The body starts with EAX..EDI = fixed values and EFLAGS = <paramref name="flags"/>;
    /// the final EFLAGS are printed masked with <paramref name="comparedFlags"/> (flags the SDM leaves
    /// undefined after the case's last writer are left out by the generated tier).</summary>
    public void Case(string name, Action<Assembler, GuestProgram> body, uint flags = 0x2, uint comparedFlags = ComparedFlags) =>
        _cases.Add((name, body, flags, comparedFlags));

    public int CaseCount => _cases.Count;

    /// <summary>Defines a named label at the current position (its address is known in the second pass).</summary>
    public void Mark(string name)
    {
        var l = _asm.CreateLabel(name);
        _asm.Label(ref l);
        _labels[name] = l;
    }

    /// <summary>The address of a label defined with <see cref="Mark"/> (0 in the first pass).</summary>
    public uint AddressOf(string name) => _resolved.TryGetValue(name, out uint a) ? a : 0;

    /// <summary>
    /// Fills the 1024 entries of the page table at <paramref name="table"/> with consecutive
    /// 4 KiB frames from <paramref name="firstEntry"/> (frame | flags) on.
    /// </summary>
    public void FillPageTable(Assembler a, uint table, uint firstEntry)
    {
        a.mov(edi, table);
        a.mov(eax, firstEntry);
        a.mov(ecx, 1024);
        Mark("ptfill");
        a.stosd();
        a.add(eax, 0x1000);
        a.dec(ecx);
        a.jnz(AddressOf("ptfill"));
    }

    /// <summary>
    /// Arms the fault handlers to resume at label <paramref name="resumeLabel"/> with the current ESP.
    /// Emit right before an instruction expected to fault.
    /// </summary>
    public void ExpectFault(Assembler a, string resumeLabel)
    {
        a.mov(__dword_ptr[ResumeEip], AddressOf(resumeLabel));
        a.mov(__dword_ptr[ResumeEsp], esp);
    }

    public byte[] Build()
    {
        // Label addresses feed immediates and branch targets, which can change instruction sizes:
        // re-emit until the layout is stable.
        for (int pass = 0; pass < 10; pass++)
        {
            var bytes = Emit(out var labels);
            bool stable = labels.Count == _resolved.Count && labels.All(kv => _resolved.TryGetValue(kv.Key, out uint v) && v == kv.Value);
            _resolved = labels;
            if (stable)
            {
                return bytes;
            }
        }
        throw new InvalidOperationException("guest program layout did not converge");
    }

    private byte[] Emit(out Dictionary<string, uint> labelAddresses)
    {
        _asm = new Assembler(32);
        _labels.Clear();
        var a = _asm;
        // Multiboot v1 header with the a.out kludge (Multiboot spec 3.1.1-3.1.3).
        const uint magic = 0x1BADB002, mbFlags = 0x0001_0000;
        a.dd(magic, mbFlags, unchecked(0u - magic - mbFlags));
        a.dd(LoadAddress, LoadAddress, 0, 0);
        a.dd(EntryAddress);
        // Entry: our own GDT (null, code 0x08, data 0x10), segments reloaded, stack, IDT.
        a.mov(__dword_ptr[GdtAddress + 0], 0u);
        a.mov(__dword_ptr[GdtAddress + 4], 0u);
        a.mov(__dword_ptr[GdtAddress + 8], 0x0000FFFFu);
        a.mov(__dword_ptr[GdtAddress + 12], 0x00CF9B00u);
        a.mov(__dword_ptr[GdtAddress + 16], 0x0000FFFFu);
        a.mov(__dword_ptr[GdtAddress + 20], 0x00CF9300u);
        a.mov(__dword_ptr[GdtAddress + 24], 0x0000FFFFu);  // 0x18: ring-3 code
        a.mov(__dword_ptr[GdtAddress + 28], 0x00CFFB00u);
        a.mov(__dword_ptr[GdtAddress + 32], 0x0000FFFFu);  // 0x20: ring-3 data
        a.mov(__dword_ptr[GdtAddress + 36], 0x00CFF300u);
        // 0x28: a 32-bit TSS at TssAddress (limit 0x67) with ESP0/SS0 for ring-3 cases.
        a.mov(__dword_ptr[GdtAddress + 40], ((TssAddress & 0xFFFF) << 16) | 0x67u);
        a.mov(__dword_ptr[GdtAddress + 44], (TssAddress & 0xFF00_0000) | 0x0000_8900u | ((TssAddress >> 16) & 0xFF));
        a.mov(__dword_ptr[TssAddress + 4], Ring0Stack);
        a.mov(__dword_ptr[TssAddress + 8], 0x10u);
        a.mov(__word_ptr[TssAddress + 0x66], (ushort)0x68);
        a.mov(__word_ptr[GdtAddress + 0x100], (ushort)(6 * 8 - 1));
        a.mov(__dword_ptr[GdtAddress + 0x102], GdtAddress);
        a.lgdt(__[GdtAddress + 0x100]);
        a.mov(esp, StackTop);
        a.push(0x08);
        a.push(AddressOf("reload"));
        a.retf();
        Mark("reload");
        a.mov(ax, 0x10);
        a.mov(ds, ax);
        a.mov(es, ax);
        a.mov(fs, ax);
        a.mov(gs, ax);
        a.mov(ss, ax);
        a.mov(esp, StackTop);
        for (int v = 0; v < 32; v++)
        {
            uint stub = AddressOf($"stub{v}");
            a.mov(__dword_ptr[IdtAddress + (uint)v * 8], (0x08u << 16) | (stub & 0xFFFF));
            a.mov(__dword_ptr[IdtAddress + (uint)v * 8 + 4], (stub & 0xFFFF_0000) | 0x8E00);
        }
        a.mov(__word_ptr[IdtAddress + 0x800], (ushort)(256 * 8 - 1));
        a.mov(__dword_ptr[IdtAddress + 0x802], IdtAddress);
        a.lidt(__[IdtAddress + 0x800]);
        a.mov(ax, 0x28);
        a.ltr(ax);

        for (int i = 0; i < _cases.Count; i++)
        {
            var (name, body, flags, compared) = _cases[i];
            PrintText(a, $"case {i} {name}\n");
            a.push(flags);
            a.popfd();
            a.mov(eax, 0x11111111);
            a.mov(ebx, 0x22222222);
            a.mov(ecx, 0x33333333);
            a.mov(edx, 0x44444444);
            a.mov(esi, 0x55555555);
            a.mov(edi, 0x66666666);
            a.mov(ebp, 0x77777777);
            body(a, this);
            Dump(a, compared);
        }
        PrintText(a, "done\n");
        a.mov(al, 0);
        a.@out(0xF4, al);
        a.hlt();

        // Exception stubs: push a dummy error code where the CPU pushes none, then the vector.
        for (int v = 0; v < 32; v++)
        {
            Mark($"stub{v}");
            if (!SecureVmm.Tcb.Cpu.Vector.HasErrorCode(v))
            {
                a.push(0);
            }
            a.push(v);
            a.jmp(AddressOf("exception"));
        }
        Mark("exception");
        // Print "exc VV EEEEEEEE CCCCCCCC" (vector, error code, CR2) and resume where the case said.
        PrintText(a, "exc\n");
        a.mov(eax, __dword_ptr[esp]);
        a.call(AddressOf("printHex"));
        a.mov(eax, __dword_ptr[esp + 4]);
        a.call(AddressOf("printHex"));
        a.mov(eax, cr2);
        a.call(AddressOf("printHex"));
        a.mov(ax, 0x10);
        a.mov(ds, ax);
        a.mov(es, ax);
        a.mov(esp, __dword_ptr[ResumeEsp]);
        a.jmp(__dword_ptr[ResumeEip]);

        // printHex: EAX as 8 hex digits and a newline on COM1; preserves all registers and flags.
        Mark("printHex");
        a.pushfd();
        a.pushad();
        a.mov(ebx, eax);
        a.mov(ecx, 8);
        Mark("printHexLoop");
        a.rol(ebx, 4);
        a.mov(eax, ebx);
        a.and(eax, 0xF);
        a.add(eax, '0');
        a.cmp(eax, '9');
        a.jbe(AddressOf("printHexDigit"));
        a.add(eax, 7);
        Mark("printHexDigit");
        a.mov(edx, 0x3F8);
        a.@out(dx, al);
        a.dec(ecx);
        a.jnz(AddressOf("printHexLoop"));
        a.mov(al, (byte)'\n');
        a.@out(dx, al);
        a.popad();
        a.popfd();
        a.ret();

        var stream = new MemoryStream();
        var result = a.Assemble(new StreamCodeWriter(stream), LoadAddress, BlockEncoderOptions.ReturnNewInstructionOffsets);
        labelAddresses = [];
        foreach (var (name, label) in _labels)
        {
            var l = label;
            labelAddresses[name] = (uint)result.GetLabelRIP(l);
        }
        return stream.ToArray();
    }

    private static void PrintText(Assembler a, string text)
    {
        a.mov(edx, 0x3F8);
        foreach (char ch in text)
        {
            a.mov(al, (byte)ch);
            a.@out(dx, al);
        }
    }

    /// <summary>Prints EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI and the compared flags.</summary>
    private void Dump(Assembler a, uint comparedFlags)
    {
        a.pushfd();
        a.pushad();
        foreach (int slot in new[] { 7, 6, 5, 4, 3, 2, 1, 0 })
        {
            a.mov(eax, __dword_ptr[esp + slot * 4]);
            a.call(AddressOf("printHex"));
        }
        a.mov(eax, __dword_ptr[esp + 32]);
        a.and(eax, comparedFlags);
        a.call(AddressOf("printHex"));
        a.popad();
        a.popfd();
    }
}
