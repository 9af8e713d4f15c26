using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SecureVmm.NetFilter;

/// <summary>Address family of an <see cref="IpPrefix"/> or a parsed packet.</summary>
public enum IpFamily : byte
{
    None = 0,
    V4 = 4,
    V6 = 6,
}

/// <summary>
/// An IPv4 or IPv6 CIDR prefix (RFC 4632, RFC 4291 section 2.3) kept as a 128-bit value so that
/// matching is two integer operations and never allocates. IPv4 addresses live in the low 32 bits.
/// Host bits below the prefix length are cleared on construction.
/// </summary>
public readonly record struct IpPrefix
{
    public IpPrefix(IpFamily family, UInt128 address, int length)
    {
        int bits = family switch
        {
            IpFamily.V4 => 32,
            IpFamily.V6 => 128,
            _ => throw new ArgumentOutOfRangeException(nameof(family), family, "IPv4 or IPv6"),
        };
        if (length < 0 || length > bits)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"prefix length must be 0..{bits}");
        }
        Family = family;
        Length = length;
        // Mask with `length` leading ones inside a `bits`-wide field.
        UInt128 mask = length == 0 ? UInt128.Zero : (UInt128.MaxValue << (128 - length)) >> (128 - bits);
        Mask = mask;
        Network = address & mask;
    }

    public IpFamily Family { get; }
    public UInt128 Network { get; }
    public UInt128 Mask { get; }
    public int Length { get; }

    /// <summary>True when <paramref name="address"/> of the given family lies inside this prefix.</summary>
    public bool Contains(IpFamily family, UInt128 address) => family == Family && (address & Mask) == Network;

    /// <summary>A single-address prefix (/32 or /128).</summary>
    public static IpPrefix Host(IPAddress address)
    {
        var (family, value) = IpAddressBits.FromIpAddress(address);
        return new IpPrefix(family, value, family == IpFamily.V4 ? 32 : 128);
    }

    /// <summary>Parses "10.0.0.0/24", "fd00::/8" or a bare address (host prefix).</summary>
    public static bool TryParse(string? text, out IpPrefix prefix)
    {
        prefix = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }
        int slash = text.IndexOf('/', StringComparison.Ordinal);
        string addressText = slash < 0 ? text : text[..slash];
        if (addressText.Contains('%', StringComparison.Ordinal) || !IPAddress.TryParse(addressText, out var address))
        {
            return false;
        }
        if (address.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
        {
            return false;
        }
        var (family, value) = IpAddressBits.FromIpAddress(address);
        int max = family == IpFamily.V4 ? 32 : 128;
        int length = max;
        if (slash >= 0 && (!int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out length) || length > max))
        {
            return false;
        }
        prefix = new IpPrefix(family, value, length);
        return true;
    }

    public static IpPrefix Parse(string text) =>
        TryParse(text, out var p) ? p : throw new FormatException($"'{text}' is not an IPv4 or IPv6 prefix like 10.0.0.0/24 or fd00::/64");

    public override string ToString() => $"{IpAddressBits.Format(Family, Network)}/{Length.ToString(CultureInfo.InvariantCulture)}";
}

/// <summary>Conversions between <see cref="IPAddress"/> and the filter's 128-bit address form.</summary>
public static class IpAddressBits
{
    public static (IpFamily Family, UInt128 Value) FromIpAddress(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        Span<byte> bytes = stackalloc byte[16];
        if (!address.TryWriteBytes(bytes, out int written))
        {
            throw new ArgumentException("address does not fit 16 bytes", nameof(address));
        }
        return written switch
        {
            4 => (IpFamily.V4, BinaryPrimitives.ReadUInt32BigEndian(bytes)),
            16 => (IpFamily.V6, BinaryPrimitives.ReadUInt128BigEndian(bytes)),
            _ => throw new ArgumentException("not an IPv4 or IPv6 address", nameof(address)),
        };
    }

    public static IPAddress ToIpAddress(IpFamily family, UInt128 value)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (family == IpFamily.V4)
        {
            BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)value);
            return new IPAddress(bytes[..4]);
        }
        BinaryPrimitives.WriteUInt128BigEndian(bytes, value);
        return new IPAddress(bytes);
    }

    public static string Format(IpFamily family, UInt128 value) => ToIpAddress(family, value).ToString();

    /// <summary>
    /// The IPv6 link-local address a host forms from its MAC: fe80::/64 plus the modified EUI-64
    /// interface identifier (RFC 4291 section 2.5.1 and appendix A: insert ff:fe in the middle and
    /// invert the universal/local bit).
    /// </summary>
    public static UInt128 Ipv6LinkLocalFromMac(MacAddress mac)
    {
        ulong m = mac.Value;
        ulong upper = (m >> 24) & 0xFF_FFFF;
        ulong lower = m & 0xFF_FFFF;
        ulong interfaceId = (upper << 40) | (0xFFFEUL << 24) | lower;
        interfaceId ^= 0x0200_0000_0000_0000UL;
        return new UInt128(0xFE80_0000_0000_0000UL, interfaceId);
    }
}
