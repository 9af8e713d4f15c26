using Iced.Intel;
using SecureVmm.Tests.Support;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Machine;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Machine;

/// <summary>
/// Hostile guests against the machine and the dev-boot command: each ends with the documented
/// outcome and exit status, and the VMM stops cleanly.
/// </summary>
[Collection("PolicyConsole")]
public class HostileGuestTests
{
    private static GuestImage Guest(string name, Action<GuestBuilder> body) => GuestBuilder.Build(name, g =>
    {
        GuestRuntime.Prologue(g);
        body(g);
        GuestRuntime.EmitLibrary(g);
    });

    private static (MachineOutcome Outcome, VirtualMachine Vm, List<VmExit> Exits) Run(GuestImage image, long memory = 16L << 20)
    {
        var recorder = new ListRecorder();
        var vm = new VirtualMachine(new MachineConfig
        {
            Name = image.Name, MemoryBytes = memory, DebugExit = true, Recorder = recorder, Serial = new BufferSerialOutput(),
        });
        vm.Boot(MultibootLoader.Load(vm.Ram, image.Bytes, ""));
        vm.Start();
        Assert.True(vm.WaitForExit(TimeSpan.FromSeconds(60)), "the VM did not stop");
        return (vm.Outcome, vm, recorder.Exits);
    }

    internal sealed class ListRecorder : IExitRecorder
    {
        public readonly List<VmExit> Exits = [];
        public bool TryRecord(in VmExit exit, long virtualTimeNs)
        {
            Exits.Add(exit);
            return true;
        }
        public string? FailureReason => null;
    }

    public static GuestImage TripleFault() => Guest("triple-fault", g =>
    {
        // An IDT of limit 0: the #GP from INT 3 cannot be delivered, nor the #DF: shutdown (SDM vol. 3, 6.15).
        uint idtr = g.Data([0, 0, 0, 0, 0, 0]);
        g.A.lidt(__fword_ptr[idtr]);
        g.A.int3();
    });

    public static GuestImage ResetRequest() => Guest("reset", g => GuestRuntime.OutByte(g.A, 0x64, 0xFE));

    /// <summary>Writes 0 to every port except the debug-exit port and reads every port, then exits with 0x42.</summary>
    public static GuestImage EveryPort() => Guest("every-port", g =>
    {
        Assembler a = g.A;
        a.xor(edx, edx);
        Label loop = a.CreateLabel(), skip = a.CreateLabel();
        a.Label(ref loop);
        a.cmp(dx, 0xF4);
        a.je(skip);
        a.xor(eax, eax);
        a.@out(dx, al);
        a.@in(al, dx);
        a.Label(ref skip);
        a.inc(edx);
        a.cmp(edx, 0x10000);
        a.jb(loop);
        GuestRuntime.ExitAndHalt(g, 0x42);
    });

    /// <summary>Reads and writes far beyond RAM (paging off), then exits with the byte it read.</summary>
    public static GuestImage BeyondRam() => Guest("beyond-ram", g =>
    {
        Assembler a = g.A;
        a.mov(__dword_ptr[0xF000_0000], 0x1234_5678);
        a.mov(__dword_ptr[0xFFFF_FFF0], 0x1234_5678);
        a.mov(eax, __dword_ptr[0xF000_0000]);
        a.mov(ebx, __dword_ptr[0xFFFF_FFF0]);
        a.and(eax, ebx);
        a.@out(0xF4, al);
    });

    [Fact]
    public void TripleFaultEndsTheVmWithAShutdownExit()
    {
        var (outcome, vm, exits) = Run(TripleFault());
        using (vm)
        {
            Assert.Equal(StopReason.TripleFault, outcome.Reason);
            Assert.Equal(ExitKind.Shutdown, exits[^1].Kind);
        }
    }

    [Fact]
    public void ResetRequestEndsTheVmWithAResetExit()
    {
        var (outcome, vm, exits) = Run(ResetRequest());
        using (vm)
        {
            Assert.Equal(StopReason.Reset, outcome.Reason);
            Assert.Equal(ExitKind.Reset, exits[^1].Kind);
            Assert.Equal(ExitKind.IoOut, exits[^2].Kind);
            Assert.Equal(0x64, exits[^2].Port);
        }
    }

    [Fact]
    public void WritesAndReadsOfEveryPortAreRecordedAndHarmless()
    {
        var (outcome, vm, exits) = Run(EveryPort());
        using (vm)
        {
            // The write of 0 to 0xCF9 does not request a reset (bit 2 clear), nor does 0 to 0x64.
            Assert.Equal(StopReason.DebugExit, outcome.Reason);
            Assert.Equal(0x42u, outcome.Value);
            var outs = exits.Where(e => e.Kind == ExitKind.IoOut).Select(e => e.Port).ToHashSet();
            var ins = exits.Where(e => e.Kind == ExitKind.IoIn).Select(e => e.Port).ToHashSet();
            Assert.True(outs.Count >= 0xFFFF, $"{outs.Count} ports written");
            Assert.True(ins.Count >= 0xFFFF, $"{ins.Count} ports read");
        }
    }

    [Fact]
    public void AccessesBeyondRamReadAllOnesAndAreRecorded()
    {
        var (outcome, vm, exits) = Run(BeyondRam());
        using (vm)
        {
            Assert.Equal(StopReason.DebugExit, outcome.Reason);
            Assert.Equal(0xFFu, outcome.Value);
            Assert.Contains(exits, e => e.Kind == ExitKind.MmioWrite && e.Address == 0xF000_0000 && e.Value == 0x1234_5678);
            Assert.Contains(exits, e => e.Kind == ExitKind.MmioRead && e.Address == 0xFFFF_FFF0);
        }
    }

    private static int Boot(GuestImage image, params string[] extra)
    {
        string dir = Directory.CreateTempSubdirectory("svmm-boot").FullName;
        try
        {
            string kernel = Path.Combine(dir, "k.bin");
            File.WriteAllBytes(kernel, image.Bytes);
            return CliRunner.Run(["boot", "--kernel", kernel, "--serial", Path.Combine(dir, "serial.txt"), .. extra]).Status;
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void DevBootExitStatusesFollowTheContract()
    {
        Assert.Equal(1, Boot(ProjectGuests.Hello(), "--unsigned", "--debug-exit"));
        Assert.Equal(3, Boot(TripleFault(), "--unsigned"));
        Assert.Equal(6, Boot(ResetRequest(), "--unsigned"));
        Assert.Equal((0x42 << 1) | 1, Boot(EveryPort(), "--unsigned", "--debug-exit"));
        Assert.Equal(2, Boot(ProjectGuests.Hello(), "--debug-exit")); // plain kernel without --unsigned
        Assert.Equal(2, Boot(ProjectGuests.Hello(), "--unsigned", "--memory", "1"));
    }

    [Fact]
    public void DevBootWritesAnAuditLogThatVerifiesAndCountsWhatTheGuestDid()
    {
        string dir = Directory.CreateTempSubdirectory("svmm-audit").FullName;
        try
        {
            string log = Path.Combine(dir, "boot.audit");
            Assert.Equal(1, Boot(ProjectGuests.Hello(), "--unsigned", "--debug-exit", "--audit", log));
            var report = AuditLogVerifier.VerifyFile(log, null);
            Assert.True(report.Ok, report.Problem?.ToString());
            Assert.Equal(0, CliRunner.Run("audit", "verify", log).Status);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
