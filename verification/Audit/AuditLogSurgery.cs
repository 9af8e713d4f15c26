using System.Buffers.Binary;
using System.Security.Cryptography;
using SecureVmm.Appliance.Audit;
using SecureVmm.Policy.Keys;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Verification.Audit;

/// <summary>Writes small audit logs and takes them apart the way an attacker editing the file would.</summary>
internal static class AuditLogSurgery
{
    public static readonly Ed25519SecretKey Key = new(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
    public static readonly Ed25519SecretKey OtherKey = new(Enumerable.Range(101, 32).Select(i => (byte)i).ToArray());
    public static readonly IAuditSignatureVerifier Trusted = new Ed25519AuditVerifier(Key.PublicKey);
    public static readonly byte[] LogId = Enumerable.Range(0, 16).Select(i => (byte)(0x50 + i)).ToArray();

    /// <summary>Signs with the attacker's key while claiming the trusted key's id.</summary>
    public sealed class ImpostorSigner : IAuditSigner
    {
        public string KeyId => Key.Id;
        public byte[] Sign(ReadOnlySpan<byte> message) => OtherKey.Sign(message);
    }

    public sealed record LogShape(int Records, int BlockRecords, int CheckpointEvery, int Seed)
    {
        public override string ToString() => $"{Records} records, blocks of {BlockRecords}, checkpoint every {CheckpointEvery}, seed {Seed}";
    }

    public static AuditRecord Record(int i)
    {
        var kinds = Enum.GetValues<AuditKind>();
        AuditKind kind = kinds[i % kinds.Length];
        ushort vm = (ushort)(i % 3);
        ulong time = (ulong)i * 977;
        return kind switch
        {
            AuditKind.VmStart => AuditRecord.Event(kind, vm, time),
            AuditKind.VmStop => AuditRecord.VmStop(vm, time, 1, VmStopReason.DebugExit),
            AuditKind.ImageVerified => AuditRecord.ImageVerified(vm, (ulong)i, SHA256.HashData(BitConverter.GetBytes(i))),
            AuditKind.PolicyLoaded => AuditRecord.PolicyLoaded(SHA256.HashData(BitConverter.GetBytes(-i))),
            AuditKind.FramesDropped => AuditRecord.FramesDropped(vm, time, (ushort)(i % 2), (uint)i, (ulong)i, SHA256.HashData(BitConverter.GetBytes(i))),
            _ => AuditRecord.FromExit(new VmExit
            {
                Kind = (ExitKind)kind, Cs = 8, Eip = (uint)(0x1000 + i), Port = (ushort)(0x60 + i % 5), Size = 1,
                Address = 0xB8000 + (ulong)i, Value = (ulong)i, Leaf = (uint)i, Eax = 1, Ebx = 2, Ecx = 3, Edx = 4,
            }, vm, (ushort)(i % 2), time),
        };
    }

    public static byte[] Write(LogShape shape, IAuditSigner? signer = null) => Write(Enumerable.Range(shape.Seed, shape.Records).Select(Record), shape, signer);

    public static byte[] Write(IEnumerable<AuditRecord> records, LogShape shape, IAuditSigner? signer = null)
    {
        var memory = new MemoryStream();
        var options = new AuditWriterOptions
        {
            BufferCapacity = 16,
            MaxBlockRecords = shape.BlockRecords,
            CheckpointEveryRecords = shape.CheckpointEvery,
            CheckpointInterval = TimeSpan.Zero,
            Signer = signer ?? new Ed25519AuditSigner(Key),
            WallClockUnixNs = () => 1_700_000_000_000_000_000,
        };
        var header = new AuditLogHeader(LogId, 1_700_000_000_000_000_000, ["secret", "public", "kiosk"], ["red", "black"]);
        using var writer = AuditWriter.Open("property.log", () => memory, header, options);
        foreach (AuditRecord record in records)
        {
            if (writer.Append(in record) != AuditAppendStatus.Accepted)
            {
                throw new InvalidOperationException(writer.FailureReason);
            }
        }
        if (!writer.Close())
        {
            throw new InvalidOperationException(writer.FailureReason);
        }
        return memory.ToArray();
    }

    public static AuditVerifyResult Verify(byte[] log, IAuditSignatureVerifier? key = null, AuditRecordVisitor? visitor = null) =>
        AuditLogVerifier.Verify(new MemoryStream(log, writable: false), key ?? Trusted, visitor);

    /// <summary>Verification without a trusted key: the hash chain and structure only.</summary>
    public static AuditVerifyResult VerifyWithoutKey(byte[] log) => AuditLogVerifier.Verify(new MemoryStream(log, writable: false), null);

    public static List<AuditRecord> Records(byte[] log)
    {
        var records = new List<AuditRecord>();
        AuditVerifyResult result = Verify(log, null, (in AuditRecord r) => records.Add(r));
        return result.Ok ? records : throw new InvalidOperationException(result.Problem!.Message);
    }

    /// <summary>The header bytes and each block's bytes, in file order.</summary>
    public static (byte[] Header, List<byte[]> Blocks) Split(byte[] log)
    {
        int headerLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(log.AsSpan(12));
        var blocks = new List<byte[]>();
        int o = headerLength;
        while (o < log.Length)
        {
            int length = AuditFormat.BlockHeaderSize + (int)BinaryPrimitives.ReadUInt32LittleEndian(log.AsSpan(o + 28));
            blocks.Add(log[o..(o + length)]);
            o += length;
        }
        return (log[..headerLength], blocks);
    }

    public static byte[] Join(byte[] header, IEnumerable<byte[]> blocks) => [.. header, .. blocks.SelectMany(b => b)];

    public static bool IsRecordsBlock(byte[] block) => block[4] == (byte)AuditBlockType.Records;

    /// <summary>Each record's bytes in a records block.</summary>
    public static List<byte[]> RecordBytes(byte[] block)
    {
        var records = new List<byte[]>();
        int o = AuditFormat.BlockHeaderSize;
        while (o < block.Length)
        {
            int length = 1 + block[o];
            records.Add(block[o..(o + length)]);
            o += length;
        }
        return records;
    }

    /// <summary>A records block with new record bytes; count and payload length fixed up, nothing else.</summary>
    public static byte[] WithRecords(byte[] block, List<byte[]> records)
    {
        byte[] payload = [.. records.SelectMany(r => r)];
        byte[] result = [.. block.AsSpan(0, AuditFormat.BlockHeaderSize), .. payload];
        BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(24), (uint)records.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(28), (uint)payload.Length);
        return result;
    }
}
