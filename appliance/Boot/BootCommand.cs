using System.CommandLine;
using System.Globalization;
using SecureVmm.Appliance.Audit;
using SecureVmm.Policy.Keys;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Machine;

namespace SecureVmm.Appliance.Boot;

/// <summary>
/// `securevmm boot`: the dev-boot contract of DESIGN.md. Boots one kernel outside any policy:
/// a Multiboot v1 kernel, a Linux bzImage (32-bit boot protocol) or a flat binary.
/// </summary>
public static class BootCommand
{
    public const int ExitTripleFault = 3;
    public const int ExitAuditFailure = 4;
    public const int ExitReset = 6;
    public const int ExitVmmFault = 70;

    public static Command Build()
    {
        var kernel = new Option<FileInfo>("--kernel") { Description = "Kernel: Multiboot v1 ELF32 or a.out-kludge image, Linux bzImage, or flat binary", Required = true };
        var initrd = new Option<FileInfo?>("--initrd") { Description = "Initial ramdisk (Linux) or first module (Multiboot)" };
        var cmdline = new Option<string>("--cmdline") { Description = "Kernel command line", DefaultValueFactory = _ => "console=ttyS0" };
        var memory = new Option<int>("--memory") { Description = "Guest RAM in MiB (4-2047)", DefaultValueFactory = _ => 128 };
        var serial = new Option<string>("--serial") { Description = "Where COM1 goes: stdio, or a file to write", DefaultValueFactory = _ => "stdio" };
        var audit = new Option<FileInfo?>("--audit") { Description = "Write the audit log of every VM exit to this file (must not exist)" };
        var auditKey = new Option<FileInfo?>("--audit-key") { Description = "Secret key (from `securevmm keygen`) that signs the audit log's checkpoints" };
        var debugExit = new Option<bool>("--debug-exit") { Description = "Enable QEMU's isa-debug-exit at port 0xF4: writing V exits with status (V<<1)|1" };
        var unsigned = new Option<bool>("--unsigned") { Description = "Allow booting a kernel that is not a signed image (required for plain kernel files)" };
        var clock = new Option<ClockMode>("--clock") { Description = "Virtual clock: Deterministic (advances with instructions) or Realtime (paced to the host)", DefaultValueFactory = _ => ClockMode.Realtime };
        var timeout = new Option<double?>("--timeout") { Description = "Stop the VM after this many host seconds" };
        var load = new Option<string>("--load-address") { Description = "Flat binaries: guest-physical load address (hex with 0x)", DefaultValueFactory = _ => "0x100000" };

        var command = new Command("boot", "Boot one kernel outside any policy (development). Exit status: 0 power-off, (V<<1)|1 debug exit, 2 bad input, 3 triple fault, 4 audit failure, 6 reset request, 70 VMM fault.")
        {
            kernel, initrd, cmdline, memory, serial, audit, auditKey, debugExit, unsigned, clock, timeout, load,
        };
        command.SetAction(parse => Run(new BootOptions(
            parse.GetValue(kernel)!, parse.GetValue(initrd), parse.GetValue(cmdline) ?? "", parse.GetValue(memory),
            parse.GetValue(serial) ?? "stdio", parse.GetValue(audit), parse.GetValue(auditKey), parse.GetValue(debugExit), parse.GetValue(unsigned),
            parse.GetValue(clock), parse.GetValue(timeout), parse.GetValue(load) ?? "0x100000")));
        return command;
    }

    public sealed record BootOptions(FileInfo Kernel, FileInfo? Initrd, string CommandLine, int MemoryMiB, string Serial,
        FileInfo? Audit, FileInfo? AuditKey, bool DebugExit, bool Unsigned, ClockMode Clock, double? TimeoutSeconds, string LoadAddress);

    public static int Run(BootOptions options)
    {
        if (!options.Unsigned)
        {
            Console.Error.WriteLine($"securevmm boot: {options.Kernel.FullName} is a plain kernel, not a signed image; " +
                "dev boot of unsigned kernels needs --unsigned (signed images run through a policy)");
            return Cli.ExitUsage;
        }
        if (options.MemoryMiB is < 4 or > 2047)
        {
            Console.Error.WriteLine($"securevmm boot: --memory {options.MemoryMiB}: expected 4 to 2047 MiB");
            return Cli.ExitUsage;
        }
        if (!TryParseAddress(options.LoadAddress, out uint loadAddress))
        {
            Console.Error.WriteLine($"securevmm boot: --load-address {options.LoadAddress}: expected a hex address such as 0x100000");
            return Cli.ExitUsage;
        }
        byte[] kernel, initrd;
        try
        {
            kernel = File.ReadAllBytes(options.Kernel.FullName);
            initrd = options.Initrd is null ? [] : File.ReadAllBytes(options.Initrd.FullName);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"securevmm boot: cannot read {e.Message}");
            return Cli.ExitUsage;
        }

        IAuditSigner? signer = null;
        if (options.AuditKey is not null)
        {
            if (options.Audit is null)
            {
                Console.Error.WriteLine("securevmm boot: --audit-key needs --audit FILE");
                return Cli.ExitUsage;
            }
            try
            {
                signer = new Ed25519AuditSigner(KeyFiles.ReadSecret(options.AuditKey.FullName));
            }
            catch (KeyFileException e)
            {
                Console.Error.WriteLine($"securevmm boot: --audit-key: {e.Message}");
                return Cli.ExitUsage;
            }
        }

        FlushingSerialOutput? output = null;
        try
        {
            output = options.Serial == "stdio"
                ? new FlushingSerialOutput(Console.OpenStandardOutput())
                : new FlushingSerialOutput(new FileStream(options.Serial, FileMode.Create, FileAccess.Write, FileShare.Read));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"securevmm boot: --serial {options.Serial}: {e.Message}");
            return Cli.ExitUsage;
        }

        string vmName = Path.GetFileName(options.Kernel.FullName);
        AuditWriter? writer = null;
        if (options.Audit is not null)
        {
            try
            {
                writer = AuditWriter.Create(options.Audit.FullName, AuditLogHeader.Create([vmName]), new AuditWriterOptions { Signer = signer });
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or AuditLogException)
            {
                Console.Error.WriteLine($"securevmm boot: --audit {options.Audit.FullName}: {e.Message}");
                output.Dispose();
                return Cli.ExitUsage;
            }
        }

        using (output)
        {
            var config = new MachineConfig
            {
                Name = vmName,
                Recorder = writer is null ? null : new AuditRecorder(writer, 0),
                MemoryBytes = (long)options.MemoryMiB * 1024 * 1024,
                Clock = options.Clock,
                Serial = output,
                DebugExit = options.DebugExit,
                RtcStart = DateTimeOffset.UtcNow,
            };
            using var vm = new VirtualMachine(config);
            BootPlan plan;
            try
            {
                plan = Load(vm, kernel, initrd, options.CommandLine, loadAddress);
            }
            catch (BootImageException e)
            {
                Console.Error.WriteLine($"securevmm boot: {options.Kernel.FullName}: {e.Message}");
                writer?.Close();
                return Cli.ExitUsage;
            }
            writer?.Append(AuditRecord.Event(AuditKind.VmStart, 0, 0));
            vm.Boot(plan);
            if (options.Serial == "stdio")
            {
                StdinSerialInput.Start(vm.Serial, vm.RequestStop);
            }
            Console.CancelKeyPress += (_, e) =>
            {
                e.Cancel = true;
                vm.RequestStop();
            };
            vm.Start();
            if (options.TimeoutSeconds is double seconds)
            {
                if (!vm.WaitForExit(TimeSpan.FromSeconds(seconds)))
                {
                    vm.RequestStop();
                }
            }
            vm.WaitForExit(Timeout.InfiniteTimeSpan);
            output.Flush();
            MachineOutcome outcome = vm.Outcome;
            int status = StatusFor(outcome);
            Console.Error.WriteLine($"securevmm: {outcome.Message} ({vm.InstructionCount:N0} instructions, {vm.ExitCount:N0} exits, virtual time {vm.VirtualTimeNs / 1e9:F3} s)");
            if (writer is not null)
            {
                writer.Append(AuditRecord.VmStop(0, (ulong)vm.VirtualTimeNs, status, AuditRecorder.StopReasonFor(outcome.Reason)));
                if (!writer.Close())
                {
                    Console.Error.WriteLine($"securevmm: audit log failure (fail secure): {writer.FailureReason}");
                    return ExitAuditFailure;
                }
                Console.Error.WriteLine($"securevmm: audit log {options.Audit!.FullName}: {writer.LastSequence:N0} records");
            }
            return status;
        }
    }

    /// <summary>The process exit status for how a VM ended (DESIGN.md, exit status contract).</summary>
    public static int StatusFor(MachineOutcome outcome) => outcome.Reason switch
    {
        StopReason.PowerOff or StopReason.HostStop => Cli.ExitOk,
        StopReason.DebugExit => (int)((outcome.Value << 1) | 1),
        StopReason.TripleFault => ExitTripleFault,
        StopReason.AuditFailure => ExitAuditFailure,
        StopReason.Reset => ExitReset,
        _ => ExitVmmFault,
    };

    /// <summary>Loads a kernel by its format: bzImage, Multiboot, else a flat binary at <paramref name="loadAddress"/>.</summary>
    public static BootPlan Load(VirtualMachine vm, byte[] kernel, byte[] initrd, string commandLine, uint loadAddress)
    {
        return BootImageDetector.Detect(kernel) switch
        {
            BootImageKind.BzImage => BzImageLoader.Load(vm.Ram, kernel, commandLine, initrd),
            BootImageKind.Multiboot => MultibootLoader.Load(vm.Ram, kernel, commandLine,
                initrd.Length > 0 ? [new BootModule(initrd, "initrd")] : null),
            _ => FlatBinaryLoader.Load(vm.Ram, kernel, loadAddress, loadAddress, BootCpuMode.FlatProtected),
        };
    }

    private static bool TryParseAddress(string text, out uint value)
    {
        value = 0;
        return text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }
}
