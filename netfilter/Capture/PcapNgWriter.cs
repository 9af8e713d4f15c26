using System.Buffers.Binary;
using System.Text;

namespace SecureVmm.NetFilter.Capture;

/// <summary>Records frames with the filter's verdict (e.g. to a capture file).</summary>
public interface IFrameCapture
{
    void Capture(FrameDirection direction, Verdict verdict, ReadOnlySpan<byte> frame);
}

/// <summary>
/// Writes a pcapng file (draft-ietf-opsawg-pcapng, "PCAP Next Generation Dump File Format"):
/// one Section Header Block, one Interface Description Block with LINKTYPE_ETHERNET (1), then an
/// Enhanced Packet Block per frame carrying
/// <list type="bullet">
/// <item>epb_flags (option 2): direction in bits 0-1, 01 = inbound (network to guest), 10 = outbound (guest to network);</item>
/// <item>opt_comment (option 1): the verdict, e.g. "out allow rule 2" or "in drop NotForThisVm".</item>
/// </list>
/// tshark and tcpdump read it; `tshark -r FILE -T fields -e frame.comment -e pcapng.epb.flags` (or
/// Wireshark's packet comments column) shows both. Timestamps are microseconds (the default
/// if_tsresol). Thread-safe: both directions of a link may write at once. Writing a frame does
/// not allocate.
/// </summary>
public sealed class PcapNgWriter : IFrameCapture, IDisposable
{
    private const uint SectionHeaderBlock = 0x0A0D0D0A;
    private const uint InterfaceDescriptionBlock = 0x00000001;
    private const uint EnhancedPacketBlock = 0x00000006;
    private const uint ByteOrderMagic = 0x1A2B3C4D;
    private const ushort LinkTypeEthernet = 1;
    private const ushort OptionEnd = 0;
    private const ushort OptionComment = 1;
    private const ushort EpbFlags = 2;
    private const ushort ShbUserApplication = 4;
    private const ushort IfName = 2;
    private const int MaxCommentBytes = 64;

    private static readonly byte[][] ReasonNames = Enum.GetValues<DropReason>().Select(r => Encoding.ASCII.GetBytes(r.ToString())).ToArray();

    private readonly object _gate = new();
    private readonly Stream _stream;
    private readonly bool _ownsStream;
    private readonly TimeProvider _time;
    private readonly int _snapLength;
    private readonly byte[] _block;
    private long _frames;
    private bool _disposed;

    /// <param name="stream">Destination; written from its current position.</param>
    /// <param name="interfaceName">Stored as if_name, shown by tshark as the capture interface.</param>
    /// <param name="time">Timestamps source; tests pass a fixed one.</param>
    /// <param name="snapLength">Frames longer than this are truncated in the file (original length kept).</param>
    public PcapNgWriter(Stream stream, string interfaceName = "securevmm", TimeProvider? time = null, int snapLength = FilterConfig.AbsoluteMaxFrameBytes, bool ownsStream = true)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(interfaceName);
        ArgumentOutOfRangeException.ThrowIfLessThan(snapLength, 1);
        _stream = stream;
        _ownsStream = ownsStream;
        _time = time ?? TimeProvider.System;
        _snapLength = snapLength;
        // Largest EPB: 28 header + padded data + comment option + flags option + end option + trailer.
        _block = new byte[28 + Pad4(snapLength) + 4 + MaxCommentBytes + 8 + 4 + 4];
        WriteSectionHeader();
        WriteInterfaceDescription(interfaceName);
        _stream.Flush();
    }

    /// <summary>Creates (or truncates) a file and writes the headers.</summary>
    public static PcapNgWriter Create(string path, string interfaceName = "securevmm", TimeProvider? time = null) =>
        new(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16), interfaceName, time);

    public long Frames => Interlocked.Read(ref _frames);

    public void Capture(FrameDirection direction, Verdict verdict, ReadOnlySpan<byte> frame)
    {
        Span<byte> comment = stackalloc byte[MaxCommentBytes];
        int length = FormatVerdict(direction, verdict, comment);
        Write(direction, frame, comment[..length]);
    }

    /// <summary>Writes one frame with a free-form ASCII comment (at most 64 bytes are kept).</summary>
    public void Write(FrameDirection direction, ReadOnlySpan<byte> frame, ReadOnlySpan<byte> comment)
    {
        if (comment.Length > MaxCommentBytes)
        {
            comment = comment[..MaxCommentBytes];
        }
        int captured = Math.Min(frame.Length, _snapLength);
        long micros = (_time.GetUtcNow().UtcTicks - DateTime.UnixEpoch.Ticks) / 10;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            var b = _block.AsSpan();
            int p = 0;
            p = PutU32(b, p, EnhancedPacketBlock);
            int lengthAt = p;
            p = PutU32(b, p, 0);
            p = PutU32(b, p, 0); // interface id
            p = PutU32(b, p, (uint)(micros >> 32));
            p = PutU32(b, p, (uint)micros);
            p = PutU32(b, p, (uint)captured);
            p = PutU32(b, p, (uint)frame.Length);
            frame[..captured].CopyTo(b[p..]);
            b.Slice(p + captured, Pad4(captured) - captured).Clear();
            p += Pad4(captured);
            p = PutOption(b, p, OptionComment, comment);
            Span<byte> flags = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(flags, direction == FrameDirection.Inbound ? 1u : 2u);
            p = PutOption(b, p, EpbFlags, flags);
            p = PutOption(b, p, OptionEnd, []);
            int total = p + 4;
            PutU32(b, p, (uint)total);
            BinaryPrimitives.WriteUInt32LittleEndian(b[lengthAt..], (uint)total);
            _stream.Write(b[..total]);
            _frames++;
        }
    }

    /// <summary>"out allow rule 3", "in allow dhcp", "out drop SpoofedSourceMac", "in drop RateLimited rule 1".</summary>
    public static int FormatVerdict(FrameDirection direction, Verdict verdict, Span<byte> destination)
    {
        int p = Append(destination, 0, direction == FrameDirection.Inbound ? "in "u8 : "out "u8);
        if (verdict.IsAllowed)
        {
            p = Append(destination, p, "allow"u8);
        }
        else
        {
            p = Append(destination, p, "drop "u8);
            p = Append(destination, p, ReasonNames[(int)verdict.Reason]);
        }
        if (verdict.RuleIndex == Verdict.DhcpRule)
        {
            p = Append(destination, p, " dhcp"u8);
        }
        else if (verdict.RuleIndex >= 0)
        {
            p = Append(destination, p, " rule "u8);
            if (verdict.RuleIndex.TryFormat(destination[p..], out int written, default, System.Globalization.CultureInfo.InvariantCulture))
            {
                p += written;
            }
        }
        return p;
    }

    private static int Append(Span<byte> destination, int at, ReadOnlySpan<byte> text)
    {
        int n = Math.Min(text.Length, destination.Length - at);
        text[..n].CopyTo(destination[at..]);
        return at + n;
    }

    /// <summary>Pushes buffered blocks to the file (so a reader sees them while capture goes on).</summary>
    public void Flush()
    {
        lock (_gate)
        {
            if (!_disposed)
            {
                _stream.Flush();
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _stream.Flush();
            if (_ownsStream)
            {
                _stream.Dispose();
            }
        }
    }

    private void WriteSectionHeader()
    {
        var app = Encoding.ASCII.GetBytes("SecureVmm netfilter");
        var b = new byte[28 + 4 + Pad4(app.Length) + 4];
        int p = PutU32(b, 0, SectionHeaderBlock);
        p = PutU32(b, p, (uint)b.Length);
        p = PutU32(b, p, ByteOrderMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(p), 1); // major
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(p + 2), 0); // minor
        p += 4;
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(p), -1); // section length: not specified
        p += 8;
        p = PutOption(b, p, ShbUserApplication, app);
        p = PutOption(b, p, OptionEnd, []);
        PutU32(b, p, (uint)b.Length);
        _stream.Write(b);
    }

    private void WriteInterfaceDescription(string interfaceName)
    {
        var name = Encoding.UTF8.GetBytes(interfaceName);
        var b = new byte[16 + 4 + Pad4(name.Length) + 4 + 4];
        int p = PutU32(b, 0, InterfaceDescriptionBlock);
        p = PutU32(b, p, (uint)b.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(p), LinkTypeEthernet);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(p + 2), 0);
        p += 4;
        p = PutU32(b, p, (uint)_snapLength);
        p = PutOption(b, p, IfName, name);
        p = PutOption(b, p, OptionEnd, []);
        PutU32(b, p, (uint)b.Length);
        _stream.Write(b);
    }

    private static int PutU32(Span<byte> b, int at, uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b[at..], value);
        return at + 4;
    }

    private static int PutOption(Span<byte> b, int at, ushort code, ReadOnlySpan<byte> value)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(b[at..], code);
        BinaryPrimitives.WriteUInt16LittleEndian(b[(at + 2)..], (ushort)value.Length);
        value.CopyTo(b[(at + 4)..]);
        int padded = Pad4(value.Length);
        b.Slice(at + 4 + value.Length, padded - value.Length).Clear();
        return at + 4 + padded;
    }

    private static int Pad4(int n) => (n + 3) & ~3;
}
