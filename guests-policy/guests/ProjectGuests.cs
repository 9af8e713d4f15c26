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
    /// <summary>Most characters of a received datagram the interactive guest prints.</summary>
    public const int NetPrintMax = 100;

    /// <summary>Names of the built-in guests, for the CLI and the demo.</summary>
    public static IReadOnlyList<string> Names { get; } = ["hello", "kiosk", "interactive", "cpu-hog"];

    /// <summary>
    /// Builds a guest by name; null if there is no such guest. The demo guests use the demo policy's
    /// networks: kiosk <see cref="GuestNetwork.KioskDefault"/> (10.1.0.10 to 10.1.0.1, UDP 7000, payload
    /// "SECRET kiosk uptime N s"), interactive <see cref="GuestNetwork.InteractiveDefault"/> (10.2.0.10 to
    /// 10.2.0.1, UDP 7000, payload "unclass: LINE").
    /// </summary>
    public static GuestImage? Build(string name) => name switch
    {
        "hello" => Hello(),
        "kiosk" => Kiosk("SECRET KIOSK", 0x4F, GuestNetwork.KioskDefault, "SECRET kiosk"),
        "interactive" => Interactive("unclass> ", GuestNetwork.InteractiveDefault, "unclass"),
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
    /// COM1 ("kiosk: uptime N s") and sends it as one UDP datagram on its NIC
    /// ("LABEL uptime N s", see <see cref="GuestNet"/>), showing "frames sent: N" on the screen.
    /// Without a NIC it runs as before and says so once on COM1 and on the screen.
    /// </summary>
    public static GuestImage Kiosk(string title, byte attribute, GuestNetwork? network = null, string label = "SECRET kiosk") =>
        GuestBuilder.Build("kiosk", g =>
    {
        Assembler a = g.A;
        uint idt = GuestRuntime.Prologue(g);
        GuestNetwork net = network ?? GuestNetwork.KioskDefault;
        var stack = new GuestNet(g, net, idt);
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
        WriteAt(g, 8, 20, attribute, "frames sent:");
        GuestRuntime.Print(g, "kiosk: started\n");
        stack.EmitInit();
        Label noNic = a.CreateLabel(), shownNic = a.CreateLabel();
        a.cmp(__dword_ptr[stack.ReadyFlag], 0);
        a.je(noNic);
        WriteAt(g, 10, 20, attribute, $"network: {net.Address} -> {net.Peer} udp {net.Port}");
        a.jmp(shownNic);
        a.Label(ref noNic);
        WriteAt(g, 10, 20, attribute, "network: no virtio-net device");
        a.Label(ref shownNic);
        a.xor(eax, eax);
        DrawNumber(g, 8, attribute);

        GuestRuntime.StartTimer(a, 100);
        GuestRuntime.UnmaskIrq(a, 0);
        a.sti();
        Label idle = a.CreateLabel(), redraw = a.CreateLabel();
        a.Label(ref idle);
        a.hlt();
        g.Call("net_poll"); // receive ring: answers ARP, ignores datagrams, reposts buffers
        a.mov(eax, __dword_ptr[ticks]);
        a.xor(edx, edx);
        a.mov(ecx, 100);
        a.div(ecx);
        a.cmp(eax, __dword_ptr[shown]);
        a.jne(redraw);
        a.jmp(idle);
        a.Label(ref redraw);
        a.mov(__dword_ptr[shown], eax);
        DrawNumber(g, 6, attribute);
        GuestRuntime.Print(g, "kiosk: uptime ");
        a.mov(eax, __dword_ptr[shown]);
        g.Call("rt_dec32");
        GuestRuntime.Print(g, " s\n");
        // The same report as a datagram: "LABEL uptime N s".
        a.mov(edi, stack.PayloadScratch);
        stack.EmitCopyText($"{label} uptime ");
        a.mov(eax, __dword_ptr[shown]);
        g.Call("net_fmt_dec");
        stack.EmitCopyText(" s");
        a.mov(ecx, edi);
        a.sub(ecx, stack.PayloadScratch);
        a.mov(esi, stack.PayloadScratch);
        g.Call("net_send_udp");
        a.mov(eax, __dword_ptr[stack.FramesSentCounter]);
        DrawNumber(g, 8, attribute);
        a.jmp(idle);

        g.Mark("kiosk_timer");
        a.push(eax);
        a.inc(__dword_ptr[ticks]);
        GuestRuntime.EndOfInterrupt(a, 0);
        a.pop(eax);
        a.iretd();

        g.Mark("net_on_udp"); // the kiosk shows nothing it receives
        a.ret();

        GuestRuntime.EmitLibrary(g);
        stack.EmitLibrary();
    });

    /// <summary>Draws EAX in decimal, right-aligned in 10 cells ending at column 41 of <paramref name="row"/>. Clobbers EAX, EBX, ECX, EDX, EDI.</summary>
    private static void DrawNumber(GuestBuilder g, int row, byte attribute)
    {
        Assembler a = g.A;
        a.mov(edi, GuestRuntime.VgaText + (uint)(((row * 80) + 41) * 2));
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
    }

    /// <summary>
    /// Interactive serial guest: prints a prompt, echoes what is typed (COM1 receive interrupts
    /// on IRQ 4, idling in HLT), and on Enter answers "you typed: LINE" and a new prompt, and sends a
    /// non-empty line on its NIC as one UDP datagram "LABEL: LINE". Every UDP datagram to its port
    /// is shown as "net: PAYLOAD" (printable ASCII, at most <see cref="NetPrintMax"/> characters)
    /// followed by a fresh prompt and the part of a line typed so far.
    /// The line buffer is bounded: input past 72 characters is not stored.
    /// </summary>
    public static GuestImage Interactive(string prompt, GuestNetwork? network = null, string label = "unclass") =>
        GuestBuilder.Build("interactive", g =>
    {
        Assembler a = g.A;
        const int LineMax = 72;
        uint idt = GuestRuntime.Prologue(g);
        var stack = new GuestNet(g, network ?? GuestNetwork.InteractiveDefault, idt);
        uint ring = g.Bss(256);
        uint head = g.Bss(4); // written by the IRQ handler
        uint tail = g.Bss(4); // written by the main loop
        uint line = g.Bss(LineMax + 1);
        uint length = g.Bss(4);
        GuestRuntime.SetGate(g, idt, GuestRuntime.IrqBase + 4, "tty_rx");

        GuestRuntime.Print(g, "SecureVmm interactive guest. Type a line and press Enter.\n");
        stack.EmitInit();
        GuestRuntime.Print(g, prompt);
        GuestRuntime.OutByte(a, GuestRuntime.Com1 + 1, 0x01); // IER: received data available
        GuestRuntime.UnmaskIrq(a, 4);
        a.sti();

        Label idle = a.CreateLabel(), drain = a.CreateLabel(), enter = a.CreateLabel(), store = a.CreateLabel(),
            netWork = a.CreateLabel(), prompted = a.CreateLabel();
        a.Label(ref idle);
        a.cli();
        a.mov(eax, __dword_ptr[tail]);
        a.cmp(eax, __dword_ptr[head]);
        a.jne(drain);
        stack.EmitHasWork();
        a.jne(netWork);
        a.sti();
        a.hlt(); // STI's shadow makes "sti; hlt" atomic: no wake-up is lost
        a.jmp(idle);

        a.Label(ref netWork);
        a.sti();
        g.Call("net_poll");
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
        // The line as a datagram "LABEL: LINE" (empty lines are not sent).
        a.mov(ecx, __dword_ptr[length]);
        a.test(ecx, ecx);
        a.jz(prompted);
        a.mov(edi, stack.PayloadScratch);
        stack.EmitCopyText($"{label}: ");
        a.mov(esi, line);
        a.mov(ecx, __dword_ptr[length]);
        a.rep.movsb();
        a.mov(ecx, edi);
        a.sub(ecx, stack.PayloadScratch);
        a.mov(esi, stack.PayloadScratch);
        g.Call("net_send_udp");
        a.Label(ref prompted);
        GuestRuntime.Print(g, prompt);
        a.mov(__dword_ptr[length], 0);
        a.jmp(idle);

        // A datagram for us (ESI = payload, ECX = length): "net: PAYLOAD", then the prompt and the
        // partly typed line again. Bytes outside printable ASCII are shown as '.', long payloads cut.
        g.Mark("net_on_udp");
        a.pushad();
        Label show = a.CreateLabel(), next = a.CreateLabel(), printable = a.CreateLabel(), dot = a.CreateLabel(),
            shown = a.CreateLabel();
        a.push(esi);
        GuestRuntime.Print(g, "\nnet: "); // rt_puts moves ESI
        a.pop(esi);
        a.mov(ebx, ecx);
        a.cmp(ecx, NetPrintMax);
        a.jbe(show);
        a.mov(ecx, NetPrintMax);
        a.Label(ref show);
        a.test(ecx, ecx);
        a.jz(shown);
        a.Label(ref next);
        a.lodsb();
        a.cmp(al, 0x20);
        a.jb(dot);
        a.cmp(al, 0x7E);
        a.jbe(printable);
        a.Label(ref dot);
        a.mov(al, (byte)'.');
        a.Label(ref printable);
        g.Call("rt_putc");
        a.dec(ecx);
        a.jnz(next);
        a.Label(ref shown);
        a.cmp(ebx, NetPrintMax);
        Label whole = a.CreateLabel();
        a.jbe(whole);
        GuestRuntime.Print(g, "...");
        a.Label(ref whole);
        GuestRuntime.Print(g, "\n");
        GuestRuntime.Print(g, prompt);
        a.mov(ecx, __dword_ptr[length]);
        a.mov(__byte_ptr[ecx + line], 0);
        a.mov(esi, line);
        g.Call("rt_puts");
        a.popad();
        a.ret();

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
        stack.EmitLibrary();
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
