using System.Security.Cryptography;

namespace SecureVmm.Tcb.Audit;

/// <summary>Why a log did not verify (docs/audit-format.md, "Verification").</summary>
public enum AuditProblemKind : byte
{
    BadHeader,
    BadBlock,
    HashMismatch,
    SequenceGap,
    DuplicateOrReordered,
    BadRecord,
    BadSignature,
    UnknownKey,
    /// <summary>A partial final block, or a log without its closing checkpoint (crash, or still being written).</summary>
    Truncated,
    DataAfterClose,
    ReadError,
}

/// <summary>The first problem found: where (block index, byte offset, sequence) and why.</summary>
public sealed record AuditProblem(AuditProblemKind Kind, long BlockIndex, long ByteOffset, ulong Sequence, string Message)
{
    public override string ToString() => Message;
}

/// <summary>What verification found: counts, the signed range, and the first problem if any.</summary>
public sealed class AuditVerifyResult
{
    public AuditProblem? Problem { get; internal set; }
    public bool Ok => Problem is null;
    public AuditLogHeader? Header { get; internal set; }
    /// <summary>Records in complete, verified blocks.</summary>
    public long Records { get; internal set; }
    /// <summary>Complete, verified blocks (records and checkpoint blocks).</summary>
    public long Blocks { get; internal set; }
    public long Checkpoints { get; internal set; }
    public int Vms => Header?.VmNames.Count ?? 0;
    /// <summary>Sequence number of the last record in a verified block (0: none).</summary>
    public ulong LastSequence { get; internal set; }
    /// <summary>Last sequence covered by a checkpoint (its signature checked when a key was given).</summary>
    public ulong LastSignedSequence { get; internal set; }
    /// <summary>Records after the last checkpoint: not covered by any signature.</summary>
    public long UnsignedTailRecords => (long)(LastSequence - LastSignedSequence);
    /// <summary>True when checkpoint signatures were checked against a trusted key.</summary>
    public bool SignaturesChecked { get; internal set; }
    /// <summary>The key id named in the log's checkpoints ("" for unsigned checkpoints, null when there are none).</summary>
    public string? SigningKeyId { get; internal set; }
    /// <summary>True when the log ends with its closing (final) checkpoint.</summary>
    public bool Closed { get; internal set; }
    /// <summary>SHA-256 of the last verified block (or of the header when there is none).</summary>
    public Sha256Digest ChainHead;
    /// <summary>Bytes of the file that verified.</summary>
    public long VerifiedBytes { get; internal set; }
}

/// <summary>Receives each decoded record, in order, once its block's structure has verified.</summary>
public delegate void AuditRecordVisitor(in AuditRecord record);

/// <summary>
/// Reads and verifies an audit log: header, every block's hash link to the one before, contiguous
/// block indexes and sequence numbers, every record's encoding, and checkpoint signatures. Reads a
/// hostile file safely: never past the end, never allocating from an unchecked length, and reports
/// the first problem as a result rather than throwing.
/// </summary>
public static class AuditLogVerifier
{
    /// <summary>Verifies the file at <paramref name="path"/>; a missing or unreadable file is a ReadError result.</summary>
    public static AuditVerifyResult VerifyFile(string path, IAuditSignatureVerifier? trustedKey, AuditRecordVisitor? visitor = null)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16, FileOptions.SequentialScan);
            return Verify(stream, trustedKey, visitor);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            var result = new AuditVerifyResult();
            result.Problem = new AuditProblem(AuditProblemKind.ReadError, -1, 0, 0, $"cannot read: {e.Message}");
            return result;
        }
    }

    public static AuditVerifyResult Verify(Stream stream, IAuditSignatureVerifier? trustedKey, AuditRecordVisitor? visitor = null)
    {
        var result = new AuditVerifyResult { SignaturesChecked = trustedKey is not null };
        try
        {
            Run(stream, trustedKey, visitor, result);
        }
        catch (IOException e)
        {
            result.Problem ??= new AuditProblem(AuditProblemKind.ReadError, result.Blocks, result.VerifiedBytes, result.LastSequence + 1, $"read error after offset {result.VerifiedBytes}: {e.Message}");
        }
        return result;
    }

    private static void Run(Stream stream, IAuditSignatureVerifier? trustedKey, AuditRecordVisitor? visitor, AuditVerifyResult result)
    {
        // ---- header ----
        Span<byte> fixedPart = stackalloc byte[AuditFormat.HeaderFixedSize];
        int got = ReadFully(stream, fixedPart);
        if (got < 16 || !fixedPart[..8].SequenceEqual(AuditFormat.Magic))
        {
            result.Problem = new AuditProblem(AuditProblemKind.BadHeader, -1, 0, 0,
                got < 8 ? $"offset 0: file too short for an audit log header ({got} bytes)" : "offset 0: not a SecureVmm audit log (expected magic \"SVMMAUD1\")");
            return;
        }
        uint headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(fixedPart[12..]);
        if (headerLength is < AuditFormat.HeaderFixedSize or > AuditFormat.MaxHeaderBytes)
        {
            result.Problem = new AuditProblem(AuditProblemKind.BadHeader, -1, 12, 0, $"offset 12: header length {headerLength} outside {AuditFormat.HeaderFixedSize}..{AuditFormat.MaxHeaderBytes}");
            return;
        }
        if (got < AuditFormat.HeaderFixedSize)
        {
            result.Problem = new AuditProblem(AuditProblemKind.Truncated, -1, got, 0, $"truncated inside the header at offset {got} (no complete block)");
            return;
        }
        var headerBytes = new byte[headerLength];
        fixedPart.CopyTo(headerBytes);
        got = ReadFully(stream, headerBytes.AsSpan(AuditFormat.HeaderFixedSize));
        if (got < headerBytes.Length - AuditFormat.HeaderFixedSize)
        {
            result.Problem = new AuditProblem(AuditProblemKind.Truncated, -1, AuditFormat.HeaderFixedSize + got, 0, $"truncated inside the header at offset {AuditFormat.HeaderFixedSize + got} (no complete block)");
            return;
        }
        AuditLogHeader header;
        try
        {
            header = AuditLogHeader.Decode(headerBytes);
        }
        catch (AuditLogException e)
        {
            result.Problem = new AuditProblem(AuditProblemKind.BadHeader, -1, 0, 0, e.Message);
            return;
        }
        result.Header = header;
        SHA256.HashData(headerBytes, result.ChainHead);
        long offset = headerBytes.Length;
        result.VerifiedBytes = offset;

        // ---- blocks ----
        var block = new byte[AuditFormat.BlockHeaderSize + header.MaxBlockPayloadBytes];
        Span<byte> hash = stackalloc byte[Sha256Digest.Size];
        ulong expectedIndex = 0;
        ulong expectedSequence = 1;
        while (true)
        {
            long blockOffset = offset;
            got = ReadFully(stream, block.AsSpan(0, AuditFormat.BlockHeaderSize));
            if (got == 0)
            {
                if (!result.Closed)
                {
                    result.Problem = Problem(AuditProblemKind.Truncated, expectedIndex, blockOffset, expectedSequence, result,
                        $"truncated after block {Last(expectedIndex)} / sequence {expectedSequence - 1}: the log ends at offset {blockOffset} without its closing checkpoint (writer crashed, failed or still running)");
                }
                return;
            }
            if (result.Closed)
            {
                result.Problem = Problem(AuditProblemKind.DataAfterClose, expectedIndex, blockOffset, expectedSequence, result,
                    $"offset {blockOffset}: data after the closing checkpoint (block {expectedIndex - 1})");
                return;
            }
            if (got < AuditFormat.BlockHeaderSize)
            {
                result.Problem = Problem(AuditProblemKind.Truncated, expectedIndex, blockOffset, expectedSequence, result,
                    $"truncated after block {Last(expectedIndex)} / sequence {expectedSequence - 1}: partial block header at offset {blockOffset} ({got} of {AuditFormat.BlockHeaderSize} bytes)");
                return;
            }
            if (!AuditBlockHeader.TryRead(block, out AuditBlockHeader bh, out int bad, out string why))
            {
                result.Problem = Problem(AuditProblemKind.BadBlock, expectedIndex, blockOffset + bad, expectedSequence, result,
                    $"block {expectedIndex} at offset {blockOffset + bad}: {why}");
                return;
            }
            string where = $"block {expectedIndex} at offset {blockOffset}";
            if (bh.Index != expectedIndex)
            {
                bool earlier = bh.Index < expectedIndex;
                result.Problem = Problem(earlier ? AuditProblemKind.DuplicateOrReordered : AuditProblemKind.SequenceGap, expectedIndex, blockOffset + 8, expectedSequence, result,
                    $"{where}: block index is {bh.Index}, expected {expectedIndex} ({(earlier ? "duplicated or reordered block" : "missing block(s)")})");
                return;
            }
            if (bh.FirstSequence != expectedSequence)
            {
                bool earlier = bh.FirstSequence < expectedSequence;
                result.Problem = Problem(earlier ? AuditProblemKind.DuplicateOrReordered : AuditProblemKind.SequenceGap, expectedIndex, blockOffset + 16, expectedSequence, result,
                    $"{where}: first sequence is {bh.FirstSequence}, expected {expectedSequence} ({(earlier ? "duplicated or reordered records" : "gap: records missing")})");
                return;
            }
            if (!((ReadOnlySpan<byte>)bh.PreviousHash).SequenceEqual(result.ChainHead))
            {
                result.Problem = Problem(AuditProblemKind.HashMismatch, expectedIndex, blockOffset + 32, expectedSequence, result,
                    $"{where}: hash mismatch: its previous-block hash is not the SHA-256 of {(expectedIndex == 0 ? "the header" : $"block {expectedIndex - 1}")} (that block or this link was altered)");
                return;
            }
            bool isRecords = bh.Type == AuditBlockType.Records;
            if (bh.PayloadLength > header.MaxBlockPayloadBytes
                || (isRecords && (bh.RecordCount == 0 || bh.RecordCount > header.MaxBlockRecords || bh.PayloadLength < bh.RecordCount * 2))
                || (!isRecords && bh.RecordCount != 0))
            {
                result.Problem = Problem(AuditProblemKind.BadBlock, expectedIndex, blockOffset + 24, expectedSequence, result,
                    $"{where}: record count {bh.RecordCount} / payload length {bh.PayloadLength} impossible for a {bh.Type} block (limits: {header.MaxBlockRecords} records, {header.MaxBlockPayloadBytes} bytes)");
                return;
            }
            int payloadLength = (int)bh.PayloadLength;
            got = ReadFully(stream, block.AsSpan(AuditFormat.BlockHeaderSize, payloadLength));
            if (got < payloadLength)
            {
                result.Problem = Problem(AuditProblemKind.Truncated, expectedIndex, blockOffset, expectedSequence, result,
                    $"truncated after block {Last(expectedIndex)} / sequence {expectedSequence - 1}: partial block {expectedIndex} at offset {blockOffset} ({AuditFormat.BlockHeaderSize + got} of {AuditFormat.BlockHeaderSize + payloadLength} bytes)");
                return;
            }
            ReadOnlySpan<byte> payload = block.AsSpan(AuditFormat.BlockHeaderSize, payloadLength);
            long payloadOffset = blockOffset + AuditFormat.BlockHeaderSize;
            if (isRecords)
            {
                if (CheckRecords(payload, payloadOffset, bh, header, where, result, expectedIndex) is { } problem)
                {
                    result.Problem = problem;
                    return;
                }
                if (visitor is not null)
                {
                    DeliverRecords(payload, bh, visitor);
                }
                expectedSequence += bh.RecordCount;
                result.Records += bh.RecordCount;
                result.LastSequence = expectedSequence - 1;
            }
            else
            {
                if (CheckCheckpoint(payload, payloadOffset, bh, header, trustedKey, expectedSequence, where, result) is { } problem)
                {
                    result.Problem = problem;
                    return;
                }
            }
            SHA256.HashData(block.AsSpan(0, AuditFormat.BlockHeaderSize + payloadLength), hash);
            hash.CopyTo(result.ChainHead);
            offset += AuditFormat.BlockHeaderSize + payloadLength;
            result.Blocks++;
            result.VerifiedBytes = offset;
            expectedIndex++;
        }
    }

    private static string Last(ulong expectedIndex) => expectedIndex == 0 ? "the header (no block)" : (expectedIndex - 1).ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static AuditProblem Problem(AuditProblemKind kind, ulong block, long offset, ulong sequence, AuditVerifyResult result, string message) =>
        new(kind, (long)block, offset, sequence, message);

    private static AuditProblem? CheckRecords(ReadOnlySpan<byte> payload, long payloadOffset, in AuditBlockHeader bh, AuditLogHeader header, string where, AuditVerifyResult result, ulong blockIndex)
    {
        int offset = 0;
        ulong previousTime = 0;
        for (uint i = 0; i < bh.RecordCount; i++)
        {
            ulong sequence = bh.FirstSequence + i;
            int recordStart = offset;
            AuditFormat.RecordError error = AuditFormat.DecodeRecord(payload, ref offset, previousTime, out AuditRecord record, out int fieldOffset);
            if (error != AuditFormat.RecordError.None)
            {
                return Problem(AuditProblemKind.BadRecord, blockIndex, payloadOffset + fieldOffset, sequence, result,
                    $"{where}: record {sequence} at offset {payloadOffset + fieldOffset}: {Describe(error)}");
            }
            if (record.Sequence != i)
            {
                bool earlier = record.Sequence < i;
                return Problem(earlier ? AuditProblemKind.DuplicateOrReordered : AuditProblemKind.SequenceGap, blockIndex, payloadOffset + recordStart, sequence, result,
                    $"{where}: record at offset {payloadOffset + recordStart} has sequence {bh.FirstSequence + record.Sequence}, expected {sequence} ({(earlier ? "duplicated or reordered record" : "gap: record missing")})");
            }
            if (record.VmId >= header.VmNames.Count)
            {
                return Problem(AuditProblemKind.BadRecord, blockIndex, payloadOffset + recordStart, sequence, result,
                    $"{where}: record {sequence} at offset {payloadOffset + recordStart}: VM id {record.VmId} is not in the header's table of {header.VmNames.Count} VMs");
            }
            if (record.Kind == AuditKind.FramesDropped && record.Network >= header.NetworkNames.Count)
            {
                return Problem(AuditProblemKind.BadRecord, blockIndex, payloadOffset + recordStart, sequence, result,
                    $"{where}: record {sequence} at offset {payloadOffset + recordStart}: network id {record.Network} is not in the header's table of {header.NetworkNames.Count} networks");
            }
            previousTime = record.VirtualTimeNs;
        }
        if (offset != payload.Length)
        {
            return Problem(AuditProblemKind.BadRecord, blockIndex, payloadOffset + offset, bh.FirstSequence + bh.RecordCount, result,
                $"{where}: {payload.Length - offset} bytes after the block's {bh.RecordCount} records at offset {payloadOffset + offset}");
        }
        return null;
    }

    private static void DeliverRecords(ReadOnlySpan<byte> payload, in AuditBlockHeader bh, AuditRecordVisitor visitor)
    {
        int offset = 0;
        ulong previousTime = 0;
        for (uint i = 0; i < bh.RecordCount; i++)
        {
            AuditFormat.DecodeRecord(payload, ref offset, previousTime, out AuditRecord record, out _);
            previousTime = record.VirtualTimeNs;
            record.Sequence = bh.FirstSequence + i;
            visitor(in record);
        }
    }

    private static string Describe(AuditFormat.RecordError error) => error switch
    {
        AuditFormat.RecordError.Truncated => "record runs past the end of its block",
        AuditFormat.RecordError.BadLength => $"record length is 0 or over {AuditFormat.MaxRecordBytes - 1}",
        AuditFormat.RecordError.UnknownKind => "unknown record kind",
        AuditFormat.RecordError.BadField => "a field is malformed, out of range or runs past the record",
        AuditFormat.RecordError.TrailingBytes => "bytes left over after the record's fields",
        _ => error.ToString(),
    };

    private static AuditProblem? CheckCheckpoint(ReadOnlySpan<byte> payload, long payloadOffset, in AuditBlockHeader bh, AuditLogHeader header,
        IAuditSignatureVerifier? trustedKey, ulong expectedSequence, string where, AuditVerifyResult result)
    {
        ulong blockIndex = bh.Index;
        if (AuditFormat.DecodeCheckpointPayload(payload, out int bad) is not { } checkpoint)
        {
            return Problem(AuditProblemKind.BadBlock, blockIndex, payloadOffset + bad, expectedSequence, result,
                $"{where}: malformed checkpoint at offset {payloadOffset + bad}");
        }
        if (checkpoint.LastSequence != expectedSequence - 1)
        {
            return Problem(AuditProblemKind.BadBlock, blockIndex, payloadOffset, expectedSequence, result,
                $"{where}: checkpoint claims last sequence {checkpoint.LastSequence}, but the records end at {expectedSequence - 1}");
        }
        if (result.SigningKeyId is { } previousKey && previousKey != checkpoint.KeyId)
        {
            return Problem(AuditProblemKind.UnknownKey, blockIndex, payloadOffset, expectedSequence, result,
                $"{where}: checkpoint signed by key '{checkpoint.KeyId}', earlier checkpoints by '{previousKey}'");
        }
        result.SigningKeyId = checkpoint.KeyId;
        if (trustedKey is not null)
        {
            if (checkpoint.KeyId.Length == 0 || checkpoint.SignatureLength == 0)
            {
                return Problem(AuditProblemKind.BadSignature, blockIndex, payloadOffset, expectedSequence, result,
                    $"{where}: bad signature: the checkpoint is unsigned (the log was written without an audit key)");
            }
            if (checkpoint.KeyId != trustedKey.KeyId)
            {
                return Problem(AuditProblemKind.UnknownKey, blockIndex, payloadOffset, expectedSequence, result,
                    $"{where}: unknown key: the checkpoint is signed by key {checkpoint.KeyId}, not by the trusted key {trustedKey.KeyId}");
            }
            byte[] message = AuditFormat.CheckpointMessage(header.LogId, bh.Index, checkpoint.LastSequence, bh.PreviousHash, checkpoint.WallUnixNs, checkpoint.Flags);
            if (!trustedKey.Verify(message, payload.Slice(checkpoint.SignatureOffset, checkpoint.SignatureLength)))
            {
                return Problem(AuditProblemKind.BadSignature, blockIndex, payloadOffset + checkpoint.SignatureOffset, expectedSequence, result,
                    $"{where}: bad signature on the checkpoint covering sequences 1..{checkpoint.LastSequence} (the chain was rewritten or the checkpoint altered)");
            }
        }
        result.Checkpoints++;
        result.LastSignedSequence = checkpoint.LastSequence;
        result.Closed = (checkpoint.Flags & AuditFormat.CheckpointFinalFlag) != 0;
        return null;
    }

    private static int ReadFully(Stream stream, Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = stream.Read(buffer[total..]);
            if (n == 0)
            {
                break;
            }
            total += n;
        }
        return total;
    }
}
