using System.Diagnostics;
using System.Globalization;
using SecureVmm.Appliance.Guests;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Machine;

namespace SecureVmm.Bench;

/// <summary>
/// The Debian boot alone, in-process, for profiling the boot workload without the QEMU side:
/// kernel + busybox initramfs from the guest cache to the shell prompt on the serial port
/// (256 MiB, deterministic clock), the same run as the Debian row of <c>compare</c>.
/// Run: <c>dotnet run -c Release --project bench -- linux [runs] [--profile] [--threshold N]</c>
/// (<c>--threshold</c> sets how many runs make a block hot enough to compile; 0 interprets all). With
/// <c>--profile</c> a sampling thread reads the guest's EIP and instruction count every
/// millisecond and prints where the guest spent its wall time and its instructions, by kernel
/// function. The names come from the guest's own /proc/kallsyms, which the first profiled boot
/// reads at the prompt and saves beside the guest cache (that first run names 4 KiB pages instead).
/// </summary>
public static class LinuxBench
{
    public static int Run(string[] args)
    {
        bool profile = args.Contains("--profile");
        int at = Array.IndexOf(args, "--threshold");
        int? threshold = at >= 0 && at + 1 < args.Length && int.TryParse(args[at + 1], out int t) && t >= 0 ? t : null;
        if (at >= 0 && threshold is null)
        {
            Console.Error.WriteLine("linux: --threshold needs a count of runs (0 turns block compilation off)");
            return 2;
        }
        string[] rest = args.Where((a, i) => a != "--profile" && (at < 0 || (i != at && i != at + 1))).ToArray();
        int runs = rest.Length > 0 && int.TryParse(rest[0], out int n) && n > 0 ? n : 1;
        string cache = GuestCommand.DefaultDebianCache;
        if (!File.Exists(Path.Combine(cache, "vmlinuz")) || !File.Exists(Path.Combine(cache, "busybox")))
        {
            Console.WriteLine($"linux: skipped, the Debian guest is not in {cache} (run guests-policy/guests/debian/fetch.sh)");
            return 0;
        }
        byte[] kernel = File.ReadAllBytes(Path.Combine(cache, "vmlinuz"));
        byte[] initrd = GuestCommand.BuildDebianInitramfs(cache);
        for (int r = 0; r < runs; r++)
        {
            string symbols = Path.Combine(cache, "kallsyms-deterministic");
            var sampler = profile ? new Sampler(File.Exists(symbols) ? SystemMap.Load(symbols) : null) : null;
            var (seconds, instructions, vmCpu) = CompareBench.LinuxInProcess(kernel, initrd, sampler is null ? null : sampler.Attach,
                profile && !File.Exists(symbols) ? (vm, watch) => SaveKallsyms(vm, watch, symbols) : null, threshold);
            Console.WriteLine($"  run {r + 1}: Debian boot to the prompt in {seconds:F1} s ({vmCpu:F1} CPU-s on the VM thread), {instructions:N0} guest instructions = {instructions / seconds / 1e6:F1} million guest instr/s");
            Console.WriteLine($"         process memory after the boot: {ProcStatus("VmRSS")} resident, {ProcStatus("VmHWM")} at the peak; "
                + $"{CompareBench.ThreadCpuSeconds("block compiler"):F1} CPU-s on the block compiler thread so far");
            sampler?.Print(25);
        }
        return 0;
    }

    /// <summary>A field of /proc/self/status (for example "VmRSS: 123 kB"), or "?" where there is none.</summary>
    private static string ProcStatus(string field)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                {
                    return line[(field.Length + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }
        return "?";
    }

    /// <summary>
    /// Debian ships no real System.map (it is in the -dbg package), and the kernel randomizes its
    /// base; but a deterministic boot lays the kernel out the same way every time, so the guest's
    /// own /proc/kallsyms, read once at the prompt, names the addresses of every later boot.
    /// </summary>
    private static void SaveKallsyms(VirtualMachine vm, CompareBench.PromptWatch watch, string file)
    {
        var capture = new System.Text.StringBuilder();
        watch.Capture = capture;
        vm.Serial.EnqueueInput("cat /proc/kallsyms; echo END-OF-\"SYMS\"\r"u8.ToArray());
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromMinutes(5))
        {
            Thread.Sleep(200);
            lock (capture)
            {
                string text = capture.ToString();
                int end = text.IndexOf("\nEND-OF-SYMS", StringComparison.Ordinal);
                if (end >= 0)
                {
                    File.WriteAllText(file, text[..end].Replace("\r", "", StringComparison.Ordinal));
                    Console.WriteLine($"  saved the guest's kernel symbols to {file}; run again with --profile for names");
                    return;
                }
            }
        }
        Console.WriteLine("  could not read /proc/kallsyms from the guest within 5 minutes");
    }

    /// <summary>Kernel symbols (text only) from a kallsyms/System.map listing, sorted by address.</summary>
    private sealed class SystemMap(uint[] addresses, string[] names)
    {
        public static SystemMap Load(string file)
        {
            var list = new List<(uint, string)>();
            foreach (string line in File.ReadLines(file))
            {
                string[] f = line.Split(' ', '\t');
                if (f.Length >= 3 && f[1] is "t" or "T" && uint.TryParse(f[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out uint a))
                {
                    list.Add((a, f[2]));
                }
            }
            list.Sort((x, y) => x.Item1.CompareTo(y.Item1));
            return new SystemMap(list.Select(x => x.Item1).ToArray(), list.Select(x => x.Item2).ToArray());
        }

        public string Name(uint eip)
        {
            if (eip < 0xC000_0000u)
            {
                return "(below 0xC0000000: decompressor or user space)";
            }
            int i = Array.BinarySearch(addresses, eip);
            if (i < 0)
            {
                i = ~i - 1;
            }
            return i >= 0 ? names[i] : "(unknown)";
        }
    }

    private sealed class Sampler(SystemMap? map)
    {
        private readonly Dictionary<string, (int Samples, long Instructions)> _byName = new(StringComparer.Ordinal);
        private int _total;
        private long _totalInstructions;
        private Thread? _thread;

        public void Attach(VirtualMachine vm, CancellationToken stop)
        {
            _thread = new Thread(() =>
            {
                long lastCount = vm.InstructionCount;
                var clock = Stopwatch.StartNew();
                long nextTick = 0;
                while (!stop.IsCancellationRequested)
                {
                    nextTick += TimeSpan.TicksPerMillisecond;
                    while (clock.Elapsed.Ticks < nextTick)
                    {
                        Thread.SpinWait(50);
                    }
                    uint eip = vm.Cpu.Eip + vm.Cpu.GetSegment(SecureVmm.Tcb.Cpu.SegReg.Cs).Base;
                    long count = vm.InstructionCount;
                    string name = map is null ? $"page {eip >> 12 << 12:X8}" : map.Name(eip);
                    _byName.TryGetValue(name, out var v);
                    _byName[name] = (v.Samples + 1, v.Instructions + (count - lastCount));
                    _totalInstructions += count - lastCount;
                    lastCount = count;
                    _total++;
                }
            }) { IsBackground = true, Priority = ThreadPriority.AboveNormal };
            _thread.Start();
        }

        public void Print(int top)
        {
            _thread?.Join(); // its stop was signalled at the prompt; let it finish its last sample
            Console.WriteLine($"  {_total:N0} samples (1 ms apart); instructions are those retired since the previous sample");
            Console.WriteLine("  | kernel function | wall share | instructions | M instr/s there |");
            Console.WriteLine("  |---|---|---|---|");
            foreach (var (name, v) in _byName.OrderByDescending(kv => kv.Value.Samples).Take(top))
            {
                Console.WriteLine($"  | {name} | {100.0 * v.Samples / _total:F1}% | {100.0 * v.Instructions / Math.Max(1, _totalInstructions):F1}% | {v.Instructions / (v.Samples / 1000.0) / 1e6:F0} |");
            }
        }
    }
}
