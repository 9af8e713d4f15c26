using System.Buffers.Binary;

namespace SecureVmm.Tcb.Audit;

/// <summary>Block types (docs/audit-format.md, "Blocks").</summary>
public enum AuditBlockType : byte
{
    Records = 1,
    Checkpoint = 2,
}

/// <summary>A block's 64-byte header.</summary>
public struct AuditBlockHeader
{
    public AuditBlockType Type;
    public ulong Index;
    public ulong FirstSequence;
    public uint RecordCount;
    public uint PayloadLength;
    public Sha256Digest PreviousHash;

    public readonly void Write(Span<byte> destination)
    {
        AuditFormat.BlockMagic.CopyTo(destination);
        destination[4] = (byte)Type;
        destination[5] = 0;
        destination[6] = 0;
        destination[7] = 0;
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Index);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], FirstSequence);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[24..], RecordCount);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[28..], PayloadLength);
        ((ReadOnlySpan<byte>)PreviousHash).CopyTo(destination[32..]);
    }

    /// <summary>Reads a block header; false (with the offending field's offset within the header) when malformed.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out AuditBlockHeader header, out int badOffset, out string why)
    {
        header = default;
        badOffset = 0;
        why = "";
        if (!source[..4].SequenceEqual(AuditFormat.BlockMagic))
        {
            why = "expected block magic \"SVBK\"";
            return false;
        }
        byte type = source[4];
        if (type is not ((byte)AuditBlockType.Records or (byte)AuditBlockType.Checkpoint))
        {
            badOffset = 4;
            why = $"unknown block type {type}";
            return false;
        }
        if (source[5] != 0 || source[6] != 0 || source[7] != 0)
        {
            badOffset = 5;
            why = "reserved bytes are not zero";
            return false;
        }
        header.Type = (AuditBlockType)type;
        header.Index = BinaryPrimitives.ReadUInt64LittleEndian(source[8..]);
        header.FirstSequence = BinaryPrimitives.ReadUInt64LittleEndian(source[16..]);
        header.RecordCount = BinaryPrimitives.ReadUInt32LittleEndian(source[24..]);
        header.PayloadLength = BinaryPrimitives.ReadUInt32LittleEndian(source[28..]);
        source.Slice(32, Sha256Digest.Size).CopyTo(header.PreviousHash);
        return true;
    }
}
