using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Machine;

/// <summary>
/// Connects a VM's exit dispatch point to the audit log: each exit becomes one record appended to
/// the writer (which waits when its buffer is full, never dropping). Once the writer has failed,
/// every further exit is refused, so the machine stops the VM with an audit failure.
/// </summary>
public sealed class AuditRecorder(AuditWriter writer, ushort vmId, ushort vcpu = 0) : IExitRecorder
{
    public bool TryRecord(in VmExit exit, long virtualTimeNs)
    {
        AuditRecord record = AuditRecord.FromExit(in exit, vmId, vcpu, (ulong)virtualTimeNs);
        return writer.Append(in record) == AuditAppendStatus.Accepted;
    }

    public string? FailureReason => writer.FailureReason ?? (writer.Failed ? null : "the audit log is closed");

    /// <summary>The audit stop reason for how a VM ended.</summary>
    public static VmStopReason StopReasonFor(StopReason reason) => reason switch
    {
        StopReason.PowerOff => VmStopReason.PowerOff,
        StopReason.DebugExit => VmStopReason.DebugExit,
        StopReason.TripleFault => VmStopReason.TripleFault,
        StopReason.Reset => VmStopReason.Reset,
        StopReason.AuditFailure => VmStopReason.AuditFailure,
        StopReason.HostStop => VmStopReason.Operator,
        _ => VmStopReason.VmmFault,
    };
}
