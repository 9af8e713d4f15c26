using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace SecureVmm.Tcb.Audit;

/// <summary>A problem in an audit log file or in what a writer was asked to write.</summary>
public sealed class AuditLogException(string message) : Exception(message);

/// <summary>
/// The audit log's file header: who wrote the log and the names its records refer to by number.
/// Byte layout in docs/audit-format.md, "File header".
/// </summary>
public sealed class AuditLogHeader
{
    public const int LogIdSize = 16;
    public const int MaxNames = 1024;
    public const int MaxNameBytes = 64;

    public AuditLogHeader(ReadOnlySpan<byte> logId, long createdUnixNs, IReadOnlyList<string> vmNames, IReadOnlyList<string> networkNames)
    {
        if (logId.Length != LogIdSize)
        {
            throw new AuditLogException($"audit log id must be {LogIdSize} bytes, got {logId.Length}");
        }
        CheckNames(vmNames, "VM");
        CheckNames(networkNames, "network");
        LogId = logId.ToArray();
        CreatedUnixNs = createdUnixNs;
        VmNames = [.. vmNames];
        NetworkNames = [.. networkNames];
    }

    /// <summary>A header with a fresh random log id and the current wall-clock time.</summary>
    public static AuditLogHeader Create(IReadOnlyList<string> vmNames, IReadOnlyList<string>? networkNames = null) =>
        new(RandomNumberGenerator.GetBytes(LogIdSize), (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100,
            vmNames, networkNames ?? []);

    public byte[] LogId { get; }
    public long CreatedUnixNs { get; }
    public IReadOnlyList<string> VmNames { get; }
    public IReadOnlyList<string> NetworkNames { get; }
    /// <summary>The writer's block limits, as written to the file (informational; the reader enforces the format maxima).</summary>
    public int MaxBlockPayloadBytes { get; init; } = AuditFormat.DefaultMaxBlockPayloadBytes;
    public int MaxBlockRecords { get; init; } = AuditFormat.DefaultMaxBlockRecords;

    private static void CheckNames(IReadOnlyList<string> names, string what)
    {
        if (names.Count > MaxNames)
        {
            throw new AuditLogException($"audit log header: at most {MaxNames} {what} names, got {names.Count}");
        }
        for (int i = 0; i < names.Count; i++)
        {
            int bytes = Encoding.UTF8.GetByteCount(names[i]);
            if (bytes is 0 or > MaxNameBytes)
            {
                throw new AuditLogException($"audit log header: {what} name {i} must be 1..{MaxNameBytes} UTF-8 bytes, got {bytes}");
            }
        }
    }

    /// <summary>The header's bytes (the hash of these is block 0's previous-block hash).</summary>
    public byte[] Encode()
    {
        var bytes = new List<byte>(256);
        bytes.AddRange(AuditFormat.Magic);
        Span<byte> fixedPart = stackalloc byte[AuditFormat.HeaderFixedSize - 8];
        BinaryPrimitives.WriteUInt16LittleEndian(fixedPart, AuditFormat.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(fixedPart[2..], 0);
        // [4..8) header length, patched below.
        LogId.CopyTo(fixedPart[8..]);
        BinaryPrimitives.WriteInt64LittleEndian(fixedPart[24..], CreatedUnixNs);
        BinaryPrimitives.WriteUInt32LittleEndian(fixedPart[32..], (uint)MaxBlockPayloadBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(fixedPart[36..], (uint)MaxBlockRecords);
        bytes.AddRange(fixedPart.ToArray());
        AddNames(bytes, VmNames);
        AddNames(bytes, NetworkNames);
        byte[] result = [.. bytes];
        BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(12), (uint)result.Length);
        return result;
    }

    private static void AddNames(List<byte> bytes, IReadOnlyList<string> names)
    {
        bytes.Add((byte)names.Count);
        bytes.Add((byte)(names.Count >> 8));
        foreach (string name in names)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(name);
            bytes.Add((byte)utf8.Length);
            bytes.AddRange(utf8);
        }
    }

    /// <summary>Parses header bytes; the error names the byte offset and what was expected.</summary>
    public static AuditLogHeader Decode(ReadOnlySpan<byte> header)
    {
        if (header.Length < AuditFormat.HeaderFixedSize || !header[..8].SequenceEqual(AuditFormat.Magic))
        {
            throw new AuditLogException("offset 0: not a SecureVmm audit log (expected magic \"SVMMAUD1\")");
        }
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(header[8..]);
        if (version != AuditFormat.Version)
        {
            throw new AuditLogException($"offset 8: unsupported audit format version {version} (this reader knows {AuditFormat.Version})");
        }
        ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(header[10..]);
        if (flags != 0)
        {
            throw new AuditLogException($"offset 10: unknown header flags 0x{flags:x4}");
        }
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
        if (length != header.Length)
        {
            throw new AuditLogException($"offset 12: header length {length} does not match {header.Length}");
        }
        long created = BinaryPrimitives.ReadInt64LittleEndian(header[32..]);
        uint maxPayload = BinaryPrimitives.ReadUInt32LittleEndian(header[40..]);
        uint maxRecords = BinaryPrimitives.ReadUInt32LittleEndian(header[44..]);
        if (maxPayload is < AuditFormat.MinBlockPayloadBytes or > AuditFormat.MaxBlockPayloadBytes)
        {
            throw new AuditLogException($"offset 40: block payload limit {maxPayload} outside {AuditFormat.MinBlockPayloadBytes}..{AuditFormat.MaxBlockPayloadBytes}");
        }
        if (maxRecords is 0 or > AuditFormat.MaxBlockRecordsLimit)
        {
            throw new AuditLogException($"offset 44: block record limit {maxRecords} outside 1..{AuditFormat.MaxBlockRecordsLimit}");
        }
        int offset = AuditFormat.HeaderFixedSize;
        string[] vms = DecodeNames(header, ref offset, "VM");
        string[] networks = DecodeNames(header, ref offset, "network");
        if (offset != header.Length)
        {
            throw new AuditLogException($"offset {offset}: {header.Length - offset} unexpected bytes at the end of the header");
        }
        return new AuditLogHeader(header.Slice(16, LogIdSize), created, vms, networks)
        {
            MaxBlockPayloadBytes = (int)maxPayload,
            MaxBlockRecords = (int)maxRecords,
        };
    }

    private static string[] DecodeNames(ReadOnlySpan<byte> header, ref int offset, string what)
    {
        if (header.Length - offset < 2)
        {
            throw new AuditLogException($"offset {offset}: header ends before the {what} name count");
        }
        int count = BinaryPrimitives.ReadUInt16LittleEndian(header[offset..]);
        if (count > MaxNames)
        {
            throw new AuditLogException($"offset {offset}: {count} {what} names, at most {MaxNames}");
        }
        offset += 2;
        var names = new string[count];
        for (int i = 0; i < count; i++)
        {
            if (offset >= header.Length)
            {
                throw new AuditLogException($"offset {offset}: header ends inside the {what} name table (name {i})");
            }
            int len = header[offset];
            if (len is 0 or > MaxNameBytes || header.Length - offset - 1 < len)
            {
                throw new AuditLogException($"offset {offset}: {what} name {i} length {len} is outside 1..{MaxNameBytes} or past the header's end");
            }
            try
            {
                names[i] = new UTF8Encoding(false, true).GetString(header.Slice(offset + 1, len));
            }
            catch (ArgumentException)
            {
                throw new AuditLogException($"offset {offset + 1}: {what} name {i} is not valid UTF-8");
            }
            offset += 1 + len;
        }
        return names;
    }
}
