using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;
using Xunit;

namespace SecureVmm.Tests.Audit;

public class AuditExitRecorderTests
{
    /// <summary>A device model that answers IN with 0x5A and notes how many records the log held when it acted.</summary>
    private sealed class Devices(AuditWriter writer) : IExitHandler
    {
        public readonly List<(ExitKind Kind, ulong LoggedBefore)> Seen = [];

        public ExitAction OnExit(ref VmExit exit)
        {
            Seen.Add((exit.Kind, writer.LastSequence));
            if (exit.Kind == ExitKind.IoIn)
            {
                exit.Value = 0x5A;
            }
            return exit.Kind == ExitKind.DebugExit ? ExitAction.Stop : ExitAction.Continue;
        }
    }

    [Fact]
    public void GuestSuppliedValuesAreLoggedBeforeTheDeviceActsAndDeviceValuesAfter()
    {
        var memory = new MemoryStream();
        var writer = AuditWriter.Open("mem", () => memory, AuditTestLogs.Header(), AuditTestLogs.Options());
        var devices = new Devices(writer);
        var recorder = new AuditExitRecorder(devices, writer, vmId: 1, vcpu: 0, instructions => instructions * 10);

        VmExit exit = AuditTestLogs.Exit(ExitKind.IoOut, 0);
        Assert.Equal(ExitAction.Continue, recorder.OnExit(ref exit));
        exit = AuditTestLogs.Exit(ExitKind.IoIn, 1);
        exit.Value = 0;
        Assert.Equal(ExitAction.Continue, recorder.OnExit(ref exit));
        Assert.Equal(0x5AUL, exit.Value);
        exit = AuditTestLogs.Exit(ExitKind.DebugExit, 2);
        Assert.Equal(ExitAction.Stop, recorder.OnExit(ref exit));
        Assert.True(writer.Close());

        // OUT was in the log when the device saw it; IN was logged only after the device answered.
        Assert.Equal([(ExitKind.IoOut, 1UL), (ExitKind.IoIn, 1UL), (ExitKind.DebugExit, 3UL)], devices.Seen);
        List<AuditRecord> records = AuditTestLogs.ReadAll(memory.ToArray());
        Assert.Equal([AuditKind.IoOut, AuditKind.IoIn, AuditKind.DebugExit], records.Select(r => r.Kind));
        Assert.Equal(0x5AUL, records[1].Value);
        Assert.Equal(1000UL, records[1].VirtualTimeNs);
        Assert.All(records, r => Assert.Equal((ushort)1, r.VmId));
        Assert.False(recorder.StoppedByAuditFailure);
    }

    [Fact]
    public void FailedLogStopsTheVmBeforeTheDeviceActs()
    {
        var disk = new FailingStream(capacity: long.MaxValue);
        var writer = AuditWriter.Open("audit.log", () => disk, AuditTestLogs.Header(), AuditTestLogs.Options());
        var devices = new Devices(writer);
        var recorder = new AuditExitRecorder(devices, writer, 0, 0, n => n);
        disk.FailNow = true;
        AuditRecord start = AuditRecord.Event(AuditKind.VmStart, 0, 0);
        writer.Append(in start);
        Assert.False(writer.Flush());
        Assert.True(writer.Failed);
        VmExit exit = AuditTestLogs.Exit(ExitKind.IoOut, 0);
        Assert.Equal(ExitAction.Stop, recorder.OnExit(ref exit));
        Assert.True(recorder.StoppedByAuditFailure);
        Assert.Empty(devices.Seen);
    }
}
