using System.Numerics;

namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// Conversions between the register format and the memory formats (SDM vol.1 4.2, 4.7, 4.8, 8.2):
/// single (m32fp), double (m64fp), packed BCD (m80bcd). Loads of single/double are exact; stores
/// round under the rounding control to the destination's precision and exponent range.
/// </summary>
public static class MemoryFormats
{
    /// <summary>Single-precision QNaN floating-point indefinite (SDM vol.1 table 4-3).</summary>
    public const uint SingleIndefinite = 0xFFC0_0000;
    public const ulong DoubleIndefinite = 0xFFF8_0000_0000_0000;

    /// <summary>Integer indefinite values are the most negative integers (SDM vol.1 4.2.1.1).</summary>
    public const long Int16Indefinite = short.MinValue;
    public const long Int32Indefinite = int.MinValue;
    public const long Int64Indefinite = long.MinValue;

    /// <summary>Largest magnitude FBSTP can store: 18 decimal digits.</summary>
    public const long MaxBcd = 999_999_999_999_999_999;

    public static Float80 FromSingleBits(uint bits, ref X87Arithmetic env, bool quietSignaling = true) =>
        FromBinary(bits, 23, 8, quietSignaling, ref env);

    public static Float80 FromDoubleBits(ulong bits, ref X87Arithmetic env, bool quietSignaling = true) =>
        FromBinary(bits, 52, 11, quietSignaling, ref env);

    /// <summary>
    /// Exact widening load (FLD m32fp/m64fp): SNaN sources raise IE and are quieted, denormal
    /// sources raise DE (SDM vol.2A FLD). An arithmetic or compare instruction's memory operand
    /// keeps its SNaN (<paramref name="quietSignaling"/> false) so that the operation raises IE
    /// and applies the NaN-selection rules of SDM vol.1 table 4-7 to the original operands.
    /// </summary>
    private static Float80 FromBinary(ulong bits, int fractionBits, int exponentBits, bool quietSignaling, ref X87Arithmetic env)
    {
        int totalBits = fractionBits + exponentBits + 1;
        bool negative = ((bits >> (totalBits - 1)) & 1) != 0;
        int maxExponent = (1 << exponentBits) - 1;
        int bias = maxExponent >> 1;
        int e = (int)(bits >> fractionBits) & maxExponent;
        ulong fraction = bits & ((1UL << fractionBits) - 1);
        ulong aligned = fraction << (63 - fractionBits);
        if (e == maxExponent)
        {
            if (fraction != 0 && (aligned & Float80.QuietBit) == 0 && quietSignaling)
            {
                env.Flags |= X87Status.InvalidOperation;
                aligned |= Float80.QuietBit;
            }
            return new Float80(negative, Float80.MaxBiasedExponent, Float80.IntegerBit | aligned);
        }
        if (e == 0)
        {
            if (fraction == 0)
            {
                return new Float80(negative, 0, 0);
            }
            env.Flags |= X87Status.DenormalOperand;
            int lz = BitOperations.LeadingZeroCount(aligned);
            return new Float80(negative, 1 - bias - lz + Float80.ExponentBias, aligned << lz);
        }
        return new Float80(negative, e - bias + Float80.ExponentBias, Float80.IntegerBit | aligned);
    }

    public static uint ToSingleBits(Float80 value, ref X87Arithmetic env) =>
        (uint)ToBinary(value, 23, 8, 24, ExtendedArithmetic.SingleMinExponent, ExtendedArithmetic.SingleMaxExponent, ref env);

    public static ulong ToDoubleBits(Float80 value, ref X87Arithmetic env) =>
        ToBinary(value, 52, 11, 53, ExtendedArithmetic.DoubleMinExponent, ExtendedArithmetic.DoubleMaxExponent, ref env);

    /// <summary>
    /// Narrowing store (FST/FSTP m32fp/m64fp): rounds under RC to the destination precision with
    /// its own denormals, overflow and underflow (SDM vol.2A FST). NaNs keep their top fraction bits.
    /// </summary>
    private static ulong ToBinary(Float80 value, int fractionBits, int exponentBits, int precision,
        int minExponent, int maxExponent, ref X87Arithmetic env)
    {
        int totalBits = fractionBits + exponentBits + 1;
        ulong signBit = value.IsNegative ? 1UL << (totalBits - 1) : 0;
        ulong maxExponentField = (1UL << exponentBits) - 1;
        ulong infinity = signBit | (maxExponentField << fractionBits);
        ulong fractionMask = (1UL << fractionBits) - 1;
        switch (value.Class)
        {
            case Float80Class.Unsupported:
                env.Flags |= X87Status.InvalidOperation;
                return (maxExponentField << fractionBits) | (1UL << (fractionBits - 1)) | (1UL << (totalBits - 1));
            case Float80Class.SignalingNaN:
            case Float80Class.QuietNaN:
                if (value.IsSignalingNaN)
                {
                    env.Flags |= X87Status.InvalidOperation;
                }
                return infinity | (((value.Significand | Float80.QuietBit) >> (63 - fractionBits)) & fractionMask);
            case Float80Class.Infinity:
                return infinity;
            case Float80Class.Zero:
                return signBit;
        }
        // A denormal source raises no DE here: it is simply tiny for the destination, i.e. underflow (SDM vol.2A FST).
        int e = ExtendedArithmetic.Normalize(value, out ulong s);
        var r = ExtendedArithmetic.Round(value.IsNegative, e, (UInt128)s << 64, precision, minExponent, maxExponent, false, ref env);
        if (r.Infinity)
        {
            return infinity;
        }
        ulong mantissa = r.Significand >> (64 - precision);     // integer bit at bit fractionBits
        if ((mantissa >> fractionBits) == 0)
        {
            return signBit | mantissa;                          // denormal or zero
        }
        ulong biased = (ulong)(r.Exponent + (int)(maxExponentField >> 1));
        return signBit | (biased << fractionBits) | (mantissa & fractionMask);
    }

    /// <summary>FBLD: 18 packed BCD digits in bytes 0-8, sign in bit 7 of byte 9 (SDM vol.1 4.7). Exact.</summary>
    public static Float80 FromPackedBcd(ReadOnlySpan<byte> bytes)
    {
        // Digits above 9 are "undefined" per SDM vol.1 4.7; they are weighted as written, which is harmless.
        long magnitude = 0;
        for (int i = 8; i >= 0; i--)
        {
            magnitude = magnitude * 100 + (bytes[i] >> 4) * 10 + (bytes[i] & 0xF);
        }
        Float80 result = ExtendedArithmetic.FromInt64(magnitude);
        return (bytes[9] & 0x80) != 0 ? result.WithSign(true) : result;
    }

    /// <summary>FBSTP: round to integer under RC; false (IE raised) when not representable in 18 digits.</summary>
    public static bool TryToPackedBcd(Float80 value, Span<byte> bytes, ref X87Arithmetic env)
    {
        if (!ExtendedArithmetic.TryConvertToInteger(value, -MaxBcd, MaxBcd, ref env, out long integer))
        {
            return false;
        }
        ulong magnitude = (ulong)Math.Abs(integer);
        for (int i = 0; i < 9; i++)
        {
            ulong low = magnitude % 10;
            magnitude /= 10;
            ulong high = magnitude % 10;
            magnitude /= 10;
            bytes[i] = (byte)((high << 4) | low);
        }
        bytes[9] = (byte)(value.IsNegative ? 0x80 : 0);
        return true;
    }

    /// <summary>The packed BCD indefinite, FFFF C000 0000 0000 0000h (SDM vol.1 table 4-4).</summary>
    public static void WriteBcdIndefinite(Span<byte> bytes)
    {
        bytes[..7].Clear();
        bytes[7] = 0xC0;
        bytes[8] = 0xFF;
        bytes[9] = 0xFF;
    }
}
