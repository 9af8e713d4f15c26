using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Policy.Guests;

/// <summary>
/// The small runtime every project guest starts with: its own flat GDT (the Multiboot
/// specification, section 3.2, says the OS must not rely on the loader's), an IDT whose
/// unclaimed vectors report themselves on the serial port, the 8259A PICs remapped to vectors
/// 0x20-0x2F with every line masked, and COM1 programmed for 115200 8N1 with FIFOs.
/// Subroutines (cdecl-free, register conventions noted per routine) are emitted once by
/// <see cref="EmitLibrary"/>.
/// </summary>
public static class GuestRuntime
{
    public const ushort Com1 = 0x3F8;
    public const ushort DebugExitPort = 0xF4;
    public const byte IrqBase = 0x20;
    public const uint VgaText = 0xB8000;

    /// <summary>
    /// Entry sequence: interrupts off, stack, GDT, segment reload, IDT, PIC, serial. Falls
    /// through to the code that follows. Returns the IDT's guest address (for <see cref="SetGate"/>).
    /// </summary>
    public static uint Prologue(GuestBuilder g)
    {
        Assembler a = g.A;
        a.cli();
        a.cld();
        a.mov(esp, GuestBuilder.StackTop);

        // Flat GDT (Intel SDM vol. 3, 3.4.5): null, code 0x08 (base 0, limit 4 GiB, 32-bit,
        // execute/read), data 0x10 (base 0, limit 4 GiB, read/write).
        byte[] gdt =
        [
            0, 0, 0, 0, 0, 0, 0, 0,
            0xFF, 0xFF, 0, 0, 0, 0x9A, 0xCF, 0,
            0xFF, 0xFF, 0, 0, 0, 0x92, 0xCF, 0,
        ];
        uint gdtAddress = g.Data(gdt, 8);
        uint gdtr = g.Data([(byte)(gdt.Length - 1), 0,
            (byte)gdtAddress, (byte)(gdtAddress >> 8), (byte)(gdtAddress >> 16), (byte)(gdtAddress >> 24)]);
        a.lgdt(__fword_ptr[gdtr]);
        // Reload CS with a far return: push selector, push the address of the instruction after retf.
        a.push(GuestBuilder.CodeSelector);
        Label here = a.CreateLabel();
        a.call(here);
        a.Label(ref here);
        a.add(__dword_ptr[esp], 5); // add [esp], imm8 (4 bytes) + retf (1 byte)
        a.retf();
        a.mov(ax, GuestBuilder.DataSelector);
        a.mov(ds, ax);
        a.mov(es, ax);
        a.mov(fs, ax);
        a.mov(gs, ax);
        a.mov(ss, ax);

        // IDT: every vector 0..47 gets a stub that reports it; the rest stay not-present.
        uint idt = g.Bss(256 * 8, 8);
        uint idtr = g.Data([0xFF, 0x07, (byte)idt, (byte)(idt >> 8), (byte)(idt >> 16), (byte)(idt >> 24)]);
        for (int v = 0; v < 48; v++)
        {
            SetGate(g, idt, (byte)v, $"rt_stub_{v}");
        }
        a.lidt(__fword_ptr[idtr]);

        // 8259A initialisation (data sheet, "Initialization command words"): ICW1 edge, cascade,
        // ICW4 needed; ICW2 vector base; ICW3 slave on IR2; ICW4 8086 mode. Then mask all.
        OutByte(a, 0x20, 0x11);
        OutByte(a, 0xA0, 0x11);
        OutByte(a, 0x21, IrqBase);
        OutByte(a, 0xA1, IrqBase + 8);
        OutByte(a, 0x21, 0x04);
        OutByte(a, 0xA1, 0x02);
        OutByte(a, 0x21, 0x01);
        OutByte(a, 0xA1, 0x01);
        OutByte(a, 0x21, 0xFF);
        OutByte(a, 0xA1, 0xFF);

        // 16550A: divisor 1 (115200 baud), 8N1, FIFOs on and cleared, DTR|RTS|OUT2 (OUT2 gates the IRQ).
        OutByte(a, Com1 + 1, 0x00);
        OutByte(a, Com1 + 3, 0x80);
        OutByte(a, Com1 + 0, 0x01);
        OutByte(a, Com1 + 1, 0x00);
        OutByte(a, Com1 + 3, 0x03);
        OutByte(a, Com1 + 2, 0xC7);
        OutByte(a, Com1 + 4, 0x0B);
        return idt;
    }

    /// <summary>Emits code that points IDT vector <paramref name="vector"/> at <paramref name="handler"/>
    /// as a 32-bit interrupt gate, DPL 0 (Intel SDM vol. 3, 6.11, figure 6-2).</summary>
    public static void SetGate(GuestBuilder g, uint idt, byte vector, string handler)
    {
        Assembler a = g.A;
        uint entry = idt + (vector * 8u);
        g.LoadAddress32(eax, handler);
        a.mov(__word_ptr[entry], ax);
        a.mov(__word_ptr[entry + 2], GuestBuilder.CodeSelector);
        a.mov(__word_ptr[entry + 4], 0x8E00);
        a.shr(eax, 16);
        a.mov(__word_ptr[entry + 6], ax);
    }

    /// <summary>out imm8 port (or dx for wide ports), al = value.</summary>
    public static void OutByte(Assembler a, int port, int value)
    {
        a.mov(al, (byte)value);
        if (port < 256)
        {
            a.@out((byte)port, al);
        }
        else
        {
            a.mov(dx, (ushort)port);
            a.@out(dx, al);
        }
    }

    /// <summary>Prints a constant string on COM1.</summary>
    public static void Print(GuestBuilder g, string text)
    {
        g.A.mov(esi, g.String(text));
        g.Call("rt_puts");
    }

    /// <summary>Sends end-of-interrupt for an IRQ line to the PIC(s) (non-specific EOI, OCW2 0x20).</summary>
    public static void EndOfInterrupt(Assembler a, int irq)
    {
        a.mov(al, 0x20);
        if (irq >= 8)
        {
            a.@out(0xA0, al);
        }
        a.@out(0x20, al);
    }

    /// <summary>Unmasks one IRQ line (and the cascade for slave lines). Clobbers AL.</summary>
    public static void UnmaskIrq(Assembler a, int irq)
    {
        if (irq >= 8)
        {
            a.@in(al, 0xA1);
            a.and(al, (byte)~(1 << (irq - 8)));
            a.@out(0xA1, al);
            irq = 2;
        }
        a.@in(al, 0x21);
        a.and(al, (byte)~(1 << irq));
        a.@out(0x21, al);
    }

    /// <summary>Programs PIT channel 0 as a rate generator (8254 mode 2) at about <paramref name="hz"/>.</summary>
    public static void StartTimer(Assembler a, int hz)
    {
        int divisor = 1_193_182 / hz;
        OutByte(a, 0x43, 0x34);
        OutByte(a, 0x40, divisor & 0xFF);
        OutByte(a, 0x40, divisor >> 8);
    }

    /// <summary>Writes V to the debug-exit port, then halts with interrupts off forever.</summary>
    public static void ExitAndHalt(GuestBuilder g, byte value)
    {
        Assembler a = g.A;
        a.mov(al, value);
        a.@out((byte)DebugExitPort, al);
        Label stop = a.CreateLabel();
        a.Label(ref stop);
        a.cli();
        a.hlt();
        a.jmp(stop);
    }

    /// <summary>
    /// The subroutines: rt_putc (AL = byte; preserves all), rt_puts (ESI = zero-terminated
    /// string, "\n" sent as CR LF; preserves all but ESI), rt_hex32 (EAX; preserves all),
    /// rt_dec32 (EAX unsigned decimal; preserves all), rt_vga_puts (ESI = string, EDI = VGA cell
    /// address, AH = attribute; advances EDI), and the unexpected-vector stubs.
    /// </summary>
    public static void EmitLibrary(GuestBuilder g)
    {
        Assembler a = g.A;

        g.Mark("rt_putc");
        a.push(edx);
        a.push(eax);
        a.mov(dx, (ushort)(Com1 + 5));
        Label wait = a.CreateLabel();
        a.Label(ref wait);
        a.@in(al, dx);
        a.test(al, 0x20); // LSR bit 5: transmitter holding register empty
        a.jz(wait);
        a.pop(eax);
        a.mov(dx, Com1);
        a.@out(dx, al);
        a.pop(edx);
        a.ret();

        g.Mark("rt_puts");
        a.push(eax);
        Label next = a.CreateLabel(), done = a.CreateLabel(), plain = a.CreateLabel();
        a.Label(ref next);
        a.lodsb();
        a.test(al, al);
        a.jz(done);
        a.cmp(al, 10);
        a.jne(plain);
        a.mov(al, 13);
        g.Call("rt_putc");
        a.mov(al, 10);
        a.Label(ref plain);
        g.Call("rt_putc");
        a.jmp(next);
        a.Label(ref done);
        a.pop(eax);
        a.ret();

        g.Mark("rt_hex32");
        a.pushad();
        a.mov(ecx, 8);
        a.mov(edx, eax);
        Label digit = a.CreateLabel(), isNum = a.CreateLabel();
        a.Label(ref digit);
        a.rol(edx, 4);
        a.mov(eax, edx);
        a.and(eax, 0xF);
        a.add(al, (byte)'0');
        a.cmp(al, (byte)'9');
        a.jbe(isNum);
        a.add(al, 7);
        a.Label(ref isNum);
        g.Call("rt_putc");
        a.dec(ecx);
        a.jnz(digit);
        a.popad();
        a.ret();

        g.Mark("rt_dec32");
        a.pushad();
        a.mov(ecx, 0);
        a.mov(ebx, 10);
        Label divide = a.CreateLabel(), emit = a.CreateLabel();
        a.Label(ref divide);
        a.xor(edx, edx);
        a.div(ebx);
        a.push(edx);
        a.inc(ecx);
        a.test(eax, eax);
        a.jnz(divide);
        a.Label(ref emit);
        a.pop(eax);
        a.add(al, (byte)'0');
        g.Call("rt_putc");
        a.dec(ecx);
        a.jnz(emit);
        a.popad();
        a.ret();

        g.Mark("rt_vga_puts");
        Label vnext = g.Named("rt_vga_puts"), vdone = a.CreateLabel();
        a.mov(al, __byte_ptr[esi]);
        a.test(al, al);
        a.jz(vdone);
        a.mov(__word_ptr[edi], ax);
        a.add(edi, 2);
        a.inc(esi);
        a.jmp(vnext);
        a.Label(ref vdone);
        a.ret();

        // Unexpected vectors: report "guest: unexpected vector 0xNN" and stop.
        for (int v = 0; v < 48; v++)
        {
            g.Mark($"rt_stub_{v}");
            a.push(v);
            g.Jmp("rt_unexpected");
        }
        g.Mark("rt_unexpected");
        a.pop(ebx);
        Print(g, "\nguest: unexpected vector 0x");
        a.mov(eax, ebx);
        g.Call("rt_hex32");
        Print(g, "\n");
        ExitAndHalt(g, 0x7F);
    }
}
