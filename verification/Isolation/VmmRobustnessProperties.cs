using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Machine;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Verification.Isolation;

/// <summary>
/// Property 4, VMM robustness. Random bytes executed as code (after the runtime prologue, and
/// again after random far jumps into random selectors and offsets), and random straight-line
/// programs, never crash or hang the VMM: every run, bounded by an instruction budget and a
/// wall-clock limit, ends with the VM stopped and an outcome other than VmmFault (no .NET
/// exception escaped the CPU or a device). Does not show: that the guest-visible result of each
/// random instruction is architecturally correct (CpuProperties and the CPU tests cover semantics).
/// </summary>
public class VmmRobustnessProperties
{
    private const long Budget = 200_000;

    private static void AssertEndsCleanly(GuestImage image, string what)
    {
        using var vm = GuestPrograms.Create(image, new TraceRecorder(), "r");
        Assert.True(GuestPrograms.RunBounded(vm, Budget, TimeSpan.FromSeconds(5)), $"the VMM hung on {what}");
        Assert.True(vm.Outcome.Reason != StopReason.VmmFault, $"{vm.Outcome.Message} on {what}");
        Assert.True(vm.Outcome.Reason != StopReason.None, $"no outcome on {what}");
    }

    [Fact]
    public void RandomBytesAsCodeNeverFaultTheVmm()
    {
        var code = Gen.Choose(1, 64).SelectMany(n => Gen.ArrayOf(ArbMap.Default.GeneratorFor<byte>(), n));
        Prop.ForAll(Arb.From(code), bytes =>
        {
            GuestImage image = GuestBuilder.Build("bytes", g =>
            {
                GuestRuntime.Prologue(g);
                g.A.db(bytes);
                g.A.cli();
                g.A.hlt();
                GuestRuntime.EmitLibrary(g);
            });
            AssertEndsCleanly(image, Convert.ToHexString(bytes));
        }).Check(GuestPrograms.CaseConfig(500));
    }

    [Fact]
    public void RandomFarJumpsNeverFaultTheVmm()
    {
        var targets = ArbMap.Default.GeneratorFor<ushort>().Zip(
            Gen.OneOf(ArbMap.Default.GeneratorFor<uint>(), Gen.Choose(0, 0x40_0000).Select(v => (uint)v)));
        var bytes = Gen.Choose(0, 32).SelectMany(n => Gen.ArrayOf(ArbMap.Default.GeneratorFor<byte>(), n));
        Prop.ForAll(Arb.From(targets), Arb.From(bytes), (target, tail) =>
        {
            GuestImage image = GuestBuilder.Build("farjmp", g =>
            {
                GuestRuntime.Prologue(g);
                Assembler a = g.A;
                // jmp ptr16:32 (EA cd / EA cp, Intel SDM vol. 2A, JMP): emitted as bytes for a raw selector.
                a.db(0xEA);
                a.dd(target.Item2);
                a.dw(target.Item1);
                a.db(tail);
                a.cli();
                a.hlt();
                GuestRuntime.EmitLibrary(g);
            });
            AssertEndsCleanly(image, $"jmp far 0x{target.Item1:X}:0x{target.Item2:X} then {Convert.ToHexString(tail)}");
        }).Check(GuestPrograms.CaseConfig(200));
    }

    [Fact]
    public void RandomProgramsWithoutTheGpHandlerEndInADocumentedWay()
    {
        Prop.ForAll(Arb.From(GuestPrograms.Programs()), ops =>
        {
            // The same programs, but a faulting RDMSR/WRMSR reaches the runtime's stub: a debug exit.
            AssertEndsCleanly(GuestPrograms.Build("p", ops), string.Join("; ", ops));
        }).Check(GuestPrograms.CaseConfig(100));
    }
}
