using System.Buffers.Binary;
using System.Security.Cryptography;
using SecureVmm.Tcb.Audit;
using Xunit;

namespace SecureVmm.Tests.Audit;

/// <summary>Specific damage and the exact report it must produce (first problem, where, why).</summary>
public class AuditVerifierTests
{
    private static readonly byte[] Log = AuditTestLogs.Write(50);
    private static readonly int HeaderLength = AuditTestLogs.Header().Encode().Length;

    /// <summary>Start offsets of every block.</summary>
    private static List<int> Blocks(byte[] log)
    {
        var starts = new List<int>();
        int o = HeaderLength;
        while (o < log.Length)
        {
            starts.Add(o);
            o += AuditFormat.BlockHeaderSize + (int)BinaryPrimitives.ReadUInt32LittleEndian(log.AsSpan(o + 28));
        }
        return starts;
    }

    [Fact]
    public void FlippedRecordBitIsAHashMismatchAtTheNextBlockOrABadRecord()
    {
        byte[] log = (byte[])Log.Clone();
        List<int> blocks = Blocks(log);
        int target = blocks[1] + AuditFormat.BlockHeaderSize + 5;
        log[target] ^= 0x40;
        AuditVerifyResult result = AuditTestLogs.Verify(log, AuditTestLogs.Verifier());
        Assert.False(result.Ok);
        Assert.Contains(result.Problem!.Kind, new[] { AuditProblemKind.HashMismatch, AuditProblemKind.BadRecord, AuditProblemKind.SequenceGap, AuditProblemKind.DuplicateOrReordered });
        Assert.InRange(result.Problem.BlockIndex, 1, 2);
        Assert.Contains("block", result.Problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RemovedMiddleBlockIsAGap()
    {
        List<int> blocks = Blocks(Log);
        byte[] log = [.. Log.AsSpan(0, blocks[2]), .. Log.AsSpan(blocks[3])];
        AuditVerifyResult result = AuditTestLogs.Verify(log, AuditTestLogs.Verifier());
        Assert.Equal(AuditProblemKind.SequenceGap, result.Problem?.Kind);
        Assert.Equal(2, result.Problem!.BlockIndex);
        Assert.Equal(blocks[2] + 8, result.Problem.ByteOffset);
        Assert.Contains("block index is 3, expected 2", result.Problem.Message, StringComparison.Ordinal);
        Assert.Equal(2, result.Blocks);
    }

    [Fact]
    public void DuplicatedBlockIsReported()
    {
        List<int> blocks = Blocks(Log);
        byte[] log = [.. Log.AsSpan(0, blocks[2]), .. Log.AsSpan(blocks[1], blocks[2] - blocks[1]), .. Log.AsSpan(blocks[2])];
        AuditVerifyResult result = AuditTestLogs.Verify(log, AuditTestLogs.Verifier());
        Assert.Equal(AuditProblemKind.DuplicateOrReordered, result.Problem?.Kind);
        Assert.Contains("duplicated or reordered", result.Problem!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RenumberedAndRechainedLogFailsOnlyOnTheSignature()
    {
        // An attacker without the key drops block 2, renumbers and re-hashes everything after it.
        byte[] log = AuditTestLogs.Write(50, AuditTestLogs.Options(checkpointEvery: 0));
        List<int> blocks = Blocks(log);
        var kept = new List<byte[]> { log[..HeaderLength] };
        for (int i = 0; i < blocks.Count; i++)
        {
            if (i == 2)
            {
                continue;
            }
            int end = i + 1 < blocks.Count ? blocks[i + 1] : log.Length;
            kept.Add(log[blocks[i]..end]);
        }
        ulong index = 0;
        ulong sequence = 1;
        byte[] previous = SHA256.HashData(kept[0]);
        for (int k = 1; k < kept.Count; k++)
        {
            byte[] block = kept[k];
            BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(8), index++);
            BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(16), sequence);
            previous.CopyTo(block.AsSpan(32));
            uint count = BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(24));
            if (block[4] == (byte)AuditBlockType.Checkpoint)
            {
                // Fix the claimed last sequence too (key id length byte, key, flags, then the u64).
                int o = AuditFormat.BlockHeaderSize + 1 + block[AuditFormat.BlockHeaderSize] + 1;
                BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(o), sequence - 1);
            }
            sequence += count;
            previous = SHA256.HashData(block);
        }
        byte[] forged = [.. kept.SelectMany(b => b)];
        Assert.True(AuditTestLogs.Verify(forged, null).Ok, "without a key the forged chain is internally consistent");
        AuditVerifyResult result = AuditTestLogs.Verify(forged, AuditTestLogs.Verifier());
        Assert.Equal(AuditProblemKind.BadSignature, result.Problem?.Kind);
    }

    [Fact]
    public void TruncationAtEveryOffsetIsReportedAndNeverClean()
    {
        List<int> blocks = Blocks(Log);
        for (int cut = 0; cut < Log.Length; cut++)
        {
            AuditVerifyResult result = AuditTestLogs.Verify(Log[..cut], AuditTestLogs.Verifier());
            Assert.False(result.Ok, $"cut at {cut} verified as clean");
            if (cut >= HeaderLength)
            {
                Assert.Equal(AuditProblemKind.Truncated, result.Problem!.Kind);
                int complete = blocks.Count(b => b < cut && (blocks.IndexOf(b) + 1 < blocks.Count ? blocks[blocks.IndexOf(b) + 1] : Log.Length) <= cut);
                Assert.Equal(complete, result.Blocks);
                Assert.StartsWith($"truncated after block {(complete == 0 ? "the header (no block)" : (complete - 1).ToString(System.Globalization.CultureInfo.InvariantCulture))} / sequence {result.LastSequence}", result.Problem.Message, StringComparison.Ordinal);
            }
        }
    }

    [Fact]
    public void DataAfterTheClosingCheckpointIsReported()
    {
        byte[] log = [.. Log, .. Log.AsSpan(HeaderLength, 80)];
        Assert.Equal(AuditProblemKind.DataAfterClose, AuditTestLogs.Verify(log, null).Problem?.Kind);
    }

    [Fact]
    public void HostileHeadersAndLengthsGiveResultsNotExceptions()
    {
        Assert.Equal(AuditProblemKind.BadHeader, AuditTestLogs.Verify([], null).Problem?.Kind);
        Assert.Equal(AuditProblemKind.BadHeader, AuditTestLogs.Verify("not an audit log at all, just text"u8.ToArray(), null).Problem?.Kind);
        byte[] log = (byte[])Log.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(log.AsSpan(12), uint.MaxValue);
        AuditVerifyResult huge = AuditTestLogs.Verify(log, null);
        Assert.Equal(AuditProblemKind.BadHeader, huge.Problem?.Kind);
        Assert.Contains("offset 12", huge.Problem!.Message, StringComparison.Ordinal);

        log = (byte[])Log.Clone();
        int first = Blocks(log)[0];
        BinaryPrimitives.WriteUInt32LittleEndian(log.AsSpan(first + 28), int.MaxValue);
        AuditVerifyResult payload = AuditTestLogs.Verify(log, null);
        Assert.Equal(AuditProblemKind.BadBlock, payload.Problem?.Kind);
        Assert.Equal(first + 24, payload.Problem!.ByteOffset);

        log = (byte[])Log.Clone();
        log[first] = (byte)'X';
        Assert.Equal(AuditProblemKind.BadBlock, AuditTestLogs.Verify(log, null).Problem?.Kind);
    }

    [Fact]
    public void UnreadableFileIsAReadErrorNamingTheProblem()
    {
        AuditVerifyResult result = AuditLogVerifier.VerifyFile(Path.Combine(Path.GetTempPath(), "no-such-audit-" + Guid.NewGuid().ToString("N")), null);
        Assert.Equal(AuditProblemKind.ReadError, result.Problem?.Kind);
    }
}
