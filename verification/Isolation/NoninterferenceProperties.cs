using System.Security.Cryptography;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Machine;
using Xunit;

namespace SecureVmm.Verification.Isolation;

/// <summary>
/// Property 2, noninterference. In deterministic mode, VM A's complete exit trace (kind, port,
/// address, size, value, instruction count, EIP) its final registers and its whole RAM are identical whether VM B
/// runs program P1 with secret S1 or program P2 with secret S2 concurrently on its own thread.
/// Shows: nothing B does or holds reaches A's architectural state or A's exits.
/// Does not show: the absence of timing channels (deterministic mode hides wall time from the guest
/// by construction; realtime mode is not covered).
/// </summary>
public class NoninterferenceProperties
{
    private static (List<ExitTraceEntry> Trace, uint[] Registers, byte[] RamHash, StopReason Reason) RunBeside(
        SecureVmm.Policy.Guests.GuestImage a, SecureVmm.Policy.Guests.GuestImage b, byte[] secret)
    {
        var trace = new TraceRecorder();
        using var vmA = GuestPrograms.Create(a, trace, "a");
        using var vmB = GuestPrograms.Create(b, new TraceRecorder(), "b");
        secret.CopyTo(vmB.Ram.Span[(int)GuestPrograms.ScratchBase..]);
        var runB = new Thread(() => GuestPrograms.RunBounded(vmB, 1_000_000, TimeSpan.FromSeconds(20)));
        runB.Start();
        Assert.True(GuestPrograms.RunBounded(vmA, 1_000_000, TimeSpan.FromSeconds(20)), "VM A did not stop");
        runB.Join();
        return (trace.Exits, GuestPrograms.Registers(vmA), SHA256.HashData(vmA.Ram.Span), vmA.Outcome.Reason);
    }

    /// <summary>A's two runs beside different B's: same stop reason, registers, RAM and exit trace.</summary>
    private static void AssertSameRun(
        (List<ExitTraceEntry> Trace, uint[] Registers, byte[] RamHash, StopReason Reason) first,
        (List<ExitTraceEntry> Trace, uint[] Registers, byte[] RamHash, StopReason Reason) second)
    {
        Assert.Equal(first.Reason, second.Reason);
        Assert.Equal(first.Registers, second.Registers);
        Assert.Equal(first.RamHash, second.RamHash);
        Assert.Equal(first.Trace.Count, second.Trace.Count);
        for (int i = 0; i < first.Trace.Count; i++)
        {
            Assert.True(first.Trace[i] == second.Trace[i], $"exit {i}: {first.Trace[i]} vs {second.Trace[i]}");
        }
    }

    [Fact]
    public void VmATraceAndFinalStateDoNotDependOnVmB()
    {
        var programs = GuestPrograms.Programs(30);
        Prop.ForAll(Arb.From(programs), Arb.From(programs), Arb.From(programs), (pa, p1, p2) =>
        {
            var a = GuestPrograms.Build("a", pa);
            var s1 = RandomNumberGenerator.GetBytes((int)GuestPrograms.ScratchSize);
            var s2 = RandomNumberGenerator.GetBytes((int)GuestPrograms.ScratchSize);
            var first = RunBeside(a, GuestPrograms.Build("b1", p1, s1.AsSpan(0, 4096)), s1);
            var second = RunBeside(a, GuestPrograms.Build("b2", p2, s2.AsSpan(0, 4096)), s2);
            Assert.Equal(StopReason.PowerOff, first.Reason);
            AssertSameRun(first, second);
        }).Check(GuestPrograms.CaseConfig(60));
    }

    /// <summary>The same with mode-switching programs on both sides (<see cref="ModePrograms"/>): A's paging,
    /// ring changes and descriptor tables, and B's, do not let B's program or secret reach A.</summary>
    [Fact]
    public void VmATraceAndFinalStateDoNotDependOnVmBUnderModeSwitches()
    {
        var programs = ModePrograms.Programs(30);
        Prop.ForAll(Arb.From(programs), Arb.From(programs), Arb.From(programs), (pa, p1, p2) =>
        {
            var a = ModePrograms.Build("a", pa);
            var s1 = RandomNumberGenerator.GetBytes((int)GuestPrograms.ScratchSize);
            var s2 = RandomNumberGenerator.GetBytes((int)GuestPrograms.ScratchSize);
            var first = RunBeside(a, ModePrograms.Build("b1", p1, s1.AsSpan(0, 4096)), s1);
            var second = RunBeside(a, ModePrograms.Build("b2", p2, s2.AsSpan(0, 4096)), s2);
            Assert.True(first.Reason == StopReason.PowerOff, $"{first.Reason}\n{ModePrograms.Describe(pa)}");
            AssertSameRun(first, second);
        }).Check(GuestPrograms.CaseConfig(60));
    }
}
