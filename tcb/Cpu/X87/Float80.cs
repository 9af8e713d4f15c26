using System.Buffers.Binary;

namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// The operand classes the x87 distinguishes (SDM vol.1 4.8, 8.2.1 and the FXAM table in vol.2A).
/// </summary>
public enum Float80Class : byte
{
    Zero,
    Normal,
    /// <summary>Exponent field 0 with a non-zero significand (includes the 8087's pseudo-denormals).</summary>
    Denormal,
    Infinity,
    QuietNaN,
    SignalingNaN,
    /// <summary>Unnormals, pseudo-NaNs and pseudo-infinities: invalid operands since the 80387 (SDM vol.1 8.2.2).</summary>
    Unsupported,
}

/// <summary>
/// A double extended-precision value exactly as the x87 holds it (SDM vol.1 4.2.2, figure 4-3):
/// sign, 15-bit biased exponent (bias 16383) and a 64-bit significand whose bit 63 is the
/// explicit integer bit. The struct is a plain bit container; arithmetic lives in
/// <see cref="ExtendedArithmetic"/>.
/// </summary>
public readonly struct Float80 : IEquatable<Float80>
{
    public const int ExponentBias = 16383;
    public const int MaxBiasedExponent = 0x7FFF;
    public const ulong IntegerBit = 1UL << 63;
    public const ulong QuietBit = 1UL << 62;

    /// <summary>Significand with the explicit integer bit at bit 63.</summary>
    public readonly ulong Significand;

    /// <summary>Bit 15 = sign, bits 14..0 = biased exponent.</summary>
    public readonly ushort SignExponent;

    public Float80(ushort signExponent, ulong significand)
    {
        SignExponent = signExponent;
        Significand = significand;
    }

    public Float80(bool negative, int biasedExponent, ulong significand)
    {
        SignExponent = (ushort)((negative ? 0x8000 : 0) | (biasedExponent & 0x7FFF));
        Significand = significand;
    }

    public static Float80 PositiveZero => default;
    public static Float80 NegativeZero => new(0x8000, 0);
    public static Float80 One => new(ExponentBias, IntegerBit);
    public static Float80 PositiveInfinity => new(0x7FFF, IntegerBit);
    public static Float80 NegativeInfinity => new(0xFFFF, IntegerBit);

    /// <summary>The "real indefinite" QNaN the x87 delivers as the masked invalid-operation response (SDM vol.1 4.8.3.7).</summary>
    public static Float80 Indefinite => new(0xFFFF, 0xC000_0000_0000_0000);

    public bool IsNegative => (SignExponent & 0x8000) != 0;
    public int BiasedExponent => SignExponent & 0x7FFF;

    public Float80Class Class
    {
        get
        {
            int e = BiasedExponent;
            ulong s = Significand;
            if (e == 0)
            {
                return s == 0 ? Float80Class.Zero : Float80Class.Denormal;
            }
            if ((s & IntegerBit) == 0)
            {
                return Float80Class.Unsupported;
            }
            if (e == MaxBiasedExponent)
            {
                if ((s << 1) == 0)
                {
                    return Float80Class.Infinity;
                }
                return (s & QuietBit) != 0 ? Float80Class.QuietNaN : Float80Class.SignalingNaN;
            }
            return Float80Class.Normal;
        }
    }

    public bool IsZero => BiasedExponent == 0 && Significand == 0;
    public bool IsNaN => BiasedExponent == MaxBiasedExponent && (Significand & IntegerBit) != 0 && (Significand << 1) != 0;
    public bool IsSignalingNaN => IsNaN && (Significand & QuietBit) == 0;
    public bool IsInfinity => BiasedExponent == MaxBiasedExponent && Significand == IntegerBit;

    public Float80 Negate() => new((ushort)(SignExponent ^ 0x8000), Significand);
    public Float80 Abs() => new((ushort)(SignExponent & 0x7FFF), Significand);
    public Float80 WithSign(bool negative) => new((ushort)((SignExponent & 0x7FFF) | (negative ? 0x8000 : 0)), Significand);

    /// <summary>The QNaN an SNaN becomes when it passes through an operation (SDM vol.1 4.8.3.4).</summary>
    public Float80 Quieted() => new(SignExponent, Significand | QuietBit);

    /// <summary>Reads the 10-byte memory format (little-endian significand, then sign/exponent).</summary>
    public static Float80 Read(ReadOnlySpan<byte> bytes) =>
        new(BinaryPrimitives.ReadUInt16LittleEndian(bytes[8..]), BinaryPrimitives.ReadUInt64LittleEndian(bytes));

    public void Write(Span<byte> bytes)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, Significand);
        BinaryPrimitives.WriteUInt16LittleEndian(bytes[8..], SignExponent);
    }

    /// <summary>Exact conversion from a .NET double (every double is representable). For tests and transcendental helpers.</summary>
    public static Float80 FromDouble(double value)
    {
        ulong bits = BitConverter.DoubleToUInt64Bits(value);
        bool negative = (bits >> 63) != 0;
        int e = (int)(bits >> 52) & 0x7FF;
        ulong fraction = bits & 0x000F_FFFF_FFFF_FFFF;
        if (e == 0x7FF)
        {
            return new Float80(negative, MaxBiasedExponent, IntegerBit | (fraction << 11));
        }
        if (e == 0)
        {
            if (fraction == 0)
            {
                return new Float80(negative, 0, 0);
            }
            // Double denormal: value = fraction * 2^-1074; normalise into the wider exponent range.
            int lz = System.Numerics.BitOperations.LeadingZeroCount(fraction);
            return new Float80(negative, ExponentBias - 1074 + 63 - lz, fraction << lz);
        }
        return new Float80(negative, e - 1023 + ExponentBias, IntegerBit | (fraction << 11));
    }

    public bool Equals(Float80 other) => Significand == other.Significand && SignExponent == other.SignExponent;
    public override bool Equals(object? obj) => obj is Float80 other && Equals(other);
    public override int GetHashCode() => HashCode.Combine(Significand, SignExponent);
    public static bool operator ==(Float80 left, Float80 right) => left.Equals(right);
    public static bool operator !=(Float80 left, Float80 right) => !left.Equals(right);

    public override string ToString() => $"{SignExponent:X4}:{Significand:X16}";
}
