using SecureVmm.Appliance.Audit;
using SecureVmm.Policy.Keys;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tests.Audit;

/// <summary>Builds small audit logs in memory for the tests.</summary>
internal static class AuditTestLogs
{
    public static readonly Ed25519SecretKey Key = new(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
    public static readonly Ed25519SecretKey OtherKey = new(Enumerable.Range(101, 32).Select(i => (byte)i).ToArray());

    public static AuditLogHeader Header() =>
        new(Enumerable.Range(0, 16).Select(i => (byte)(0xA0 + i)).ToArray(), 1_763_000_000_000_000_000, ["secret", "public"], ["red-net", "black-net"]);

    public static AuditWriterOptions Options(int blockRecords = 8, long checkpointEvery = 20, IAuditSigner? signer = null, int capacity = 64) => new()
    {
        BufferCapacity = capacity,
        MaxBlockRecords = blockRecords,
        CheckpointEveryRecords = checkpointEvery,
        CheckpointInterval = TimeSpan.Zero,
        Signer = signer ?? new Ed25519AuditSigner(Key),
        WallClockUnixNs = () => 1_763_000_000_000_000_000,
    };

    public static IAuditSignatureVerifier Verifier(Ed25519SecretKey? key = null) => new Ed25519AuditVerifier((key ?? Key).PublicKey);

    /// <summary>One record of every kind in turn, with details that vary with <paramref name="i"/>.</summary>
    public static AuditRecord Record(int i)
    {
        ushort vm = (ushort)(i % 2);
        ulong time = (ulong)i * 12_345;
        var kinds = Enum.GetValues<AuditKind>();
        AuditKind kind = kinds[i % kinds.Length];
        return kind switch
        {
            AuditKind.VmStart => AuditRecord.Event(AuditKind.VmStart, vm, time),
            AuditKind.ImageVerified => AuditRecord.ImageVerified(vm, 0x0123456789abcdefUL, Enumerable.Range(i, 32).Select(b => (byte)b).ToArray()),
            AuditKind.PolicyLoaded => AuditRecord.PolicyLoaded(Enumerable.Range(i * 3, 32).Select(b => (byte)b).ToArray()),
            AuditKind.FramesDropped => AuditRecord.FramesDropped(vm, time, (ushort)(i % 2), 7, (ulong)i * 1000, Enumerable.Range(0, i % 70).Select(b => (byte)b).ToArray()),
            AuditKind.VmStop => AuditRecord.VmStop(vm, time, i % 5, (VmStopReason)(i % 7)),
            _ => AuditRecord.FromExit(Exit((ExitKind)kind, i), vm, (ushort)(i % 3), time),
        };
    }

    /// <summary>A VM exit with every field set, so the mapping must pick the ones the kind uses.</summary>
    public static VmExit Exit(ExitKind kind, int i) => new()
    {
        Kind = kind,
        Cs = 0x10,
        Eip = 0x100000u + (uint)i,
        InstructionCount = (ulong)i * 100,
        Port = (ushort)(0x3F8 + (i % 8)),
        Size = (byte)(1 << (i % 3)),
        Address = 0xFEE00000UL + (ulong)i,
        Value = (ulong)(i * 7 % 256),
        Leaf = (uint)i,
        Subleaf = 1,
        Eax = 0x06A0,
        Ebx = 0x0800,
        Ecx = 0x8000_0001,
        Edx = 0xABCD,
    };


    /// <summary>Writes <paramref name="count"/> records (see <see cref="Record"/>) and closes the log; returns its bytes.</summary>
    public static byte[] Write(int count, AuditWriterOptions? options = null)
    {
        var memory = new MemoryStream();
        using (var writer = AuditWriter.Open("test.log", () => memory, Header(), options ?? Options()))
        {
            for (int i = 0; i < count; i++)
            {
                AuditRecord r = Record(i);
                if (writer.Append(in r) != AuditAppendStatus.Accepted)
                {
                    throw new InvalidOperationException(writer.FailureReason);
                }
            }
            if (!writer.Close())
            {
                throw new InvalidOperationException(writer.FailureReason);
            }
        }
        return memory.ToArray();
    }

    public static AuditVerifyResult Verify(byte[] log, IAuditSignatureVerifier? key, AuditRecordVisitor? visitor = null) =>
        AuditLogVerifier.Verify(new MemoryStream(log, writable: false), key, visitor);

    public static List<AuditRecord> ReadAll(byte[] log)
    {
        var records = new List<AuditRecord>();
        AuditVerifyResult result = Verify(log, null, (in AuditRecord r) => records.Add(r));
        if (!result.Ok)
        {
            throw new InvalidOperationException(result.Problem!.Message);
        }
        return records;
    }

    /// <summary>Field-by-field equality of what the format stores (sequence excluded).</summary>
    public static bool SameContent(in AuditRecord a, in AuditRecord b) =>
        a.Kind == b.Kind && a.VmId == b.VmId && a.Vcpu == b.Vcpu && a.VirtualTimeNs == b.VirtualTimeNs && a.Cs == b.Cs && a.Eip == b.Eip
        && a.Port == b.Port && a.Size == b.Size && a.Address == b.Address && a.Value == b.Value && a.Leaf == b.Leaf && a.Subleaf == b.Subleaf
        && a.Eax == b.Eax && a.Ebx == b.Ebx && a.Ecx == b.Ecx && a.Edx == b.Edx && a.Network == b.Network && a.Reason == b.Reason
        && a.KeyId == b.KeyId && ((ReadOnlySpan<byte>)a.Digest).SequenceEqual(b.Digest) && a.SampleLength == b.SampleLength
        && ((ReadOnlySpan<byte>)a.Sample)[..a.SampleLength].SequenceEqual(((ReadOnlySpan<byte>)b.Sample)[..b.SampleLength]);
}
