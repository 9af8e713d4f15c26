using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Machine;

/// <summary>
/// Connects a VM's exit dispatch point to the audit log: each exit becomes one record appended to
/// the writer (which waits when its buffer is full, never dropping). Once the writer has failed,
/// every further exit is refused, so the machine stops the VM with an audit failure.
/// With <paramref name="recordData"/> false (the policy's audit.recordData default), port and MMIO
/// records keep port, address and size but not the value: what a user types or a guest prints on
/// a classified VM stays out of the log, while every access is still recorded.
/// </summary>
public sealed class AuditRecorder(AuditWriter writer, ushort vmId, ushort vcpu = 0, bool recordData = true) : IExitRecorder
{
    public bool TryRecord(in VmExit exit, long virtualTimeNs)
    {
        AuditRecord record = AuditRecord.FromExit(in exit, vmId, vcpu, (ulong)virtualTimeNs);
        if (!recordData && exit.Kind is ExitKind.IoIn or ExitKind.IoOut or ExitKind.MmioRead or ExitKind.MmioWrite)
        {
            record.Value = 0;
        }
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
