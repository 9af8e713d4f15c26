using System.Diagnostics;
using System.Globalization;
using System.Text;
using SecureVmm.Appliance.Guests;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;

namespace SecureVmm.Bench;

/// <summary>
/// SecureVmm side by side with QEMU's software emulator (TCG) on the same guests, in the same run:
/// runs alternate (SecureVmm, QEMU, SecureVmm, ...) so drift in the machine's load hits both, and
/// the table gives medians and the ratio of times SecureVmm/QEMU (above 1 = SecureVmm slower).
/// Run: <c>dotnet run -c Release --project bench -- compare [--runs N] [--no-linux]</c>.
/// </summary>
public static class CompareBench
{
    private const string QemuBinary = "qemu-system-i386";
    private const string LinuxPrompt = "securevmm# ";
    private const int WorkloadMemoryMiB = 32;

    public static int Run(string[] args)
    {
        if (args.Length == 2 && args[0] == "--memory-probe" && int.TryParse(args[1], out int probeMiB))
        {
            // Child-process half of the memory figure: a fresh process, so no earlier heap is handed back mid-measurement.
            var (m, p) = MemoryOverhead(probeMiB);
            Console.WriteLine($"{m} {p}");
            return 0;
        }
        int runs = 3;
        bool linux = true;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--runs" && i + 1 < args.Length && int.TryParse(args[i + 1], out int n) && n > 0)
            {
                runs = n;
                i++;
            }
            else if (args[i] == "--no-linux")
            {
                linux = false;
            }
            else
            {
                Console.Error.WriteLine($"compare: unknown argument '{args[i]}' (usage: compare [--runs N] [--no-linux])");
                return 2;
            }
        }

        string? qemu = FindOnPath(QemuBinary);
        Console.WriteLine($"SecureVmm vs QEMU TCG, {runs} alternating runs each, {Environment.ProcessorCount} host cores");
        Console.WriteLine(qemu is null ? $"QEMU rows skipped: {QemuBinary} is not on PATH" : $"QEMU: {qemu} ({QemuVersion(qemu)})");
        string temp = Directory.CreateTempSubdirectory("securevmm-compare-").FullName;
        try
        {
            // Memory first, while the process holds nothing else that a collection could give back.
            Console.WriteLine();
            Console.WriteLine("Host memory per VM beyond guest RAM (VM created, hello guest run, every RAM page touched):");
            foreach (int mib in new[] { 16, 64, 256 })
            {
                var (managed, privateBytes) = MemoryOverhead(mib);
                string fresh = MemoryInFreshProcess(mib);
                Console.WriteLine($"  {mib,4} MiB guest RAM: managed heap +{managed / 1048576.0:F2} MiB beyond RAM, process private bytes {privateBytes / 1048576.0:+0.00;-0.00} MiB beyond RAM; {fresh}");
            }
            var workloads = new (string Name, GuestImage Image)[]
            {
                ("integer workload", CompareGuests.Integer(3000)),
                ("paging workload (CR3 + INVLPG)", CompareGuests.Paging(25_000)),
                ("I/O-exit workload (OUT to unclaimed port)", CompareGuests.PortIo(2_000_000)),
            };
            // Warm-up (JIT, decoded-block cache code paths) on short versions, not timed.
            RunInProcess(CompareGuests.Integer(10), null);
            RunInProcess(CompareGuests.Paging(100), null);
            RunInProcess(CompareGuests.PortIo(10_000), null);
            double integerSpan = 0;
            // QEMU's time is its whole process; its start-up (the hello guest's whole process, a
            // few thousand guest instructions) is measured too so the table can also give its work span.
            GuestImage startupGuest = ProjectGuests.Hello();
            string startupFile = Path.Combine(temp, "startup-hello.elf");
            File.WriteAllBytes(startupFile, startupGuest.Bytes);
            var qemuStartup = new List<double>();
            for (int r = 0; qemu is not null && r < runs; r++)
            {
                qemuStartup.Add(RunQemuToExit(qemu, startupFile));
            }
            double qemuStartupMedian = Median(qemuStartup);
            if (qemu is not null)
            {
                Console.WriteLine($"QEMU start-up to exit on the hello guest (subtracted for the work-span ratio): {qemuStartupMedian:F3} s");
            }
            Console.WriteLine();
            Console.WriteLine($"| workload | SecureVmm median (s) | QEMU median (s) | SecureVmm/QEMU time | SecureVmm/QEMU work span | SecureVmm guest instr/s | SecureVmm exits/s |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            foreach (var (name, image) in workloads)
            {
                string kernel = Path.Combine(temp, image.Name + ".elf");
                File.WriteAllBytes(kernel, image.Bytes);
                var ours = new List<double>();
                var theirs = new List<double>();
                long instructions = 0, exits = 0;
                for (int r = 0; r < runs; r++)
                {
                    var (seconds, instr, ex) = RunInProcess(image, recorder: null);
                    ours.Add(seconds);
                    instructions = instr;
                    exits = ex;
                    if (qemu is not null)
                    {
                        theirs.Add(RunQemuToExit(qemu, kernel));
                    }
                }
                double m = Median(ours);
                integerSpan = integerSpan == 0 ? m : integerSpan;
                Console.WriteLine($"| {name} | {m:F3} | {QemuCell(theirs)} | {RatioCell(m, theirs)} | {WorkSpanRatioCell(m, theirs, qemuStartupMedian)} | {instructions / m / 1e6:F1} M | {exits / m:N0} |");
            }

            Console.WriteLine();
            Console.WriteLine("Exits/s with the audit log on and off (I/O-exit workload, SecureVmm in-process):");
            var io = workloads[2].Image;
            var off = new List<double>();
            var on = new List<double>();
            long ioExits = 0;
            for (int r = 0; r < runs; r++)
            {
                var (s, _, ex) = RunInProcess(io, recorder: null);
                off.Add(ex / s);
                string log = Path.Combine(temp, $"audit-{r}.log");
                using (var writer = AuditWriter.Create(log, AuditLogHeader.Create([io.Name]), new AuditWriterOptions()))
                {
                    var (s2, _, ex2) = RunInProcess(io, new AuditRecorder(writer, 0));
                    on.Add(ex2 / s2);
                    ioExits = ex2;
                }
                File.Delete(log);
            }
            Console.WriteLine($"  audit off: {Median(off) / 1e6:F2} M exits/s; audit on: {Median(on) / 1e6:F2} M exits/s ({ioExits:N0} exits a run)");


            Console.WriteLine();
            Console.WriteLine("Process start-up (hello guest, wall time of whole processes):");
            GuestImage hello = ProjectGuests.Hello();
            string helloFile = Path.Combine(temp, "hello.elf");
            File.WriteAllBytes(helloFile, hello.Bytes);
            string[]? securevmm = SecureVmmCommand();
            if (securevmm is null)
            {
                Console.WriteLine("  securevmm rows skipped: the securevmm executable is not next to the benchmark");
            }
            var firstByte = new List<double>();
            var whole = new List<double>();
            var qemuWhole = new List<double>();
            var qemuFirstByte = new List<double>();
            for (int r = 0; r < runs; r++)
            {
                if (securevmm is not null)
                {
                    var (first, total) = TimeProcess(securevmm[0],
                        [.. securevmm[1..], "boot", "--kernel", helloFile, "--unsigned", "--debug-exit", "--serial", "stdio", "--memory", "32"], untilText: null);
                    firstByte.Add(first);
                    whole.Add(total);
                }
                if (qemu is not null)
                {
                    var (qf, qt) = TimeProcess(qemu, QemuArgs(helloFile), untilText: null);
                    qemuFirstByte.Add(qf);
                    qemuWhole.Add(qt);
                }
            }
            if (securevmm is not null)
            {
                Console.WriteLine($"  securevmm boot: first serial byte after {Median(firstByte) * 1000:F0} ms, whole process {Median(whole) * 1000:F0} ms");
                var integerWhole = new List<double>();
                for (int r = 0; r < runs; r++)
                {
                    integerWhole.Add(TimeProcess(securevmm[0], [.. securevmm[1..], "boot", "--kernel", Path.Combine(temp, "cmp-integer.elf"),
                        "--unsigned", "--debug-exit", "--serial", "stdio", "--memory", "32"], untilText: null).Total);
                }
                Console.WriteLine($"  securevmm boot of the integer workload: whole process {Median(integerWhole):F3} s (in-process span start to debug exit {integerSpan:F3} s)");
            }
            if (qemu is not null)
            {
                Console.WriteLine($"  qemu:           first serial byte after {Median(qemuFirstByte) * 1000:F0} ms, whole process {Median(qemuWhole) * 1000:F0} ms");
            }

            if (linux)
            {
                Console.WriteLine();
                LinuxBoot(qemu, temp, runs);
            }
            return 0;
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }

    /// <summary>Boots <paramref name="image"/> in-process and times VM start to the debug exit.</summary>
    private static (double Seconds, long Instructions, long Exits) RunInProcess(GuestImage image, IExitRecorder? recorder)
    {
        var serial = new BufferSerialOutput();
        using var vm = new VirtualMachine(new MachineConfig
        {
            Name = image.Name,
            MemoryBytes = WorkloadMemoryMiB << 20,
            Clock = ClockMode.Deterministic,
            Serial = serial,
            DebugExit = true,
            Recorder = recorder,
        });
        vm.Boot(MultibootLoader.Load(vm.Ram, image.Bytes, ""));
        var clock = Stopwatch.StartNew();
        MachineOutcome outcome = vm.RunToCompletion();
        clock.Stop();
        if (outcome.Reason != StopReason.DebugExit)
        {
            throw new InvalidOperationException($"{image.Name} did not reach its debug exit: {outcome}; serial: {serial.Text}");
        }
        return (clock.Elapsed.TotalSeconds, vm.InstructionCount, vm.ExitCount);
    }

    /// <summary>Managed-heap and private-bytes growth from creating, booting and running one VM, minus its guest RAM.</summary>
    private static (long Managed, long PrivateBytes) MemoryOverhead(int mib)
    {
        GuestImage hello = ProjectGuests.Hello();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long managedBefore = GC.GetTotalMemory(forceFullCollection: true);
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        long privateBefore = self.PrivateMemorySize64;
        var vm = new VirtualMachine(new MachineConfig
        {
            Name = "mem",
            MemoryBytes = (long)mib << 20,
            Serial = new BufferSerialOutput(),
            DebugExit = true,
        });
        vm.Boot(MultibootLoader.Load(vm.Ram, hello.Bytes, ""));
        vm.RunToCompletion();
        // Touch every page of guest RAM so private bytes count all of it, as a long-running guest would.
        vm.Ram.Span.Fill(0x5A);
        long managedAfter = GC.GetTotalMemory(forceFullCollection: true);
        self.Refresh();
        long privateAfter = self.PrivateMemorySize64;
        long ram = (long)mib << 20;
        GC.KeepAlive(vm);
        vm.Dispose();
        return (managedAfter - managedBefore - ram, privateAfter - privateBefore - ram);
    }

    /// <summary>The same measurement as the first VM of a fresh benchmark process (managed and private bytes beyond RAM).</summary>
    private static string MemoryInFreshProcess(int mib)
    {
        string? self = Environment.ProcessPath;
        string dll = typeof(CompareBench).Assembly.Location;
        if (self is null)
        {
            return "fresh process: skipped (no process path)";
        }
        var info = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            info.ArgumentList.Add(dll);
        }
        foreach (string a in new[] { "compare", "--memory-probe", mib.ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            info.ArgumentList.Add(a);
        }
        using var p = Process.Start(info);
        string line = p?.StandardOutput.ReadToEnd().Trim() ?? "";
        p?.WaitForExit();
        string[] parts = line.Split(' ');
        return parts.Length == 2 && long.TryParse(parts[0], out long m) && long.TryParse(parts[1], out long pb)
            ? $"fresh process: managed +{m / 1048576.0:F2} MiB, private bytes {pb / 1048576.0:+0.00;-0.00} MiB"
            : $"fresh process: no figure ({line})";
    }

    private static void LinuxBoot(string? qemu, string temp, int runs)
    {
        string cache = GuestCommand.DefaultDebianCache;
        if (!File.Exists(Path.Combine(cache, "vmlinuz")) || !File.Exists(Path.Combine(cache, "busybox")))
        {
            Console.WriteLine($"Debian boot skipped: the Debian guest is not in {cache} (run guests-policy/guests/debian/fetch.sh)");
            return;
        }
        byte[] kernel = File.ReadAllBytes(Path.Combine(cache, "vmlinuz"));
        byte[] initrd = GuestCommand.BuildDebianInitramfs(cache);
        string initrdFile = Path.Combine(temp, "initramfs.cpio");
        File.WriteAllBytes(initrdFile, initrd);
        var ours = new List<double>();
        var theirs = new List<double>();
        long instructions = 0;
        for (int r = 0; r < runs; r++)
        {
            var (seconds, instr, _) = LinuxInProcess(kernel, initrd);
            ours.Add(seconds);
            instructions = instr;
            Console.WriteLine($"  run {r + 1}: SecureVmm {seconds:F1} s");
            if (qemu is not null)
            {
                string[] qargs = ["-accel", "tcg", "-display", "none", "-serial", "stdio", "-m", "256",
                    "-kernel", Path.Combine(cache, "vmlinuz"), "-initrd", initrdFile, "-append", "console=ttyS0 quiet"];
                var (_, total) = TimeProcess(qemu, qargs, LinuxPrompt);
                theirs.Add(total);
                Console.WriteLine($"  run {r + 1}: QEMU {total:F1} s");
            }
        }
        double m = Median(ours);
        Console.WriteLine("| workload | SecureVmm median (s) | QEMU median (s) | SecureVmm/QEMU time | SecureVmm guest instr/s |");
        Console.WriteLine("|---|---|---|---|---|");
        Console.WriteLine($"| Debian 12 i386 boot to the shell prompt | {m:F1} | {QemuCell(theirs)} | {RatioCell(m, theirs)} | {instructions / m / 1e6:F1} M |");
    }

    /// <summary>
    /// CPU seconds (user + system) a thread of this process named <paramref name="name"/> has used
    /// (Linux /proc; NaN elsewhere). The VM thread's own time is a steadier figure than wall time
    /// on a shared host, and it leaves out the background block compiler.
    /// </summary>
    internal static double ThreadCpuSeconds(string name)
    {
        try
        {
            foreach (string task in Directory.GetDirectories("/proc/self/task"))
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).Trim() != name)
                {
                    continue;
                }
                // Fields after the parenthesized name: state is field 3, utime 14 and stime 15.
                string stat = File.ReadAllText(Path.Combine(task, "stat"));
                string[] f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                return (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) / 100.0;
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return double.NaN;
    }

    /// <summary>Boots the Debian kernel in-process and times VM start to the prompt on the serial port.</summary>
    internal static (double Seconds, long Instructions, double VmThreadCpu) LinuxInProcess(byte[] kernel, byte[] initrd,
        Action<VirtualMachine, CancellationToken>? observe = null, Action<VirtualMachine, PromptWatch>? afterPrompt = null,
        int? compileThreshold = null)
    {
        var serial = new PromptWatch(LinuxPrompt);
        using var vm = new VirtualMachine(new MachineConfig
        {
            Name = "debian",
            MemoryBytes = 256L << 20,
            Clock = ClockMode.Deterministic,
            Serial = serial,
            RtcStart = new DateTimeOffset(2026, 11, 21, 12, 0, 0, TimeSpan.Zero),
        });
        vm.Boot(BzImageLoader.Load(vm.Ram, kernel, "console=ttyS0 quiet", initrd));
        if (compileThreshold is { } threshold)
        {
            vm.Cpu.CompileThreshold = threshold;
        }
        serial.Counter = () => vm.InstructionCount;
        var clock = Stopwatch.StartNew();
        using var stopObserving = new CancellationTokenSource();
        vm.Start();
        observe?.Invoke(vm, stopObserving.Token);
        bool seen = serial.Seen.Wait(TimeSpan.FromMinutes(10));
        stopObserving.Cancel();
        double seconds = clock.Elapsed.TotalSeconds;
        double vmThreadCpu = ThreadCpuSeconds("vm:debian");
        long instructions = serial.SeenAtInstruction;
        if (seen)
        {
            afterPrompt?.Invoke(vm, serial);
        }
        vm.RequestStop();
        vm.WaitForExit(TimeSpan.FromMinutes(1));
        if (!seen)
        {
            throw new InvalidOperationException($"Debian did not reach its prompt: {vm.Outcome}");
        }
        return (seconds, instructions, vmThreadCpu);
    }

    internal sealed class PromptWatch(string marker) : ISerialOutput
    {
        private readonly StringBuilder _tail = new();
        public readonly ManualResetEventSlim Seen = new();

        /// <summary>When set, every byte from now on is also appended here (under its lock).</summary>
        public StringBuilder? Capture { get; set; }

        /// <summary>Reads the VM's instruction count (on the VM's thread, when the marker is seen).</summary>
        public Func<long>? Counter { get; set; }

        /// <summary>The instruction count at which the marker's last byte was sent: exact, unlike a read from another thread.</summary>
        public long SeenAtInstruction { get; private set; }

        public void Transmit(byte value)
        {
            if (Capture is { } capture)
            {
                lock (capture)
                {
                    capture.Append((char)value);
                }
            }
            _tail.Append((char)value);
            if (_tail.Length > 256)
            {
                _tail.Remove(0, 128);
            }
            if (!Seen.IsSet && _tail.ToString().EndsWith(marker, StringComparison.Ordinal))
            {
                SeenAtInstruction = Counter?.Invoke() ?? 0;
                Seen.Set();
            }
        }
    }

    private static string[] QemuArgs(string kernel) =>
        ["-accel", "tcg", "-display", "none", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", kernel];

    /// <summary>Runs QEMU on a Multiboot guest to its debug exit (process status (0 &lt;&lt; 1) | 1 = 1); whole-process wall time.</summary>
    private static double RunQemuToExit(string qemu, string kernel)
    {
        var (_, total) = TimeProcess(qemu, QemuArgs(kernel), untilText: null);
        return total;
    }

    /// <summary>
    /// Starts a process with stdout redirected and returns the time to its first stdout byte and
    /// either to its exit or (with <paramref name="untilText"/>) to that text on stdout, after which it is killed.
    /// </summary>
    private static (double FirstByte, double Total) TimeProcess(string file, string[] arguments, string? untilText)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in arguments)
        {
            info.ArgumentList.Add(a);
        }
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {file}");
        var stderr = process.StandardError.ReadToEndAsync();
        Stream stdout = process.StandardOutput.BaseStream;
        var seen = new StringBuilder();
        double first = -1;
        byte[] buffer = new byte[4096];
        int read;
        while ((read = stdout.Read(buffer, 0, buffer.Length)) > 0)
        {
            if (first < 0)
            {
                first = clock.Elapsed.TotalSeconds;
            }
            if (untilText is not null)
            {
                seen.Append(Encoding.Latin1.GetString(buffer, 0, read));
                if (seen.ToString().Contains(untilText, StringComparison.Ordinal))
                {
                    double at = clock.Elapsed.TotalSeconds;
                    process.Kill(entireProcessTree: true);
                    process.WaitForExit();
                    return (first, at);
                }
            }
        }
        process.WaitForExit();
        double total = clock.Elapsed.TotalSeconds;
        if (untilText is not null)
        {
            throw new InvalidOperationException($"{Path.GetFileName(file)} exited with {process.ExitCode} before printing '{untilText}': {stderr.Result}");
        }
        if (process.ExitCode != 1)
        {
            throw new InvalidOperationException($"{Path.GetFileName(file)} exited with {process.ExitCode}, expected 1 (debug exit 0): {stderr.Result}");
        }
        return (first, total);
    }

    /// <summary>The command that runs the securevmm CLI: its apphost next to this benchmark, else `dotnet securevmm.dll`.</summary>
    private static string[]? SecureVmmCommand()
    {
        string dir = AppContext.BaseDirectory;
        string host = Path.Combine(dir, OperatingSystem.IsWindows() ? "securevmm.exe" : "securevmm");
        if (File.Exists(host))
        {
            return [host];
        }
        string dll = Path.Combine(dir, "securevmm.dll");
        return File.Exists(dll) ? ["dotnet", dll] : null;
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    private static string QemuVersion(string qemu)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(qemu, "--version") { RedirectStandardOutput = true, UseShellExecute = false });
            string line = p?.StandardOutput.ReadLine() ?? "unknown version";
            p?.WaitForExit();
            return line.Trim();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"version unknown: {e.Message}";
        }
    }

    private static double Median(List<double> values)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }
        var sorted = values.Order().ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    private static string QemuCell(List<double> qemu) => qemu.Count == 0 ? "skipped (no qemu)" : $"{Median(qemu):F3}";

    private static string WorkSpanRatioCell(double ours, List<double> qemu, double qemuStartup)
    {
        if (qemu.Count == 0)
        {
            return "-";
        }
        double span = Median(qemu) - qemuStartup;
        return span <= 0.01 ? "QEMU span below 10 ms" : $"{ours / span:F2}x (QEMU {span:F3} s)";
    }

    private static string RatioCell(double ours, List<double> qemu) => qemu.Count == 0 ? "-" : $"{ours / Median(qemu):F2}x";
}
