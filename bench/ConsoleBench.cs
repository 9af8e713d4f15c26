using System.Diagnostics;
using System.Globalization;
using System.Text;
using SecureVmm.Appliance.Terminal;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Devices;

namespace SecureVmm.Bench;

/// <summary>
/// The terminal console's costs: `dotnet run -c Release --project bench -- console [WIDTHxHEIGHT]`.
/// Times one full frame of two panes with full scrollback (what the live console draws up to ten
/// times a second, default 160x48), and SerialScreen's sanitizing throughput for guest serial
/// output (every byte a guest prints passes through it on the VM thread). Target: a frame well
/// under 10 ms (under 10 % of one core at 10 Hz), and serial sanitizing far above what a guest
/// produces (a 115200-baud line carries 11.5 kB/s).
/// </summary>
public static class ConsoleBench
{
    public static int Run(string[] args)
    {
        int width = 160, height = 48;
        if (args.Length > 0)
        {
            string[] size = args[0].Split('x');
            width = int.Parse(size[0], CultureInfo.InvariantCulture);
            height = int.Parse(size[1], CultureInfo.InvariantCulture);
        }
        IConsolePane[] panes =
        [
            new BenchPane("secret-desktop", new SecurityLabel(ClassificationLevel.Secret, LabelColour.Red)),
            new BenchPane("public-desktop", new SecurityLabel(ClassificationLevel.Unclassified, LabelColour.Green)),
        ];
        byte[] line = Encoding.ASCII.GetBytes("[    0.123456] a kernel message line of about seventy bytes here\r\n");
        foreach (IConsolePane pane in panes)
        {
            for (int i = 0; i < 1000; i++)
            {
                foreach (byte b in line)
                {
                    pane.Serial.Transmit(b);
                }
            }
        }
        KeyRouter router = KeyRouter.For(panes);
        var frame = new ConsoleFrame(width, height);
        for (int i = 0; i < 50; i++)
        {
            ConsoleRenderer.RenderAnsi(panes, router, frame, ColourMode.Palette256);
        }
        const int Frames = 500;
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var clock = Stopwatch.StartNew();
        int chars = 0;
        for (int i = 0; i < Frames; i++)
        {
            chars += ConsoleRenderer.RenderAnsi(panes, router, frame, ColourMode.Palette256).Length;
        }
        double frameMs = clock.Elapsed.TotalMilliseconds / Frames;
        long frameBytes = (GC.GetAllocatedBytesForCurrentThread() - allocated) / Frames;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"console frame {width}x{height}, 2 panes: {frameMs:F3} ms ({frameMs:F2} % of a core at 10 Hz), {frameBytes / 1024} KiB allocated, {chars / Frames} chars sent"));

        var screen = new SerialScreen();
        byte[] mixed = Encoding.UTF8.GetBytes("\e[1;32mOK\e[0m  Started unit \u2500 caf\u00e9 \u0410\u0411\r\n");
        long bytes = 0;
        clock.Restart();
        while (clock.ElapsedMilliseconds < 1000)
        {
            for (int r = 0; r < 1000; r++)
            {
                foreach (byte b in mixed)
                {
                    screen.Transmit(b);
                }
            }
            bytes += 1000L * mixed.Length;
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"serial sanitizing (escapes, UTF-8): {bytes / clock.Elapsed.TotalSeconds / 1e6:F1} MB/s"));
        return 0;
    }

    private sealed class BenchPane(string name, SecurityLabel label) : IConsolePane
    {
        public string VmName => name;

        public SecurityLabel Label => label;

        public ConsoleKind Kind => ConsoleKind.Serial;

        public SerialScreen Serial { get; } = new();

        public VgaScreen? VgaSnapshot() => null;

        public PaneStatus Status => new(PaneState.Running, "", 123_456_789, 45_678);

        public void SendInput(ReadOnlySpan<byte> bytes)
        {
        }
    }
}
