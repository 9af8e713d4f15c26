using System.Numerics;

namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>Result of an x87 comparison, in the order FCOM's condition codes encode it (SDM vol.2A FCOM table).</summary>
public enum X87Comparison : byte
{
    Greater,
    Less,
    Equal,
    Unordered,
}

/// <summary>
/// Exactly rounded extended-precision arithmetic in integer arithmetic (UInt128, no allocation):
/// add, subtract, multiply, divide, square root, round-to-integral, scale, extract, partial
/// remainder and compare, with precision control, the four rounding modes, denormals, NaN
/// propagation and the IE/DE/ZE/OE/UE/PE flags and masked responses of SDM vol.1 4.8-4.9 and 8.5.
///
/// Internally a finite value in flight is (sign, exponent, 128-bit significand) where the
/// significand's bit 127 carries weight 2^exponent (unbiased); the low bits are guard bits
/// with a "jammed" sticky bit, enough for correct rounding at 24, 53 or 64 bits.
/// </summary>
public static class ExtendedArithmetic
{
    public const int ExtendedMinExponent = -16382;
    public const int ExtendedMaxExponent = 16383;
    public const int DoubleMinExponent = -1022;
    public const int DoubleMaxExponent = 1023;
    public const int SingleMinExponent = -126;
    public const int SingleMaxExponent = 127;

    /// <summary>Exponent adjustment for unmasked overflow/underflow with a register destination (SDM vol.1 8.5.4/8.5.5: 24576).</summary>
    public const int UnmaskedExponentBias = 0x6000;

    /// <summary>A rounded finite or infinite value before packing into a format.</summary>
    internal readonly struct Rounded(bool negative, int exponent, ulong significand, bool infinity)
    {
        public readonly bool Negative = negative;
        /// <summary>Unbiased exponent of significand bit 63 (for denormals: the format's minimum exponent).</summary>
        public readonly int Exponent = exponent;
        /// <summary>Significand with the integer bit at bit 63; integer bit clear = denormal; 0 = zero.</summary>
        public readonly ulong Significand = significand;
        public readonly bool Infinity = infinity;
    }

    // ----------------------------------------------------------------------------------------
    // Rounding core
    // ----------------------------------------------------------------------------------------

    /// <summary>Shift right keeping a sticky bit in bit 0 for everything shifted out.</summary>
    internal static UInt128 ShiftRightJam(UInt128 value, int count)
    {
        if (count <= 0)
        {
            return value;
        }
        if (count >= 128)
        {
            return value != UInt128.Zero ? UInt128.One : UInt128.Zero;
        }
        UInt128 lost = value << (128 - count);
        return (value >> count) | (lost != UInt128.Zero ? UInt128.One : UInt128.Zero);
    }

    /// <summary>
    /// Rounds <paramref name="value"/> so that the bits below <paramref name="shift"/> are zero
    /// (SDM vol.1 4.8.4). <paramref name="carry"/> reports that the rounded value is 2^128 (returned as 0).
    /// </summary>
    internal static UInt128 RoundAt(UInt128 value, int shift, X87Rounding rounding, bool negative,
        out bool inexact, out bool incremented, out bool carry)
    {
        UInt128 unit = UInt128.One << shift;
        UInt128 mask = unit - UInt128.One;
        UInt128 remainder = value & mask;
        UInt128 truncated = value & ~mask;
        inexact = remainder != UInt128.Zero;
        UInt128 half = unit >> 1;
        incremented = rounding switch
        {
            X87Rounding.NearestEven => remainder > half || (remainder == half && (truncated & unit) != UInt128.Zero),
            X87Rounding.Down => negative && inexact,
            X87Rounding.Up => !negative && inexact,
            _ => false,
        };
        carry = false;
        if (incremented)
        {
            truncated += unit;
            carry = truncated == UInt128.Zero;
        }
        return truncated;
    }

    /// <summary>
    /// Rounds sig * 2^(exponent-127) (bit 127 of <paramref name="significand"/> set) to a format with
    /// <paramref name="precision"/> significand bits and the given normal exponent range, applying the
    /// masked or unmasked overflow/underflow responses (SDM vol.1 4.9.1.4, 4.9.1.5, 8.5.4, 8.5.5).
    /// Tininess is detected after rounding, as x86 processors do.
    /// </summary>
    internal static Rounded Round(bool negative, int exponent, UInt128 significand, int precision,
        int minExponent, int maxExponent, bool registerDestination, ref X87Arithmetic env)
    {
        X87Rounding rounding = env.Rounding;
        int shift = 128 - precision;
        bool inexact, incremented, carry;
        if (exponent < minExponent)
        {
            bool tiny = true;
            if (exponent == minExponent - 1)
            {
                RoundAt(significand, shift, rounding, negative, out _, out _, out bool wouldCarry);
                tiny = !wouldCarry;
            }
            if (tiny)
            {
                bool unmasked = !env.IsMasked(X87Status.Underflow);
                if (unmasked)
                {
                    // Unmasked underflow is reported whether or not the result is exact.
                    env.Flags |= X87Status.Underflow;
                }
                if (!(unmasked && registerDestination && exponent + UnmaskedExponentBias >= minExponent))
                {
                    // Masked response: denormalise, then round (memory destinations with unmasked
                    // underflow are not written; computing the masked value is harmless).
                    UInt128 denormal = ShiftRightJam(significand, minExponent - exponent);
                    UInt128 rounded = RoundAt(denormal, shift, rounding, negative, out inexact, out incremented, out _);
                    if (inexact)
                    {
                        env.Flags |= X87Status.Precision | X87Status.Underflow;
                    }
                    env.RoundedUp = incremented;
                    return new Rounded(negative, minExponent, (ulong)(rounded >> 64), false);
                }
                exponent += UnmaskedExponentBias;
            }
        }

        UInt128 result = RoundAt(significand, shift, rounding, negative, out inexact, out incremented, out carry);
        if (carry)
        {
            result = UInt128.One << 127;
            exponent++;
        }
        if (exponent > maxExponent)
        {
            env.Flags |= X87Status.Overflow;
            if (registerDestination && !env.IsMasked(X87Status.Overflow) && exponent - UnmaskedExponentBias <= maxExponent)
            {
                exponent -= UnmaskedExponentBias;
            }
            else
            {
                // Masked overflow response, SDM vol.1 4.9.1.4 table 4-10: infinity or the largest
                // finite value depending on the rounding direction and sign.
                env.Flags |= X87Status.Precision;
                bool toInfinity = rounding switch
                {
                    X87Rounding.NearestEven => true,
                    X87Rounding.Down => negative,
                    X87Rounding.Up => !negative,
                    _ => false,
                };
                env.RoundedUp = toInfinity;
                return toInfinity
                    ? new Rounded(negative, maxExponent + 1, Float80.IntegerBit, true)
                    : new Rounded(negative, maxExponent, ulong.MaxValue << (64 - precision), false);
            }
        }
        if (inexact)
        {
            env.Flags |= X87Status.Precision;
        }
        env.RoundedUp = incremented;
        return new Rounded(negative, exponent, (ulong)(result >> 64), false);
    }

    internal static Float80 PackExtended(in Rounded r)
    {
        if (r.Infinity)
        {
            return new Float80(r.Negative, Float80.MaxBiasedExponent, Float80.IntegerBit);
        }
        if (r.Significand == 0)
        {
            return new Float80(r.Negative, 0, 0);
        }
        int biased = (r.Significand & Float80.IntegerBit) == 0 ? 0 : r.Exponent + Float80.ExponentBias;
        return new Float80(r.Negative, biased, r.Significand);
    }

    /// <summary>Rounds to a register result under the control word's precision control.</summary>
    internal static Float80 RoundToRegister(bool negative, int exponent, UInt128 significand, ref X87Arithmetic env) =>
        PackExtended(Round(negative, exponent, significand, env.Precision, ExtendedMinExponent, ExtendedMaxExponent, true, ref env));

    internal static Float80 RoundToRegister(bool negative, int exponent, UInt128 significand, int precision, ref X87Arithmetic env) =>
        PackExtended(Round(negative, exponent, significand, precision, ExtendedMinExponent, ExtendedMaxExponent, true, ref env));

    /// <summary>
    /// Unbiased exponent of significand bit 63 after normalising a finite non-zero value
    /// (denormals and pseudo-denormals use exponent field 1, SDM vol.1 4.8.3.2).
    /// </summary>
    internal static int Normalize(Float80 value, out ulong significand)
    {
        int e = value.BiasedExponent;
        ulong s = value.Significand;
        if (e == 0)
        {
            e = 1;
        }
        int lz = BitOperations.LeadingZeroCount(s);
        significand = s << lz;
        return e - Float80.ExponentBias - lz;
    }

    // ----------------------------------------------------------------------------------------
    // NaNs and operand checks
    // ----------------------------------------------------------------------------------------

    /// <summary>NaN result of a two-operand operation (SDM vol.1 4.8.3.5, table 4-7, x87 column).</summary>
    internal static Float80 PropagateNaN(Float80 a, Float80 b, ref X87Arithmetic env)
    {
        bool aNaN = a.IsNaN, bNaN = b.IsNaN;
        if (a.IsSignalingNaN || b.IsSignalingNaN)
        {
            env.Flags |= X87Status.InvalidOperation;
        }
        if (aNaN && bNaN)
        {
            bool aQuiet = (a.Significand & Float80.QuietBit) != 0, bQuiet = (b.Significand & Float80.QuietBit) != 0;
            if (aQuiet != bQuiet)
            {
                return aQuiet ? a : b;
            }
            ulong sa = a.Significand | Float80.QuietBit, sb = b.Significand | Float80.QuietBit;
            Float80 pick = sa > sb ? a : sb > sa ? b : (a.IsNegative ? b : a);
            return pick.Quieted();
        }
        return (aNaN ? a : b).Quieted();
    }

    /// <summary>Unsupported encodings and NaNs; true when <paramref name="result"/> is final.</summary>
    private static bool InvalidOrNaN(Float80 a, Float80 b, Float80Class ca, Float80Class cb, ref X87Arithmetic env, out Float80 result)
    {
        if (ca == Float80Class.Unsupported || cb == Float80Class.Unsupported)
        {
            env.Flags |= X87Status.InvalidOperation;
            result = Float80.Indefinite;
            return true;
        }
        if (ca is Float80Class.QuietNaN or Float80Class.SignalingNaN || cb is Float80Class.QuietNaN or Float80Class.SignalingNaN)
        {
            result = PropagateNaN(a, b, ref env);
            return true;
        }
        result = default;
        return false;
    }

    private static Float80 Invalid(ref X87Arithmetic env)
    {
        env.Flags |= X87Status.InvalidOperation;
        return Float80.Indefinite;
    }

    /// <summary>Raises DE for denormal operands; true when DE is unmasked (no result is delivered, SDM vol.1 8.5.2).</summary>
    private static bool DenormalStops(Float80Class ca, Float80Class cb, ref X87Arithmetic env)
    {
        if (ca == Float80Class.Denormal || cb == Float80Class.Denormal)
        {
            env.Flags |= X87Status.DenormalOperand;
            return !env.IsMasked(X87Status.DenormalOperand);
        }
        return false;
    }

    private static Float80 Zero(bool negative) => new(negative, 0, 0);
    private static Float80 Infinity(bool negative) => new(negative, Float80.MaxBiasedExponent, Float80.IntegerBit);

    // ----------------------------------------------------------------------------------------
    // Basic operations (SDM vol.2A FADD/FSUB/FMUL/FDIV/FSQRT result tables)
    // ----------------------------------------------------------------------------------------

    public static Float80 Add(Float80 a, Float80 b, ref X87Arithmetic env) => AddOrSubtract(a, b, false, ref env);

    public static Float80 Subtract(Float80 a, Float80 b, ref X87Arithmetic env) => AddOrSubtract(a, b, true, ref env);

    private static Float80 AddOrSubtract(Float80 a, Float80 b, bool subtract, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class, cb = b.Class;
        if (InvalidOrNaN(a, b, ca, cb, ref env, out Float80 special))
        {
            return special;
        }
        bool na = a.IsNegative, nb = b.IsNegative ^ subtract;
        if (ca == Float80Class.Infinity || cb == Float80Class.Infinity)
        {
            if (ca == cb && na != nb)
            {
                return Invalid(ref env);
            }
            if (DenormalStops(ca, cb, ref env))
            {
                return a;
            }
            return ca == Float80Class.Infinity ? a : Infinity(nb);
        }
        if (DenormalStops(ca, cb, ref env))
        {
            return a;
        }
        if (ca == Float80Class.Zero && cb == Float80Class.Zero)
        {
            // SDM vol.1 4.8.3.3: a sum of opposite-signed zeros is +0, except -0 when rounding down.
            return Zero(na == nb ? na : env.Rounding == X87Rounding.Down);
        }
        if (ca == Float80Class.Zero || cb == Float80Class.Zero)
        {
            // x + 0 = x, still rounded to the precision control.
            Float80 x = ca == Float80Class.Zero ? b.WithSign(nb) : a;
            int ex = Normalize(x, out ulong sx);
            return RoundToRegister(x.IsNegative, ex, (UInt128)sx << 64, ref env);
        }

        int ea = Normalize(a, out ulong sa);
        int eb = Normalize(b, out ulong sb);
        if (ea < eb || (ea == eb && sa < sb))
        {
            (ea, eb) = (eb, ea);
            (sa, sb) = (sb, sa);
            (na, nb) = (nb, na);
        }
        // Significands at bits 126..63 leave one carry bit above and 63 guard bits below.
        UInt128 big = (UInt128)sa << 63;
        UInt128 small = ShiftRightJam((UInt128)sb << 63, ea - eb);
        UInt128 sum;
        if (na == nb)
        {
            sum = big + small;
        }
        else
        {
            sum = big - small;
            if (sum == UInt128.Zero)
            {
                return Zero(env.Rounding == X87Rounding.Down);
            }
        }
        int lz = (int)UInt128.LeadingZeroCount(sum);
        return RoundToRegister(na, ea + 1 - lz, sum << lz, ref env);
    }

    public static Float80 Multiply(Float80 a, Float80 b, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class, cb = b.Class;
        if (InvalidOrNaN(a, b, ca, cb, ref env, out Float80 special))
        {
            return special;
        }
        bool negative = a.IsNegative ^ b.IsNegative;
        if (ca == Float80Class.Infinity || cb == Float80Class.Infinity)
        {
            if (ca == Float80Class.Zero || cb == Float80Class.Zero)
            {
                return Invalid(ref env);
            }
            return DenormalStops(ca, cb, ref env) ? a : Infinity(negative);
        }
        if (DenormalStops(ca, cb, ref env))
        {
            return a;
        }
        if (ca == Float80Class.Zero || cb == Float80Class.Zero)
        {
            return Zero(negative);
        }
        int ea = Normalize(a, out ulong sa);
        int eb = Normalize(b, out ulong sb);
        UInt128 product = (UInt128)sa * sb;    // in [2^126, 2^128): exact
        int exponent = ea + eb + 1;
        if ((product >> 127) == UInt128.Zero)
        {
            product <<= 1;
            exponent--;
        }
        return RoundToRegister(negative, exponent, product, ref env);
    }

    public static Float80 Divide(Float80 a, Float80 b, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class, cb = b.Class;
        if (InvalidOrNaN(a, b, ca, cb, ref env, out Float80 special))
        {
            return special;
        }
        bool negative = a.IsNegative ^ b.IsNegative;
        if (ca == Float80Class.Infinity)
        {
            if (cb == Float80Class.Infinity)
            {
                return Invalid(ref env);
            }
            return DenormalStops(ca, cb, ref env) ? a : Infinity(negative);
        }
        if (cb == Float80Class.Infinity)
        {
            return DenormalStops(ca, cb, ref env) ? a : Zero(negative);
        }
        if (cb == Float80Class.Zero)
        {
            if (ca == Float80Class.Zero)
            {
                return Invalid(ref env);
            }
            if (DenormalStops(ca, cb, ref env))
            {
                return a;
            }
            env.Flags |= X87Status.ZeroDivide;
            return Infinity(negative);
        }
        if (DenormalStops(ca, cb, ref env))
        {
            return a;
        }
        if (ca == Float80Class.Zero)
        {
            return Zero(negative);
        }
        int ea = Normalize(a, out ulong sa);
        int eb = Normalize(b, out ulong sb);
        // Long division in two 64-bit quotient digits gives 128 quotient bits (bit 127 set) and the
        // remainder becomes the sticky bit: more than enough for exact rounding at 64 bits.
        ulong high, low;
        int exponent;
        if (sa >= sb)
        {
            high = sa >> 1;             // sa * 2^63
            low = sa << 63;
            exponent = ea - eb;
        }
        else
        {
            high = sa;                  // sa * 2^64
            low = 0;
            exponent = ea - eb - 1;
        }
        ulong q1 = DivideNormalized(high, low, sb, out ulong r1);
        ulong q2 = DivideNormalized(r1, 0, sb, out ulong r2);
        UInt128 quotient = ((UInt128)q1 << 64) | q2 | (r2 != 0 ? UInt128.One : UInt128.Zero);
        return RoundToRegister(negative, exponent, quotient, ref env);
    }

    /// <summary>
    /// (high:low) / divisor for a divisor with bit 63 set and high &lt; divisor, so the quotient fits
    /// 64 bits: schoolbook division in two 32-bit digits with estimate correction (Knuth, TAOCP
    /// vol.2 4.3.1 algorithm D). Much cheaper than a general UInt128 division.
    /// </summary>
    public static ulong DivideNormalized(ulong high, ulong low, ulong divisor, out ulong remainder)
    {
        const ulong digit = 1UL << 32;
        ulong dHigh = divisor >> 32, dLow = divisor & 0xFFFF_FFFF;
        ulong nHigh = low >> 32, nLow = low & 0xFFFF_FFFF;

        ulong q1 = high / dHigh;
        ulong rest = high - q1 * dHigh;
        while (q1 >= digit || q1 * dLow > ((rest << 32) | nHigh))
        {
            q1--;
            rest += dHigh;
            if (rest >= digit)
            {
                break;
            }
        }
        ulong partial = (high << 32) + nHigh - q1 * divisor;     // exact modulo 2^64: the true value is < divisor

        ulong q0 = partial / dHigh;
        rest = partial - q0 * dHigh;
        while (q0 >= digit || q0 * dLow > ((rest << 32) | nLow))
        {
            q0--;
            rest += dHigh;
            if (rest >= digit)
            {
                break;
            }
        }
        remainder = (partial << 32) + nLow - q0 * divisor;
        return (q1 << 32) | q0;
    }

    public static Float80 SquareRoot(Float80 a, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class;
        if (InvalidOrNaN(a, a, ca, ca, ref env, out Float80 special))
        {
            return special;
        }
        if (ca == Float80Class.Zero)
        {
            return a;   // sqrt(-0) = -0 (IEEE 754 and SDM FSQRT table)
        }
        if (a.IsNegative)
        {
            return Invalid(ref env);
        }
        if (ca == Float80Class.Infinity)
        {
            return a;
        }
        if (DenormalStops(ca, ca, ref env))
        {
            return a;
        }
        int ea = Normalize(a, out ulong sa);
        int k = ea - 63;                          // value = sa * 2^k
        UInt128 radicand;
        int half;
        if ((k & 1) == 0)
        {
            radicand = (UInt128)sa << 64;
            half = (k - 64) / 2;
        }
        else
        {
            radicand = (UInt128)sa << 63;
            half = (k - 63) / 2;
        }
        ulong root = IntegerSquareRoot(radicand);
        UInt128 remainder = radicand - (UInt128)root * root;
        // sqrt(N) >= root + 1/2  <=>  remainder > root; an exact midpoint is impossible.
        UInt128 bits = ((UInt128)root << 64)
            | (remainder > root ? UInt128.One << 63 : UInt128.Zero)
            | (remainder != UInt128.Zero ? UInt128.One : UInt128.Zero);
        return RoundToRegister(false, 63 + half, bits, ref env);
    }

    /// <summary>floor(sqrt(n)) for n in [2^126, 2^128).</summary>
    internal static ulong IntegerSquareRoot(UInt128 n)
    {
        double estimate = Math.Sqrt((double)n);
        ulong r = estimate >= 18446744073709549568.0 ? ulong.MaxValue : (ulong)estimate;
        if (r == 0)
        {
            r = 1;
        }
        // One Newton step r' = (r + n/r) / 2; n/r fits 64 bits whenever the high half of n is below r.
        ulong high = (ulong)(n >> 64);
        UInt128 quotient = high < r && r >= 1UL << 63 ? DivideNormalized(high, (ulong)n, r, out _) : n / r;
        UInt128 newton = ((UInt128)r + quotient) >> 1;
        r = newton > ulong.MaxValue ? ulong.MaxValue : (ulong)newton;
        while ((UInt128)r * r > n)
        {
            r--;
        }
        while (r != ulong.MaxValue && (UInt128)(r + 1) * (r + 1) <= n)
        {
            r++;
        }
        return r;
    }

    // ----------------------------------------------------------------------------------------
    // FRNDINT, FSCALE, FXTRACT, FPREM/FPREM1, compare
    // ----------------------------------------------------------------------------------------

    /// <summary>FRNDINT: round to an integral value under the rounding control (not precision control).</summary>
    public static Float80 RoundToIntegral(Float80 a, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class;
        if (InvalidOrNaN(a, a, ca, ca, ref env, out Float80 special))
        {
            return special;
        }
        if (ca is Float80Class.Zero or Float80Class.Infinity)
        {
            return a;
        }
        if (DenormalStops(ca, ca, ref env))
        {
            return a;
        }
        int e = Normalize(a, out ulong s);
        if (e >= 63)
        {
            return a;
        }
        UInt128 value = (UInt128)s << 64;           // weight of bit 127 = 2^e
        if (e < 0)
        {
            value = ShiftRightJam(value, -e);
            e = 0;
        }
        UInt128 rounded = RoundAt(value, 127 - e, env.Rounding, a.IsNegative, out bool inexact, out bool incremented, out bool carry);
        if (inexact)
        {
            env.Flags |= X87Status.Precision;
        }
        env.RoundedUp = incremented;
        if (carry)
        {
            return new Float80(a.IsNegative, e + 1 + Float80.ExponentBias, Float80.IntegerBit);
        }
        if (rounded == UInt128.Zero)
        {
            return Zero(a.IsNegative);
        }
        int lz = (int)UInt128.LeadingZeroCount(rounded);
        return new Float80(a.IsNegative, e - lz + Float80.ExponentBias, (ulong)((rounded << lz) >> 64));
    }

    /// <summary>
    /// Rounds to an integer under the rounding control for FIST/FISTP/FBSTP. Returns false (and raises IE)
    /// when the value is a NaN, infinite, unsupported or out of the signed <paramref name="bits"/>-bit range.
    /// </summary>
    public static bool TryConvertToInteger(Float80 a, int bits, ref X87Arithmetic env, out long result) =>
        TryConvertToInteger(a, bits == 64 ? long.MinValue : -(1L << (bits - 1)), bits == 64 ? long.MaxValue : (1L << (bits - 1)) - 1, ref env, out result);

    public static bool TryConvertToInteger(Float80 a, long min, long max, ref X87Arithmetic env, out long result)
    {
        result = 0;
        Float80Class ca = a.Class;
        if (ca is Float80Class.Unsupported or Float80Class.QuietNaN or Float80Class.SignalingNaN or Float80Class.Infinity)
        {
            env.Flags |= X87Status.InvalidOperation;
            return false;
        }
        if (ca == Float80Class.Zero)
        {
            return true;
        }
        // FIST/FBSTP raise no DE for denormals (SDM vol.2A FIST "Floating-Point Exceptions"): they round to 0 or +-1.
        int e = Normalize(a, out ulong s);
        if (e >= 64)
        {
            env.Flags |= X87Status.InvalidOperation;
            return false;
        }
        UInt128 value = (UInt128)s << 64;
        if (e < 0)
        {
            value = ShiftRightJam(value, -e);
            e = 0;
        }
        int shift = 127 - e;
        UInt128 rounded = RoundAt(value, shift, env.Rounding, a.IsNegative, out bool inexact, out bool incremented, out bool carry);
        UInt128 magnitude = carry ? UInt128.One << (e + 1) : rounded >> shift;
        bool inRange = a.IsNegative ? magnitude <= (UInt128)(-(Int128)min) : magnitude <= (UInt128)max;
        if (!inRange)
        {
            env.Flags |= X87Status.InvalidOperation;
            return false;
        }
        if (inexact)
        {
            env.Flags |= X87Status.Precision;
        }
        env.RoundedUp = incremented;
        result = a.IsNegative ? (long)(-(Int128)magnitude) : (long)magnitude;
        return true;
    }

    /// <summary>Exact conversion of a signed integer (FILD, FIADD...; SDM vol.1 4.2.1).</summary>
    public static Float80 FromInt64(long value)
    {
        if (value == 0)
        {
            return default;
        }
        bool negative = value < 0;
        ulong magnitude = negative ? (ulong)(-(Int128)value) : (ulong)value;
        int lz = BitOperations.LeadingZeroCount(magnitude);
        return new Float80(negative, 63 - lz + Float80.ExponentBias, magnitude << lz);
    }

    /// <summary>FSCALE: a * 2^trunc(b) (SDM vol.2A FSCALE table).</summary>
    public static Float80 Scale(Float80 a, Float80 b, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class, cb = b.Class;
        if (InvalidOrNaN(a, b, ca, cb, ref env, out Float80 special))
        {
            return special;
        }
        if (cb == Float80Class.Infinity)
        {
            if (b.IsNegative ? ca == Float80Class.Infinity : ca == Float80Class.Zero)
            {
                return Invalid(ref env);
            }
            if (DenormalStops(ca, cb, ref env))
            {
                return a;
            }
            return ca is Float80Class.Zero or Float80Class.Infinity ? a : b.IsNegative ? Zero(a.IsNegative) : Infinity(a.IsNegative);
        }
        if (DenormalStops(ca, cb, ref env))
        {
            return a;
        }
        if (ca is Float80Class.Zero or Float80Class.Infinity)
        {
            return a;
        }
        int scale = 0;
        if (cb != Float80Class.Zero)
        {
            int eb = Normalize(b, out ulong sb);
            // Anything beyond +-2^17 over- or underflows every extended value; clamp to stay in int range.
            long magnitude = eb < 0 ? 0 : eb >= 18 ? 1L << 18 : (long)(sb >> (63 - eb));
            scale = (int)(b.IsNegative ? -magnitude : magnitude);
        }
        int ea = Normalize(a, out ulong sa);
        return RoundToRegister(a.IsNegative, ea + scale, (UInt128)sa << 64, 64, ref env);
    }

    /// <summary>
    /// FXTRACT (SDM vol.2A): splits a into its unbiased exponent and its significand scaled to [1,2).
    /// Returns false when an unmasked exception means nothing is delivered.
    /// </summary>
    public static void Extract(Float80 a, ref X87Arithmetic env, out Float80 exponent, out Float80 significand)
    {
        Float80Class ca = a.Class;
        if (InvalidOrNaN(a, a, ca, ca, ref env, out Float80 special))
        {
            exponent = significand = ca == Float80Class.Unsupported ? special : a.Quieted();
            return;
        }
        switch (ca)
        {
            case Float80Class.Zero:
                env.Flags |= X87Status.ZeroDivide;
                exponent = Float80.NegativeInfinity;
                significand = a;
                return;
            case Float80Class.Infinity:
                exponent = Float80.PositiveInfinity;
                significand = a;
                return;
        }
        if (DenormalStops(ca, ca, ref env))
        {
            exponent = significand = a;
            return;
        }
        int e = Normalize(a, out ulong s);
        exponent = FromInt64(e);
        significand = new Float80(a.IsNegative, Float80.ExponentBias, s);
    }

    /// <summary>
    /// FPREM (truncating quotient) and FPREM1 (IEEE round-to-nearest quotient), SDM vol.2A.
    /// When the exponents differ by 64 or more only a partial reduction is done (N = 63) and
    /// <paramref name="incomplete"/> is set (C2). <paramref name="quotientBits"/> holds Q2..Q0.
    /// </summary>
    public static Float80 PartialRemainder(Float80 a, Float80 b, bool ieee, ref X87Arithmetic env,
        out int quotientBits, out bool incomplete)
    {
        quotientBits = 0;
        incomplete = false;
        Float80Class ca = a.Class, cb = b.Class;
        if (InvalidOrNaN(a, b, ca, cb, ref env, out Float80 special))
        {
            return special;
        }
        if (ca == Float80Class.Infinity || cb == Float80Class.Zero)
        {
            return Invalid(ref env);
        }
        if (DenormalStops(ca, cb, ref env))
        {
            return a;
        }
        if (ca == Float80Class.Zero || cb == Float80Class.Infinity)
        {
            return a;
        }
        int ea = Normalize(a, out ulong sa);
        int eb = Normalize(b, out ulong sb);
        int d = ea - eb;
        if (d < -1 || (d == -1 && !ieee))
        {
            return RoundToRegister(a.IsNegative, ea, (UInt128)sa << 64, 64, ref env);
        }
        UInt128 dividend, divisor;
        int unitExponent;       // weight of bit 0 of the remainder
        if (d >= 64)
        {
            const int N = 63;   // "an implementation-dependent number between 32 and 63"
            incomplete = true;
            dividend = (UInt128)sa << N;
            divisor = sb;
            unitExponent = ea - N - 63;
        }
        else if (d >= 0)
        {
            dividend = (UInt128)sa << d;
            divisor = sb;
            unitExponent = eb - 63;
        }
        else
        {
            dividend = sa;
            divisor = (UInt128)sb << 1;
            unitExponent = ea - 63;
        }
        UInt128 quotient = dividend / divisor;
        UInt128 remainder = dividend - quotient * divisor;
        bool negative = a.IsNegative;
        if (ieee && !incomplete)
        {
            UInt128 twice = remainder << 1;
            if (twice > divisor || (twice == divisor && (quotient & UInt128.One) != UInt128.Zero))
            {
                remainder = divisor - remainder;
                quotient++;
                negative = !negative;
            }
        }
        if (!incomplete)
        {
            quotientBits = (int)(quotient & 7);
        }
        if (remainder == UInt128.Zero)
        {
            return Zero(a.IsNegative);
        }
        int lz = (int)UInt128.LeadingZeroCount(remainder);
        return RoundToRegister(negative, unitExponent + 127 - lz, remainder << lz, 64, ref env);
    }

    /// <summary>
    /// FCOM/FUCOM family comparison (SDM vol.2A FCOM/FUCOM): unsupported operands and SNaNs always raise IE;
    /// QNaNs raise IE only for the ordered (non-quiet) forms.
    /// </summary>
    public static X87Comparison Compare(Float80 a, Float80 b, bool quiet, ref X87Arithmetic env)
    {
        Float80Class ca = a.Class, cb = b.Class;
        if (ca == Float80Class.Unsupported || cb == Float80Class.Unsupported)
        {
            env.Flags |= X87Status.InvalidOperation;
            return X87Comparison.Unordered;
        }
        bool aNaN = ca is Float80Class.QuietNaN or Float80Class.SignalingNaN;
        bool bNaN = cb is Float80Class.QuietNaN or Float80Class.SignalingNaN;
        if (aNaN || bNaN)
        {
            if (!quiet || ca == Float80Class.SignalingNaN || cb == Float80Class.SignalingNaN)
            {
                env.Flags |= X87Status.InvalidOperation;
            }
            return X87Comparison.Unordered;
        }
        if (ca == Float80Class.Denormal || cb == Float80Class.Denormal)
        {
            env.Flags |= X87Status.DenormalOperand;
        }
        int signA = ca == Float80Class.Zero ? 0 : a.IsNegative ? -1 : 1;
        int signB = cb == Float80Class.Zero ? 0 : b.IsNegative ? -1 : 1;
        if (signA != signB)
        {
            return signA > signB ? X87Comparison.Greater : X87Comparison.Less;
        }
        if (signA == 0)
        {
            return X87Comparison.Equal;
        }
        int magnitude = CompareMagnitude(a, ca, b, cb);
        if (signA < 0)
        {
            magnitude = -magnitude;
        }
        return magnitude > 0 ? X87Comparison.Greater : magnitude < 0 ? X87Comparison.Less : X87Comparison.Equal;
    }

    private static int CompareMagnitude(Float80 a, Float80Class ca, Float80 b, Float80Class cb)
    {
        if (ca == Float80Class.Infinity || cb == Float80Class.Infinity)
        {
            return (ca == Float80Class.Infinity ? 1 : 0) - (cb == Float80Class.Infinity ? 1 : 0);
        }
        int ea = Normalize(a, out ulong sa);
        int eb = Normalize(b, out ulong sb);
        return ea != eb ? ea.CompareTo(eb) : sa.CompareTo(sb);
    }
}
