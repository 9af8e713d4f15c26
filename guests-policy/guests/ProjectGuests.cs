using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Policy.Guests;

/// <summary>
/// The project's own guest programs, built from C# with Iced's assembler so they need nothing
/// but the .NET SDK. Each is a Multiboot image that runs the same on SecureVmm and on
/// <c>qemu-system-i386 -kernel</c>.
/// </summary>
public static class ProjectGuests
{
    /// <summary>Names of the built-in guests, for the CLI and the demo.</summary>
    public static IReadOnlyList<string> Names { get; } = ["hello", "kiosk", "interactive", "cpu-hog"];

    /// <summary>Builds a guest by name; null if there is no such guest.</summary>
    public static GuestImage? Build(string name) => name switch
    {
        "hello" => Hello(),
        "kiosk" => Kiosk("SECRET KIOSK", 0x4F),
        "interactive" => Interactive("unclass> "),
        "cpu-hog" => CpuHog(),
        _ => null,
    };

    /// <summary>
    /// Serial hello: prints a greeting and the CPU vendor string on COM1, then writes 0 to the
    /// debug-exit port (process status 1 under <c>--debug-exit</c>) and halts.
    /// </summary>
    public static GuestImage Hello() => GuestBuilder.Build("hello", g =>
    {
        Assembler a = g.A;
        GuestRuntime.Prologue(g);
        GuestRuntime.Print(g, "Hello from the SecureVmm hello guest\n");
        uint vendor = g.Bss(16);
        a.xor(eax, eax);
        a.cpuid();
        a.mov(__dword_ptr[vendor], ebx);
        a.mov(__dword_ptr[vendor + 4], edx);
        a.mov(__dword_ptr[vendor + 8], ecx);
        GuestRuntime.Print(g, "cpu vendor: ");
        a.mov(esi, vendor);
        g.Call("rt_puts");
        GuestRuntime.Print(g, "\nbye\n");
        GuestRuntime.ExitAndHalt(g, 0);
        GuestRuntime.EmitLibrary(g);
    });

    /// <summary>
    /// Kiosk: fills the VGA text screen with a fixed notice and an uptime counter driven by the
    /// PIT at 100 Hz, idling in HLT between ticks; once a second it also reports its uptime on
    /// COM1 ("kiosk: uptime N s").
    /// </summary>
    public static GuestImage Kiosk(string title, byte attribute) => GuestBuilder.Build("kiosk", g =>
    {
        Assembler a = g.A;
        uint idt = GuestRuntime.Prologue(g);
        uint ticks = g.Bss(4);
        uint shown = g.Bss(4);
        GuestRuntime.SetGate(g, idt, GuestRuntime.IrqBase + 0, "kiosk_timer");

        // Clear the screen to the attribute.
        a.mov(edi, GuestRuntime.VgaText);
        a.mov(ecx, 80 * 25);
        a.mov(ax, (ushort)((attribute << 8) | ' '));
        a.rep.stosw();
        WriteAt(g, 2, (80 - title.Length) / 2, attribute, title);
        WriteAt(g, 4, 20, attribute, "This terminal shows a fixed kiosk screen.");
        WriteAt(g, 6, 20, attribute, "uptime (s):");
        GuestRuntime.Print(g, "kiosk: started\n");

        GuestRuntime.StartTimer(a, 100);
        GuestRuntime.UnmaskIrq(a, 0);
        a.sti();
        Label idle = a.CreateLabel(), redraw = a.CreateLabel();
        a.Label(ref idle);
        a.hlt();
        a.mov(eax, __dword_ptr[ticks]);
        a.xor(edx, edx);
        a.mov(ecx, 100);
        a.div(ecx);
        a.cmp(eax, __dword_ptr[shown]);
        a.jne(redraw);
        a.jmp(idle);
        a.Label(ref redraw);
        a.mov(__dword_ptr[shown], eax);
        // Decimal seconds into the screen at row 6, column 32 (right-aligned in 10 cells).
        a.mov(edi, GuestRuntime.VgaText + (((6 * 80) + 41) * 2));
        a.mov(ebx, 10);
        a.mov(ecx, 10);
        Label digit = a.CreateLabel();
        a.Label(ref digit);
        a.xor(edx, edx);
        a.div(ebx);
        a.add(dl, (byte)'0');
        a.mov(dh, attribute);
        a.mov(__word_ptr[edi], dx);
        a.sub(edi, 2);
        a.dec(ecx);
        a.jnz(digit);
        GuestRuntime.Print(g, "kiosk: uptime ");
        a.mov(eax, __dword_ptr[shown]);
        g.Call("rt_dec32");
        GuestRuntime.Print(g, " s\n");
        a.jmp(idle);

        g.Mark("kiosk_timer");
        a.push(eax);
        a.inc(__dword_ptr[ticks]);
        GuestRuntime.EndOfInterrupt(a, 0);
        a.pop(eax);
        a.iretd();

        GuestRuntime.EmitLibrary(g);
    });

    /// <summary>
    /// Interactive serial guest: prints a prompt, echoes what is typed (COM1 receive interrupts
    /// on IRQ 4, idling in HLT), and on Enter answers "you typed: LINE" and a new prompt.
    /// The line buffer is bounded: input past 72 characters is not stored.
    /// </summary>
    public static GuestImage Interactive(string prompt) => GuestBuilder.Build("interactive", g =>
    {
        Assembler a = g.A;
        const int LineMax = 72;
        uint idt = GuestRuntime.Prologue(g);
        uint ring = g.Bss(256);
        uint head = g.Bss(4); // written by the IRQ handler
        uint tail = g.Bss(4); // written by the main loop
        uint line = g.Bss(LineMax + 1);
        uint length = g.Bss(4);
        GuestRuntime.SetGate(g, idt, GuestRuntime.IrqBase + 4, "tty_rx");

        GuestRuntime.Print(g, "SecureVmm interactive guest. Type a line and press Enter.\n");
        GuestRuntime.Print(g, prompt);
        GuestRuntime.OutByte(a, GuestRuntime.Com1 + 1, 0x01); // IER: received data available
        GuestRuntime.UnmaskIrq(a, 4);
        a.sti();

        Label idle = a.CreateLabel(), drain = a.CreateLabel(), enter = a.CreateLabel(), store = a.CreateLabel();
        a.Label(ref idle);
        a.cli();
        a.mov(eax, __dword_ptr[tail]);
        a.cmp(eax, __dword_ptr[head]);
        a.jne(drain);
        a.sti();
        a.hlt(); // STI's shadow makes "sti; hlt" atomic: no wake-up is lost
        a.jmp(idle);

        a.Label(ref drain);
        a.sti();
        a.movzx(ebx, al);
        a.mov(al, __byte_ptr[ebx + ring]);
        a.inc(__dword_ptr[tail]);
        a.and(__dword_ptr[tail], 0xFF);
        a.cmp(al, 13);
        a.je(enter);
        a.cmp(al, 10);
        a.je(enter);
        g.Call("rt_putc");
        a.mov(ecx, __dword_ptr[length]);
        a.cmp(ecx, LineMax);
        a.jae(idle);
        a.Label(ref store);
        a.mov(__byte_ptr[ecx + line], al);
        a.inc(__dword_ptr[length]);
        a.jmp(idle);

        a.Label(ref enter);
        a.mov(ecx, __dword_ptr[length]);
        a.mov(__byte_ptr[ecx + line], 0);
        GuestRuntime.Print(g, "\nyou typed: ");
        a.mov(esi, line);
        g.Call("rt_puts");
        GuestRuntime.Print(g, "\n");
        GuestRuntime.Print(g, prompt);
        a.mov(__dword_ptr[length], 0);
        a.jmp(idle);

        // IRQ 4: move every received byte into the ring (16550 LSR bit 0 = data ready).
        g.Mark("tty_rx");
        a.pushad();
        Label more = a.CreateLabel(), empty = a.CreateLabel();
        a.Label(ref more);
        a.mov(dx, (ushort)(GuestRuntime.Com1 + 5));
        a.@in(al, dx);
        a.test(al, 1);
        a.jz(empty);
        a.mov(dx, GuestRuntime.Com1);
        a.@in(al, dx);
        a.mov(ebx, __dword_ptr[head]);
        a.mov(__byte_ptr[ebx + ring], al);
        a.inc(ebx);
        a.and(ebx, 0xFF);
        a.cmp(ebx, __dword_ptr[tail]);
        a.je(more); // ring full: drop the byte rather than overwrite unread input
        a.mov(__dword_ptr[head], ebx);
        a.jmp(more);
        a.Label(ref empty);
        GuestRuntime.EndOfInterrupt(a, 4);
        a.popad();
        a.iretd();

        GuestRuntime.EmitLibrary(g);
    });

    /// <summary>
    /// CPU hog: spins in a tight loop with interrupts off and prints a dot on COM1 every
    /// 2^26 iterations. Used to show that one VM cannot starve another.
    /// </summary>
    public static GuestImage CpuHog() => GuestBuilder.Build("cpu-hog", g =>
    {
        Assembler a = g.A;
        GuestRuntime.Prologue(g);
        GuestRuntime.Print(g, "cpu-hog: spinning\n");
        a.xor(ecx, ecx);
        Label spin = a.CreateLabel();
        a.Label(ref spin);
        a.inc(ecx);
        a.test(ecx, 0x03FF_FFFF);
        a.jnz(spin);
        a.mov(al, (byte)'.');
        g.Call("rt_putc");
        a.jmp(spin);
        GuestRuntime.EmitLibrary(g);
    });

    private static void WriteAt(GuestBuilder g, int row, int column, byte attribute, string text)
    {
        g.A.mov(esi, g.String(text));
        g.A.mov(edi, GuestRuntime.VgaText + (uint)(((row * 80) + column) * 2));
        g.A.mov(ah, attribute);
        g.Call("rt_vga_puts");
    }
}
