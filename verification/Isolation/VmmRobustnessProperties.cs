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
/// programs, and random privileged operations (control registers, descriptor tables, selectors,
/// EFLAGS, software interrupts, scribbles over the VM's own RAM), never crash or hang the VMM: every run, bounded by an instruction budget and a
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

    /// <summary>One privileged or mode-changing operation with random operands (Intel SDM vol. 3, 2.5 and 2.4).</summary>
    private static void EmitPrivileged(Assembler a, int kind, uint value, uint table)
    {
        switch (kind)
        {
            case 0: a.mov(eax, value); a.mov(cr0, eax); break;            // paging/protection toggles, random bits
            case 1: a.mov(eax, value); a.mov(cr3, eax); break;            // random page-directory base
            case 2: a.mov(eax, value); a.mov(cr4, eax); break;            // PSE/PAE/... random bits
            case 3: a.mov(eax, GuestPrograms.ScratchBase); a.mov(__dword_ptr[GuestPrograms.ScratchBase], value);
                a.mov(__dword_ptr[GuestPrograms.ScratchBase + 4], table); a.lgdt(__fword_ptr[GuestPrograms.ScratchBase]); break;
            case 4: a.mov(__dword_ptr[GuestPrograms.ScratchBase], value);
                a.mov(__dword_ptr[GuestPrograms.ScratchBase + 4], table); a.lidt(__fword_ptr[GuestPrograms.ScratchBase]); break;
            case 5: a.mov(eax, value); a.mov(ds, ax); break;              // random selector
            case 6: a.mov(eax, value); a.mov(ss, ax); break;
            case 7: a.mov(eax, value); a.lldt(ax); break;
            case 8: a.mov(eax, value); a.ltr(ax); break;
            case 9: a.invlpg(__byte_ptr[value]); break;
            case 10: a.sti(); break;                                      // interrupts on: the PIT and stubs may run
            case 11: a.mov(eax, value); a.push(eax); a.popfd(); break;    // random EFLAGS (IOPL, VM, NT ...)
            case 12: a.@int((byte)value); break;
            default: a.mov(__dword_ptr[table & 0x3F_FFFC], value); break;  // scribble on RAM (page tables, GDT, code)
        }
    }

    [Fact]
    public void RandomPrivilegedOperationsNeverFaultTheVmm()
    {
        var op = Gen.Choose(0, 13).Zip(ArbMap.Default.GeneratorFor<uint>()).Zip(ArbMap.Default.GeneratorFor<uint>(),
            (kv, t) => (Kind: kv.Item1, Value: kv.Item2, Table: t));
        var programs = Gen.Choose(1, 12).SelectMany(n => Gen.ArrayOf(op, n));
        Prop.ForAll(Arb.From(programs), ops =>
        {
            GuestImage image = GuestBuilder.Build("priv", g =>
            {
                GuestRuntime.Prologue(g);
                foreach (var (kind, value, table) in ops)
                {
                    EmitPrivileged(g.A, kind, value, table);
                }
                g.A.cli();
                g.A.hlt();
                GuestRuntime.EmitLibrary(g);
            });
            AssertEndsCleanly(image, string.Join("; ", ops.Select(o => $"{o.Kind}:0x{o.Value:X}/0x{o.Table:X}")));
        }).Check(GuestPrograms.CaseConfig(300));
    }

    /// <summary>
    /// Random bytes executed in whatever mode a random prefix of a mode-switching program left the CPU: paging on
    /// over random tables, CPL 3, random GDT/LDT/IDT and segment registers, after real mode and back.
    /// </summary>
    [Fact]
    public void RandomBytesAfterModeSwitchesNeverFaultTheVmm()
    {
        var code = Gen.Choose(1, 48).SelectMany(n => Gen.ArrayOf(ArbMap.Default.GeneratorFor<byte>(), n));
        Prop.ForAll(Arb.From(ModePrograms.Programs(30)), Arb.From(code), Arb.From(Gen.Choose(1, 31)), (program, bytes, cut) =>
        {
            ModeProgram prefix = ModePrograms.Prefix(program, Math.Min(cut, program.Steps.Count));
            AssertEndsCleanly(ModePrograms.Build("modebytes", prefix, default, bytes), $"{prefix} then {Convert.ToHexString(bytes)}");
        }).Check(GuestPrograms.CaseConfig(400));
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
