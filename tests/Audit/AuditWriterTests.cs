using System.Diagnostics;
using SecureVmm.Tcb.Audit;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Audit;

public class AuditWriterTests(ITestOutputHelper output)
{
    [Fact]
    public void ClosedLogVerifiesWithCountsAndEveryRecordReadsBack()
    {
        byte[] log = AuditTestLogs.Write(100);
        AuditVerifyResult result = AuditTestLogs.Verify(log, AuditTestLogs.Verifier());
        Assert.True(result.Ok, result.Problem?.Message);
        Assert.Equal(100, result.Records);
        Assert.Equal(100UL, result.LastSequence);
        Assert.Equal(100UL, result.LastSignedSequence);
        Assert.Equal(0, result.UnsignedTailRecords);
        Assert.True(result.Closed);
        Assert.True(result.SignaturesChecked);
        Assert.Equal(2, result.Vms);
        // Checkpoints every 20 records plus the closing one; blocks of at most 8 records.
        Assert.Equal(6, result.Checkpoints);
        Assert.True(result.Blocks >= 100 / 8 + 6);

        List<AuditRecord> records = AuditTestLogs.ReadAll(log);
        Assert.Equal(100, records.Count);
        for (int i = 0; i < records.Count; i++)
        {
            Assert.Equal((ulong)i + 1, records[i].Sequence);
            Assert.True(AuditTestLogs.SameContent(AuditTestLogs.Record(i), records[i]), $"record {i + 1} differs");
        }
    }

    [Fact]
    public void EmptyLogIsClosedWithOneCheckpoint()
    {
        byte[] log = AuditTestLogs.Write(0);
        AuditVerifyResult result = AuditTestLogs.Verify(log, AuditTestLogs.Verifier());
        Assert.True(result.Ok, result.Problem?.Message);
        Assert.Equal((0L, 1L, 1L, true), (result.Records, result.Blocks, result.Checkpoints, result.Closed));
    }

    [Fact]
    public void UnsignedLogVerifiesWithoutKeyButFailsWithOne()
    {
        var options = new AuditWriterOptions { MaxBlockRecords = 8, CheckpointEveryRecords = 20, Signer = null };
        byte[] log = AuditTestLogs.Write(30, options);
        AuditVerifyResult unkeyed = AuditTestLogs.Verify(log, null);
        Assert.True(unkeyed.Ok, unkeyed.Problem?.Message);
        Assert.Equal("", unkeyed.SigningKeyId);
        AuditVerifyResult keyed = AuditTestLogs.Verify(log, AuditTestLogs.Verifier());
        Assert.Equal(AuditProblemKind.BadSignature, keyed.Problem?.Kind);
        Assert.Contains("unsigned", keyed.Problem!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OtherKeyIsReportedAsUnknownKey()
    {
        byte[] log = AuditTestLogs.Write(30);
        AuditVerifyResult result = AuditTestLogs.Verify(log, AuditTestLogs.Verifier(AuditTestLogs.OtherKey));
        Assert.Equal(AuditProblemKind.UnknownKey, result.Problem?.Kind);
        Assert.Contains(AuditTestLogs.Key.Id, result.Problem!.Message, StringComparison.Ordinal);
        Assert.Contains(AuditTestLogs.OtherKey.Id, result.Problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AppendAfterCloseIsRefusedAndUnknownVmIsACallerError()
    {
        var writer = AuditWriter.Open("mem", () => new MemoryStream(), AuditTestLogs.Header(), AuditTestLogs.Options());
        AuditRecord bad = AuditTestLogs.Record(0);
        bad.VmId = 2;
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Append(in bad));
        Assert.True(writer.Close());
        AuditRecord good = AuditTestLogs.Record(0);
        Assert.Equal(AuditAppendStatus.Closed, writer.Append(in good));
    }

    [Fact]
    public void AppendAndTheExitRecorderAllocateNothing()
    {
        var options = new AuditWriterOptions { BufferCapacity = 1 << 16, Signer = null };
        using var writer = AuditWriter.Open("mem", () => Stream.Null, AuditTestLogs.Header(), options);
        var recorder = new AuditExitRecorder(new NoDevices(), writer, 1, 0, n => n * 3);
        SecureVmm.Tcb.Exits.VmExit exit = AuditTestLogs.Exit(SecureVmm.Tcb.Exits.ExitKind.IoOut, 1);
        AuditRecord record = AuditTestLogs.Record(2);
        for (int i = 0; i < 1000; i++)
        {
            writer.Append(in record);
            recorder.OnExit(ref exit);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            writer.Append(in record);
            recorder.OnExit(ref exit);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.True(writer.Close());
    }

    private sealed class NoDevices : SecureVmm.Tcb.Exits.IExitHandler
    {
        public SecureVmm.Tcb.Exits.ExitAction OnExit(ref SecureVmm.Tcb.Exits.VmExit exit) => SecureVmm.Tcb.Exits.ExitAction.Continue;
    }

    [Fact]
    public void ConcurrentVmsGetContiguousSequencesAndKeepTheirOwnOrder()
    {
        var memory = new MemoryStream();
        var writer = AuditWriter.Open("mem", () => memory, AuditTestLogs.Header(), AuditTestLogs.Options(blockRecords: 50, checkpointEvery: 300, capacity: 32));
        const int perVm = 2000;
        var threads = Enumerable.Range(0, 2).Select(vm => new Thread(() =>
        {
            for (int i = 0; i < perVm; i++)
            {
                var r = new AuditRecord { Kind = AuditKind.IoOut, VmId = (ushort)vm, Port = 0x3F8, Size = 1, Value = (ulong)i, VirtualTimeNs = (ulong)i };
                Assert.Equal(AuditAppendStatus.Accepted, writer.Append(in r));
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.True(writer.Close());
        List<AuditRecord> records = AuditTestLogs.ReadAll(memory.ToArray());
        Assert.Equal(2 * perVm, records.Count);
        Assert.Equal(Enumerable.Range(1, 2 * perVm).Select(i => (ulong)i), records.Select(r => r.Sequence));
        for (ushort vm = 0; vm < 2; vm++)
        {
            Assert.Equal(Enumerable.Range(0, perVm).Select(i => (ulong)i), records.Where(r => r.VmId == vm).Select(r => r.Value));
        }
    }

    [Fact]
    public void TimeIntervalCheckpointSignsWithoutBeingAsked()
    {
        var memory = new MemoryStream();
        var options = new AuditWriterOptions
        {
            CheckpointEveryRecords = 0,
            CheckpointInterval = TimeSpan.FromMilliseconds(30),
            Signer = new SecureVmm.Appliance.Audit.Ed25519AuditSigner(AuditTestLogs.Key),
        };
        using var writer = AuditWriter.Open("mem", () => memory, AuditTestLogs.Header(), options);
        AuditRecord r = AuditTestLogs.Record(1);
        writer.Append(in r);
        AuditVerifyResult result = AuditTestLogs.Verify(memory.ToArray(), AuditTestLogs.Verifier());
        var watch = Stopwatch.StartNew();
        while (result.Checkpoints == 0 && watch.ElapsedMilliseconds < 10_000)
        {
            Thread.Sleep(10);
            // A snapshot taken while a block is being written reads as truncated; the loop just looks again.
            result = AuditTestLogs.Verify(memory.ToArray(), AuditTestLogs.Verifier());
        }
        Assert.Equal(1, result.Checkpoints);
        Assert.Equal(1UL, result.LastSignedSequence);
        Assert.Equal(AuditProblemKind.Truncated, result.Problem?.Kind);
        Assert.True(writer.Close());
    }

    [Fact]
    public void FlushMakesEverythingAppendedDurable()
    {
        var memory = new MemoryStream();
        using var writer = AuditWriter.Open("mem", () => memory, AuditTestLogs.Header(), AuditTestLogs.Options(blockRecords: 1000));
        for (int i = 0; i < 37; i++)
        {
            AuditRecord r = AuditTestLogs.Record(i);
            Assert.Equal(AuditAppendStatus.Accepted, writer.Append(in r));
        }
        Assert.True(writer.Flush());
        Assert.Equal(37UL, writer.DurableSequence);
        // What is on "disk" now is a crash image: complete blocks through 37, no closing checkpoint.
        AuditVerifyResult result = AuditTestLogs.Verify(memory.ToArray(), AuditTestLogs.Verifier());
        Assert.Equal(AuditProblemKind.Truncated, result.Problem?.Kind);
        Assert.Equal(37UL, result.LastSequence);
        Assert.Contains("truncated after block", result.Problem!.Message, StringComparison.Ordinal);
        Assert.Contains("sequence 37", result.Problem.Message, StringComparison.Ordinal);
        Assert.True(writer.Close());
    }

    [Fact]
    public void FlushIntervalWritesAPartialBlockWithoutBeingAsked()
    {
        var memory = new MemoryStream();
        var options = new AuditWriterOptions { FlushInterval = TimeSpan.FromMilliseconds(20), Signer = null };
        using var writer = AuditWriter.Open("mem", () => memory, AuditTestLogs.Header(), options);
        AuditRecord r = AuditTestLogs.Record(1);
        writer.Append(in r);
        var watch = Stopwatch.StartNew();
        while (writer.DurableSequence < 1 && watch.ElapsedMilliseconds < 10_000)
        {
            Thread.Sleep(5);
        }
        Assert.Equal(1UL, writer.DurableSequence);
        writer.Close();
    }

    [Fact]
    public void FullBufferMakesAppendWaitAndNothingIsDropped()
    {
        var slow = new GatedStream();
        slow.Gate.Set();
        var writer = AuditWriter.Open("slow", () => slow, AuditTestLogs.Header(), AuditTestLogs.Options(blockRecords: 1, checkpointEvery: 0, capacity: 4));
        slow.Gate.Reset();
        const int total = 200;
        int appended = 0;
        var producer = new Thread(() =>
        {
            for (int i = 0; i < total; i++)
            {
                AuditRecord r = AuditTestLogs.Record(i);
                if (writer.Append(in r) != AuditAppendStatus.Accepted)
                {
                    return;
                }
                Interlocked.Increment(ref appended);
            }
        });
        producer.Start();
        Thread.Sleep(300);
        int whileBlocked = Volatile.Read(ref appended);
        Assert.True(producer.IsAlive, "the producer should be waiting for buffer space");
        Assert.InRange(whileBlocked, 1, 4 + 2);
        Thread.Sleep(100);
        Assert.Equal(whileBlocked, Volatile.Read(ref appended));
        slow.Gate.Set();
        Assert.True(producer.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(total, appended);
        Assert.True(writer.Close());
        AuditVerifyResult result = AuditTestLogs.Verify(slow.ToArray(), AuditTestLogs.Verifier());
        Assert.True(result.Ok, result.Problem?.Message);
        Assert.Equal(total, result.Records);
        output.WriteLine($"producer blocked after {whileBlocked} records with a 4-record buffer; all {total} written");
    }

    [Fact]
    public void WriteFailureFailsSecureAndKeepsDurableRecords()
    {
        var disk = new FailingStream(capacity: 4000);
        var writer = AuditWriter.Open("audit.log", () => disk, AuditTestLogs.Header(), AuditTestLogs.Options(checkpointEvery: 0));
        ulong durable = 0;
        int i = 0;
        AuditAppendStatus status = AuditAppendStatus.Accepted;
        for (; i < 10_000 && status == AuditAppendStatus.Accepted; i++)
        {
            AuditRecord r = AuditTestLogs.Record(i);
            status = writer.Append(in r);
            if (status == AuditAppendStatus.Accepted && i % 10 == 9 && writer.Flush())
            {
                durable = writer.DurableSequence;
            }
        }
        Assert.Equal(AuditAppendStatus.Failed, status);
        Assert.True(writer.Failed);
        Assert.Contains("audit.log", writer.FailureReason, StringComparison.Ordinal);
        Assert.Contains("No space left on device", writer.FailureReason, StringComparison.Ordinal);
        Assert.True(durable > 0, "some records were acknowledged as durable before the disk filled");
        AuditRecord more = AuditTestLogs.Record(0);
        Assert.Equal(AuditAppendStatus.Failed, writer.Append(in more));
        Assert.False(writer.Flush());
        Assert.False(writer.Close());

        AuditVerifyResult result = AuditTestLogs.Verify(disk.ToArray(), AuditTestLogs.Verifier());
        Assert.Equal(AuditProblemKind.Truncated, result.Problem?.Kind);
        Assert.True(result.LastSequence >= durable, $"durable through {durable}, but the file verifies only through {result.LastSequence}");
        output.WriteLine($"failed after {i} appends; durable through {durable}; file verifies through {result.LastSequence}: {result.Problem!.Message}");
    }

    [Fact]
    public void FsyncFailureFailsSecure()
    {
        var disk = new FailingStream(capacity: long.MaxValue);
        var writer = AuditWriter.Open("audit.log", () => disk, AuditTestLogs.Header(), AuditTestLogs.Options());
        disk.FailNow = true;
        AuditRecord r = AuditTestLogs.Record(3);
        Assert.Equal(AuditAppendStatus.Accepted, writer.Append(in r));
        Assert.False(writer.Flush());
        Assert.Contains("audit.log", writer.FailureReason, StringComparison.Ordinal);
        Assert.Equal(AuditAppendStatus.Failed, writer.Append(in r));
    }

    [Fact]
    public void UnwritableFileIsAClearErrorBeforeAnythingRuns()
    {
        string dir = Path.Combine(Path.GetTempPath(), "no-such-dir-" + Guid.NewGuid().ToString("N"));
        string path = Path.Combine(dir, "audit.log");
        var e = Assert.Throws<AuditLogException>(() => AuditWriter.Create(path, AuditTestLogs.Header(), AuditTestLogs.Options()));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        string existing = Path.GetTempFileName();
        try
        {
            e = Assert.Throws<AuditLogException>(() => AuditWriter.Create(existing, AuditTestLogs.Header(), AuditTestLogs.Options()));
            Assert.Contains(existing, e.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(existing);
        }
    }

    [Fact]
    public void RealFullFileSystemFailsSecure()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            output.WriteLine("SKIPPED: mounting a 64 KiB tmpfs needs root on Linux; the injected-failure test covers the same path");
            return;
        }
        string dir = Path.Combine(Path.GetTempPath(), "securevmm-audit-tmpfs-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        if (RunTool("mount", $"-t tmpfs -o size=64k tmpfs {dir}") != 0)
        {
            output.WriteLine("SKIPPED: mount -t tmpfs failed (no CAP_SYS_ADMIN in this container)");
            Directory.Delete(dir);
            return;
        }
        try
        {
            string path = Path.Combine(dir, "audit.log");
            var writer = AuditWriter.Create(path, AuditTestLogs.Header(), AuditTestLogs.Options(blockRecords: 64, checkpointEvery: 500));
            ulong durable = 0;
            AuditAppendStatus status = AuditAppendStatus.Accepted;
            for (int i = 0; i < 1_000_000 && status == AuditAppendStatus.Accepted; i++)
            {
                AuditRecord r = AuditTestLogs.Record(i);
                status = writer.Append(in r);
                if (status == AuditAppendStatus.Accepted && i % 100 == 99 && writer.Flush())
                {
                    durable = writer.DurableSequence;
                }
            }
            Assert.Equal(AuditAppendStatus.Failed, status);
            Assert.Contains(path, writer.FailureReason, StringComparison.Ordinal);
            writer.Close();
            AuditVerifyResult result = AuditLogVerifier.VerifyFile(path, AuditTestLogs.Verifier());
            Assert.False(result.Ok);
            Assert.Equal(AuditProblemKind.Truncated, result.Problem!.Kind);
            Assert.True(durable > 1000, $"only {durable} records fitted");
            Assert.True(result.LastSequence >= durable, $"durable through {durable}, but the file verifies only through {result.LastSequence}");
            output.WriteLine($"{writer.FailureReason}; durable through {durable}; verify: {result.Problem.Message}");
        }
        finally
        {
            RunTool("umount", dir);
            Directory.Delete(dir, recursive: true);
        }
    }

    private static int RunTool(string file, string arguments)
    {
        using var process = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardError = true, RedirectStandardOutput = true })!;
        process.WaitForExit();
        return process.ExitCode;
    }
}
