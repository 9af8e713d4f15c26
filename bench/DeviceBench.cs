using System.Diagnostics;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Bench;

/// <summary>
/// Device-model and loader figures: nanoseconds and allocated bytes per guest port/MMIO access as
/// the machine's exit dispatch will issue them (through the PortBus/MmioBus), and how long the
/// loaders take. `dotnet run -c Release --project bench -- devices [DEBIAN_CACHE_DIR]`.
/// Target: tens of nanoseconds per access and zero bytes allocated (DESIGN.md, performance rules).
/// </summary>
public static class DeviceBench
{
    private sealed class NullOutput : ISerialOutput
    {
        public long Count;
        public void Transmit(byte value) => Count++;
    }

    public static int Run(string[] args)
    {
        var output = new NullOutput();
        var set = new PcDevices(new PcDeviceOptions { SerialOutput = output, RamBytes = 256L << 20 });
        var ports = set.Ports;
        // Program the PICs and PIT the way Linux does, so the timer and acknowledge paths are live.
        foreach (var (port, value) in new (ushort, uint)[] { (0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01), (0x43, 0x34), (0x40, 0x9C), (0x40, 0x2E) })
        {
            ports.Write(port, 1, value);
        }
        ports.Write(0xCF8, 4, 0x8000_0000);
        Console.WriteLine($"Device model, {DateTime.UtcNow:yyyy-MM-dd}, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
        Console.WriteLine($"{"operation",-44} {"ns/op",8} {"bytes/op",9}");
        Measure("UART LSR read (0x3FD)", () => ports.Read(0x3FD, 1));
        Measure("UART THR write (0x3F8)", () => ports.Write(0x3F8, 1, 0x41));
        Measure("PIT counter 0 read (0x40)", () => ports.Read(0x40, 1));
        Measure("PIT port 0x61 read (OUT2, refresh)", () => ports.Read(0x61, 1));
        Measure("RTC seconds read (0x70/0x71)", () => { ports.Write(0x70, 1, 0); ports.Read(0x71, 1); });
        Measure("PCI config dword read (0xCFC)", () => ports.Read(0xCFC, 4));
        Measure("unclaimed port read", () => ports.Read(0x1234, 4));
        Measure("VGA text MMIO word write", () => set.Mmio.Write(0xB8000 + 160, 2, 0x0741));
        Measure("IRQ0 raise + INTA + EOI", () =>
        {
            set.Pic.SetIrq(0, false);
            set.Pic.SetIrq(0, true);
            set.Pic.Acknowledge();
            ports.Write(0x20, 1, 0x20);
        });
        long t = 0;
        Measure("clock advance 1 us + timers", () => { t += 1000; set.AdvanceTo(t); });

        string cache = args.Length > 0 ? args[0] : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "securevmm", "debian");
        string kernel = Path.Combine(cache, "vmlinuz"), busybox = Path.Combine(cache, "busybox");
        if (File.Exists(kernel) && File.Exists(busybox))
        {
            var sw = Stopwatch.StartNew();
            byte[] initramfs = DebianInitramfs.Build(File.ReadAllBytes(busybox));
            double buildMs = sw.Elapsed.TotalMilliseconds;
            byte[] image = File.ReadAllBytes(kernel);
            using var ram = new GuestRam(256L << 20);
            sw.Restart();
            BzImageLoader.Load(ram, image, "console=ttyS0", initramfs);
            Console.WriteLine($"Debian initramfs build: {buildMs:F1} ms ({initramfs.Length} bytes); bzImage load ({image.Length} bytes + initrd): {sw.Elapsed.TotalMilliseconds:F1} ms");
        }
        else
        {
            Console.WriteLine($"Debian loader timing skipped: no cache at {cache} (run guests-policy/guests/debian/fetch.sh)");
        }
        return output.Count > 0 ? 0 : 1;
    }

    private static void Measure(string name, Action operation)
    {
        const int Warmup = 200_000, Iterations = 5_000_000;
        for (int i = 0; i < Warmup; i++) operation();
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < Iterations; i++) operation();
        sw.Stop();
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        Console.WriteLine($"{name,-44} {sw.Elapsed.TotalNanoseconds / Iterations,8:F1} {(double)allocated / Iterations,9:F2}");
    }
}
