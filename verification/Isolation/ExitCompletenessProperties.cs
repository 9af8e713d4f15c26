using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Machine;
using Xunit;

namespace SecureVmm.Verification.Isolation;

/// <summary>
/// Property 3, exit completeness. A random program's port I/O, MMIO, CPUID, RDMSR/WRMSR and final
/// HLT each yield exactly one exit, in program order, with the right kind, port or address, size
/// and written value; the audit log written through <see cref="AuditRecorder"/> holds exactly one
/// record per exit with the same fields (read back with AuditLogVerifier.VerifyFile and a visitor),
/// and its hash chain verifies. A triple fault yields one Shutdown record.
/// Does not show: that values returned by devices are correct (only that they are recorded as delivered).
/// </summary>
public class ExitCompletenessProperties
{
    private static (List<ExitTraceEntry> Tee, List<AuditRecord> Log, MachineOutcome Outcome) RunAudited(GuestImage image)
    {
        string dir = Directory.CreateTempSubdirectory("svmm-iso-audit").FullName;
        try
        {
            string path = Path.Combine(dir, "a.audit");
            var writer = AuditWriter.Create(path, AuditLogHeader.Create(["a"]), new AuditWriterOptions());
            var tee = new TraceRecorder(new AuditRecorder(writer, 0));
            MachineOutcome outcome;
            using (var vm = GuestPrograms.Create(image, tee, "a"))
            {
                Assert.True(GuestPrograms.RunBounded(vm, 1_000_000, TimeSpan.FromSeconds(20)), "VM did not stop");
                outcome = vm.Outcome;
            }
            Assert.True(writer.Close(), writer.FailureReason);
            var log = new List<AuditRecord>();
            AuditVerifyResult result = AuditLogVerifier.VerifyFile(path, null, (in AuditRecord r) => log.Add(r));
            Assert.True(result.Ok, result.Problem?.ToString());
            Assert.True(result.Closed, "log closed");
            return (tee.Exits, log, outcome);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static void AssertLogMatchesTee(List<ExitTraceEntry> tee, List<AuditRecord> log)
    {
        var exitRecords = log.Where(r => (byte)r.Kind is >= (byte)ExitKind.IoIn and <= (byte)ExitKind.DebugExit).ToList();
        Assert.Equal(tee.Count, exitRecords.Count);
        for (int i = 0; i < tee.Count; i++)
        {
            ExitTraceEntry e = tee[i];
            AuditRecord r = exitRecords[i];
            Assert.Equal((byte)e.Kind, (byte)r.Kind);
            Assert.Equal(e.Eip, r.Eip);
            // Deterministic clock at 1 ns per instruction and no idle time (interrupts stay off).
            Assert.Equal(e.InstructionCount, r.VirtualTimeNs);
            switch (e.Kind)
            {
                case ExitKind.IoIn or ExitKind.IoOut:
                    Assert.Equal((e.Port, e.Size, e.Value), (r.Port, r.Size, r.Value));
                    break;
                case ExitKind.MmioRead or ExitKind.MmioWrite:
                    Assert.Equal((e.Address, e.Size, e.Value), (r.Address, r.Size, r.Value));
                    break;
                case ExitKind.Rdmsr or ExitKind.Wrmsr:
                    Assert.Equal((e.Address, e.Value), (r.Address, r.Value));
                    break;
                default:
                    break;
            }
        }
        for (int i = 1; i < log.Count; i++)
        {
            Assert.True(log[i].Sequence > log[i - 1].Sequence, $"record {i}: sequence not increasing");
        }
    }

    [Fact]
    public void EveryExitOfARandomProgramIsOneRecordWithTheRightFields()
    {
        Prop.ForAll(Arb.From(GuestPrograms.Programs()), ops =>
        {
            GuestImage image = GuestPrograms.Build("a", ops, default, out uint start, out uint end);
            var (tee, log, outcome) = RunAudited(image);
            Assert.Equal(StopReason.PowerOff, outcome.Reason);
            AssertLogMatchesTee(tee, log);

            // The program's own exits are the trailing ones (the prologue's come first; the #GP handler makes none).
            var expected = GuestPrograms.ExpectedExits(ops);
            int firstProgramExit = tee.Count - expected.Count;
            Assert.True(firstProgramExit >= 0, $"{tee.Count} exits, {expected.Count} expected from the program");
            var actual = tee.Skip(firstProgramExit).ToList();
            // Exactly those trailing exits come from the generated instructions (the HLT's EIP is just before the end label).
            Assert.Equal(expected.Count, tee.Count(e => e.Eip >= start && e.Eip < end));
            Assert.All(actual, e => Assert.InRange(e.Eip, start, end - 1));
            for (int i = 0; i < expected.Count; i++)
            {
                var x = expected[i];
                ExitTraceEntry e = actual[i];
                Assert.True(x.Kind == e.Kind, $"exit {i}: expected {x.Kind}, got {e.Kind} (program: {string.Join("; ", ops)})");
                if (x.Kind is ExitKind.IoIn or ExitKind.IoOut)
                {
                    Assert.Equal((x.Port, x.Size), (e.Port, e.Size));
                }
                if (x.Kind is ExitKind.MmioRead or ExitKind.MmioWrite or ExitKind.Rdmsr or ExitKind.Wrmsr)
                {
                    Assert.Equal(x.Address, e.Address);
                }
                if (x.Value is ulong v)
                {
                    Assert.Equal(v, e.Value);
                }
            }
        }).Check(GuestPrograms.CaseConfig(150));
    }

    /// <summary>
    /// The same, for programs that switch modes (<see cref="ModePrograms"/>): paging on and off over random page
    /// tables, ring 3 and back, real mode and back, random descriptor tables, selectors and gates. The model
    /// predicts each exit (MMIO at the translated physical address; none for an access that page-faults, for
    /// port I/O at CPL 3 above IOPL or for RDMSR/WRMSR at CPL 3), and the machine must make exactly those.
    /// </summary>
    [Fact]
    public void EveryExitOfAModeSwitchingProgramIsOneRecordWithTheRightFields()
    {
        Prop.ForAll(Arb.From(ModePrograms.Programs()), program =>
        {
            GuestImage image = ModePrograms.Build("a", program);
            var (tee, log, outcome) = RunAudited(image);
            Assert.True(outcome.Reason == StopReason.PowerOff, $"{outcome.Reason} {outcome.Message}\n{ModePrograms.Describe(program)}");
            AssertLogMatchesTee(tee, log);
            var expected = program.ExpectedExits;
            int first = tee.Count - expected.Count;
            Assert.True(first >= 0, $"{tee.Count} exits, {expected.Count} expected\n{ModePrograms.Describe(program)}");
            for (int i = 0; i < expected.Count; i++)
            {
                var x = expected[i];
                ExitTraceEntry e = tee[first + i];
                string where = $"exit {i} of {expected.Count}: expected {x.Kind} port 0x{x.Port:X} address 0x{x.Address:X} value {x.Value:X}, got {e.Kind} port 0x{e.Port:X} address 0x{e.Address:X} value 0x{e.Value:X}\n{ModePrograms.Describe(program)}";
                Assert.True(x.Kind == e.Kind, where);
                if (x.Kind is ExitKind.IoIn or ExitKind.IoOut)
                {
                    Assert.True((x.Port, x.Size) == (e.Port, e.Size), where);
                }
                if (x.Kind is ExitKind.MmioRead or ExitKind.MmioWrite or ExitKind.Rdmsr or ExitKind.Wrmsr)
                {
                    Assert.True(x.Address == e.Address, where);
                }
                if (x.Value is ulong v)
                {
                    Assert.True(v == e.Value, where);
                }
            }
        }).Check(GuestPrograms.CaseConfig(250));
    }

    [Fact]
    public void TripleFaultIsOneShutdownRecordAndTheChainVerifies()
    {
        GuestImage image = GuestBuilder.Build("tf", g =>
        {
            GuestRuntime.Prologue(g);
            uint idtr = g.Data([0, 0, 0, 0, 0, 0]);
            g.A.lidt(Iced.Intel.AssemblerRegisters.__fword_ptr[idtr]);
            g.A.int3();
            GuestRuntime.EmitLibrary(g);
        });
        var (tee, log, outcome) = RunAudited(image);
        Assert.Equal(StopReason.TripleFault, outcome.Reason);
        AssertLogMatchesTee(tee, log);
        Assert.Equal(ExitKind.Shutdown, tee[^1].Kind);
        Assert.Single(tee, e => e.Kind == ExitKind.Shutdown);
    }
}
