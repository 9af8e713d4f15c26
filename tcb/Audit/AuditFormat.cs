using System.Buffers.Binary;
using System.Text;

namespace SecureVmm.Tcb.Audit;

/// <summary>
/// Constants and codecs of audit format version 1 (docs/audit-format.md is the byte-exact reference).
/// Integers in fixed fields are little-endian; "varint" is unsigned LEB128; time deltas are
/// zig-zag varints.
/// </summary>
public static class AuditFormat
{
    public const ushort Version = 1;
    public const int HeaderFixedSize = 48;
    public const int MaxHeaderBytes = 1 << 18;
    public const int BlockHeaderSize = 64;
    public const int MinBlockPayloadBytes = 256;
    public const int MaxBlockPayloadBytes = 1 << 20;
    public const int MaxBlockRecordsLimit = 65536;
    public const int DefaultMaxBlockPayloadBytes = 64 * 1024;
    public const int DefaultMaxBlockRecords = 4096;
    /// <summary>Largest record: 1-byte length + at most 127 body bytes (the largest body, FramesDropped, is 95).</summary>
    public const int MaxRecordBytes = 128;
    public const int MaxKeyIdBytes = 64;
    public const int MaxSignatureBytes = 255;
    public const byte CheckpointFinalFlag = 1;

    public static ReadOnlySpan<byte> Magic => "SVMMAUD1"u8;
    public static ReadOnlySpan<byte> BlockMagic => "SVBK"u8;
    /// <summary>Domain separation: a checkpoint signature can never be mistaken for another signed object.</summary>
    public static ReadOnlySpan<byte> CheckpointDomain => "SVMMAUD1 checkpoint\0"u8;

    // ---- varints (LEB128, as in DWARF and protobuf) ----

    public static int WriteVarint(Span<byte> destination, ulong value)
    {
        int i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }
        destination[i++] = (byte)value;
        return i;
    }

    /// <summary>Reads a varint from <paramref name="source"/> at <paramref name="offset"/>; false when it runs past the end or past 64 bits.</summary>
    public static bool TryReadVarint(ReadOnlySpan<byte> source, ref int offset, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if ((uint)offset >= (uint)source.Length)
            {
                return false;
            }
            byte b = source[offset++];
            if (shift == 63 && b > 1)
            {
                return false;
            }
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }
        return false;
    }

    private static ulong ZigZag(long v) => (ulong)((v << 1) ^ (v >> 63));
    private static long UnZigZag(ulong v) => (long)(v >> 1) ^ -(long)(v & 1);

    // ---- records ----

    /// <summary>
    /// Encodes <paramref name="record"/> (its sequence given as the offset from the block's first
    /// sequence, its time as a delta from the previous record in the block) and returns the bytes written
    /// (at most <see cref="MaxRecordBytes"/>).
    /// </summary>
    public static int EncodeRecord(in AuditRecord record, ulong sequenceOffset, ulong previousTimeNs, Span<byte> destination)
    {
        Span<byte> d = destination[..MaxRecordBytes];
        int o = 1;
        d[o++] = (byte)record.Kind;
        o += WriteVarint(d[o..], sequenceOffset);
        o += WriteVarint(d[o..], record.VmId);
        o += WriteVarint(d[o..], record.Vcpu);
        o += WriteVarint(d[o..], ZigZag(unchecked((long)(record.VirtualTimeNs - previousTimeNs))));
        o += WriteVarint(d[o..], record.Cs);
        o += WriteVarint(d[o..], record.Eip);
        switch (record.Kind)
        {
            case AuditKind.IoIn:
            case AuditKind.IoOut:
                o += WriteVarint(d[o..], record.Port);
                d[o++] = record.Size;
                o += WriteVarint(d[o..], record.Value);
                break;
            case AuditKind.MmioRead:
            case AuditKind.MmioWrite:
                o += WriteVarint(d[o..], record.Address);
                d[o++] = record.Size;
                o += WriteVarint(d[o..], record.Value);
                break;
            case AuditKind.Cpuid:
                o += WriteVarint(d[o..], record.Leaf);
                o += WriteVarint(d[o..], record.Subleaf);
                o += WriteVarint(d[o..], record.Eax);
                o += WriteVarint(d[o..], record.Ebx);
                o += WriteVarint(d[o..], record.Ecx);
                o += WriteVarint(d[o..], record.Edx);
                break;
            case AuditKind.Rdmsr:
            case AuditKind.Wrmsr:
                o += WriteVarint(d[o..], record.Address);
                o += WriteVarint(d[o..], record.Value);
                break;
            case AuditKind.DebugExit:
                o += WriteVarint(d[o..], record.Value);
                break;
            case AuditKind.VmStop:
                o += WriteVarint(d[o..], record.Value);
                o += WriteVarint(d[o..], record.Reason);
                break;
            case AuditKind.ImageVerified:
                BinaryPrimitives.WriteUInt64BigEndian(d[o..], record.KeyId);
                o += 8;
                ((ReadOnlySpan<byte>)record.Digest).CopyTo(d[o..]);
                o += Sha256Digest.Size;
                break;
            case AuditKind.PolicyLoaded:
                ((ReadOnlySpan<byte>)record.Digest).CopyTo(d[o..]);
                o += Sha256Digest.Size;
                break;
            case AuditKind.FramesDropped:
                int sampleLength = Math.Min((int)record.SampleLength, FrameSample.Size);
                o += WriteVarint(d[o..], record.Network);
                o += WriteVarint(d[o..], record.Reason);
                o += WriteVarint(d[o..], record.Value);
                d[o++] = (byte)sampleLength;
                ((ReadOnlySpan<byte>)record.Sample)[..sampleLength].CopyTo(d[o..]);
                o += sampleLength;
                break;
            default:
                // Hlt, Shutdown, Reset, VmStart: no details. Unknown kinds are refused by the writer.
                break;
        }
        d[0] = (byte)(o - 1);
        return o;
    }

    /// <summary>Why a record did not decode; None when it did.</summary>
    public enum RecordError : byte
    {
        None,
        Truncated,
        BadLength,
        UnknownKind,
        BadField,
        TrailingBytes,
    }

    /// <summary>
    /// Decodes one record at <paramref name="offset"/> in a block payload, advancing the offset.
    /// Never reads outside <paramref name="payload"/>; <paramref name="fieldOffset"/> is where a problem was found.
    /// The record's Sequence is set to the sequence offset stored in the record (the caller adds the block's first sequence).
    /// </summary>
    public static RecordError DecodeRecord(ReadOnlySpan<byte> payload, ref int offset, ulong previousTimeNs, out AuditRecord record, out int fieldOffset)
    {
        record = default;
        fieldOffset = offset;
        if (offset >= payload.Length)
        {
            return RecordError.Truncated;
        }
        int length = payload[offset];
        if (length is 0 or >= MaxRecordBytes)
        {
            return RecordError.BadLength;
        }
        if (payload.Length - offset - 1 < length)
        {
            return RecordError.Truncated;
        }
        ReadOnlySpan<byte> body = payload.Slice(offset + 1, length);
        int start = offset + 1;
        int o = 0;
        byte kind = body[o++];
        if (!AuditKinds.IsDefined(kind))
        {
            fieldOffset = start;
            return RecordError.UnknownKind;
        }
        record.Kind = (AuditKind)kind;
        if (!TryReadVarint(body, ref o, out ulong seqOffset)
            || !TryReadU16(body, ref o, out record.VmId)
            || !TryReadU16(body, ref o, out record.Vcpu)
            || !TryReadVarint(body, ref o, out ulong timeDelta)
            || !TryReadU16(body, ref o, out record.Cs)
            || !TryReadU32(body, ref o, out record.Eip))
        {
            fieldOffset = start + o;
            return RecordError.BadField;
        }
        record.Sequence = seqOffset;
        record.VirtualTimeNs = unchecked(previousTimeNs + (ulong)UnZigZag(timeDelta));
        bool ok = true;
        switch (record.Kind)
        {
            case AuditKind.IoIn:
            case AuditKind.IoOut:
                ok = TryReadU16(body, ref o, out record.Port) && TryReadByte(body, ref o, out record.Size) && TryReadVarint(body, ref o, out record.Value);
                break;
            case AuditKind.MmioRead:
            case AuditKind.MmioWrite:
                ok = TryReadVarint(body, ref o, out record.Address) && TryReadByte(body, ref o, out record.Size) && TryReadVarint(body, ref o, out record.Value);
                break;
            case AuditKind.Cpuid:
                ok = TryReadU32(body, ref o, out record.Leaf) && TryReadU32(body, ref o, out record.Subleaf)
                    && TryReadU32(body, ref o, out record.Eax) && TryReadU32(body, ref o, out record.Ebx)
                    && TryReadU32(body, ref o, out record.Ecx) && TryReadU32(body, ref o, out record.Edx);
                break;
            case AuditKind.Rdmsr:
            case AuditKind.Wrmsr:
                ok = TryReadVarint(body, ref o, out record.Address) && TryReadVarint(body, ref o, out record.Value);
                break;
            case AuditKind.DebugExit:
                ok = TryReadVarint(body, ref o, out record.Value);
                break;
            case AuditKind.VmStop:
                ok = TryReadVarint(body, ref o, out record.Value) && TryReadU32(body, ref o, out record.Reason);
                break;
            case AuditKind.ImageVerified:
                ok = body.Length - o >= 8 + Sha256Digest.Size;
                if (ok)
                {
                    record.KeyId = BinaryPrimitives.ReadUInt64BigEndian(body[o..]);
                    body.Slice(o + 8, Sha256Digest.Size).CopyTo(record.Digest);
                    o += 8 + Sha256Digest.Size;
                }
                break;
            case AuditKind.PolicyLoaded:
                ok = body.Length - o >= Sha256Digest.Size;
                if (ok)
                {
                    body.Slice(o, Sha256Digest.Size).CopyTo(record.Digest);
                    o += Sha256Digest.Size;
                }
                break;
            case AuditKind.FramesDropped:
                ok = TryReadU16(body, ref o, out record.Network) && TryReadU32(body, ref o, out record.Reason)
                    && TryReadVarint(body, ref o, out record.Value) && TryReadByte(body, ref o, out record.SampleLength)
                    && record.SampleLength <= FrameSample.Size && body.Length - o >= record.SampleLength;
                if (ok)
                {
                    body.Slice(o, record.SampleLength).CopyTo(record.Sample);
                    o += record.SampleLength;
                }
                break;
            default:
                break;
        }
        if (!ok)
        {
            fieldOffset = start + Math.Min(o, body.Length);
            return RecordError.BadField;
        }
        if (o != body.Length)
        {
            fieldOffset = start + o;
            return RecordError.TrailingBytes;
        }
        offset = start + length;
        return RecordError.None;
    }

    private static bool TryReadByte(ReadOnlySpan<byte> s, ref int o, out byte value)
    {
        if ((uint)o >= (uint)s.Length)
        {
            value = 0;
            return false;
        }
        value = s[o++];
        return true;
    }

    private static bool TryReadU16(ReadOnlySpan<byte> s, ref int o, out ushort value)
    {
        bool ok = TryReadVarint(s, ref o, out ulong v) && v <= ushort.MaxValue;
        value = (ushort)v;
        return ok;
    }

    private static bool TryReadU32(ReadOnlySpan<byte> s, ref int o, out uint value)
    {
        bool ok = TryReadVarint(s, ref o, out ulong v) && v <= uint.MaxValue;
        value = (uint)v;
        return ok;
    }

    // ---- checkpoints ----

    /// <summary>
    /// The bytes a checkpoint signature covers: domain string, log id, the checkpoint block's index,
    /// the last sequence it covers, the chain head (SHA-256 of the block before the checkpoint), the
    /// checkpoint's wall-clock time and its flags (docs/audit-format.md, "Checkpoints").
    /// </summary>
    public static byte[] CheckpointMessage(ReadOnlySpan<byte> logId, ulong blockIndex, ulong lastSequence, ReadOnlySpan<byte> chainHead, long wallUnixNs, byte flags)
    {
        var message = new byte[CheckpointDomain.Length + AuditLogHeader.LogIdSize + 8 + 8 + Sha256Digest.Size + 8 + 1];
        int o = 0;
        CheckpointDomain.CopyTo(message);
        o += CheckpointDomain.Length;
        logId.CopyTo(message.AsSpan(o));
        o += AuditLogHeader.LogIdSize;
        BinaryPrimitives.WriteUInt64LittleEndian(message.AsSpan(o), blockIndex);
        o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(message.AsSpan(o), lastSequence);
        o += 8;
        chainHead.CopyTo(message.AsSpan(o));
        o += Sha256Digest.Size;
        BinaryPrimitives.WriteInt64LittleEndian(message.AsSpan(o), wallUnixNs);
        o += 8;
        message[o] = flags;
        return message;
    }

    /// <summary>Encodes a checkpoint payload and returns its length.</summary>
    public static int EncodeCheckpointPayload(Span<byte> destination, string keyId, byte flags, ulong lastSequence, long wallUnixNs, ReadOnlySpan<byte> signature)
    {
        int keyBytes = Encoding.ASCII.GetByteCount(keyId);
        if (keyBytes > MaxKeyIdBytes || signature.Length > MaxSignatureBytes)
        {
            throw new AuditLogException($"audit key id (at most {MaxKeyIdBytes} bytes) or signature (at most {MaxSignatureBytes}) too long");
        }
        int o = 0;
        destination[o++] = (byte)keyBytes;
        o += Encoding.ASCII.GetBytes(keyId, destination[o..]);
        destination[o++] = flags;
        BinaryPrimitives.WriteUInt64LittleEndian(destination[o..], lastSequence);
        o += 8;
        BinaryPrimitives.WriteInt64LittleEndian(destination[o..], wallUnixNs);
        o += 8;
        destination[o++] = (byte)signature.Length;
        signature.CopyTo(destination[o..]);
        return o + signature.Length;
    }

    /// <summary>A decoded checkpoint payload.</summary>
    public readonly record struct Checkpoint(string KeyId, byte Flags, ulong LastSequence, long WallUnixNs, int SignatureOffset, int SignatureLength);

    /// <summary>Decodes a checkpoint payload; null (with the offending offset) when malformed.</summary>
    public static Checkpoint? DecodeCheckpointPayload(ReadOnlySpan<byte> payload, out int badOffset)
    {
        badOffset = 0;
        if (payload.Length < 1)
        {
            return null;
        }
        int keyBytes = payload[0];
        int o = 1;
        if (keyBytes > MaxKeyIdBytes || payload.Length - o < keyBytes + 1 + 8 + 8 + 1)
        {
            badOffset = 0;
            return null;
        }
        ReadOnlySpan<byte> key = payload.Slice(o, keyBytes);
        foreach (byte b in key)
        {
            if (b is < 0x21 or > 0x7E)
            {
                badOffset = o;
                return null;
            }
        }
        string keyId = Encoding.ASCII.GetString(key);
        o += keyBytes;
        byte flags = payload[o];
        if ((flags & ~CheckpointFinalFlag) != 0)
        {
            badOffset = o;
            return null;
        }
        o++;
        ulong last = BinaryPrimitives.ReadUInt64LittleEndian(payload[o..]);
        o += 8;
        long wall = BinaryPrimitives.ReadInt64LittleEndian(payload[o..]);
        o += 8;
        int sigLength = payload[o++];
        if (payload.Length - o != sigLength)
        {
            badOffset = o - 1;
            return null;
        }
        return new Checkpoint(keyId, flags, last, wall, o, sigLength);
    }
}
