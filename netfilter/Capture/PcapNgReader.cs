using System.Buffers.Binary;
using System.Text;

namespace SecureVmm.NetFilter.Capture;

/// <summary>One frame read back from a pcapng file.</summary>
/// <param name="TimestampMicroseconds">Microseconds since the Unix epoch (if_tsresol 6, the default).</param>
/// <param name="Direction">From epb_flags bits 0-1, or null when the block does not say.</param>
/// <param name="Comment">The first opt_comment, or null.</param>
public sealed record CapturedFrame(long TimestampMicroseconds, int InterfaceId, FrameDirection? Direction, string? Comment, byte[] Data, int OriginalLength);

/// <summary>A pcapng file that cannot be read; the message names the byte offset.</summary>
public sealed class PcapFormatException : Exception
{
    public PcapFormatException()
    {
    }

    public PcapFormatException(string message)
        : base(message)
    {
    }

    public PcapFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// Reads the pcapng subset <see cref="PcapNgWriter"/> writes (little-endian sections; SHB, IDB,
/// EPB; other block types skipped). Every length is checked against the block and the file, so a
/// damaged file yields a <see cref="PcapFormatException"/> naming the offset.
/// </summary>
public static class PcapNgReader
{
    public static IReadOnlyList<CapturedFrame> ReadFile(string path) => Read(File.ReadAllBytes(path));

    public static IReadOnlyList<CapturedFrame> Read(ReadOnlySpan<byte> file)
    {
        var frames = new List<CapturedFrame>();
        int offset = 0;
        bool sawSection = false;
        var linkTypes = new List<ushort>();
        while (offset < file.Length)
        {
            if (file.Length - offset < 12)
            {
                throw new PcapFormatException($"pcapng: truncated block header at offset {offset}");
            }
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(file[offset..]);
            if (type == 0x0A0D0D0A)
            {
                if (BinaryPrimitives.ReadUInt32LittleEndian(file[(offset + 8)..]) != 0x1A2B3C4D)
                {
                    throw new PcapFormatException($"pcapng: section at offset {offset} is not little-endian (byte-order magic)");
                }
                sawSection = true;
                linkTypes.Clear();
            }
            else if (!sawSection)
            {
                throw new PcapFormatException("pcapng: file does not start with a section header block (offset 0)");
            }
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(file[(offset + 4)..]);
            if (length < 12 || length % 4 != 0 || length > file.Length - offset)
            {
                throw new PcapFormatException($"pcapng: block at offset {offset} has bad length {length}");
            }
            var block = file.Slice(offset, (int)length);
            if (BinaryPrimitives.ReadUInt32LittleEndian(block[^4..]) != length)
            {
                throw new PcapFormatException($"pcapng: block at offset {offset} has mismatched trailing length");
            }
            var body = block[8..^4];
            switch (type)
            {
                case 0x00000001:
                    if (body.Length < 8)
                    {
                        throw new PcapFormatException($"pcapng: interface block at offset {offset} is too short");
                    }
                    linkTypes.Add(BinaryPrimitives.ReadUInt16LittleEndian(body));
                    break;
                case 0x00000006:
                    frames.Add(ReadEnhancedPacket(body, offset, linkTypes.Count));
                    break;
            }
            offset += (int)length;
        }
        return frames;
    }

    private static CapturedFrame ReadEnhancedPacket(ReadOnlySpan<byte> body, int offset, int interfaces)
    {
        if (body.Length < 20)
        {
            throw new PcapFormatException($"pcapng: packet block at offset {offset} is too short");
        }
        int interfaceId = (int)BinaryPrimitives.ReadUInt32LittleEndian(body);
        if (interfaceId >= interfaces)
        {
            throw new PcapFormatException($"pcapng: packet block at offset {offset} names interface {interfaceId}, but only {interfaces} are described");
        }
        long timestamp = ((long)BinaryPrimitives.ReadUInt32LittleEndian(body[4..]) << 32) | BinaryPrimitives.ReadUInt32LittleEndian(body[8..]);
        uint captured = BinaryPrimitives.ReadUInt32LittleEndian(body[12..]);
        uint original = BinaryPrimitives.ReadUInt32LittleEndian(body[16..]);
        long padded = (captured + 3L) & ~3L;
        if (padded > body.Length - 20)
        {
            throw new PcapFormatException($"pcapng: packet block at offset {offset} claims {captured} captured bytes, more than the block holds");
        }
        var data = body.Slice(20, (int)captured).ToArray();
        var options = body[(20 + (int)padded)..];
        FrameDirection? direction = null;
        string? comment = null;
        while (options.Length >= 4)
        {
            ushort code = BinaryPrimitives.ReadUInt16LittleEndian(options);
            int optionLength = BinaryPrimitives.ReadUInt16LittleEndian(options[2..]);
            if (code == 0)
            {
                break;
            }
            int optionPadded = (optionLength + 3) & ~3;
            if (optionPadded > options.Length - 4)
            {
                throw new PcapFormatException($"pcapng: option {code} in packet block at offset {offset} overruns the block");
            }
            var value = options.Slice(4, optionLength);
            if (code == 1 && comment is null)
            {
                comment = Encoding.UTF8.GetString(value);
            }
            else if (code == 2 && optionLength == 4)
            {
                direction = (BinaryPrimitives.ReadUInt32LittleEndian(value) & 3) switch
                {
                    1 => FrameDirection.Inbound,
                    2 => FrameDirection.Outbound,
                    _ => null,
                };
            }
            options = options[(4 + optionPadded)..];
        }
        return new CapturedFrame(timestamp, interfaceId, direction, comment, data, (int)original);
    }
}
