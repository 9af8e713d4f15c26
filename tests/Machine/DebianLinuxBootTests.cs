using System.Text;
using SecureVmm.Appliance.Guests;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;
using SecureVmm.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Machine;

/// <summary>
/// The real guest: Debian 12's unmodified i386 kernel (linux-image-686) with a busybox initramfs,
/// fetched by guests-policy/guests/debian/fetch.sh (CI runs it). Boots to the shell prompt on the
/// serial console, runs commands, powers off.
/// </summary>
[Collection("Debian guest")]
public class DebianLinuxBootTests(ITestOutputHelper output)
{
    public const string Prompt = "securevmm# ";

    /// <summary>Serial output that notes the guest instruction count at which a marker first appears.</summary>
    internal sealed class WatchingSerial(string marker) : ISerialOutput
    {
        private readonly StringBuilder _text = new();
        private readonly Lock _lock = new();
        public VirtualMachine? Vm;
        public long MarkerAtInstruction = -1;

        public void Transmit(byte value)
        {
            lock (_lock)
            {
                _text.Append((char)value);
                if (MarkerAtInstruction < 0 && value == (byte)marker[^1] && _text.Length >= marker.Length
                    && _text.ToString(_text.Length - marker.Length, marker.Length) == marker)
                {
                    MarkerAtInstruction = Vm?.InstructionCount ?? 0;
                }
            }
        }

        public string Text
        {
            get
            {
                lock (_lock)
                {
                    return _text.ToString();
                }
            }
        }

        public int Length
        {
            get
            {
                lock (_lock)
                {
                    return _text.Length;
                }
            }
        }
    }

    internal static (byte[] Kernel, byte[] Initrd)? Guest(ITestOutputHelper output)
    {
        string cache = GuestCommand.DefaultDebianCache;
        if (!File.Exists(Path.Combine(cache, "vmlinuz")) || !File.Exists(Path.Combine(cache, "busybox")))
        {
            string reason = $"NOT RUN: the Debian guest is not in {cache}; run guests-policy/guests/debian/fetch.sh (.ci/run does)";
            output.WriteLine(reason);
            if (HostTools.InCi)
            {
                Assert.Fail(reason);
            }
            return null;
        }
        return (File.ReadAllBytes(Path.Combine(cache, "vmlinuz")), GuestCommand.BuildDebianInitramfs(cache));
    }

    internal static VirtualMachine Boot(byte[] kernel, byte[] initrd, string cmdline, ISerialOutput serial)
    {
        var vm = new VirtualMachine(new MachineConfig
        {
            Name = "debian",
            MemoryBytes = 256L << 20,
            Clock = ClockMode.Deterministic,
            Serial = serial,
            RtcStart = new DateTimeOffset(2026, 11, 21, 12, 0, 0, TimeSpan.Zero),
        });
        vm.Boot(BzImageLoader.Load(vm.Ram, kernel, cmdline, initrd));
        return vm;
    }

    private static bool WaitFor(Func<bool> condition, VirtualMachine vm, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline || !vm.IsRunning)
            {
                return condition();
            }
            Thread.Sleep(20);
        }
        return true;
    }

    private static string RunCommand(WatchingSerial serial, VirtualMachine vm, string command, TimeSpan timeout)
    {
        int start = serial.Length;
        vm.Serial.EnqueueInput(Encoding.ASCII.GetBytes(command + "\r"));
        Assert.True(WaitFor(() => serial.Text[start..].Contains(Prompt, StringComparison.Ordinal), vm, timeout),
            $"no prompt after '{command}': {serial.Text[start..]}");
        return serial.Text[start..];
    }

    [Fact]
    public void BootsToABusyboxShellRunsCommandsAndPowersOff()
    {
        if (Guest(output) is not var (kernel, initrd))
        {
            return;
        }
        var serial = new WatchingSerial(Prompt);
        using var vm = Boot(kernel, initrd, "console=ttyS0 quiet", serial);
        serial.Vm = vm;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        vm.Start();
        bool prompted = WaitFor(() => serial.MarkerAtInstruction >= 0, vm, TimeSpan.FromMinutes(8));
        output.WriteLine($"prompt after {clock.Elapsed.TotalSeconds:F1} s wall, {serial.MarkerAtInstruction:N0} instructions, virtual {vm.VirtualTimeNs / 1e9:F2} s");
        Assert.True(prompted, $"no shell prompt; outcome {vm.Outcome}; serial:\n{serial.Text}");
        Thread.Sleep(500); // let the shell settle at its prompt before typing

        string uname = RunCommand(serial, vm, "uname -a", TimeSpan.FromMinutes(2));
        output.WriteLine(uname);
        Assert.Contains("Linux securevmm-debian 6.1.0", uname, StringComparison.Ordinal);
        Assert.Contains("i686", uname, StringComparison.Ordinal);

        string cpuinfo = RunCommand(serial, vm, "cat /proc/cpuinfo", TimeSpan.FromMinutes(2));
        output.WriteLine(cpuinfo);
        Assert.Contains("vendor_id", cpuinfo, StringComparison.Ordinal);
        Assert.Contains("GenuineIntel", cpuinfo, StringComparison.Ordinal);
        Assert.Contains("cpu family\t: 6", cpuinfo, StringComparison.Ordinal);
        Assert.Contains(" fpu ", cpuinfo, StringComparison.Ordinal);
        Assert.DoesNotContain(" pae ", cpuinfo, StringComparison.Ordinal);

        string proc = RunCommand(serial, vm, "ls /proc", TimeSpan.FromMinutes(2));
        Assert.Contains("cpuinfo", proc, StringComparison.Ordinal);
        Assert.Contains("meminfo", proc, StringComparison.Ordinal);
        Assert.Contains("uptime", proc, StringComparison.Ordinal);

        string dmesg = RunCommand(serial, vm, "dmesg | tail", TimeSpan.FromMinutes(2));
        output.WriteLine(dmesg);
        Assert.Matches(@"\[\s*\d+\.\d{6}\]", dmesg);

        vm.Serial.EnqueueInput("poweroff -f\r"u8);
        Assert.True(vm.WaitForExit(TimeSpan.FromMinutes(2)), "the guest did not power off");
        output.WriteLine($"outcome: {vm.Outcome}; {vm.InstructionCount:N0} instructions, {vm.ExitCount:N0} exits, {clock.Elapsed.TotalSeconds:F1} s wall");
        Assert.Equal(StopReason.PowerOff, vm.Outcome.Reason);
    }
}

/// <summary>
/// Deterministic mode and the audit log on the real guest: two boots reach the shell prompt after
/// exactly the same number of guest instructions (the second with the audit log attached, so
/// recording does not perturb the guest), and the second boot's log verifies and holds exactly
/// the port accesses the guest made.
/// </summary>
[Collection("Debian guest")]
public class DebianLinuxDeterminismTests(ITestOutputHelper output)
{
    private sealed class CountingRecorder(IExitRecorder inner) : IExitRecorder
    {
        public readonly Dictionary<(Tcb.Exits.ExitKind, ushort), long> Ports = [];
        public bool TryRecord(in Tcb.Exits.VmExit exit, long virtualTimeNs)
        {
            if (exit.Kind is Tcb.Exits.ExitKind.IoIn or Tcb.Exits.ExitKind.IoOut)
            {
                var key = (exit.Kind, exit.Port);
                Ports[key] = Ports.GetValueOrDefault(key) + 1;
            }
            return inner.TryRecord(in exit, virtualTimeNs);
        }
        public string? FailureReason => inner.FailureReason;
    }

    private long BootToPrompt(byte[] kernel, byte[] initrd, IExitRecorder? recorder)
    {
        var serial = new DebianLinuxBootTests.WatchingSerial(DebianLinuxBootTests.Prompt);
        using var vm = new VirtualMachine(new MachineConfig
        {
            Name = "debian", MemoryBytes = 256L << 20, Clock = ClockMode.Deterministic, Serial = serial,
            RtcStart = new DateTimeOffset(2026, 11, 21, 12, 0, 0, TimeSpan.Zero), Recorder = recorder,
        });
        serial.Vm = vm;
        vm.Boot(BzImageLoader.Load(vm.Ram, kernel, "console=ttyS0 quiet", initrd));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        vm.Start();
        var deadline = DateTime.UtcNow.AddMinutes(8);
        while (serial.MarkerAtInstruction < 0 && vm.IsRunning && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(20);
        }
        vm.RequestStop();
        vm.WaitForExit(TimeSpan.FromMinutes(1));
        output.WriteLine($"prompt at {serial.MarkerAtInstruction:N0} instructions ({clock.Elapsed.TotalSeconds:F1} s wall, {vm.ExitCount:N0} exits, {vm.Cpu.CompiledBlocks:N0} blocks compiled)");
        Assert.True(serial.MarkerAtInstruction > 0, $"no prompt: {vm.Outcome}\n{serial.Text}");
        // A real kernel's hot code compiles, and every block of it compiles cleanly.
        Assert.True(vm.Cpu.CompiledBlocks > 100, $"only {vm.Cpu.CompiledBlocks} blocks compiled");
        Assert.Equal(0, vm.Cpu.CompileFailures);
        return serial.MarkerAtInstruction;
    }

    [Fact]
    public void TwoBootsReachThePromptAfterTheSameInstructionCountAndTheAuditLogMatches()
    {
        if (DebianLinuxBootTests.Guest(output) is not var (kernel, initrd))
        {
            return;
        }
        long first = BootToPrompt(kernel, initrd, null);

        string dir = Directory.CreateTempSubdirectory("svmm-linux-audit").FullName;
        try
        {
            string log = Path.Combine(dir, "linux.audit");
            var writer = Tcb.Audit.AuditWriter.Create(log, Tcb.Audit.AuditLogHeader.Create(["debian"]), new Tcb.Audit.AuditWriterOptions());
            var counting = new CountingRecorder(new AuditRecorder(writer, 0));
            long second = BootToPrompt(kernel, initrd, counting);
            Assert.True(writer.Close(), writer.FailureReason);
            Assert.Equal(first, second);

            var fromLog = new Dictionary<(Tcb.Exits.ExitKind, ushort), long>();
            var result = Tcb.Audit.AuditLogVerifier.VerifyFile(log, null, (in Tcb.Audit.AuditRecord r) =>
            {
                if (r.Kind is Tcb.Audit.AuditKind.IoIn or Tcb.Audit.AuditKind.IoOut)
                {
                    var key = ((Tcb.Exits.ExitKind)r.Kind, r.Port);
                    fromLog[key] = fromLog.GetValueOrDefault(key) + 1;
                }
            });
            Assert.True(result.Ok, result.Problem?.ToString());
            output.WriteLine($"audit log: {result.Records:N0} records, {new FileInfo(log).Length:N0} bytes; ports: " +
                string.Join(", ", fromLog.OrderByDescending(p => p.Value).Take(8).Select(p => $"{p.Key.Item1} 0x{p.Key.Item2:X}={p.Value}")));
            Assert.Equal(counting.Ports.OrderBy(p => p.Key).ToList(), fromLog.OrderBy(p => p.Key).ToList());
            Assert.True(fromLog.GetValueOrDefault((Tcb.Exits.ExitKind.IoOut, (ushort)0x3F8)) > 100, "the guest's console output is in the log");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}

/// <summary>With console=tty0 the kernel log appears on the VGA text screen (read through the screen API).</summary>
[Collection("Debian guest")]
public class DebianLinuxVgaConsoleTests(ITestOutputHelper output)
{
    [Fact]
    public void KernelLogAppearsOnTheVgaTextScreen()
    {
        if (DebianLinuxBootTests.Guest(output) is not var (kernel, initrd))
        {
            return;
        }
        using var vm = DebianLinuxBootTests.Boot(kernel, initrd, "console=tty0", new BufferSerialOutput());
        vm.Start();
        var deadline = DateTime.UtcNow.AddMinutes(8);
        string screen = "";
        while (vm.IsRunning && DateTime.UtcNow < deadline)
        {
            screen = vm.Vga.Snapshot().Text;
            if (screen.Contains("Run /init as init process", StringComparison.Ordinal))
            {
                break;
            }
            Thread.Sleep(200);
        }
        vm.RequestStop();
        vm.WaitForExit(TimeSpan.FromMinutes(1));
        output.WriteLine(screen);
        Assert.Contains("Run /init as init process", screen, StringComparison.Ordinal);
        Assert.Matches(@"\[\s*\d+\.\d{6}\]", screen);
    }
}
