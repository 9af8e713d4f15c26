using System.Diagnostics;
using System.Globalization;
using SecureVmm.Appliance.Audit;
using SecureVmm.Policy.Keys;
using SecureVmm.Tcb.Audit;

namespace SecureVmm.Bench;

/// <summary>
/// Audit log figures: appended and hash-chained records per second (target at least 1,000,000/s),
/// with the log going to a discarding stream and to a real file, and verification speed in MB/s.
/// `dotnet run -c Release --project bench -- audit [RECORDS]`.
/// `-- audit --soak FILE [SECONDS]` appends records to FILE until killed (or for SECONDS), flushing
/// every 10 ms; the crash test kills it mid-run and checks the verifier's truncation report.
/// </summary>
public static class AuditBench
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        if (args.Length >= 2 && args[0] == "--soak")
        {
            double seconds = args.Length >= 3 ? double.Parse(args[2], Inv) : double.PositiveInfinity;
            return Soak(args[1], seconds);
        }
        long records = args.Length >= 1 ? long.Parse(args[0], Inv) : 5_000_000;
        var key = Ed25519SecretKey.Generate();
        var options = new AuditWriterOptions
        {
            BufferCapacity = 65536,
            CheckpointEveryRecords = 1_000_000,
            Signer = new Ed25519AuditSigner(key),
        };
        Console.WriteLine($"audit log: {records:N0} mixed records (port I/O, MMIO, CPUID, MSR), 2 VMs, checkpoint every {options.CheckpointEveryRecords:N0}");

        // Warm up the JIT (tiered compilation) so the first figure is not the slowest.
        Append(200_000, "warm-up", () => new CountingStream(), options);
        var discard = new CountingStream();
        double toMemory = Append(records, "discard", () => discard, options);
        Console.WriteLine($"  append + encode + SHA-256 chain, discarding output: {records / toMemory,14:N0} records/s  ({discard.Length / toMemory / 1e6:N1} MB/s of log, {discard.Length / (double)records:N1} bytes/record)");

        ExitOverhead(records, options);

        string path = Path.Combine(Path.GetTempPath(), $"securevmm-audit-bench-{Environment.ProcessId}.log");
        try
        {
            double toFile = Append(records, path, () => new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1), options);
            long size = new FileInfo(path).Length;
            Console.WriteLine($"  append + encode + SHA-256 chain, to a file (fsync each second): {records / toFile,14:N0} records/s  ({size / 1e6:N1} MB written)");

            var verifier = new Ed25519AuditVerifier(key.PublicKey);
            // Warm the page cache and the JIT once, then time.
            AuditLogVerifier.VerifyFile(path, verifier);
            var watch = Stopwatch.StartNew();
            AuditVerifyResult result = AuditLogVerifier.VerifyFile(path, verifier);
            double seconds = watch.Elapsed.TotalSeconds;
            Console.WriteLine($"  verify (hash chain, records, {result.Checkpoints} signatures): {size / seconds / 1e6,10:N1} MB/s  ({result.Records / seconds:N0} records/s, {(result.Ok ? "OK" : "FAILED: " + result.Problem)})");

            long visited = 0;
            watch.Restart();
            AuditLogVerifier.VerifyFile(path, verifier, (in AuditRecord r) => visited += r.Size);
            seconds = watch.Elapsed.TotalSeconds;
            Console.WriteLine($"  verify + decode every record for a visitor: {size / seconds / 1e6,10:N1} MB/s");
        }
        finally
        {
            File.Delete(path);
        }
        return 0;
    }

    /// <summary>
    /// Cost of auditing at the exit dispatch point: the same stream of port-I/O exits through a trivial
    /// device handler, bare and wrapped in <see cref="AuditExitRecorder"/> (log discarded). This bounds the
    /// slowdown of an I/O-heavy guest until the machine exists to measure it end to end.
    /// </summary>
    private static void ExitOverhead(long exits, AuditWriterOptions options)
    {
        var devices = new LatchDevice();
        var exit = new SecureVmm.Tcb.Exits.VmExit { Kind = SecureVmm.Tcb.Exits.ExitKind.IoOut, Port = 0x3F8, Size = 1, Cs = 0x10 };
        var watch = Stopwatch.StartNew();
        for (long i = 0; i < exits; i++)
        {
            exit.Value = (ulong)i & 0xFF;
            exit.InstructionCount = (ulong)i * 20;
            devices.OnExit(ref exit);
        }
        double bare = watch.Elapsed.TotalSeconds;
        var header = AuditLogHeader.Create(["secret"]);
        using var writer = AuditWriter.Open("discard", () => new CountingStream(), header, options);
        var recorder = new AuditExitRecorder(devices, writer, 0, 0, instructions => instructions * 10);
        watch.Restart();
        for (long i = 0; i < exits; i++)
        {
            exit.Value = (ulong)i & 0xFF;
            exit.InstructionCount = (ulong)i * 20;
            recorder.OnExit(ref exit);
        }
        writer.Close();
        double audited = watch.Elapsed.TotalSeconds;
        Console.WriteLine($"  exit dispatch, bare device handler: {exits / bare,14:N0} exits/s; with audit recorder (until log closed): {exits / audited:N0} exits/s; +{(audited - bare) / exits * 1e9:N0} ns per exit");
    }

    private sealed class LatchDevice : SecureVmm.Tcb.Exits.IExitHandler
    {
        private ulong _latch;

        public SecureVmm.Tcb.Exits.ExitAction OnExit(ref SecureVmm.Tcb.Exits.VmExit exit)
        {
            _latch ^= exit.Value;
            return SecureVmm.Tcb.Exits.ExitAction.Continue;
        }
    }

    /// <summary>Appends from one producer thread and returns the seconds until the log is closed and synced.</summary>
    private static double Append(long records, string name, Func<Stream> stream, AuditWriterOptions options)
    {
        var header = AuditLogHeader.Create(["secret", "public"], ["red", "black"]);
        var watch = Stopwatch.StartNew();
        using (var writer = AuditWriter.Open(name, stream, header, options))
        {
            for (long i = 0; i < records; i++)
            {
                AuditRecord record = MakeRecord(i);
                if (writer.Append(in record) != AuditAppendStatus.Accepted)
                {
                    throw new InvalidOperationException(writer.FailureReason);
                }
            }
            if (!writer.Close())
            {
                throw new InvalidOperationException(writer.FailureReason);
            }
        }
        return watch.Elapsed.TotalSeconds;
    }

    /// <summary>A plausible exit mix: mostly port I/O (UART, PIT, PIC), some MMIO, CPUID and MSR.</summary>
    internal static AuditRecord MakeRecord(long i)
    {
        var record = new AuditRecord
        {
            VmId = (ushort)(i & 1),
            VirtualTimeNs = (ulong)i * 1_000,
            Cs = 0x10,
            Eip = 0x0010_0000u + (uint)(i % 4096),
        };
        switch (i % 8)
        {
            case 0:
            case 1:
            case 2:
                record.Kind = AuditKind.IoOut;
                record.Port = 0x3F8;
                record.Size = 1;
                record.Value = (ulong)(0x20 + (i % 90));
                break;
            case 3:
            case 4:
                record.Kind = AuditKind.IoIn;
                record.Port = 0x3FD;
                record.Size = 1;
                record.Value = 0x60;
                break;
            case 5:
                record.Kind = AuditKind.MmioWrite;
                record.Address = 0xFEC0_0000 + (ulong)(i % 64) * 4;
                record.Size = 4;
                record.Value = (ulong)i;
                break;
            case 6:
                record.Kind = AuditKind.Cpuid;
                record.Leaf = 1;
                record.Eax = 0x0006_06A0;
                record.Ebx = 0x0001_0800;
                record.Ecx = 0x8000_0001;
                record.Edx = 0x0781_ABFD;
                break;
            default:
                record.Kind = AuditKind.Wrmsr;
                record.Address = 0x1B;
                record.Value = 0xFEE0_0900;
                break;
        }
        return record;
    }

    private static int Soak(string path, double seconds)
    {
        var options = new AuditWriterOptions
        {
            FlushInterval = TimeSpan.FromMilliseconds(10),
            MaxBlockRecords = 256,
            CheckpointEveryRecords = 10_000,
            Signer = new Ed25519AuditSigner(Ed25519SecretKey.Generate()),
        };
        using var writer = AuditWriter.Create(path, AuditLogHeader.Create(["secret", "public"], ["red", "black"]), options);
        var watch = Stopwatch.StartNew();
        long i = 0;
        while (watch.Elapsed.TotalSeconds < seconds)
        {
            AuditRecord record = MakeRecord(i++);
            if (writer.Append(in record) != AuditAppendStatus.Accepted)
            {
                Console.Error.WriteLine(writer.FailureReason);
                return 4;
            }
            if ((i & 1023) == 0)
            {
                // Keep the file growing steadily rather than in one burst per flush interval.
                Thread.Sleep(1);
            }
        }
        return writer.Close() ? 0 : 4;
    }

    /// <summary>A stream that only counts what is written to it.</summary>
    private sealed class CountingStream : Stream
    {
        private long _length;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => _length += count;
        public override void Write(ReadOnlySpan<byte> buffer) => _length += buffer.Length;
    }
}
