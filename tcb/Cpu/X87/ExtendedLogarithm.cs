namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// 2^x − 1, log2(x) and log2(1 + x) in extended precision for F2XM1, FYL2X and FYL2XP1 (SDM vol.2A).
/// Series are evaluated in 64-bit arithmetic after reducing the argument so that they converge
/// fast: e^t − 1 for |t| ≤ ln 2 by its Taylor series, ln m for m in [1/√2, √2) as 2·atanh(s) with
/// s = (m − 1)/(m + 1), |s| ≤ 0.172. Accuracy: a few units in the last place of the 64-bit
/// significand. Callers handle zeros, infinities, NaNs and negative arguments.
/// </summary>
internal static class ExtendedLogarithm
{
    private const int ExpTerms = 21;         // t^21/21! < 2^-70 · t for |t| ≤ ln 2
    private const int AtanhTerms = 22;       // s^(2k)/(2k+1) < 2^-66 for |s| ≤ 0.2

    private static readonly Float80 Ln2 = new(0x3FFE, 0xB172_17F7_D1CF_79ACUL);
    private static readonly Float80 Log2E = new(0x3FFF, 0xB8AA_3B29_5C17_F0BCUL);
    private static readonly Float80 Sqrt2 = SquareRootOfTwo();

    /// <summary>1/(2k+1) for k = 0..AtanhTerms.</summary>
    private static readonly Float80[] OddReciprocals = BuildOddReciprocals();

    private static Float80 SquareRootOfTwo()
    {
        var env = new X87Arithmetic(X87Control.Default);
        return ExtendedArithmetic.SquareRoot(ExtendedArithmetic.FromInt64(2), ref env);
    }

    private static Float80[] BuildOddReciprocals()
    {
        var env = new X87Arithmetic(X87Control.Default);
        var table = new Float80[AtanhTerms + 1];
        for (int k = 0; k < table.Length; k++)
        {
            table[k] = ExtendedArithmetic.Divide(Float80.One, ExtendedArithmetic.FromInt64(2 * k + 1), ref env);
        }
        return table;
    }

    /// <summary>2^x − 1 for finite non-zero |x| ≤ 1: e^t − 1 with t = x ln 2, as t + t²(1/2! + t/3! + ...).</summary>
    public static Float80 TwoToXMinusOne(Float80 x)
    {
        var env = new X87Arithmetic(X87Control.Default);
        Float80 t = ExtendedArithmetic.Multiply(x, Ln2, ref env);
        Float80 sum = ExtendedTrigonometry.InverseFactorials[ExpTerms];
        for (int n = ExpTerms - 1; n >= 2; n--)
        {
            sum = ExtendedArithmetic.Add(ExtendedArithmetic.Multiply(sum, t, ref env), ExtendedTrigonometry.InverseFactorials[n], ref env);
        }
        Float80 t2 = ExtendedArithmetic.Multiply(t, t, ref env);
        return ExtendedArithmetic.Add(t, ExtendedArithmetic.Multiply(t2, sum, ref env), ref env);
    }

    /// <summary>log2 x for finite x &gt; 0; <paramref name="exact"/> when x is a power of two.</summary>
    public static Float80 Log2(Float80 x, out bool exact)
    {
        var env = new X87Arithmetic(X87Control.Default);
        int e = ExtendedArithmetic.Normalize(x, out ulong significand);
        Float80 m = new(false, Float80.ExponentBias, significand);              // [1, 2)
        if (ExtendedArithmetic.Compare(m, Sqrt2, true, ref env) == X87Comparison.Greater)
        {
            m = new Float80(false, Float80.ExponentBias - 1, significand);      // [1/√2, 1)
            e++;
        }
        exact = m == Float80.One;
        Float80 exponent = ExtendedArithmetic.FromInt64(e);
        if (exact)
        {
            return exponent;
        }
        // m − 1 is exact (Sterbenz); only the division and m + 1 round.
        Float80 s = ExtendedArithmetic.Divide(
            ExtendedArithmetic.Subtract(m, Float80.One, ref env),
            ExtendedArithmetic.Add(m, Float80.One, ref env), ref env);
        Float80 log2m = ExtendedArithmetic.Multiply(TwoAtanh(s, ref env), Log2E, ref env);
        return ExtendedArithmetic.Add(exponent, log2m, ref env);
    }

    /// <summary>log2(1 + x) for finite non-zero x with |x| ≤ 1/2 (FYL2XP1's range is |x| &lt; 1 − √2/2).</summary>
    public static Float80 Log2OnePlus(Float80 x)
    {
        var env = new X87Arithmetic(X87Control.Default);
        Float80 two = ExtendedArithmetic.FromInt64(2);
        Float80 s = ExtendedArithmetic.Divide(x, ExtendedArithmetic.Add(two, x, ref env), ref env);
        return ExtendedArithmetic.Multiply(TwoAtanh(s, ref env), Log2E, ref env);
    }

    private static readonly Float80 Pi = new(0x4000, 0xC90F_DAA2_2168_C235UL);
    private static readonly Float80 HalfPi = new(0x3FFF, 0xC90F_DAA2_2168_C235UL);
    private static readonly Float80 QuarterPi = new(0x3FFE, 0xC90F_DAA2_2168_C235UL);
    private static readonly Float80 ThreeQuarterPi = new(0x4000, 0x96CB_E3F9_990E_91A8UL);

    /// <summary>
    /// atan2(y, x) for FPATAN (SDM vol.2A FPATAN table), for non-NaN operands. The quadrant is
    /// folded so that the series argument t = min(|y|,|x|)/max(|y|,|x|) ≤ 1, then halved twice with
    /// atan t = 2·atan(t / (1 + √(1 + t²))) to |t| ≤ 0.2 before the odd power series.
    /// </summary>
    public static Float80 ArcTangent2(Float80 y, Float80 x)
    {
        bool negative = y.IsNegative;
        Float80 ay = y.Abs(), ax = x.Abs();
        if (y.IsInfinity || x.IsInfinity || y.IsZero || x.IsZero)
        {
            Float80 angle =
                y.IsZero ? (x.IsNegative ? Pi : Float80.PositiveZero)
                : x.IsZero ? HalfPi
                : y.IsInfinity && x.IsInfinity ? (x.IsNegative ? ThreeQuarterPi : QuarterPi)
                : y.IsInfinity ? HalfPi
                : (x.IsNegative ? Pi : Float80.PositiveZero);
            return angle.WithSign(negative);
        }
        var env = new X87Arithmetic(X87Control.Default);
        bool swapped = ExtendedArithmetic.Compare(ay, ax, true, ref env) == X87Comparison.Greater;
        Float80 t = swapped ? ExtendedArithmetic.Divide(ax, ay, ref env) : ExtendedArithmetic.Divide(ay, ax, ref env);
        Float80 a = ArcTangentUnit(t, ref env);
        if (swapped)
        {
            a = ExtendedArithmetic.Subtract(HalfPi, a, ref env);
        }
        if (x.IsNegative)
        {
            a = ExtendedArithmetic.Subtract(Pi, a, ref env);
        }
        return a.WithSign(negative);
    }

    /// <summary>atan t for 0 ≤ t ≤ 1.</summary>
    private static Float80 ArcTangentUnit(Float80 t, ref X87Arithmetic env)
    {
        if (t.IsZero)
        {
            return t;
        }
        const int halvings = 2;
        for (int i = 0; i < halvings; i++)
        {
            Float80 root = ExtendedArithmetic.SquareRoot(
                ExtendedArithmetic.Add(Float80.One, ExtendedArithmetic.Multiply(t, t, ref env), ref env), ref env);
            t = ExtendedArithmetic.Divide(t, ExtendedArithmetic.Add(Float80.One, root, ref env), ref env);
        }
        // atan t = t − t³/3 + t⁵/5 − ...: the atanh series with alternating signs.
        Float80 z = ExtendedArithmetic.Multiply(t, t, ref env);
        Float80 sum = AtanhTerms % 2 == 0 ? OddReciprocals[AtanhTerms] : OddReciprocals[AtanhTerms].Negate();
        for (int k = AtanhTerms - 1; k >= 1; k--)
        {
            Float80 coefficient = k % 2 == 0 ? OddReciprocals[k] : OddReciprocals[k].Negate();
            sum = ExtendedArithmetic.Add(ExtendedArithmetic.Multiply(sum, z, ref env), coefficient, ref env);
        }
        Float80 series = ExtendedArithmetic.Add(t, ExtendedArithmetic.Multiply(ExtendedArithmetic.Multiply(t, z, ref env), sum, ref env), ref env);
        return new Float80(false, series.BiasedExponent + halvings, series.Significand);
    }

    /// <summary>ln((1 + s)/(1 − s)) = 2(s + s³/3 + s⁵/5 + ...).</summary>
    private static Float80 TwoAtanh(Float80 s, ref X87Arithmetic env)
    {
        Float80 z = ExtendedArithmetic.Multiply(s, s, ref env);
        Float80 sum = OddReciprocals[AtanhTerms];
        for (int k = AtanhTerms - 1; k >= 1; k--)
        {
            sum = ExtendedArithmetic.Add(ExtendedArithmetic.Multiply(sum, z, ref env), OddReciprocals[k], ref env);
        }
        Float80 series = ExtendedArithmetic.Add(s, ExtendedArithmetic.Multiply(ExtendedArithmetic.Multiply(s, z, ref env), sum, ref env), ref env);
        return series.IsZero ? series : new Float80(series.IsNegative, series.BiasedExponent + 1, series.Significand);
    }
}
