using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Audit;

/// <summary>
/// Puts the audit log into the machine's single exit dispatch point (DESIGN.md principle 4: each exit
/// is appended before its effect is delivered). Exits whose value the guest supplies (OUT, MMIO write,
/// WRMSR, CPUID with the registers the CPU computed, HLT, shutdown, reset, debug exit) are recorded
/// before the device model sees them; exits whose value the device supplies (IN, MMIO read, RDMSR)
/// are recorded after the device answered and before the CPU hands the value to the guest. When the log cannot be written the VM stops (fail secure) and
/// <see cref="StoppedByAuditFailure"/> tells the machine to exit with status 4 and the writer's
/// <see cref="AuditWriter.FailureReason"/>. Allocates nothing per exit.
/// </summary>
public sealed class AuditExitRecorder(IExitHandler inner, AuditWriter writer, ushort vmId, ushort vcpu, Func<ulong, ulong> virtualTimeNs) : IExitHandler
{
    /// <summary>True once an exit could not be recorded; the VM has been stopped.</summary>
    public bool StoppedByAuditFailure { get; private set; }

    public ExitAction OnExit(ref VmExit exit)
    {
        if (writer.Failed)
        {
            // Checked before the device acts: a failed log means no further exit takes effect.
            StoppedByAuditFailure = true;
            return ExitAction.Stop;
        }
        bool deviceSuppliesValue = exit.Kind is ExitKind.IoIn or ExitKind.MmioRead or ExitKind.Rdmsr;
        if (!deviceSuppliesValue && !Record(in exit))
        {
            return ExitAction.Stop;
        }
        ExitAction action = inner.OnExit(ref exit);
        if (deviceSuppliesValue && !Record(in exit))
        {
            return ExitAction.Stop;
        }
        return action;
    }

    private bool Record(in VmExit exit)
    {
        AuditRecord record = AuditRecord.FromExit(in exit, vmId, vcpu, virtualTimeNs(exit.InstructionCount));
        if (writer.Append(in record) == AuditAppendStatus.Accepted)
        {
            return true;
        }
        StoppedByAuditFailure = true;
        return false;
    }
}
