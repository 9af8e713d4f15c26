using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

// Transcendental instructions (SDM vol.1 8.3.9-8.3.10; vol.2A FSIN, FCOS, FSINCOS, FPTAN, FPATAN,
// F2XM1, FYL2X, FYL2XP1). The special-value tables and exceptions follow the SDM exactly.
// FSIN/FCOS/FSINCOS/FPTAN (ExtendedTrigonometry) and F2XM1/FYL2X/FYL2XP1/FPATAN
// (ExtendedLogarithm) are computed in extended precision, to a few units in the last place.
// Results are not affected by precision control, as on hardware.
public sealed partial class X87Unit
{
    /// <summary>FSIN/FCOS/FSINCOS/FPTAN only accept |x| &lt; 2^63; otherwise C2 = 1 and ST(0) is unchanged.</summary>
    private const int TrigonometricExponentLimit = 63;

    private X87Outcome TranscendentalUnary(Mnemonic m)
    {
        bool pushes = m is Mnemonic.Fptan or Mnemonic.Fsincos;
        bool trigonometric = m != Mnemonic.F2xm1;
        if (Empty(0) || (pushes && PushOverflows))
        {
            bool masked = Empty(0) ? StackUnderflow() : StackOverflow();
            if (masked)
            {
                SetSt(0, Float80.Indefinite);
                if (pushes)
                {
                    Push(Float80.Indefinite);
                }
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        Float80 x = St(0);
        Float80 first;              // replaces ST(0)
        Float80 second = default;   // pushed by FPTAN (1.0) and FSINCOS (cos)
        switch (x.Class)
        {
            case Float80Class.Unsupported:
                env.Flags |= X87Status.InvalidOperation;
                first = second = Float80.Indefinite;
                break;
            case Float80Class.QuietNaN:
            case Float80Class.SignalingNaN:
                if (x.IsSignalingNaN)
                {
                    env.Flags |= X87Status.InvalidOperation;
                }
                first = second = x.Quieted();
                break;
            case Float80Class.Infinity:
                if (trigonometric)
                {
                    env.Flags |= X87Status.InvalidOperation;
                    first = second = Float80.Indefinite;
                }
                else
                {
                    first = x.IsNegative ? Float80.One.Negate() : x;   // 2^-inf - 1 = -1
                }
                break;
            default:
                if (x.Class == Float80Class.Denormal)
                {
                    env.Flags |= X87Status.DenormalOperand;
                    if (env.Unmasked(X87Status.DenormalOperand))
                    {
                        Raise(env.Flags);
                        return X87Outcome.Done;
                    }
                }
                if (trigonometric && x.BiasedExponent - Float80.ExponentBias >= TrigonometricExponentLimit)
                {
                    // Operand out of range: C2 = 1, stack unchanged (SDM vol.2A FSIN "FPU Flags Affected").
                    Raise(env.Flags);
                    SetConditionCodes((ushort)((_status & (X87Status.C0 | X87Status.C3)) | X87Status.C2));
                    return X87Outcome.Done;
                }
                ComputeUnary(m, x, ref env, out first, out second);
                break;
        }
        Raise(env.Flags);
        if (env.Unmasked(PreComputation))
        {
            return X87Outcome.Done;
        }
        // C1 reports round-up; the host library does not say, so it is cleared. C2 = 0: in range.
        _status &= unchecked((ushort)~(X87Status.C1 | X87Status.C2));
        SetSt(0, first);
        if (pushes)
        {
            Push(second);
        }
        return X87Outcome.Done;
    }

    /// <summary>Finite-operand results; tiny arguments use the leading Taylor term, exact to 64 bits.</summary>
    private static void ComputeUnary(Mnemonic m, Float80 x, ref X87Arithmetic env, out Float80 first, out Float80 second)
    {
        second = default;
        if (x.IsZero)
        {
            // sin(+-0) = +-0, tan(+-0) = +-0, cos(0) = 1, 2^+-0 - 1 = +-0: exact.
            first = m == Mnemonic.Fcos ? Float80.One : x;
            second = Float80.One;   // cos(0) for FSINCOS, the 1.0 FPTAN pushes
            return;
        }
        env.Flags |= X87Status.Precision;
        int exponent = ExtendedArithmetic.Normalize(x, out _);
        // |x| < 2^-40: sin x and tan x round to x, cos x to 1 at 64 bits (the next Taylor terms are
        // below 2^-80 relative). 2^x - 1 = x ln 2 (1 + x ln 2 / 2 + ...) needs |x| < 2^-64 for that.
        if (exponent < (m == Mnemonic.F2xm1 ? -64 : -40))
        {
            Float80 ln2 = new(0x3FFE, 0xB172_17F7_D1CF_79ACUL);
            first = m switch
            {
                Mnemonic.Fcos => Float80.One,
                Mnemonic.F2xm1 => ExtendedArithmetic.Multiply(x, ln2, ref env),
                _ => x,
            };
            second = Float80.One;
            return;
        }
        if (m == Mnemonic.F2xm1)
        {
            // The SDM defines F2XM1 for -1 <= x <= +1; outside it the result is "undefined" and the double path is used.
            first = exponent <= 0
                ? ExtendedLogarithm.TwoToXMinusOne(x)
                : Float80.FromDouble(ExpMinusOne(ToDouble(x) * Math.Log(2)));
            return;
        }
        ExtendedTrigonometry.SinCos(x, out Float80 sin, out Float80 cos);
        switch (m)
        {
            case Mnemonic.Fsin:
                first = sin;
                break;
            case Mnemonic.Fcos:
                first = cos;
                break;
            case Mnemonic.Fptan:
                var scratch = new X87Arithmetic(X87Control.Default);
                first = ExtendedArithmetic.Divide(sin, cos, ref scratch);
                second = Float80.One;
                break;
            default:
                first = sin;
                second = cos;
                break;
        }
    }

    /// <summary>e^z - 1 without cancellation near 0: 2t / (1 - t) with t = tanh(z/2).</summary>
    private static double ExpMinusOne(double z)
    {
        if (Math.Abs(z) > 0.5)
        {
            return Math.Exp(z) - 1;
        }
        double t = Math.Tanh(z / 2);
        return 2 * t / (1 - t);
    }

    /// <summary>Nearest double (the extended exponent range is clamped by the double's).</summary>
    private static double ToDouble(Float80 x)
    {
        X87Arithmetic scratch = new(X87Control.Default);
        return BitConverter.UInt64BitsToDouble(MemoryFormats.ToDoubleBits(x, ref scratch));
    }

    private X87Outcome TranscendentalBinary(Mnemonic m)
    {
        if (Empty(0) || Empty(1))
        {
            if (StackUnderflow())
            {
                SetSt(1, Float80.Indefinite);
                Pop();
            }
            return X87Outcome.Done;
        }
        X87Arithmetic env = NewEnvironment();
        Float80 x = St(0), y = St(1);
        Float80 result = m switch
        {
            Mnemonic.Fpatan => ArcTangent(y, x, ref env),
            Mnemonic.Fyl2x => YLog2X(y, x, plusOne: false, ref env),
            _ => YLog2X(y, x, plusOne: true, ref env),
        };
        Raise(env.Flags);
        if (env.Unmasked(PreComputation))
        {
            return X87Outcome.Done;
        }
        SetC1(false);
        SetSt(1, result);
        Pop();
        return X87Outcome.Done;
    }

    private static bool NaNOrUnsupported(Float80 y, Float80 x, ref X87Arithmetic env, out Float80 result)
    {
        if (y.Class == Float80Class.Unsupported || x.Class == Float80Class.Unsupported)
        {
            env.Flags |= X87Status.InvalidOperation;
            result = Float80.Indefinite;
            return true;
        }
        if (y.IsNaN || x.IsNaN)
        {
            result = ExtendedArithmetic.PropagateNaN(x, y, ref env);
            return true;
        }
        if (y.Class == Float80Class.Denormal || x.Class == Float80Class.Denormal)
        {
            env.Flags |= X87Status.DenormalOperand;
        }
        result = default;
        return false;
    }

    /// <summary>FPATAN: atan2(ST(1), ST(0)); the signed-zero and infinity cases follow the SDM table (IEEE atan2).</summary>
    private static Float80 ArcTangent(Float80 y, Float80 x, ref X87Arithmetic env)
    {
        if (NaNOrUnsupported(y, x, ref env, out Float80 special))
        {
            return special;
        }
        if (!(y.IsZero && (x.IsZero || !x.IsNegative)))
        {
            env.Flags |= X87Status.Precision;    // every other result is an irrational multiple or value
        }
        int ey = y.IsZero || y.IsInfinity ? 0 : ExtendedArithmetic.Normalize(y, out _);
        int ex = x.IsZero || x.IsInfinity ? 0 : ExtendedArithmetic.Normalize(x, out _);
        if (!y.IsZero && !x.IsZero && !y.IsInfinity && !x.IsInfinity && ey - ex < -70 && !x.IsNegative)
        {
            // atan(t) = t to 64 bits for tiny t = y/x; the quotient may underflow, so divide directly.
            return ExtendedArithmetic.Divide(y, x, ref env);
        }
        return ExtendedLogarithm.ArcTangent2(y, x);
    }

    /// <summary>FYL2X: y * log2(x); FYL2XP1: y * log2(x + 1) (SDM vol.2A special-value tables).</summary>
    private static Float80 YLog2X(Float80 y, Float80 x, bool plusOne, ref X87Arithmetic env)
    {
        if (NaNOrUnsupported(y, x, ref env, out Float80 special))
        {
            return special;
        }
        Float80 log;
        if (!plusOne)
        {
            if (x.IsNegative && !x.IsZero)
            {
                env.Flags |= X87Status.InvalidOperation;
                return Float80.Indefinite;
            }
            if (x.IsZero)
            {
                if (!y.IsZero && !y.IsInfinity)
                {
                    env.Flags |= X87Status.ZeroDivide;
                }
                log = Float80.NegativeInfinity;
            }
            else if (x.IsInfinity)
            {
                log = Float80.PositiveInfinity;
            }
            else
            {
                log = ExtendedLogarithm.Log2(x, out bool exact);
                if (!exact)
                {
                    env.Flags |= X87Status.Precision;
                }
            }
        }
        else
        {
            if (x.IsInfinity || (x.IsNegative && ExtendedArithmetic.Compare(x, Float80.One.Negate(), true, ref env) == X87Comparison.Less))
            {
                env.Flags |= X87Status.InvalidOperation;
                return Float80.Indefinite;
            }
            if (x.IsZero)
            {
                log = x;
            }
            else if (ExtendedArithmetic.Normalize(x, out _) < -60)
            {
                // log2(1 + x) = x / ln 2 to 64 bits for tiny x.
                Float80 log2e = new(0x3FFF, 0xB8AA_3B29_5C17_F0BCUL);
                log = ExtendedArithmetic.Multiply(x, log2e, ref env);
            }
            else if (ExtendedArithmetic.Normalize(x, out _) < -1)
            {
                log = ExtendedLogarithm.Log2OnePlus(x);                // |x| < 1/2, covering FYL2XP1's range
                env.Flags |= X87Status.Precision;
            }
            else
            {
                // Outside the architectural range |x| < 1 - sqrt(2)/2 ("undefined"): log2 of the rounded 1 + x.
                var scratch = new X87Arithmetic(X87Control.Default);
                Float80 onePlus = ExtendedArithmetic.Add(Float80.One, x, ref scratch);
                log = onePlus.IsZero ? Float80.NegativeInfinity : ExtendedLogarithm.Log2(onePlus, out _);
                env.Flags |= X87Status.Precision;
            }
        }
        return ExtendedArithmetic.Multiply(y, log, ref env);
    }
}
