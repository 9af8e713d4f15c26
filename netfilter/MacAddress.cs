using System.Globalization;

namespace SecureVmm.NetFilter;

/// <summary>A 48-bit IEEE 802 MAC address, as a value (no allocation when compared).</summary>
public readonly record struct MacAddress(ulong Value)
{
    public static readonly MacAddress Broadcast = new(0xFFFF_FFFF_FFFFUL);

    /// <summary>Reads six bytes in network order.</summary>
    public static MacAddress Read(ReadOnlySpan<byte> six)
    {
        if (six.Length < 6)
        {
            throw new ArgumentException("a MAC address needs 6 bytes", nameof(six));
        }
        ulong v = 0;
        for (int i = 0; i < 6; i++)
        {
            v = (v << 8) | six[i];
        }
        return new MacAddress(v);
    }

    /// <summary>Writes six bytes in network order.</summary>
    public void Write(Span<byte> six)
    {
        for (int i = 5; i >= 0; i--)
        {
            six[i] = (byte)(Value >> (8 * (5 - i)));
        }
    }

    /// <summary>Group (multicast or broadcast) bit: least significant bit of the first octet.</summary>
    public bool IsMulticast => ((Value >> 40) & 1) != 0;

    /// <summary>Parses "aa:bb:cc:dd:ee:ff" (colons or dashes); false on anything else.</summary>
    public static bool TryParse(string? text, out MacAddress mac)
    {
        mac = default;
        if (text is null || text.Length != 17)
        {
            return false;
        }
        ulong v = 0;
        for (int i = 0; i < 6; i++)
        {
            if (i > 0 && text[(i * 3) - 1] is not (':' or '-'))
            {
                return false;
            }
            if (!byte.TryParse(text.AsSpan(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                return false;
            }
            v = (v << 8) | b;
        }
        mac = new MacAddress(v);
        return true;
    }

    public override string ToString()
    {
        Span<byte> b = stackalloc byte[6];
        Write(b);
        return string.Create(CultureInfo.InvariantCulture, $"{b[0]:x2}:{b[1]:x2}:{b[2]:x2}:{b[3]:x2}:{b[4]:x2}:{b[5]:x2}");
    }
}
