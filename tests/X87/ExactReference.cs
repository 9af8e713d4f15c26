using System.Numerics;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Cpu.X87;

namespace SecureVmm.Tests.X87;

/// <summary>
/// An independent oracle: exact rational arithmetic (BigInteger) and a direct implementation of
/// "round to p bits under RC" for results in the normal extended range.
/// </summary>
internal static class ExactReference
{
    /// <summary>value = Numerator / Denominator (Denominator a power of two for Float80 inputs).</summary>
    public readonly record struct Rational(BigInteger Numerator, BigInteger Denominator);

    public static Rational ToRational(Float80 v)
    {
        int k = v.BiasedExponent - Float80.ExponentBias - 63;
        BigInteger sig = v.Significand;
        if (v.IsNegative)
        {
            sig = -sig;
        }
        return k >= 0 ? new Rational(sig << k, BigInteger.One) : new Rational(sig, BigInteger.One << -k);
    }

    public static Rational Add(Rational a, Rational b) =>
        new(a.Numerator * b.Denominator + b.Numerator * a.Denominator, a.Denominator * b.Denominator);

    public static Rational Negate(Rational a) => new(-a.Numerator, a.Denominator);

    public static Rational Multiply(Rational a, Rational b) => new(a.Numerator * b.Numerator, a.Denominator * b.Denominator);

    public static Rational Divide(Rational a, Rational b)
    {
        BigInteger n = a.Numerator * b.Denominator, d = a.Denominator * b.Numerator;
        return d.Sign < 0 ? new Rational(-n, -d) : new Rational(n, d);
    }

    /// <summary>Correctly rounded extended value of a non-zero rational (normal range only).</summary>
    public static Float80 Round(Rational value, int precision, X87Rounding rounding) =>
        Round(value, precision, rounding, out _);

    /// <summary>As <see cref="Round(Rational, int, X87Rounding)"/>, also giving the unbounded unbiased exponent.</summary>
    public static Float80 Round(Rational value, int precision, X87Rounding rounding, out int exponent)
    {
        bool negative = value.Numerator.Sign < 0;
        BigInteger num = BigInteger.Abs(value.Numerator), den = value.Denominator;
        int e = (int)(num.GetBitLength() - den.GetBitLength());
        // Make 2^e <= num/den < 2^(e+1).
        if (Compare(num, den, e) < 0)
        {
            e--;
        }
        int s = precision - 1 - e;
        BigInteger n2 = s >= 0 ? num << s : num;
        BigInteger d2 = s >= 0 ? den : den << -s;
        BigInteger q = BigInteger.DivRem(n2, d2, out BigInteger r);
        bool inexact = !r.IsZero;
        bool increment = rounding switch
        {
            X87Rounding.NearestEven => (r << 1) > d2 || ((r << 1) == d2 && !q.IsEven),
            X87Rounding.Down => negative && inexact,
            X87Rounding.Up => !negative && inexact,
            _ => false,
        };
        if (increment)
        {
            q++;
        }
        if (q.GetBitLength() > precision)
        {
            q >>= 1;
            e++;
        }
        exponent = e;
        return new Float80(negative, e + Float80.ExponentBias, (ulong)(q << (64 - precision)));
    }

    /// <summary>
    /// Correctly rounded extended value allowing denormal results: below 2^-16382 the quantum is
    /// fixed at 2^(-16382 - (precision - 1)). Also reports IEEE tininess after rounding.
    /// </summary>
    public static Float80 RoundWithDenormals(Rational value, int precision, X87Rounding rounding, out bool inexact, out bool tiny)
    {
        const int minExponent = -16382;
        Float80 unbounded = Round(value, precision, rounding, out int exponent);
        tiny = exponent < minExponent;
        bool negative = value.Numerator.Sign < 0;
        BigInteger num = BigInteger.Abs(value.Numerator), den = value.Denominator;
        if (!tiny)
        {
            inexact = !Canonical(ToRational(unbounded)).Equals(Canonical(value));
            return unbounded;
        }
        int shift = -(minExponent - (precision - 1));          // value / quantum = num * 2^shift / den
        BigInteger n2 = num << shift;
        BigInteger q = BigInteger.DivRem(n2, den, out BigInteger r);
        inexact = !r.IsZero;
        bool increment = rounding switch
        {
            X87Rounding.NearestEven => (r << 1) > den || ((r << 1) == den && !q.IsEven),
            X87Rounding.Down => negative && inexact,
            X87Rounding.Up => !negative && inexact,
            _ => false,
        };
        if (increment)
        {
            q++;
        }
        ulong significand = (ulong)(q << (64 - precision));
        bool normal = (significand & Float80.IntegerBit) != 0;
        return new Float80(negative, normal ? 1 : 0, significand);
    }

    public static Rational Canonical(Rational r)
    {
        if (r.Numerator.IsZero)
        {
            return new Rational(BigInteger.Zero, BigInteger.One);
        }
        BigInteger g = BigInteger.GreatestCommonDivisor(r.Numerator, r.Denominator);
        return new Rational(r.Numerator / g, r.Denominator / g);
    }

    /// <summary>Normal extended values with exponents in [center - range, center + range].</summary>
    public static Gen<Float80> ExtendedAround(int center, int range) =>
        Extended(range).Select(v => new Float80(v.IsNegative, v.BiasedExponent + center, v.Significand));

    /// <summary>Sign of num/den - 2^e.</summary>
    private static int Compare(BigInteger num, BigInteger den, int e) =>
        e >= 0 ? num.CompareTo(den << e) : (num << -e).CompareTo(den);

    /// <summary>Random normal extended values with exponents in [-range, range] and full 64-bit significands.</summary>
    public static Gen<Float80> Extended(int range) =>
        from negative in Gen.Elements(false, true)
        from exponent in Gen.Choose(-range, range)
        from pattern in Gen.Choose(0, 5)
        from a in Gen.Choose(0, 0xFFFF)
        from b in Gen.Choose(0, 0xFFFF)
        from c in Gen.Choose(0, 0xFFFF)
        from d in Gen.Choose(0, 0xFFFF)
        select new Float80(negative, exponent + Float80.ExponentBias, Significand(pattern, a, b, c, d));

    /// <summary>Mostly random significands, with runs of ones and zeros that stress carries and ties.</summary>
    private static ulong Significand(int pattern, int a, int b, int c, int d)
    {
        ulong random = ((ulong)(uint)a << 48) | ((ulong)(uint)b << 32) | ((ulong)(uint)c << 16) | (uint)d;
        return pattern switch
        {
            0 => Float80.IntegerBit,
            1 => ulong.MaxValue,
            2 => Float80.IntegerBit | (random & 0xFFFF),
            3 => ulong.MaxValue << (a & 63) | Float80.IntegerBit,
            _ => random | Float80.IntegerBit,
        };
    }

    public static readonly X87Rounding[] AllRoundings =
        [X87Rounding.NearestEven, X87Rounding.Down, X87Rounding.Up, X87Rounding.TowardZero];

    public static readonly int[] AllPrecisions = [24, 53, 64];
}
