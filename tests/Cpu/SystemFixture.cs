using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Cpu;

/// <summary>
/// Builds protected-mode system structures directly in guest RAM for tests: a GDT with flat
/// ring-0/ring-3 code and data segments and a TSS, an IDT with handlers at fixed addresses.
/// </summary>
public static class SystemFixture
{
    public const uint Gdt = 0x1_0000;
    public const uint Idt = 0x1_1000;
    public const uint Tss = 0x1_2000;
    public const uint DfTss = 0x1_2200;
    public const ushort KernelCode = 0x08, KernelData = 0x10, UserCode = 0x1B, UserData = 0x23, TssSel = 0x28, DfTssSel = 0x30;
    public const uint KernelStack = 0x8_0000, UserStack = 0x7_0000, DfStack = 0x6_0000;
    public const uint HandlerBase = 0x2_0000;  // handler for vector v at HandlerBase + v * 0x100

    public static ulong Descriptor(uint baseAddr, uint limit, byte access, byte flags)
    {
        ulong d = limit & 0xFFFF;
        d |= (ulong)(baseAddr & 0xFF_FFFF) << 16;
        d |= (ulong)access << 40;
        d |= (ulong)((limit >> 16) & 0xF) << 48;
        d |= (ulong)(flags & 0xF) << 52;
        d |= (ulong)(baseAddr >> 24) << 56;
        return d;
    }

    public static ulong Gate(ushort selector, uint offset, byte type, int dpl) =>
        (offset & 0xFFFF) | ((ulong)selector << 16) | ((ulong)(0x80 | (dpl << 5) | type) << 40) | ((ulong)(offset >> 16) << 48);

    public static void WriteU64(CpuHarness h, uint addr, ulong v) => h.Map.WriteRam(addr, BitConverter.GetBytes(v));

    /// <summary>GDT, TSS (ESP0 = KernelStack) and an IDT whose 32 exception gates are ring-0 interrupt gates.</summary>
    public static void Install(CpuHarness h)
    {
        WriteU64(h, Gdt + 0x00, 0);
        WriteU64(h, Gdt + 0x08, Descriptor(0, 0xFFFFF, 0x9A, 0xC));
        WriteU64(h, Gdt + 0x10, Descriptor(0, 0xFFFFF, 0x92, 0xC));
        WriteU64(h, Gdt + 0x18, Descriptor(0, 0xFFFFF, 0xFA, 0xC));
        WriteU64(h, Gdt + 0x20, Descriptor(0, 0xFFFFF, 0xF2, 0xC));
        WriteU64(h, Gdt + 0x28, Descriptor(Tss, 0x67 + 0x2000, 0x89, 0));
        WriteU64(h, Gdt + 0x30, Descriptor(DfTss, 0x67, 0x89, 0));
        h.WriteU32(Tss + 4, KernelStack);
        h.WriteU32(Tss + 8, KernelData);
        h.Map.WriteRam(Tss + 0x66, BitConverter.GetBytes((ushort)0x68)); // I/O bitmap right after the TSS
        for (int v = 0; v < 256; v++)
        {
            WriteU64(h, Idt + (uint)v * 8, v < 32 ? Gate(KernelCode, HandlerBase + (uint)v * 0x100, 0xE, 0) : 0);
        }
    }

    /// <summary>Code that loads GDTR/IDTR/TR from the fixture and reloads the segment registers.</summary>
    public static void Prologue(Assembler a)
    {
        a.mov(__word_ptr[Gdt + 0xF00], (ushort)(16 * 8 - 1));
        a.mov(__dword_ptr[Gdt + 0xF02], Gdt);
        a.lgdt(__[Gdt + 0xF00]);
        a.mov(__word_ptr[Gdt + 0xF10], (ushort)(256 * 8 - 1));
        a.mov(__dword_ptr[Gdt + 0xF12], Idt);
        a.lidt(__[Gdt + 0xF10]);
        a.mov(ax, KernelData);
        a.mov(ds, ax);
        a.mov(es, ax);
        a.mov(ss, ax);
        a.mov(esp, KernelStack);
        // Reload CS with a far return to the next instruction (push CS, push EIP, RETF).
        var next = a.CreateLabel();
        a.push(KernelCode);
        a.call(next);
        a.Label(ref next);
        a.add(__dword_ptr[esp], 5);   // 4-byte ADD + 1-byte RETF
        a.retf();
        a.mov(ax, TssSel);
        a.ltr(ax);
    }

    /// <summary>Loads a handler for <paramref name="vector"/> at its fixed address.</summary>
    public static void Handler(CpuHarness h, int vector, Action<Assembler> build)
    {
        uint addr = HandlerBase + (uint)vector * 0x100;
        h.Load(addr, CpuHarness.Assemble(32, addr, build));
    }

    /// <summary>Where <see cref="RecordingHandler"/> stores what it saw.</summary>
    public const uint Record = 0x9000;

    /// <summary>
    /// A handler that stores the vector, the top five stack dwords and ESP at <see cref="Record"/>
    /// (vector, [esp], [esp+4], [esp+8], [esp+12], [esp+16], esp) and exits with 0x40.
    /// </summary>
    public static void RecordingHandler(CpuHarness h, int vector)
    {
        Handler(h, vector, a =>
        {
            // Entry from ring 3 leaves DS/ES null (SDM vol. 2, IRET): reload them as an OS does.
            a.mov(ax, KernelData);
            a.mov(ds, ax);
            a.mov(es, ax);
            a.mov(__dword_ptr[Record], (uint)vector);
            for (int i = 0; i < 5; i++)
            {
                a.mov(eax, __dword_ptr[esp + i * 4]);
                a.mov(__dword_ptr[Record + 4 + (uint)i * 4], eax);
            }
            a.mov(__dword_ptr[Record + 24], esp);
            a.Exit(0x40);
        });
    }

    /// <summary>Reads slot <paramref name="i"/> of the record (0 = vector, 1.. = stack dwords, 6 = ESP).</summary>
    public static uint Rec(CpuHarness h, int i) => h.ReadU32(Record + (uint)i * 4);
}
