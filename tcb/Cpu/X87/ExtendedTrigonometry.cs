using System.Numerics;

namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// Sine and cosine in extended precision for FSIN/FCOS/FSINCOS/FPTAN (|x| &lt; 2^63).
/// Argument reduction is exact in the Payne–Hanek manner: x · 2/π is formed in fixed point from
/// 256 bits of 2/π (enough for every 64-bit significand below 2^63), which gives the quadrant
/// and a 128-bit fraction; that fraction times a 127-bit π/2 is the reduced argument r with
/// |r| ≤ π/4. sin r and cos r are then Taylor polynomials evaluated in 64-bit arithmetic.
/// Accuracy: about one unit in the last place of the 64-bit significand — more accurate near
/// multiples of π than Intel hardware, whose reduction uses a 66-bit π (SDM vol.1 8.3.10).
/// </summary>
internal static class ExtendedTrigonometry
{
    // floor(2/π · 2^256), least significant limb first: 0.A2F9836E4E441529FC2757D1F534DDC0...
    private const ulong TwoOverPi0 = 0xFE51_63AB_DEBB_C561;
    private const ulong TwoOverPi1 = 0xDB62_9599_3C43_9041;
    private const ulong TwoOverPi2 = 0xFC27_57D1_F534_DDC0;
    private const ulong TwoOverPi3 = 0xA2F9_836E_4E44_1529;

    // floor(π/2 · 2^126): 1.921FB54442D18469898CC51701B839A2...
    private static readonly UInt128 HalfPi = new(0x6487_ED51_10B4_611A, 0x6263_3145_C06E_0E68);

    /// <summary>1/n! for n = 0..23, computed once in extended precision.</summary>
    internal static readonly Float80[] InverseFactorials = BuildInverseFactorials();

    private static Float80[] BuildInverseFactorials()
    {
        var table = new Float80[24];
        var env = new X87Arithmetic(X87Control.Default);
        table[0] = Float80.One;
        for (int n = 1; n < table.Length; n++)
        {
            table[n] = ExtendedArithmetic.Divide(table[n - 1], ExtendedArithmetic.FromInt64(n), ref env);
        }
        return table;
    }

    /// <summary>sin x and cos x for finite non-zero x with |x| &lt; 2^63.</summary>
    public static void SinCos(Float80 x, out Float80 sin, out Float80 cos)
    {
        var env = new X87Arithmetic(X87Control.Default);
        int quadrant = Reduce(x, ref env, out Float80 r);
        Float80 s = SinPolynomial(r, ref env);
        Float80 c = CosPolynomial(r, ref env);
        switch (quadrant)
        {
            case 0:
                sin = s;
                cos = c;
                break;
            case 1:
                sin = c;
                cos = s.Negate();
                break;
            case 2:
                sin = s.Negate();
                cos = c.Negate();
                break;
            default:
                sin = c.Negate();
                cos = s;
                break;
        }
        if (x.IsNegative)
        {
            sin = sin.Negate();
        }
    }

    /// <summary>|x| = (4m + quadrant) · π/2 + r with |r| ≤ π/4; r is rounded to 64 bits.</summary>
    private static int Reduce(Float80 x, ref X87Arithmetic env, out Float80 r)
    {
        int e = ExtendedArithmetic.Normalize(x, out ulong sig);     // |x| = sig · 2^(e-63), e < 63
        // P = sig · floor(2/π · 2^256): 320 bits in five limbs; |x| · 2/π = P · 2^(e - 319).
        Span<ulong> p = stackalloc ulong[5];
        ulong carry = 0;
        ReadOnlySpan<ulong> t = [TwoOverPi0, TwoOverPi1, TwoOverPi2, TwoOverPi3];
        for (int i = 0; i < 4; i++)
        {
            ulong high = Math.BigMul(sig, t[i], out ulong low);
            low += carry;
            high += low < carry ? 1UL : 0UL;
            p[i] = low;
            carry = high;
        }
        p[4] = carry;
        int point = 319 - e;                                        // bit index of weight 2^0
        int integer = (int)(Bits(p, point) & 3);
        UInt128 fraction = ((UInt128)Bits(p, point - 64) << 64) | Bits(p, point - 128);
        // Round the quotient to the nearest integer so that the remainder lies in [-1/2, 1/2].
        bool negative = false;
        if ((fraction >> 127) != UInt128.Zero)
        {
            fraction = UInt128.Zero - fraction;                     // 1 - f, as a 128-bit fraction
            negative = true;
            integer++;
        }
        if (fraction == UInt128.Zero)
        {
            r = Float80.PositiveZero;
            return integer & 3;
        }
        // r = f · π/2: the high 128 bits of the 255-bit product, with the rest as a sticky bit.
        UInt128 product = MultiplyHigh(fraction, HalfPi, out bool sticky);   // weight of bit 0: 2^-126
        if (product == UInt128.Zero)
        {
            // |r| < 2^-126: no 64-bit |x| < 2^63 comes that close to a multiple of π/2.
            r = Float80.PositiveZero;
            return integer & 3;
        }
        int lz = (int)UInt128.LeadingZeroCount(product);
        UInt128 normalized = (product << lz) | (sticky ? UInt128.One : UInt128.Zero);
        r = ExtendedArithmetic.RoundToRegister(negative, 1 - lz, normalized, 64, ref env);
        return integer & 3;
    }

    /// <summary>64 bits of the little-endian bit string starting at bit <paramref name="position"/> (zeros outside).</summary>
    private static ulong Bits(ReadOnlySpan<ulong> limbs, int position)
    {
        int index = position >> 6, offset = position & 63;        // arithmetic shift: negative positions read zeros
        ulong low = Limb(limbs, index), high = Limb(limbs, index + 1);
        return offset == 0 ? low : (low >> offset) | (high << (64 - offset));
    }

    private static ulong Limb(ReadOnlySpan<ulong> limbs, int index) =>
        index >= 0 && index < limbs.Length ? limbs[index] : 0;

    /// <summary>High 128 bits of a · b (a, b &lt; 2^128) and whether the low 128 bits are non-zero.</summary>
    private static UInt128 MultiplyHigh(UInt128 a, UInt128 b, out bool sticky)
    {
        ulong a1 = (ulong)(a >> 64), a0 = (ulong)a, b1 = (ulong)(b >> 64), b0 = (ulong)b;
        UInt128 p00 = (UInt128)a0 * b0;
        UInt128 p01 = (UInt128)a0 * b1;
        UInt128 p10 = (UInt128)a1 * b0;
        UInt128 p11 = (UInt128)a1 * b1;
        UInt128 middle = (p00 >> 64) + (ulong)p01 + (ulong)p10;           // < 3 · 2^64, no overflow
        ulong lowWord = (ulong)middle;
        sticky = lowWord != 0 || (ulong)p00 != 0;
        return p11 + (p01 >> 64) + (p10 >> 64) + (middle >> 64);
    }

    /// <summary>sin r = r + r^3 (−1/3! + z/5! − z²/7! + ...), z = r², for |r| ≤ π/4 (terms to r^23).</summary>
    private static Float80 SinPolynomial(Float80 r, ref X87Arithmetic env)
    {
        if (r.IsZero)
        {
            return r;
        }
        Float80 z = ExtendedArithmetic.Multiply(r, r, ref env);
        Float80 sum = InverseFactorials[23].Negate();
        for (int n = 21; n >= 3; n -= 2)
        {
            Float80 coefficient = ((n - 1) / 2 % 2 == 1) ? InverseFactorials[n].Negate() : InverseFactorials[n];
            sum = ExtendedArithmetic.Add(ExtendedArithmetic.Multiply(sum, z, ref env), coefficient, ref env);
        }
        Float80 r3 = ExtendedArithmetic.Multiply(z, r, ref env);
        return ExtendedArithmetic.Add(r, ExtendedArithmetic.Multiply(r3, sum, ref env), ref env);
    }

    /// <summary>cos r = 1 − z/2 + z² (1/4! − z/6! + ...), z = r², for |r| ≤ π/4 (terms to r^22).</summary>
    private static Float80 CosPolynomial(Float80 r, ref X87Arithmetic env)
    {
        Float80 z = ExtendedArithmetic.Multiply(r, r, ref env);
        Float80 sum = InverseFactorials[22].Negate();
        for (int n = 20; n >= 4; n -= 2)
        {
            Float80 coefficient = (n / 2 % 2 == 1) ? InverseFactorials[n].Negate() : InverseFactorials[n];
            sum = ExtendedArithmetic.Add(ExtendedArithmetic.Multiply(sum, z, ref env), coefficient, ref env);
        }
        Float80 z2 = ExtendedArithmetic.Multiply(z, z, ref env);
        Float80 halfZ = new(z.IsNegative, z.IsZero ? 0 : z.BiasedExponent - 1, z.Significand);
        Float80 oneMinusHalfZ = ExtendedArithmetic.Subtract(Float80.One, halfZ, ref env);
        return ExtendedArithmetic.Add(oneMinusHalfZ, ExtendedArithmetic.Multiply(z2, sum, ref env), ref env);
    }
}
